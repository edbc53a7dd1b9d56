"""Edge role in one process: the real origin app behind a scriptable transport, a fake clock.

FakeUpstreams routes each upstream host to an in-process origin
(``create_app`` over the fixture library) and can make a host refuse
connections, time out or answer 503; it records every request the edge
sends, so the tests count what the origin saw. Process-level tests (real
sockets, Redis, killed origins) are in tests/test_edge_role.py.
"""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import httpx
import pytest

from auth.access import AccessControl
from auth.tokens import sign_native
from config.settings import Settings, parse_settings
from edge.app import create_app
from edge.cache import COALESCED, HIT, MISS
from config.edge import EdgeConfig, edge_config_from_table, parse_edge_section
from edge.proxy import STALE, Stored, create_edge_app, flavor_subset_query, freshness
from edge.purge import PurgeError, PurgeRequest
from packager.hls.uris import with_query as add_query_to_playlist
from edge.upstream import UpstreamPool, UpstreamUnavailable

O1, O2 = "http://origin-1:8080", "http://origin-2:8080"


# --------------------------------------------------------------------------- pure helpers


MASTER = (
    "#EXTM3U\n"
    '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="eng",URI="hi/a1/index.m3u8"\n'
    '#EXT-X-STREAM-INF:BANDWIDTH=100,AUDIO="aud"\n'
    "hi/index.m3u8\n"
    '#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=10,URI="hi/iframes.m3u8"\n'
)


def test_add_query_to_playlist_covers_uri_lines_and_attributes():
    out = add_query_to_playlist(MASTER, "token=abc%3D&playSessionId=s1")
    assert 'URI="hi/a1/index.m3u8?token=abc%3D&playSessionId=s1"' in out
    assert "\nhi/index.m3u8?token=abc%3D&playSessionId=s1\n" in out
    assert 'URI="hi/iframes.m3u8?token=abc%3D&playSessionId=s1"' in out
    assert out.count("token=") == 3 and out.startswith("#EXTM3U\n")
    media = '#EXTM3U\r\n#EXT-X-MAP:URI="init.mp4"\r\n#EXTINF:4.0,\r\nseg-1.m4s?token=old&x=1\r\n#EXT-X-KEY:METHOD=AES-128,URI="data:text/plain;base64,AA=="\r\n'
    out = add_query_to_playlist(media, "token=new")
    assert 'URI="init.mp4?token=new"' in out and "seg-1.m4s?x=1&token=new\r\n" in out  # replaced, not duplicated
    assert 'URI="data:text/plain;base64,AA=="' in out and out.count("\r\n") == 5
    assert add_query_to_playlist(MASTER, "") == MASTER


def test_key_query():
    assert flavor_subset_query("mid, hi,mid") == "flavors=hi,mid"
    assert flavor_subset_query(None) == ""
    with pytest.raises(Exception, match="flavors="):
        flavor_subset_query("hi,../x")


def test_freshness_follows_the_origin_within_our_ttl():
    assert freshness({"cache-control": "public, max-age=31536000, immutable"}, 60) == 60
    assert freshness({"cache-control": "public, max-age=5"}, 60) == 5
    assert freshness({"cache-control": "max-age=100, s-maxage=7"}, 60) == 7
    assert freshness({"cache-control": "no-store"}, 60) == 0
    assert freshness({"cache-control": "private, max-age=100"}, 60) == 0
    assert freshness({}, 60) == 60


def test_stored_roundtrip():
    stored = Stored(200, {"etag": '"x"'}, 123.5, 60.0, b"body", {"size": 4})
    back = Stored.decode(stored.encode())
    assert (back.status, back.headers, back.fetched, back.ttl, bytes(back.body), back.extra) == (200, {"etag": '"x"'}, 123.5, 60.0, b"body", {"size": 4})
    assert Stored.decode(b"garbage") is None


def test_purge_requests_are_validated():
    assert PurgeRequest(partner="demo").key_prefix() == "/p/demo/"
    assert PurgeRequest(partner="demo", entry="ladder").key_prefix() == "/p/demo/e/ladder/"
    assert PurgeRequest(prefix="https://cdn.example/p/demo/e/ladder/hls/?token=1").key_prefix() == "/p/demo/e/ladder/hls/"
    for bad in (PurgeRequest(), PurgeRequest(entry="x"), PurgeRequest(partner="a/b"), PurgeRequest(prefix="/p/../etc"),
                PurgeRequest(prefix="/healthz"), PurgeRequest(partner="a", prefix="/p/a/")):
        with pytest.raises(PurgeError):
            bad.key_prefix()
    assert PurgeRequest(prefix="/p/demo/e/x/").scope_partner == "demo" and PurgeRequest(partner="dev").scope_partner == "dev"
    with pytest.raises(PurgeError, match="whole partner"):
        PurgeRequest(prefix="/p/de").key_prefix()  # would reach partners demo and dev alike
    with pytest.raises(PurgeError, match="unknown purge field"):
        PurgeRequest.from_dict({"partner": "a", "all": True})


