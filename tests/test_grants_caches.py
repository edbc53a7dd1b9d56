"""Grants and caches: one test per way a cached or forwarded answer could leak past a viewer's grant.

Real processes on 127.0.0.1: an all-role server (caches and hot lane on), and
a shielded origin with an edge in front of it (the edge holds the same
partner table and shield secret). Each test names the item of the "Grants and
caches" issue it guards. The exhaustive differential check (every viewer class
x resource x order x role against a cache-free server) is
tests/test_grant_matrix.py; these are the specific regressions, each with the
order of requests that used to leak.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

import httpx
import m3u8
import pytest

from conftest import REPO, ServerProcess, free_port

sys.path.insert(0, str(REPO))
from auth.tokens import sign_native  # noqa: E402

KEY = "00112233445566778899aabbccddeeff"
ADMIN = "grants-admin-secret-0123456789"
SHIELD = "grants-shield-secret-0123456789"
SHIELD_HEADER = "X-Vodgate-Shield"
EDGE_SECRET = "grants-edge-secret-0123456789"  # edges and origins only: the edge vouches for its grants
ENTRIES = ("pv_anon_first", "pv_token_first", "pv_edge", "limited", "ua", "markers", "big", "open_profile", "divergent")

PARTNER = """
[partners.demo]
admin_secret = "{admin}"
token_keys = {{ k1 = "{key}" }}
default_profile = "preview"

[partners.demo.profiles.preview]
rules = [ {{ unless = {{ authenticated = true }}, then = [{{ preview = 3 }}] }} ]

[partners.demo.profiles.limited]
rules = [ {{ then = [{{ limit_flavors = {{ max_height = 270 }} }}] }} ]

[partners.demo.profiles.ua]
rules = [
  {ua_rule}
  {{ unless = {{ authenticated = true }}, then = [{{ preview = 3 }}] }},
]

[partners.demo.entries.limited]
profile = "limited"

[partners.demo.entries.big]
profile = "limited"

[partners.demo.entries.ua]
profile = "ua"
{origin_only}"""
# The origin's rules differ from the edge's on two entries: it blocks bots on "ua", and it opens
# "divergent" to everyone. Through the edge, the edge's decision must be what the viewer gets.
ORIGIN_UA_RULE = '{ if = { user_agent = "(?i)bot" }, then = [{ block = "bot" }] },'
ORIGIN_ONLY = """
[partners.demo.profiles.open]
rules = []

[partners.demo.entries.divergent]
profile = "open"
"""


def _partner(ua_rule: str = "", origin_only: str = "") -> str:
    return PARTNER.format(admin=ADMIN, key=KEY, ua_rule=ua_rule, origin_only=origin_only)


def token(entry: str) -> str:
    return sign_native("k1", bytes.fromhex(KEY), f"/p/demo/e/{entry}", int(time.time()) + 3600)


def master_uris(text: str) -> list[str]:
    parsed = m3u8.loads(text)
    return [p.uri for p in parsed.playlists] + [m.uri for m in parsed.media if m.uri] + [p.uri for p in parsed.iframe_playlists]


def _big_file(path: Path) -> None:
    """~40 MB of incompressible video (lossless noise): big enough that buffering it shows in RSS."""
    import media_fixtures

    media_fixtures.run_ffmpeg([
        "-f", "lavfi", "-i", "nullsrc=size=320x240:rate=25,format=yuv420p,noise=alls=100:allf=t+u", "-t", "14",
        "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-g", "50", "-movflags", "+faststart", str(path),
    ])


@pytest.fixture(scope="module")
def library(tmp_path_factory, media_fixture_paths) -> Path:
    import media_fixtures

    root = tmp_path_factory.mktemp("grants")
    for entry in ENTRIES:
        folder = root / "demo" / entry
        folder.mkdir(parents=True)
        if entry == "big":
            _big_file(folder / "lo.mp4")
            continue
        for flavor, name in media_fixtures.LADDER.items():
            shutil.copy(media_fixture_paths[name], folder / f"{flavor}.mp4")
    return root


def _config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


@pytest.fixture(scope="module")
def servers(library, tmp_path_factory):
    """(all-role server, shielded origin, edge in front of it)."""
    tmp = tmp_path_factory.mktemp("grants-srv")
    common = f'[server]\nmedia_root = "{library}"\nsegment_duration = 4\n'
    shield = f'[cdn]\nshield_secrets = ["{SHIELD}"]\nedge_secrets = ["{EDGE_SECRET}"]\n'
    every = ServerProcess(["--config", str(_config(tmp / "all.toml", common + _partner(ORIGIN_UA_RULE)))], tmp / "all.log")
    origin_toml = _config(tmp / "origin.toml", common + shield + _partner(ORIGIN_UA_RULE, ORIGIN_ONLY))
    origin = ServerProcess(["--config", str(origin_toml)], tmp / "origin.log")
    edge_port = free_port()
    edge_toml = _config(tmp / "edge.toml", f"[edge]\nhealth_interval = 0\n{shield}{_partner()}")
    edge = _ShieldedEdge(edge_toml, origin.base, tmp / "edge.log")
    yield every, origin, edge
    for proc in (edge, origin, every):
        proc.stop()


class _ShieldedEdge(ServerProcess):
    """`vodgate serve --role edge`; its /healthz is open, so ServerProcess's readiness probe works."""

    def __init__(self, config: Path, upstream: str, log: Path) -> None:
        super().__init__(["--role", "edge", "--config", str(config), "--upstream", upstream], log)


