"""Attack review of 19c4a6e, c005508, e3fbc8e: a lone ``playSessionId`` answered on the hot lane.

The claim: every hot answer equals, status/body/headers (Date and X-Cache aside), what a server with
``[cache] enabled = false`` (REF) answers for the same request. Two real processes over one library: REF and
HOT (defaults). One open partner; entries of their own for tests that change state.
"""

from __future__ import annotations

import glob
import json
import socket
import time

import httpx
import pytest

import grant_matrix_support as gm
from conftest import ServerProcess
from test_attack_hot_playlists import hot_answers

ADMIN = "attack-session-hot-admin-0123456"
KEY_SECRET = "ef" * 32
SALT = "attack-session-hot-salt"
VTT = "WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nHello\n"
ENTRIES = ("s", "enc", "purge", "prof", "side", "ev", "log")
AUTH = {"Authorization": f"Bearer {ADMIN}"}
ID64 = "A" * 30 + "z9_.:-" + "b" * 28
IGNORED = ("date", "x-cache")


def config(library, events, extra: str = "") -> str:
    return f'''[server]
media_root = "{library}"
segment_duration = 4
trusted_proxies = ["127.0.0.1/32"]
access_log = "json"

[partners.free]
admin_secret = "{ADMIN}"
key_secrets = ["{KEY_SECRET}"]
default_profile = "p"

[partners.free.profiles.p]
rules = []

[partners.free.entries.enc]
profile = "e"

[partners.free.profiles.e]
rules = []
encryption = "aes-128"

[partners.free.entries.prof]
profile = "q"

[partners.free.profiles.q]
rules = []

[analytics]
enabled = true
sinks = ["jsonl"]
path = "{events}"
flush_interval = 0.2
session_salt = "{SALT}"
store_ip = true
node_id = "n"
{extra}'''


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, media_fixture_paths):
    work = tmp_path_factory.mktemp("attack-session-hot")
    library = gm.build_library(work / "lib", media_fixture_paths, [("free", e) for e in ENTRIES])
    for e in ("s", "enc"):
        (library / "free" / e / "hi.en.vtt").write_text(VTT)
    started: dict[str, ServerProcess] = {}
    try:
        for name, extra in (("ref", "\n[cache]\nenabled = false\n"), ("hot", "")):
            (work / f"{name}-events").mkdir()
            (work / f"{name}.toml").write_text(config(library, work / f"{name}-events", extra))
            started[name] = ServerProcess(["--config", str(work / f"{name}.toml")], work / f"{name}.log", name=name, wait=False)
        for node in started.values():
            node.wait()
        for name, node in started.items():
            node.library = library
            node.events = work / f"{name}-events"
            node.log_path = work / f"{name}.log"
        yield started
    finally:
        for node in started.values():
            node.stop()