def test_edge_config_from_toml_table_names_key_and_fix():
    from config.settings import ConfigError

    config = edge_config_from_table({"role": "edge", "upstreams": ["http://o:1/"], "ttl": 30, "chunk_kb": 512,
                                     "upstream_headers": {"X-Origin-Shield": "s"}})
    assert config.upstreams == ("http://o:1",) and config.ttl == 30 and config.chunk_size == 512 * 1024
    assert dict(config.upstream_headers) == {"X-Origin-Shield": "s"}
    assert edge_config_from_table({}, upstreams=["http://cli:2"]).upstreams == ("http://cli:2",)
    with pytest.raises(ConfigError, match="edge.read_timeout"):
        edge_config_from_table({"upstreams": ["http://o:1"], "read_timeout": "fast"})
    with pytest.raises(ConfigError, match="edge.role"):
        edge_config_from_table({"role": "cdn", "upstreams": ["http://o:1"]})
    with pytest.raises(ConfigError, match="--upstream"):
        edge_config_from_table({"upstreams": []})
    with pytest.raises(ConfigError, match="not an http"):
        edge_config_from_table({"upstreams": ["ftp://o"]})
    assert parse_edge_section({}) == ("all", None)
    role, parsed = parse_edge_section({"ttl": 5}, role="edge", upstreams=["http://o:1"])
    assert role == "edge" and parsed.ttl == 5 and parsed.upstreams == ("http://o:1",)
    with pytest.raises(ConfigError, match=r"edge.tll \(did you mean edge.ttl\?\)"):
        parse_edge_section({"tll": 5})  # checked even when the role is not edge
    with pytest.raises(ConfigError, match="--role"):
        parse_edge_section({}, role="proxy")
    assert parse_edge_section({}, upstreams=["http://o:1"])[0] == "edge"  # --upstream alone means an edge
    with pytest.raises(ConfigError, match="--role edge"):
        parse_edge_section({}, role="origin", upstreams=["http://o:1"])


# --------------------------------------------------------------------------- an edge over in-process origins


class FakeUpstreams(httpx.AsyncBaseTransport):
    def __init__(self, origin_app) -> None:
        self.origin = httpx.ASGITransport(origin_app)
        self.mode: dict[str, str] = {}  # host -> refuse | timeout | 503
        self.log: list[tuple[str, str, str, dict[str, str]]] = []  # (host, method, path?query, headers)
        self.delay = 0.0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = f"http://{request.url.netloc.decode()}"
        self.log.append((host, request.method, request.url.raw_path.decode(), dict(request.headers)))
        mode = self.mode.get(host)
        if mode == "refuse":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if mode == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if mode == "503":
            return httpx.Response(503, json={"error": "overloaded", "detail": "try later"})
        if self.delay:
            await asyncio.sleep(self.delay)
        return await self.origin.handle_async_request(request)

    def count(self, path: str, host: str | None = None) -> int:
        return sum(1 for h, _, p, _ in self.log if p.split("?")[0] == path and p != "/healthz" and (host is None or h == host))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, library, tmp_path=None, **edge_kw) -> None:
        origin_settings = Settings(media_root=library, segment_duration=Fraction(4))
        self.upstreams = FakeUpstreams(create_app(origin_settings))
        self.clock = Clock()
        access = edge_kw.pop("access", None)
        config = EdgeConfig(upstreams=edge_kw.pop("upstreams", (O1, O2)), health_interval=0, **edge_kw)
        settings = Settings(cache_memory_mb=64, cache_disk_path=tmp_path)
        self.app = create_edge_app(settings, config, client=httpx.AsyncClient(transport=self.upstreams), clock=self.clock,
                                   access=access)
        self.edge = self.app.state.edge
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(self.app), base_url="http://edge", timeout=30)

    async def get(self, path: str, **kw) -> httpx.Response:
        return await self.client.get(path, **kw)

    async def close(self) -> None:
        await self.client.aclose()
        await self.edge.close()