def shielded(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=30, headers={SHIELD_HEADER: SHIELD})


# ----------------------------------------------------------------------------------------- 1


@pytest.mark.parametrize("first", ["anonymous", "token"])
def test_1_playlist_cache_is_keyed_on_the_preview_variant(servers, first):
    """A preview viewer's cached playlists never reach a token holder, nor the reverse (both orders)."""
    every, _, _ = servers
    entry = "pv_anon_first" if first == "anonymous" else "pv_token_first"
    viewers = {"anonymous": "", "token": f"?token={token(entry)}"}
    order = [first, *(v for v in viewers if v != first)]
    with httpx.Client(base_url=every.base, timeout=30) as client:
        for viewer in order:
            query = viewers[viewer]
            for fmt in ("hls", "cmaf"):
                master = client.get(f"/p/demo/e/{entry}/{fmt}/master.m3u8{query}")
                assert master.status_code == 200
                uris = master_uris(master.text)
                marked = [u for u in uris if "-p3" in u]
                index = client.get(f"/p/demo/e/{entry}/{fmt}/hi/index.m3u8{query}")
                segments = [s.uri for s in m3u8.loads(index.text).segments]
                if viewer == "anonymous":
                    assert marked and len(marked) == len(uris), f"{fmt}: a preview master lists -p3 playlists: {uris}"
                    assert len(segments) == 1 and "-p3" in segments[0], segments
                else:
                    assert not marked, f"{fmt}: the token holder got the preview master: {uris}"
                    assert len(segments) == 3 and not any("-p3" in s for s in segments), segments


def test_1_preview_viewer_revalidating_past_the_preview_gets_403_not_304(servers):
    every, _, edge = servers
    entry = "pv_anon_first"
    for base, client in ((every.base, httpx.Client(base_url=every.base, timeout=30)), (edge.base, shielded(edge.base))):
        with client:
            full = client.get(f"/p/demo/e/{entry}/hls/hi/seg-2.ts?token={token(entry)}")
            assert full.status_code == 200
            again = client.get(f"/p/demo/e/{entry}/hls/hi/seg-2.ts", headers={"If-None-Match": full.headers["etag"]})
            assert again.status_code == 403, base
            assert again.json()["error"] == "preview_only"


