"""Attack review of f48a1d3 (playlists on the hot lane, edge/hot.py ``query_free``).

The claim: a hot answer is byte for byte and header for header what the full path answers (a server with
``[cache] enabled = false`` is the reference), and no request that could get another answer is answered hot.

Three real processes over one library: REF (no caches, no hot lane), HOT (the defaults, an origin for the
edge) and EDGE (role edge, upstream HOT, ``[edge] ttl = 0.5``). REF and HOT share the configuration: one
open partner with content keys (so the admin API can switch encryption), ``cdn.edge_secrets`` (so HOT is an
origin its edges vouch to), trusted proxies and play events with one salt. Tests that change a file or a
profile use an entry of their own and put everything back.

Each finding of the review is fixed and pinned by a test here, beside the attacks that held.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import socket
import time

import httpx
import pytest

import grant_matrix_support as gm
from conftest import ServerProcess, hot_answers_in

ADMIN = "attack-hot-playlists-admin-0123"
EDGE_SECRET = "attack-hot-playlists-edge-0123456"
KEY_SECRET = "cd" * 32
SALT = "attack-hot-playlists-salt"
VTT = "WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nHello\n"
ENTRIES = ("odd", "flavor", "sidecar", "enc", "vouch", "events", "purge", "stale", "metrics", "reload")
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def config(library, extra: str = "") -> str:
    return f'''[server]
media_root = "{library}"
segment_duration = 4
trusted_proxies = ["127.0.0.1/32"]

[cdn]
edge_secrets = ["{EDGE_SECRET}"]

[partners.free]
admin_secret = "{ADMIN}"
key_secrets = ["{KEY_SECRET}"]
token_keys = {{ k1 = "00112233445566778899aabbccddeeff" }}
default_profile = "p"

[partners.free.profiles.p]
rules = []

[partners.free.entries.reload]
profile = "r"

[partners.free.profiles.r]
rules = []
{extra}'''


def analytics(path) -> str:
    return (f'\n[analytics]\nenabled = true\nsinks = ["jsonl"]\npath = "{path}"\nflush_interval = 0.2\n'
            f'session_salt = "{SALT}"\nstore_ip = true\nnode_id = "n"\n')


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, media_fixture_paths):
    work = tmp_path_factory.mktemp("attack-hot-playlists")
    library = gm.build_library(work / "lib", media_fixture_paths, [("free", e) for e in ENTRIES])
    (library / "free" / "odd" / "hi.en.vtt").write_text(VTT)
    (library / "free" / "sidecar" / "hi.en.vtt").write_text(VTT)
    started: dict[str, ServerProcess] = {}
    try:
        for name, extra in (("ref", "\n[cache]\nenabled = false\n"), ("hot", "")):
            (work / f"{name}-events").mkdir()
            (work / f"{name}.toml").write_text(config(library, extra + analytics(work / f"{name}-events")))
            started[name] = ServerProcess(["--config", str(work / f"{name}.toml")], work / f"{name}.log", name=name, wait=False)
        (work / "edge.toml").write_text(config(library, "\n[edge]\nttl = 0.5\n"))
        started["edge"] = ServerProcess(["--config", str(work / "edge.toml"), "--role", "edge", "--upstream",
                                         started["hot"].base], work / "edge.log", name="edge", wait=False)
        for node in started.values():
            node.wait()
        for name, node in started.items():
            node.library = library
            node.config_path = work / f"{name}.toml"
            node.events = work / f"{name}-events"
        yield started
    finally:
        for node in started.values():
            node.stop()


# --------------------------------------------------------------------------- helpers


def raw(node: ServerProcess, data: bytes, count: int = 1, pieces: list[bytes] | None = None) -> list[tuple[int, dict, bytes]]:
    """Send ``data`` (or ``pieces``, one write each) on a new connection; read ``count`` responses."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        if pieces:
            for piece in pieces:
                s.sendall(piece)
                time.sleep(0.05)
        else:
            s.sendall(data)
        f = s.makefile("rb")
        out = []
        for _ in range(count):
            status = int(f.readline().split()[1])
            headers: dict[str, str] = {}
            while (line := f.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers.setdefault(name.strip().lower(), value.strip())
            out.append((status, headers, f.read(int(headers.get("content-length", "0")))))
        return out


def get(path: bytes, headers: bytes = b"", method: bytes = b"GET", version: bytes = b"HTTP/1.1") -> bytes:
    return method + b" " + path + b" " + version + b"\r\nHost: vodgate.test\r\n" + headers + b"\r\n"


def hot_answers(node: ServerProcess) -> int:
    return hot_answers_in(httpx.get(f"{node.base}/metrics", timeout=10).text, required=False)


def ask(node: ServerProcess, request: bytes) -> tuple[tuple[int, dict, bytes], int]:
    """One response and whether it was a hot answer."""
    before = hot_answers(node)
    got = raw(node, request)[0]
    return got, hot_answers(node) - before


def warm(node: ServerProcess, request: bytes) -> bool:
    """Whether ``request`` gets a hot answer once asked before. A remembered answer lives until the file stats it
    was built on are due (at most 1 s): when the first ask came late in that window, the second is the full path
    again (and asks the files), and the third is hot."""
    raw(node, request)
    return any(ask(node, request)[1] == 1 for _ in range(2))


COMPARED = ("content-type", "cache-control", "content-location", "access-control-allow-origin", "vary",
            "last-modified", "content-length")


def answer(response: tuple[int, dict, bytes], etag: bool = True) -> tuple:
    status, headers, body = response
    names = COMPARED + (("etag",) if etag else ())
    return status, body, tuple((n, headers.get(n)) for n in names)


def put_profile(node: ServerProcess, profile: dict) -> None:
    response = httpx.put(f"{node.base}/admin/partners/free/profiles/p", json=profile, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text


def entry(name: str) -> bytes:
    return f"/p/free/e/{name}".encode()


# --------------------------------------------------------------------------- attacks that held

ODD = {  # name -> (request, must (True) / must not (False) / may (None) it be a hot answer?)
    "plain": (get(entry("odd") + b"/hls/master.m3u8"), True),
    "empty query": (get(entry("odd") + b"/hls/master.m3u8?"), True),
    "query &": (get(entry("odd") + b"/hls/master.m3u8?&"), False),
    "query #": (get(entry("odd") + b"/hls/master.m3u8?#"), False),
    "fragment": (get(entry("odd") + b"/hls/master.m3u8#x"), False),
    "%3F in path": (get(entry("odd") + b"/hls/master.m3u8%3FplaySessionId=x"), False),
    ";params": (get(entry("odd") + b"/hls/master.m3u8;x"), False),
    "//": (get(b"/p/free/e/odd//hls/master.m3u8"), False),
    "/./": (get(entry("odd") + b"/./hls/master.m3u8"), False),
    "percent-encoded name": (get(entry("odd") + b"/hls/%6Daster.m3u8"), True),
    "%2f": (get(b"/p/free/e/odd%2fhls/master.m3u8"), True),
    "%2F": (get(b"/p/free/e/odd%2Fhls/master.m3u8"), True),
    "absolute form": (get(b"http://vodgate.test" + entry("odd") + b"/hls/master.m3u8"), False),
    "media ?": (get(entry("odd") + b"/hls/hi/index.m3u8?"), True),
    "cmaf media": (get(entry("odd") + b"/cmaf/lo/index.m3u8"), True),
    "iframes": (get(entry("odd") + b"/cmaf/hi/iframes.m3u8"), True),
    "subtitles": (get(entry("odd") + b"/hls/_subs/en/index.m3u8"), True),
    "preview marker": (get(entry("odd") + b"/hls/hi/index-p3.m3u8"), True),
    "preview marker past the end": (get(entry("odd") + b"/hls/hi/index-p99.m3u8"), True),
    "subtitle preview": (get(entry("odd") + b"/hls/_subs/en/index-p3.m3u8"), True),
    "clip master": (get(entry("odd") + b"/clip-2-8/hls/master.m3u8"), True),
    "clip media preview": (get(entry("odd") + b"/clip-2-8/cmaf/hi/index-p3.m3u8"), True),
    # f48a1d3 never answers it hot; a later change may answer a lone session id from the template: REF's bytes either way
    "session": (get(entry("odd") + b"/hls/master.m3u8?playSessionId=abc"), None),
    "flavors": (get(entry("odd") + b"/hls/master.m3u8?flavors=lo"), False),
    "token": (get(entry("odd") + b"/hls/master.m3u8?token=nope"), False),
    "unknown query": (get(entry("odd") + b"/hls/master.m3u8?x=1"), False),
    "Accept-Encoding": (get(entry("odd") + b"/hls/master.m3u8", b"Accept-Encoding: gzip\r\n"), True),
    "X-Forwarded-For": (get(entry("odd") + b"/hls/master.m3u8", b"X-Forwarded-For: 203.0.113.9\r\n"), True),
    "RANGE": (get(entry("odd") + b"/hls/master.m3u8", b"RANGE: bytes=0-10\r\n"), False),
    "If-None-Match *": (get(entry("odd") + b"/hls/master.m3u8", b"If-None-Match: *\r\n"), False),
    "If-Modified-Since": (get(entry("odd") + b"/hls/master.m3u8", b"If-Modified-Since: Sat, 01 Jan 2099 00:00:00 GMT\r\n"), False),
    "Origin": (get(entry("odd") + b"/hls/master.m3u8", b"Origin: https://player.example\r\n"), False),
    "cookie token": (get(entry("odd") + b"/hls/master.m3u8", b"Cookie: hdnts=x\r\n"), False),
    "HTTP/1.0": (get(entry("odd") + b"/hls/master.m3u8", version=b"HTTP/1.0"), False),
    "edge checked, full grant": (get(entry("odd") + b"/hls/master.m3u8", f"X-Vodgate-Edge-Checked: {EDGE_SECRET}\r\n".encode()), True),
}


@pytest.mark.parametrize("role", ["hot", "edge"])
def test_odd_spellings_and_headers_get_the_reference_answer(nodes, role):
    """Every spelling is asked three times in a row (so whatever can be remembered is, and is answered): each
    answer is REF's; no hot answer where the request has a query or a header that changes the answer."""
    node, differences = nodes[role], []
    counted = {}
    for expectation in (False, True, None):
        cases = [(name, request) for name, (request, may) in ODD.items() if may is expectation]
        before = hot_answers(node)
        for name, request in cases:
            answers = [raw(node, request)[0] for _ in range(3)]
            expected = answer(raw(nodes["ref"], request)[0], etag=role == "hot")
            for got in answers:
                if answer(got, etag=role == "hot") != expected:
                    differences.append(f"{name}: {answer(got, False)[0]} {answer(got, False)[2]} vs REF {expected[0]} {expected[2]}")
                    break
        counted[expectation] = (hot_answers(node) - before, len(cases))
    assert not differences, "\n".join(differences)
    assert counted[False][0] == 0, f"{counted[False][0]} hot answers to requests that must take the full path"
    assert counted[True][0] >= counted[True][1], f"(the fast path is not taken) {counted[True]}"


def test_split_and_pipelined_requests(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    plain, queried = ODD["plain"][0], ODD["query &"][0]
    expected = answer(raw(ref, plain)[0])
    raw(node, plain)
    for _ in range(2):  # see warm: the second try is hot when the first came late in the stat window
        before = hot_answers(node)
        split = raw(node, b"", pieces=[plain[:17], plain[17:40], plain[40:]])[0]
        if hot_answers(node) - before == 1:
            break
    assert answer(split) == expected and hot_answers(node) - before == 1
    before = hot_answers(node)
    split = raw(node, b"", pieces=[queried[:45], queried[45:]])[0]
    assert answer(split) == answer(raw(ref, queried)[0]) and hot_answers(node) == before
    before = hot_answers(node)
    mixed = [plain, ODD["session"][0], plain, queried, plain]
    got = raw(node, b"".join(mixed), count=len(mixed))
    assert [answer(g) for g in got] == [answer(raw(ref, r)[0]) for r in mixed]
    assert hot_answers(node) - before <= 3  # only the three plain ones may be hot


def test_sidecar_added_and_removed_within_the_window(nodes):
    """The catalog sees a new or removed sidecar at once; the hot lane for at most its second."""
    node, ref = nodes["hot"], nodes["ref"]
    master = get(entry("sidecar") + b"/hls/master.m3u8")
    folder = node.library / "free" / "sidecar"
    assert warm(node, master)
    for change in (lambda: (folder / "lo.fr.vtt").write_text(VTT), lambda: (folder / "lo.fr.vtt").unlink()):
        change()
        expected = answer(raw(ref, master)[0])
        time.sleep(1.1)
        got = raw(node, master)[0]
        assert answer(got) == expected
        assert ask(node, master)[0] and answer(raw(node, master)[0]) == expected


def test_encryption_switched_by_the_admin_api_applies_at_once(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    paths = [get(entry("enc") + p) for p in (b"/hls/master.m3u8", b"/hls/hi/index.m3u8", b"/cmaf/lo/index.m3u8")]
    for request in paths:
        assert warm(node, request)
    try:
        for target in (node, ref):
            put_profile(target, {"rules": [], "encryption": "aes-128"})
        for request in paths:
            got, hot = ask(node, request)
            expected = raw(ref, request)[0]
            if b"index.m3u8" in request:
                assert b"#EXT-X-KEY" in expected[2]
            assert hot == 0 and answer(got) == answer(expected)
            assert any(ask(node, request)[1] == 1 for _ in range(2))  # remembered anew, encrypted (see warm)
    finally:
        for target in (node, ref):
            put_profile(target, {"rules": []})
    for request in paths:
        assert answer(raw(node, request)[0]) == answer(raw(ref, request)[0])


def test_a_rule_added_by_sighup_ends_the_hot_answers(nodes):
    node = nodes["hot"]
    master = get(entry("reload") + b"/hls/master.m3u8")
    original = node.config_path.read_text()
    assert warm(node, master)
    ruled = original.replace("[partners.free.profiles.r]\nrules = []",  # the entry's own profile (admin tests change p)
                             '[partners.free.profiles.r]\nrules = [{ name = "paid", unless = { authenticated = true }, then = [{ block = "token_required" }] }]')
    assert ruled != original
    node.config_path.write_text(ruled)
    try:
        os.kill(node.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while raw(node, master)[0][0] != 403:
            assert time.monotonic() < deadline, "the reload never applied"
            time.sleep(0.05)
        for _ in range(3):
            got, hot = ask(node, master)
            assert got[0] == 403 and hot == 0
    finally:
        node.config_path.write_text(original)
        os.kill(node.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while raw(node, master)[0][0] != 200:
            assert time.monotonic() < deadline, "the reload back never applied"
            time.sleep(0.05)


@pytest.mark.parametrize("role", ["hot", "edge"])
def test_a_purge_ends_the_hot_answers(nodes, role):
    node = nodes[role]
    master = get(entry("purge") + b"/cmaf/master.m3u8")
    assert warm(node, master)
    purged = httpx.post(f"{node.base}/admin/partners/free/purge", json={"prefix": "/p/free/e/purge/cmaf/master.m3u8"},
                        headers=AUTH, timeout=10)
    assert purged.status_code == 200 and purged.json()["removed"] >= 1, purged.text
    got, hot = ask(node, master)
    assert hot == 0 and got[1]["x-cache"] == "MISS"


def test_an_edge_copy_past_its_freshness_is_not_answered_hot(nodes):
    """[edge] ttl = 0.5: the hot lane answers a stored playlist no longer than the edge keeps it fresh."""
    node = nodes["edge"]
    media = get(entry("stale") + b"/hls/mid/index.m3u8")
    raw(node, media)  # fetched now
    fetched = time.monotonic()
    assert ask(node, media)[1] == 1
    time.sleep(max(0.0, fetched + 0.6 - time.monotonic()))
    assert ask(node, media)[1] == 0


def _play_events(node: ServerProcess, entry_id: str) -> list[dict]:
    events = []
    for name in sorted(glob.glob(str(node.events / "*.jsonl"))):
        with open(name) as f:
            events += [json.loads(line) for line in f if line.strip()]
    return [e for e in events if e.get("entry") == entry_id and e["kind"] == "play_requested"]


def test_hot_masters_are_the_same_play_events(nodes):
    """Viewers told apart by X-Forwarded-For (trusted proxy) and User-Agent: one play each, with the same
    hashed session, ip, referrer and user agent class as the reference records."""
    viewers = [(b"198.51.100.1", b"Mozilla/5.0 Chrome/120.0"), (b"198.51.100.2", b"Mozilla/5.0 Chrome/120.0"),
               (b"198.51.100.1", b"Mozilla/5.0 Firefox/121.0"), (b"198.51.100.1", b"Mozilla/5.0 Chrome/120.0")]
    hot = 0
    for name in ("hot", "ref"):
        before = hot_answers(nodes[name])
        for ip, ua in viewers:
            headers = b"X-Forwarded-For: " + ip + b"\r\nUser-Agent: " + ua + b"\r\nReferer: https://news.example.com/a\r\n"
            assert raw(nodes[name], get(entry("events") + b"/hls/master.m3u8", headers))[0][0] == 200
        if name == "hot":
            hot = hot_answers(nodes[name]) - before
    assert hot >= 2
    fields = ("partner", "entry", "flavor", "session", "format", "country", "referrer", "ua", "ip")
    deadline = time.monotonic() + 5
    while True:
        got = {n: sorted(tuple(e.get(f) for f in fields) for e in _play_events(nodes[n], "events")) for n in ("hot", "ref")}
        if len(got["ref"]) >= 3 and len(got["hot"]) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(got["ref"]) == 3 and got["hot"] == got["ref"]


def test_head_after_a_remembered_get_takes_the_full_path(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    path = entry("odd") + b"/hls/lo/index.m3u8"
    raw(node, get(path))
    heads = []
    for target in (node, ref):
        before = hot_answers(target)
        with socket.create_connection(("127.0.0.1", target.port), timeout=10) as s:
            s.sendall(get(path, method=b"HEAD") + get(b"/healthz"))  # a request behind: a HEAD body would show
            f = s.makefile("rb")
            status = int(f.readline().split()[1])
            headers = {}
            while (line := f.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            assert f.readline().startswith(b"HTTP/1.1 200"), "a HEAD answer carried a body"
        heads.append(((status, headers.get("content-length"), headers.get("cache-control"), headers.get("etag")),
                      hot_answers(target) - before))
    assert heads[0] == heads[1] and heads[0][1] == 0


def test_the_path_table_is_bounded(tmp_path):
    """Many spellings of one playlist (or many clips) are many paths: the table keeps max_paths, oldest first out."""
    from edge.cache import SegmentCache
    from edge.hot import HotPaths, Shareable
    from edge.request_info import MediaInfo

    cache = SegmentCache(1 << 20)
    cache.memory.put("k|plain", b"#EXTM3U\n")
    body = cache.memory.get("k|plain")
    assert body is not None
    hot = HotPaths(cache, lambda partner: False, max_paths=64)
    info = MediaInfo(partner="free", entry="odd", format="hls", resource="index")
    for i in range(500):
        hot.remember(b"/p/free/e/odd/hls/%d/index.m3u8" % i, [(b"content-length", b"8")], body,
                     Shareable("k|plain", query_free=True), info)
    assert len(hot) == 64


# --------------------------------------------------------------------------- findings


def test_a_vouched_edge_grant_is_not_answered_hot(nodes):
    node, ref = nodes["hot"], nodes["ref"]
    vouched = f"X-Vodgate-Edge-Checked: {EDGE_SECRET}\r\n".encode()
    problems = []
    for path, grant in ((b"/hls/master.m3u8", b"max_height=200"), (b"/hls/master.m3u8", b"preview=5"),
                        (b"/hls/hi/index.m3u8", b"preview=5"), (b"/cmaf/hi/iframes.m3u8", b"preview=5")):
        plain = get(entry("vouch") + path)
        raw(node, plain)  # any plain viewer (or a CDN pull) has just had it: remembered
        request = get(entry("vouch") + path, vouched + b"X-Vodgate-Edge-Grant: " + grant + b"\r\n")
        got, hot = ask(node, request)
        expected = raw(ref, request)[0]
        if answer(got) != answer(expected) or hot:
            problems.append(f"{path.decode()} {grant.decode()}: hot={hot}, cache-control {got[1].get('cache-control')!r} "
                            f"(REF {expected[1].get('cache-control')!r}), {'same body' if got[2] == expected[2] else 'OTHER BODY'}")
    assert not problems, "\n".join(problems)


def test_a_preview_viewer_through_an_edge_gets_the_preview_playlist(nodes):
    edge, origin, ref = nodes["edge"], nodes["hot"], nodes["ref"]
    media = entry("vouch") + b"/hls/lo/index.m3u8"
    preview = get(media, f"X-Vodgate-Edge-Checked: {EDGE_SECRET}\r\nX-Vodgate-Edge-Grant: preview=5\r\n".encode())
    expected = raw(ref, preview)[0]  # what an origin applying the edge's grant answers
    assert expected[0] == 200 and expected[1]["cache-control"].startswith("private")
    put_profile(edge, {"rules": [{"name": "teaser", "then": [{"preview": 5}]}]})
    try:
        raw(origin, get(media))  # a plain viewer of the origin (or another edge, a CDN pull)
        got = raw(edge, get(media))[0]
        assert (got[0], got[2], got[1].get("cache-control")) == (expected[0], expected[2], expected[1]["cache-control"])
    finally:
        put_profile(edge, {"rules": []})


def test_a_preview_viewer_through_an_edge_gets_no_segment_past_the_preview(nodes):
    edge, origin = nodes["edge"], nodes["hot"]
    segment = get(entry("vouch") + b"/hls/lo/seg-3.ts")
    assert raw(origin, segment)[0][0] == 200  # remembered on the origin
    put_profile(edge, {"rules": [{"name": "teaser", "then": [{"preview": 5}]}]})
    try:
        assert raw(edge, segment)[0][0] == 403
    finally:
        put_profile(edge, {"rules": []})


def _replace(target, source) -> None:
    tmp = target.with_suffix(".new")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)  # atomic, as docs/CONFIGURATION.md asks of operators


def test_a_replaced_flavor_is_noticed_within_the_stat_window(nodes, media_fixture_paths):
    """REF and HOT on one timeline (each has its own stat cache): the stat is taken at S, the file replaced just
    after, the media playlist asked at S+0.8 (the full path, on the stat of S: the old one) and at S+1.4."""
    target = nodes["hot"].library / "free" / "flavor" / "lo.mp4"
    master, media = get(entry("flavor") + b"/hls/master.m3u8"), get(entry("flavor") + b"/hls/lo/index.m3u8")
    late = []
    try:
        for attempt in range(3):
            if attempt:
                _replace(target, media_fixture_paths["ladder_lo"])
                time.sleep(1.1)  # every stat of the entry has lapsed
            old = {name: raw(nodes[name], media)[0][2] for name in ("ref", "hot")}
            time.sleep(1.1)  # the stats and the remembered answer lapse
            for name in ("ref", "hot"):
                raw(nodes[name], master)  # stats every flavor: the stat is from now
            stated = time.monotonic()
            _replace(target, media_fixture_paths["h264_2997"])  # another duration: another media playlist
            replaced = time.monotonic()
            time.sleep(max(0.0, stated + 0.8 - time.monotonic()))
            for name in ("ref", "hot"):
                raw(nodes[name], media)  # the full path, on the stat of `stated`: the old playlist (remembered)
            time.sleep(max(0.0, stated + 1.4 - time.monotonic()))
            got = {name: raw(nodes[name], media)[0][2] for name in ("ref", "hot")}
            asked = time.monotonic()
            assert got["ref"] != old["ref"], "REF still answers the replaced file after its stat lapsed"
            if asked - stated > 1.2 and got["hot"] == old["hot"]:
                late.append(f"attempt {attempt}: the old media playlist {asked - replaced:.2f} s after the file was "
                            f"replaced and {asked - stated:.2f} s after the stat (REF: the new one)")
                break
    finally:
        _replace(target, media_fixture_paths["ladder_lo"])
    assert not late, "\n".join(late)


def _lookups(node: ServerProcess) -> float:
    text = httpx.get(f"{node.base}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r'^vodgate_segment_cache_lookups_total\{result="\w+"\} (\S+)$', text, re.M))


def test_one_cache_lookup_per_playlist_request(nodes):
    node = nodes["hot"]
    media = entry("metrics") + b"/cmaf/mid/index.m3u8"
    counted = {}
    for name, request in (("cold, plain", get(media)), ("hot", get(media)), ("with a query", get(media + b"?playSessionId=a1")),
                          ("warm, plain, full path", None)):
        if request is None:
            time.sleep(1.1)  # the remembered answer lapsed
            request = get(media)
        before = _lookups(node)
        raw(node, request)
        counted[name] = _lookups(node) - before
    assert counted == {name: 1 for name in counted}, counted