def scenario(media_library, body, tmp_path=None, **edge_kw):
    async def main():
        harness = Harness(media_library, tmp_path, **edge_kw)
        try:
            return await body(harness)
        finally:
            await harness.close()

    return asyncio.run(main())


SEG = "/p/demo/e/ladder/hls/hi/seg-2.ts"
TOKEN_KEY = "00112233445566778899aabbccddeeff"
MASTER_PATH = "/p/demo/e/ladder/hls/master.m3u8"


def test_segments_are_cached_and_ranges_answered_from_cache(media_library):
    async def body(h: Harness):
        first = await h.get(SEG)
        second = await h.get(SEG + "?token=someone")
        ranged = await h.get(SEG, headers={"Range": "bytes=188-375"})
        not_modified = await h.get(SEG, headers={"If-None-Match": first.headers["etag"]})
        head = await h.client.head(SEG)
        return first, second, ranged, not_modified, head, h.upstreams.count(SEG)

    first, second, ranged, not_modified, head, upstream = scenario(media_library, body)
    assert first.status_code == 200 and first.headers["x-cache"] == MISS and first.headers["content-type"] == "video/mp2t"
    assert second.headers["x-cache"] == HIT and second.content == first.content
    assert ranged.status_code == 206 and ranged.content == first.content[188:376] and ranged.headers["x-cache"] == HIT
    assert ranged.headers["content-range"] == f"bytes 188-375/{len(first.content)}"
    assert not_modified.status_code == 304 and not_modified.headers["x-cache"] == HIT
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(first.content)
    assert upstream == 1


def test_100_concurrent_misses_make_one_upstream_request(media_library):
    async def body(h: Harness):
        h.upstreams.delay = 0.05
        responses = await asyncio.gather(*(h.get(SEG) for _ in range(100)))
        return responses, h.upstreams.count(SEG)

    responses, upstream = scenario(media_library, body)
    statuses = [r.headers["x-cache"] for r in responses]
    assert upstream == 1
    assert statuses.count(MISS) == 1 and statuses.count(COALESCED) == 99
    assert len({r.content for r in responses}) == 1 and all(r.status_code == 200 for r in responses)


def test_playlists_are_cached_token_free_and_built_per_viewer(media_library):
    # partner demo has token keys and no rule: tokens are verified (only a verified one is propagated)
    access = AccessControl(parse_settings({"partners": {"demo": {"token_keys": {"k1": TOKEN_KEY}}}}).access)
    aaa, bbb = (sign_native("k1", bytes.fromhex(TOKEN_KEY), "/p/demo/e/ladder", int(time.time()) + 3600 + i) for i in (0, 1))

    async def body(h: Harness):
        a = await h.get(MASTER_PATH + f"?token={aaa}&flavors=mid,hi&playSessionId=s1")
        b = await h.get(MASTER_PATH + f"?flavors=hi,mid&token={bbb}")
        plain = await h.get(MASTER_PATH + "?flavors=hi,mid&unrelated=1")
        whole = await h.get(MASTER_PATH)
        index = await h.get(f"/p/demo/e/ladder/hls/hi/index.m3u8?token={aaa}")
        junk = await h.get("/p/demo/e/ladder/hls/hi/index.m3u8?token=AAA")
        upstream_master = [p for _, _, p, _ in h.upstreams.log if p.startswith(MASTER_PATH)]
        upstream_index = [p for _, _, p, _ in h.upstreams.log if p.startswith("/p/demo/e/ladder/hls/hi/index.m3u8")]
        return a, b, plain, whole, index, junk, upstream_master, upstream_index

    a, b, plain, whole, index, junk, upstream_master, upstream_index = scenario(media_library, body, access=access)
    assert [r.headers["x-cache"] for r in (a, b, plain, whole)] == [MISS, HIT, HIT, MISS]
    # upstream saw the normalized subset, never a token; one fetch per distinct body
    assert upstream_master == [MASTER_PATH + "?flavors=hi,mid", MASTER_PATH]
    assert upstream_index == ["/p/demo/e/ladder/hls/hi/index.m3u8"]
    assert f"token={aaa}&playSessionId=s1" in a.text and bbb not in a.text
    assert f"token={bbb}" in b.text and aaa not in b.text and "playSessionId" not in b.text  # (a token may hold "s1")
    assert "token" not in plain.text and "unrelated" not in plain.text
    assert "lo/index.m3u8" in whole.text and "lo/index.m3u8" not in plain.text
    assert len({a.headers["etag"], b.headers["etag"], plain.headers["etag"]}) == 3
    uris = [line for line in index.text.splitlines() if line and not line.startswith("#")]
    assert uris and all(u.endswith(f"?token={aaa}") for u in uris)
    assert "AAA" not in junk.text  # a token that does not verify is not carried into playlists