def test_1_after_an_admin_profile_change_cached_playlists_follow_the_new_grant(servers):
    every, _, _ = servers
    entry = "open_profile"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=every.base, timeout=30) as client:
        before = client.get(f"/p/demo/e/{entry}/hls/master.m3u8")
        assert all("-p3" in u for u in master_uris(before.text))
        profile = {"rules": [{"unless": {"authenticated": True}, "then": [{"preview": 7}]}]}
        assert client.put("/admin/partners/demo/profiles/preview", json=profile, headers=admin).status_code == 200
        try:
            after = client.get(f"/p/demo/e/{entry}/hls/master.m3u8")
            uris = master_uris(after.text)
            assert uris and not any("-p3" in u for u in uris), uris
            assert all("-p" in u for u in uris), uris  # a 7 s preview of a 12 s entry: still marked
        finally:
            profile = {"rules": [{"unless": {"authenticated": True}, "then": [{"preview": 3}]}]}
            client.put("/admin/partners/demo/profiles/preview", json=profile, headers=admin)


# ----------------------------------------------------------------------------------------- 2


def test_2_limit_flavors_applies_to_progressive_mp4_on_origin_and_edge(servers):
    every, _, edge = servers
    for client in (httpx.Client(base_url=every.base, timeout=30), shielded(edge.base)):
        with client:
            denied = client.get("/p/demo/e/limited/mp4/hi.mp4")
            assert denied.status_code == 403 and denied.json()["error"] == "flavor_not_allowed"
            assert denied.headers["cache-control"] == "no-store"
            assert client.head("/p/demo/e/limited/mp4/hi.mp4").status_code == 403
            allowed = client.get("/p/demo/e/limited/mp4/lo.mp4", headers={"Range": "bytes=0-99"})
            assert allowed.status_code == 206 and len(allowed.content) == 100


# ----------------------------------------------------------------------------------------- 3


def test_3_an_edge_enforces_its_shield_secrets_full_path_and_hot_lane(servers):
    _, _, edge = servers
    path = "/p/demo/e/pv_edge/hls/hi/seg-2.ts"
    with shielded(edge.base) as client:
        for _ in range(3):  # warm: the second and third answers may come from the hot lane
            assert client.get(f"{path}?token={token('pv_edge')}").status_code == 200
    with httpx.Client(base_url=edge.base, timeout=30) as bare:
        for _ in range(3):
            refused = bare.get(f"{path}?token={token('pv_edge')}")
            assert refused.status_code == 403 and refused.json()["error"] == "shield_required"
        assert bare.get("/p/demo/e/pv_edge/hls/master.m3u8").status_code == 403
        assert bare.get("/healthz").status_code == 200  # load balancers probe without it


def test_3_metrics_on_a_shielded_node_need_the_secret(servers):
    _, origin, edge = servers
    for base in (origin.base, edge.base):
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 403
        with shielded(base) as client:
            answer = client.get("/metrics")
            assert answer.status_code == 200 and "vodgate_" in answer.text


# ----------------------------------------------------------------------------------------- 4, 5


def test_4_edge_playlists_with_a_token_are_private(servers):
    every, _, edge = servers
    query = f"?token={token('pv_edge')}"
    for client in (httpx.Client(base_url=every.base, timeout=30), shielded(edge.base)):
        with client:
            for _ in range(2):  # the second answer comes from the cache
                for path in ("master.m3u8", "hi/index.m3u8"):
                    answer = client.get(f"/p/demo/e/pv_edge/hls/{path}{query}")
                    assert answer.status_code == 200
                    assert answer.headers["cache-control"].startswith("private"), (path, answer.headers["cache-control"])


def test_5_edge_writes_viewer_values_into_uris_as_the_origin_does(servers):
    every, _, edge = servers
    tok = token("pv_edge")
    evil = 'x",URI="http://evil.example/a.m3u8'
    params = {"token": tok, "playSessionId": evil}
    bodies = []
    for client in (httpx.Client(base_url=every.base, timeout=30), shielded(edge.base)):
        with client:
            answer = client.get("/p/demo/e/pv_edge/hls/master.m3u8", params=params)
            assert answer.status_code == 200
            assert "evil.example" not in answer.text
            for line in answer.text.splitlines():
                assert line.count('URI="') <= 1, line
            good = client.get("/p/demo/e/pv_edge/hls/master.m3u8", params={"token": tok, "playSessionId": "abc-123"})
            assert all(u.endswith(f"token={tok}&playSessionId=abc-123") for u in master_uris(good.text))
            bodies.append(good.text)
    assert bodies[0] == bodies[1]  # the edge's personalised playlist is the origin's, byte for byte