def raw(node, request: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        s.sendall(request)
        f = s.makefile("rb")
        status = int(f.readline().split()[1])
        headers = []
        while (line := f.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        size = int(dict(headers).get("content-length", "0"))
        return status, headers, f.read(size) if request.startswith(b"GET") else b""


def get(path: bytes, headers: bytes = b"", method: bytes = b"GET") -> bytes:
    return method + b" " + path + b" HTTP/1.1\r\nHost: vodgate.test\r\n" + headers + b"\r\n"


def answer(got) -> tuple:
    status, headers, body = got
    return status, body, tuple(sorted((n, v) for n, v in headers if n not in IGNORED))


def hot_try(node, request: bytes, tries: int = 3):
    """Ask until a hot answer comes (at most ``tries``): the answer, and whether it was hot."""
    got = None
    for _ in range(tries):
        before = hot_answers(node)
        got = raw(node, request)
        if hot_answers(node) - before == 1:
            return got, True
    return got, False


def entry(name: str) -> bytes:
    return f"/p/free/e/{name}".encode()


def session(path: bytes, sid: str) -> bytes:
    return get(path + b"?playSessionId=" + sid.encode())


# --------------------------------------------------------------------------- session answers vs REF

HOT_CASES = {
    "master": b"/hls/master.m3u8",
    "media": b"/hls/hi/index.m3u8",
    "cmaf master": b"/cmaf/master.m3u8",
    "cmaf media": b"/cmaf/lo/index.m3u8",
    "iframes": b"/cmaf/hi/iframes.m3u8",
    "subtitles": b"/hls/_subs/en/index.m3u8",
    "preview media": b"/hls/hi/index-p3.m3u8",
    "preview past the end (Content-Location)": b"/hls/hi/index-p99.m3u8",
    "cmaf iframes preview": b"/cmaf/hi/iframes-p3.m3u8",
    "subtitle preview": b"/hls/_subs/en/index-p3.m3u8",
    "clip master": b"/clip-2-8/hls/master.m3u8",
    "clip media preview": b"/clip-2-8/cmaf/hi/index-p3.m3u8",
}


@pytest.mark.parametrize("ent", ["s", "enc"])
def test_session_answers_equal_ref_on_every_playlist_kind(nodes, ent):
    """Recorded query-free, answered with ids at the alphabet's edges; then recorded from a session request and
    answered to another id and to the query-free request. Every answer REF's, all headers but Date/X-Cache."""
    node, ref = nodes["hot"], nodes["ref"]
    diffs, hot_count = [], 0
    for name, suffix in HOT_CASES.items():
        path = entry(ent) + suffix
        raw(node, get(path))  # recorded query-free
        for sid in (ID64, ":", "-", "a.b:c_d-e_"):
            got, hot = hot_try(node, session(path, sid), tries=2)
            hot_count += hot
            assert got[0] == 200 or (ent == "enc" and "iframes" in name), (name, sid, got[0])  # no I-frames when AES-128
            if answer(got) != answer(raw(ref, session(path, sid))):
                diffs.append(f"{name} {sid}: {answer(got)[2]} vs {answer(raw(ref, session(path, sid)))[2]}")
    assert not diffs, "\n".join(diffs)
    assert hot_count >= len(HOT_CASES)  # the session lane is taken


def test_key_uri_carries_the_session_id_as_the_full_path_writes_it(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    path = entry("enc") + b"/hls/hi/index.m3u8"
    raw(node, get(path))
    got, hot = hot_try(node, session(path, "kk-1"))
    expected = raw(ref, session(path, "kk-1"))
    assert b"#EXT-X-KEY" in expected[2]
    assert hot and answer(got) == answer(expected)


def test_recorded_from_a_session_request_answers_others_as_ref(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    path = entry("s") + b"/hls/lo/index.m3u8"
    raw(node, session(path, "first"))  # recorded from a session request
    for request in (session(path, "second"), get(path), session(path, "first")):
        got, hot = hot_try(node, request)
        assert hot and answer(got) == answer(raw(ref, request))


ODD = {
    "65 chars": "playSessionId=" + "a" * 65,
    "trailing &": "playSessionId=x&",
    "leading &": "&playSessionId=x",
    "semicolon": "playSessionId=x;y",
    "semicolon sep": "playSessionId=x;playSessionId=y",
    "different case param": "playsessionid=x",
    "both cases": "playSessionId=x&playsessionid=y",
    "both cases reversed": "PlaySessionId=y&playSessionId=x",
    "repeated": "playSessionId=x&playSessionId=y",
    "encoded value": "playSessionId=a%3Ab",
    "encoded name": "play%53essionId=x",
    "plus": "playSessionId=a+b",
    "empty value": "playSessionId=",
    "flavors": "flavors=lo&playSessionId=x",
    "flavors after": "playSessionId=x&flavors=lo",
    "token": "playSessionId=x&token=nope",
    "tilde": "playSessionId=a~b",
}


@pytest.mark.parametrize("name", list(ODD))
def test_odd_session_spellings_take_the_full_path(nodes, name):
    node, ref = nodes["hot"], nodes["ref"]
    path = entry("s") + b"/hls/master.m3u8"
    request = get(path + b"?" + ODD[name].encode())
    raw(node, get(path))
    raw(node, session(path, "warm"))
    before = hot_answers(node)
    got = [raw(node, request) for _ in range(2)]
    assert hot_answers(node) == before
    assert all(answer(g) == answer(raw(ref, request)) for g in got)


def test_dash_and_head_with_a_session_are_never_hot(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    mpd = entry("s") + b"/dash/manifest.mpd"
    for request in (session(mpd, "d1"), get(mpd)):
        raw(node, request)
        before = hot_answers(node)
        got = raw(node, request)
        assert hot_answers(node) == before and answer(got) == answer(raw(ref, request))
    path = entry("s") + b"/hls/master.m3u8"
    raw(node, get(path))
    head = get(path + b"?playSessionId=h1", method=b"HEAD")
    before = hot_answers(node)
    got = raw(node, head)
    assert hot_answers(node) == before and answer(got) == answer(raw(ref, head))


def test_conditional_session_request_gets_refs_304(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    path = entry("s") + b"/hls/hi/index.m3u8"
    raw(node, get(path))
    got, hot = hot_try(node, session(path, "etag1"))
    assert hot
    etag = dict(got[1])["etag"]
    conditional = get(path + b"?playSessionId=etag1", f"If-None-Match: {etag}\r\n".encode())
    assert raw(node, conditional)[0] == raw(ref, conditional)[0] == 304
    other = get(path + b"?playSessionId=etag2", f"If-None-Match: {etag}\r\n".encode())
    assert answer(raw(node, other)) == answer(raw(ref, other))


# --------------------------------------------------------------------------- state changes


def test_session_after_a_purge_is_not_hot(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    path = entry("purge") + b"/hls/master.m3u8"
    raw(node, get(path))
    assert hot_try(node, session(path, "p1"))[1]
    purged = httpx.post(f"{node.base}/admin/partners/free/purge", json={"prefix": "/p/free/e/purge/"}, headers=AUTH, timeout=10)
    assert purged.status_code == 200, purged.text
    before = hot_answers(node)
    got = raw(node, session(path, "p2"))
    assert hot_answers(node) == before and answer(got) == answer(raw(ref, session(path, "p2")))


def test_session_after_an_admin_profile_change(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    path = entry("prof") + b"/hls/hi/index.m3u8"
    raw(node, get(path))
    assert hot_try(node, session(path, "c1"))[1]
    try:
        for target in (node, ref):
            r = httpx.put(f"{target.base}/admin/partners/free/profiles/q", json={"rules": [], "encryption": "aes-128"},
                          headers=AUTH, timeout=10)
            assert r.status_code == 200, r.text
        before = hot_answers(node)
        got = raw(node, session(path, "c2"))
        expected = raw(ref, session(path, "c2"))
        assert b"#EXT-X-KEY" in expected[2]
        assert hot_answers(node) == before and answer(got) == answer(expected)
        got, hot = hot_try(node, session(path, "c3"))
        assert answer(got) == answer(raw(ref, session(path, "c3")))
    finally:
        for target in (node, ref):
            httpx.put(f"{target.base}/admin/partners/free/profiles/q", json={"rules": []}, headers=AUTH, timeout=10)


def test_sidecar_added_is_seen_by_session_answers(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    path = entry("side") + b"/hls/master.m3u8"
    raw(node, get(path))
    assert hot_try(node, session(path, "v1"))[1]
    sidecar = node.library / "free" / "side" / "lo.fr.vtt"
    sidecar.write_text(VTT)
    try:
        expected = raw(ref, session(path, "v2"))
        assert b"_subs" in expected[2]
        time.sleep(1.1)
        for _ in range(3):
            assert answer(raw(node, session(path, "v2"))) == answer(expected)
    finally:
        sidecar.unlink()


# --------------------------------------------------------------------------- observers


def _events(node, entry_id: str) -> list[dict]:
    events = []
    for name in sorted(glob.glob(str(node.events / "*.jsonl"))):
        with open(name) as f:
            events += [json.loads(line) for line in f if line.strip()]
    return [e for e in events if e.get("entry") == entry_id and e["kind"] == "play_requested"]


def test_play_events_of_hot_session_answers_carry_the_requests_session(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    path = entry("ev") + b"/hls/master.m3u8"
    ua = b"User-Agent: Mozilla/5.0 Chrome/120.0\r\n"
    hot = 0
    for name in ("hot", "ref"):
        for i, sid in enumerate(("rec-one", "sess-two", "sess-three")):
            before = hot_answers(nodes[name])
            headers = ua + b"X-Forwarded-For: 198.51.100.%d\r\n" % (i + 1)
            assert raw(nodes[name], get(path + b"?playSessionId=" + sid.encode(), headers))[0] == 200
            hot += (hot_answers(nodes[name]) - before) if name == "hot" else 0
    assert hot >= 1
    fields = ("partner", "entry", "flavor", "session", "format", "ua", "ip")
    deadline = time.monotonic() + 5
    while True:
        got = {n: sorted(tuple(e.get(f) for f in fields) for e in _events(nodes[n], "ev")) for n in ("hot", "ref")}
        if (len(got["ref"]) >= 3 and len(got["hot"]) >= 3) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(got["ref"]) == 3 and got["hot"] == got["ref"]


def _log_lines(node, needle: str) -> list[dict]:
    out = []
    for line in node.log_path.read_text(errors="replace").splitlines():
        if needle in line and line.lstrip().startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def test_access_log_line_of_a_hot_session_answer(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    path = entry("log") + b"/hls/master.m3u8"
    raw(node, get(path))
    got, hot = hot_try(node, session(path, "logsess9"))
    raw(ref, session(path, "logsess9"))
    assert hot
    time.sleep(0.3)
    lines = {n: _log_lines(nodes[n], "logsess9") for n in ("hot", "ref")}
    assert lines["hot"] and lines["ref"], (lines, node.log_path.read_text()[-1500:])
    drop = ("time", "ts", "duration", "ttfb", "cache", "x_cache", "seconds", "duration_ms", "request_time", "pid", "worker")
    def norm(line):
        return {k: v for k, v in line.items() if k not in drop and "time" not in k and "ms" not in k}
    assert norm(lines["hot"][-1]) == norm(lines["ref"][-1])


# --------------------------------------------------------------------------- memory


def test_distinct_session_ids_grow_nothing_in_the_hot_table(tmp_path):
    from edge.cache import SegmentCache
    from edge.hot import HotPaths, Shareable
    from edge.hot_playlists import PlaylistForm
    from edge.request_info import MediaInfo
    from packager.hls.uris import _SLOT

    cache = SegmentCache(1 << 20)
    template = b"#EXTM3U\nhi/index.m3u8?" + _SLOT + b"\n"
    cache.memory.put("k", template)
    cache.memory.put("k|plain", b"#EXTM3U\nhi/index.m3u8\n")
    plain = cache.memory.get("k|plain")
    hot = HotPaths(cache, lambda p: False, clock=lambda: 0.0)
    form = PlaylistForm("k", ("v", "/p"), "public, max-age=1", "private, max-age=1")
    headers = [(b"content-type", b"x"), (b"etag", b'"a"'), (b"cache-control", b"public"), (b"content-length", b"%d" % len(plain)), (b"x-cache", b"MISS")]
    info = MediaInfo("free", "e", "hls", "index")
    hot.remember(b"/p", headers, plain, Shareable("k|plain", None, True, form), info)
    assert len(hot) == 1
    for i in range(5000):
        assert hot.answer(b"/p", [], b"playSessionId=s%d" % i) is not None
    assert len(hot) == 1 and sum(len(v) for v in hot._holding.values()) == 2


def _pipelined(node, requests: list[bytes]) -> list[tuple]:
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        s.sendall(b"".join(requests))
        f = s.makefile("rb")
        out = []
        for _ in requests:
            status = int(f.readline().split()[1])
            headers = []
            while (line := f.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers.append((name.strip().lower(), value.strip()))
            out.append(answer((status, headers, f.read(int(dict(headers).get("content-length", "0"))))))
        return out


def test_pipelined_session_requests_and_http10(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    path = entry("s") + b"/cmaf/hi/index.m3u8"
    raw(node, get(path))
    assert hot_try(node, session(path, "pp0"))[1]
    mixed = [session(path, "pp1"), get(path), session(path, "pp2"), get(path + b"?playSessionId=pp3&"),
             session(path, ID64), get(path + b"?x=1"), session(path, "pp4")]
    before = hot_answers(node)
    assert _pipelined(node, mixed) == _pipelined(ref, mixed)
    assert hot_answers(node) - before <= 5
    old = path + b"?playSessionId=old10"
    request = b"GET " + old + b" HTTP/1.0\r\nHost: vodgate.test\r\n\r\n"
    before = hot_answers(node)
    got = raw(node, request)
    assert answer(got) == answer(raw(ref, request)) and hot_answers(node) == before