def test_failover_marks_a_refusing_upstream_down(media_library):
    async def body(h: Harness):
        h.upstreams.mode[O1] = "refuse"
        first = await h.get(SEG)
        second = await h.get("/p/demo/e/ladder/hls/hi/seg-3.ts")
        status = h.edge.pool.status()
        return first, second, status, [host for host, *_ in h.upstreams.log]

    first, second, status, hosts = scenario(media_library, body)
    assert first.status_code == second.status_code == 200
    assert hosts == [O1, O2, O2]  # o1 tried once, then skipped while down
    assert status[0]["up"] is False and "refused" in status[0]["last_error"] and status[1]["up"] is True


def test_404_is_cached_briefly(media_library):
    path = "/p/demo/e/nosuch/hls/master.m3u8"

    async def body(h: Harness):
        first, second = await h.get(path), await h.get(path)
        h.clock.now += 11
        third = await h.get(path)
        return first, second, third, h.upstreams.count(path)

    first, second, third, upstream = scenario(media_library, body, negative_ttl=10)
    assert first.status_code == second.status_code == third.status_code == 404
    assert first.json()["error"] == "unknown_entry"
    assert (first.headers["x-cache"], second.headers["x-cache"], third.headers["x-cache"]) == (MISS, HIT, MISS)
    assert upstream == 2


def test_malformed_paths_never_reach_upstream(media_library):
    async def body(h: Harness):
        return await h.get("/p/demo/e/ladder/hls/hi/seg-0.ts"), await h.get("/p/demo/e/x/hls/hi/nope.txt"), len(h.upstreams.log)

    bad, missing, sent = scenario(media_library, body)
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request" and bad.headers["x-cache"] == MISS
    assert missing.status_code == 404 and sent == 0


def test_origin_media_errors_are_relayed_not_cached(media_library):
    path = "/p/bad/e/corrupt/hls/main/index.m3u8"

    async def body(h: Harness):
        return await h.get(path), await h.get(path), h.upstreams.count(path)

    first, second, upstream = scenario(media_library, body)
    assert first.status_code == 500 and first.json()["error"] in ("malformed_media", "truncated_media")
    assert second.status_code == 500 and upstream == 4  # both upstreams asked, each time


def test_stale_if_error_then_502_naming_the_upstreams(media_library):
    async def body(h: Harness):
        fresh = await h.get(SEG)
        h.clock.now += 5
        still_fresh = await h.get(SEG)
        h.upstreams.mode.update({O1: "refuse", O2: "503"})
        h.clock.now += 20  # past ttl: stale, and every upstream fails
        stale = await h.get(SEG)
        stale_again = await h.get(SEG)  # both marked down: served at once, no upstream attempt
        attempts = len(h.upstreams.log)
        cold = await h.get("/p/demo/e/ladder/hls/hi/seg-5.ts")
        h.clock.now += 200  # beyond the stale-if-error bound
        too_old = await h.get(SEG)
        return fresh, still_fresh, stale, stale_again, attempts, cold, too_old

    fresh, still_fresh, stale, stale_again, attempts, cold, too_old = scenario(media_library, body, ttl=10, stale_if_error=100)
    assert (fresh.headers["x-cache"], still_fresh.headers["x-cache"]) == (MISS, HIT)
    assert stale.status_code == 200 and stale.headers["x-cache"] == STALE and stale.content == fresh.content
    assert stale_again.headers["x-cache"] == STALE and attempts == 3  # 1 fill + 2 failed refresh tries
    for response in (cold, too_old):
        assert response.status_code == 502 and response.headers["x-cache"] == MISS
        body = response.json()
        assert body["error"] == "upstream_unavailable"
        assert O1 in body["detail"] and O2 in body["detail"] and "refused" in body["detail"] and "503" in body["detail"]


def test_timeouts_everywhere_give_504(media_library):
    async def body(h: Harness):
        h.upstreams.mode.update({O1: "timeout", O2: "timeout"})
        return await h.get(SEG)

    response = scenario(media_library, body)
    assert response.status_code == 504 and response.json()["error"] == "upstream_timeout"
    assert "timed out" in response.json()["detail"]