# ----------------------------------------------------------------------------------------- 7


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_7_pass_through_streams_and_forwards_head_as_head(servers, library):
    _, origin, edge = servers
    size = (library / "demo" / "big" / "lo.mp4").stat().st_size
    assert size > 30_000_000
    with shielded(edge.base) as client:
        before = _peak_rss_kb(edge.proc.pid)
        got = 0
        with client.stream("GET", "/p/demo/e/big/mp4/lo.mp4") as answer:  # flavor-limited: goes to the origin as the viewer
            assert answer.status_code == 200
            assert answer.headers["content-length"] == str(size)
            for chunk in answer.iter_raw():
                got += len(chunk)
        assert got == size
        grown_mb = (_peak_rss_kb(edge.proc.pid) - before) / 1024
        assert grown_mb < size / 1e6 / 4, f"edge peak RSS grew {grown_mb:.0f} MB relaying a {size / 1e6:.0f} MB file"

        head = client.head("/p/demo/e/big/mp4/lo.mp4")
        assert head.status_code == 200 and head.headers["content-length"] == str(size)
        time.sleep(0.2)
        seen = re.findall(r'"(GET|HEAD) /p/demo/e/big/mp4/lo\.mp4 HTTP/1\.1"', origin.log())
        assert seen[-1] == "HEAD", seen  # a HEAD reaches the origin as a HEAD, not as a GET of 40 MB



def test_7_header_bytes_outside_ascii_get_the_origins_answer_not_a_500(servers):
    every, _, edge = servers
    agent = b"Mozilla/5.0 \xff\xfe caf\xe9"
    answers = []
    for base, extra in ((every.base, []), (edge.base, [(SHIELD_HEADER.encode(), SHIELD.encode())])):
        for path in ("/p/demo/e/ua/hls/master.m3u8", "/p/demo/e/ua/hls/hi/seg-1-p3.ts"):
            status = _raw_get(base, path, [(b"User-Agent", agent), (b"Referer", b"http://\xe9xample.com/"), *extra])
            answers.append(status)
            assert status in (200, 400), (base, path, status)
    assert answers[:2] == answers[2:], answers  # the edge answers as the origin does