def test_expired_objects_are_revalidated_with_a_conditional_request(media_library):
    async def body(h: Harness):
        first = await h.get(SEG)
        h.clock.now += 61
        second = await h.get(SEG)
        third = await h.get(SEG)
        return first, second, third, [hdr for *_, hdr in h.upstreams.log]

    first, second, third, headers = scenario(media_library, body, ttl=60)
    assert len(headers) == 2 and headers[1]["if-none-match"] == first.headers["etag"]
    assert second.headers["x-cache"] == HIT and third.headers["x-cache"] == HIT  # 304: no body moved
    assert second.content == first.content


def test_progressive_seek_fetches_only_the_chunks_it_touches(media_library):
    path = "/p/demo/e/ladder/mp4/hi.mp4"
    data = (media_library / "demo/ladder/hi.mp4").read_bytes()
    chunk = 64 * 1024

    async def body(h: Harness):
        seek = await h.get(path, headers={"Range": "bytes=700000-700099"})
        seek_requests = [hdr.get("range") for host, _, p, hdr in h.upstreams.log if p == path]
        span = await h.get(path, headers={"Range": f"bytes={chunk - 10}-{3 * chunk + 9}"})
        whole = await h.get(path)
        h.upstreams.log.clear()
        again = await h.get(path)
        tail = await h.get(path, headers={"Range": "bytes=-100"})
        head = await h.client.head(path)
        return seek, seek_requests, span, whole, again, tail, head, len(h.upstreams.log)

    seek, seek_requests, span, whole, again, tail, head, later = scenario(media_library, body, chunk_size=chunk)
    assert seek.status_code == 206 and seek.content == data[700000:700100]
    assert seek.headers["content-range"] == f"bytes 700000-700099/{len(data)}" and seek.headers["x-cache"] == MISS
    assert seek_requests == [f"bytes=0-{chunk - 1}", f"bytes={10 * chunk}-{11 * chunk - 1}"]  # first chunk + the one sought
    assert span.status_code == 206 and span.content == data[chunk - 10 : 3 * chunk + 10]
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    assert again.content == data and again.headers["x-cache"] == HIT and tail.content == data[-100:]
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)
    assert later == 0  # everything after the first full read came from the cache


def test_purge_by_partner_entry_and_prefix(media_library):
    async def body(h: Harness):
        await h.get(SEG)
        await h.get(MASTER_PATH)
        await h.get("/p/demo/e/h264_baseline/hls/main/seg-1.ts")
        by_prefix = await h.edge.purge(PurgeRequest(prefix="/p/demo/e/ladder/hls/hi/"))
        after_prefix = [(await h.get(p)).headers["x-cache"] for p in (SEG, MASTER_PATH)]
        by_entry = await h.edge.purge(PurgeRequest(partner="demo", entry="ladder"))
        other = (await h.get("/p/demo/e/h264_baseline/hls/main/seg-1.ts")).headers["x-cache"]
        by_partner = await h.edge.purge(PurgeRequest(partner="demo"))
        gone = (await h.get("/p/demo/e/h264_baseline/hls/main/seg-1.ts")).headers["x-cache"]
        return by_prefix, after_prefix, by_entry, other, by_partner, gone

    by_prefix, after_prefix, by_entry, other, by_partner, gone = scenario(media_library, body)
    assert by_prefix.removed == 1 and by_prefix.notified is None
    assert after_prefix == [MISS, HIT]
    assert by_entry.removed == 2 and other == HIT
    assert by_partner.removed == 1 and gone == MISS


def test_disk_tier_keeps_the_edge_cache_across_restarts(media_library, tmp_path):
    async def warm(h: Harness):
        return await h.get(SEG)

    async def restarted(h: Harness):
        h.upstreams.mode.update({O1: "refuse", O2: "refuse"})
        return await h.get(SEG)

    first = scenario(media_library, warm, tmp_path)
    again = scenario(media_library, restarted, tmp_path)
    assert again.status_code == 200 and again.headers["x-cache"] == HIT and again.content == first.content


def test_pool_requires_upstreams_and_probes_health():
    with pytest.raises(ValueError):
        UpstreamPool([])

    async def main():
        def handler(request: httpx.Request) -> httpx.Response:
            healthy = request.url.host == "up" and request.url.path == "/healthz"
            return httpx.Response(200 if healthy else 503, json={"status": "ok"})

        pool = UpstreamPool(["http://up:1", "http://sick:1"], client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        await pool.probe_all()
        status = pool.status()
        with pytest.raises(UpstreamUnavailable) as info:
            await pool.fetch("/x")
        return status, info.value

    status, error = asyncio.run(main())
    assert [s["up"] for s in status] == [True, False]
    assert error.status == 502 and "http://sick:1: HTTP 503" in error.detail and "http://up:1: HTTP 503" in error.detail