def _raw_get(base: str, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    import socket

    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" % path.encode()
        head += b"".join(b"%s: %s\r\n" % pair for pair in headers) + b"\r\n"
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


# ----------------------------------------------------------------------------------------- 8


def test_8_preview_markers_are_keyed_on_the_clip_not_the_spelling(servers):
    every, _, _ = servers
    tok = token("markers")
    with httpx.Client(base_url=every.base, timeout=30) as client:
        # markers past the media's end: no clip at all, so every spelling is the full segment, packaged once
        spellings = ["p13", "p14", "p20", "p99", "p100.5", "p999999", "p13.000", "p0013"]
        first = client.get(f"/p/demo/e/markers/hls/hi/seg-2-{spellings[0]}.ts?token={tok}")
        assert first.status_code == 200
        full = client.get(f"/p/demo/e/markers/hls/hi/seg-2.ts?token={tok}")
        assert full.content == first.content and full.headers["x-cache"] == "HIT"
        for spelling in spellings[1:]:
            again = client.get(f"/p/demo/e/markers/hls/hi/seg-2-{spelling}.ts?token={tok}")
            assert again.status_code == 200 and again.content == first.content
            assert again.headers["x-cache"] == "HIT", spelling
            assert again.headers["etag"] == first.headers["etag"]
            assert again.headers["content-location"] == "/p/demo/e/markers/hls/hi/seg-2.ts"  # the bytes' one name
        # markers that cut segment 1 at the same frame: one clip, one object
        preview = client.get(f"/p/demo/e/markers/hls/hi/index.m3u8")
        (clipped,) = [s.uri for s in m3u8.loads(preview.text).segments]
        canonical = client.get(f"/p/demo/e/markers/hls/hi/{clipped}")
        assert canonical.status_code == 200
        marker = Fraction(re.fullmatch(r"seg-1-p([0-9.]+)\.ts", clipped)[1])
        assert marker <= 3
        near = marker + Fraction(20, 1000)  # another preview length that ends at the same frame (25 fps)
        # (the longer one asked by the token holder: an anonymous viewer may not ask past its 3 s)
        for spelling, query in [(s, "") for s in ("p3", "p3.0", "p3.00", "p03")] + [(f"p{float(near):g}", f"?token={tok}")]:
            again = client.get(f"/p/demo/e/markers/hls/hi/seg-1-{spelling}.ts{query}")
            assert again.status_code == 200 and again.content == canonical.content, spelling
            assert again.headers["x-cache"] == "HIT", spelling
            assert again.headers["etag"] == canonical.headers["etag"], spelling
        # the playlist's marker names the clip: asking for it with the viewer's N lists the same URIs
        assert client.get(f"/p/demo/e/markers/hls/hi/index-p3.m3u8").text == preview.text


def test_8_progressive_markers_name_the_clip_and_past_the_end_the_file(servers):
    every, _, _ = servers
    tok = token("markers")
    with httpx.Client(base_url=every.base, timeout=30) as client:
        whole = client.get(f"/p/demo/e/markers/mp4/lo.mp4?token={tok}")
        for spelling in ("p12", "p13", "p999999"):
            past = client.get(f"/p/demo/e/markers/mp4/lo-{spelling}.mp4?token={tok}")
            assert past.status_code == 200 and past.content == whole.content, spelling
            assert past.headers["etag"] == whole.headers["etag"], spelling
        redirect = client.get("/p/demo/e/markers/mp4/lo.mp4")  # the anonymous 3 s preview
        assert redirect.status_code == 302 and redirect.headers["cache-control"] == "no-store"
        marker = re.fullmatch(r"/p/demo/e/markers/mp4/lo-p([0-9]+(?:\.[0-9]{1,3})?)\.mp4", redirect.headers["location"])
        assert marker is not None and Fraction(marker[1]) <= 3, redirect.headers["location"]
        clip = client.get(redirect.headers["location"])
        assert clip.status_code == 200 and 0 < len(clip.content) < len(whole.content)
        same = client.get(f"/p/demo/e/markers/mp4/lo-p3.mp4")
        assert same.content == clip.content and same.headers["etag"] == clip.headers["etag"]


# ----------------------------------------------------------------------------------------- vouching


def test_the_edges_decision_is_what_the_origin_applies(servers):
    """The origin applies the grant its edge vouches for, not its own rules (they may differ during a rollout)."""
    _, origin, edge = servers
    with shielded(edge.base) as client:
        # the origin opens "divergent" to everyone; this edge gives anonymous viewers a 3 s preview
        master = client.get("/p/demo/e/divergent/hls/master.m3u8")
        assert master.status_code == 200 and all("-p3" in u for u in master_uris(master.text)), master.text
        assert client.get("/p/demo/e/divergent/hls/hi/seg-2.ts").status_code == 403
        assert client.get("/p/demo/e/divergent/mp4/hi.mp4").status_code == 302
        # the origin blocks bots on "ua"; this edge does not: its preview grant is applied
        bot = client.get("/p/demo/e/ua/hls/master.m3u8", headers={"User-Agent": "Evilbot/1.0"})
        assert bot.status_code == 200 and all("-p3" in u for u in master_uris(bot.text))
    with shielded(origin.base) as direct:
        assert direct.get("/p/demo/e/divergent/hls/hi/seg-2.ts").status_code == 200  # the origin's own rules


def test_the_shield_secret_and_a_forged_vouch_are_not_a_grant(servers):
    """A CDN forwards viewers' headers beside its shield secret: X-Vodgate-Edge-Checked from a viewer is ignored."""
    every, origin, edge = servers
    forged = {"X-Vodgate-Edge-Checked": "1", "X-Vodgate-Edge-Grant": "full", "User-Agent": "Evilbot/1.0"}
    for base in (origin.base, edge.base):
        with shielded(base) as client:
            assert client.get("/p/demo/e/ua/hls/hi/seg-2.ts", headers=forged).status_code == 403
            assert client.get("/p/demo/e/pv_edge/hls/hi/seg-3.ts", headers=forged).status_code == 403
            wrong = {**forged, "X-Vodgate-Edge-Checked": EDGE_SECRET[:-1] + "x"}
            assert client.get("/p/demo/e/pv_edge/mp4/hi.mp4", headers=wrong).status_code == 302
    with httpx.Client(base_url=every.base, timeout=30) as client:
        assert client.get("/p/demo/e/pv_edge/hls/hi/seg-3.ts", headers=forged).status_code == 403
    with shielded(origin.base) as client:  # with the edge secret: the vouched grant, which is ours to give
        vouched = {"X-Vodgate-Edge-Checked": EDGE_SECRET, "X-Vodgate-Edge-Grant": "preview=3"}
        assert client.get("/p/demo/e/divergent/hls/hi/seg-2.ts", headers=vouched).status_code == 403
        vouched["X-Vodgate-Edge-Grant"] = "preview=abc"
        assert client.get("/p/demo/e/divergent/hls/hi/seg-2.ts", headers=vouched).status_code == 400


def test_an_edge_with_rules_and_no_edge_secret_refuses_to_start(tmp_path, servers):
    _, origin, _ = servers
    config = _config(tmp_path / "edge.toml", f"[edge]\nhealth_interval = 0\n{_partner()}")
    with pytest.raises(RuntimeError, match="cdn.edge_secrets"):
        _ShieldedEdge(config, origin.base, tmp_path / "edge.log")


def test_only_a_verified_token_is_written_into_playlists(servers):
    every, _, _ = servers
    junk = "x" * 3000
    with httpx.Client(base_url=every.base, timeout=30) as client:
        answer = client.get(f"/p/demo/e/pv_edge/hls/hi/index.m3u8?token={junk}")
        assert answer.status_code == 200 and junk not in answer.text and len(answer.text) < 2000
        good = token("pv_edge")
        answer = client.get(f"/p/demo/e/pv_edge/hls/hi/index.m3u8?token={good}")
        assert all(s.uri.endswith(f"token={good}") for s in m3u8.loads(answer.text).segments)


def test_7_one_value_per_header_name_upstream(tmp_path):
    """A viewer's User-Agent replaces the edge's own (header names are case-insensitive), sent once."""
    import asyncio

    from edge.upstream import UpstreamPool

    async def scenario() -> bytes:
        heads: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool([f"http://127.0.0.1:{port}"], health_interval=0, headers={"user-agent": "configured"})
        try:
            answer = await pool.fetch("/x", "", {"User-Agent": b"Viewer/1.0 \xff"})
            assert answer.status == 200 and answer.content == b"ok"
        finally:
            await pool.close()
            server.close()
        return heads[0]

    head = asyncio.run(scenario()).lower()
    assert head.count(b"user-agent:") == 1 and b"user-agent: viewer/1.0 \xff" in head, head


def test_an_edge_without_the_partners_rules_refuses_its_media_instead_of_sharing_it(tmp_path, servers):
    """An edge configured without a partner's rules would cache a token holder's answer for everyone:
    the origin marks restricted media (X-Vodgate-Access), and such an edge answers 502 edge_misconfigured."""
    _, origin, _ = servers
    config = _config(tmp_path / "bare.toml", f'[edge]\nhealth_interval = 0\nupstream_headers = {{ "{SHIELD_HEADER}" = "{SHIELD}" }}\n')
    bare = _ShieldedEdge(config, origin.base, tmp_path / "bare.log")
    try:
        with httpx.Client(base_url=bare.base, timeout=30) as client:
            for query in (f"?token={token('pv_edge')}", ""):
                for path in ("hls/hi/seg-3.ts", "mp4/lo.mp4", "hls/master.m3u8"):
                    answer = client.get(f"/p/demo/e/pv_edge/{path}{query}")
                    assert answer.status_code == 502 and answer.json()["error"] == "edge_misconfigured", (path, query)
    finally:
        bare.stop()
    assert bare.log().count("has access rules on the origin and none on this edge") == 1
