"""Edge role as separate processes on 127.0.0.1: an origin (`vodgate serve`), edges, Redis.

Origin and edges run the real CLI (`vodgate serve --role edge --upstream URL
--config edge.toml`); each edge's TOML carries its [edge] tuning and the
partner's admin secret that /admin/partners/demo/purge requires.
The origin's uvicorn access log is the request counter: it lists every
request the origin saw.

Redis: a real ``redis-server`` on a free port. When it is not installed the
tests that need it skip, unless VODGATE_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script (the edge launcher)
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import pytest  # noqa: E402

from conftest import hot_answers_in  # noqa: E402

# --------------------------------------------------------------------------- helpers: processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A server subprocess that answers /healthz; its output goes to a log file."""

    def __init__(self, cmd: list[str], port: int, log_path: Path, health: str = "/healthz") -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base}{health}", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{cmd[:4]} did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def start_origin(media: Path, log_dir: Path) -> Process:
    port = free_port()
    cmd = [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--media", str(media), "--segment-duration", "4", "--workers", "1"]  # its cache counters are one process's
    return Process(cmd, port, log_dir / f"origin-{port}.log")


ADMIN_SECRET = "edge-test-admin-secret"
TOKEN_KEY = "00112233445566778899aabbccddeeff"  # the edges verify tokens (only a verified one is carried into playlists)


def viewer_token(entry: str, salt: int) -> str:
    from auth.tokens import sign_native

    return sign_native("k1", bytes.fromhex(TOKEN_KEY), f"/p/demo/e/{entry}", int(time.time()) + 3600 + salt)
ADMIN = {"Authorization": f"Bearer {ADMIN_SECRET}"}


def start_edge(upstreams: list[str], log_dir: Path, redis: str | None = None, **tuning: float) -> Process:
    """`vodgate serve --role edge` with ``tuning`` as its [edge] table (ttl, chunk_kb, health_interval...)."""
    port = free_port()
    edge = {"down_seconds": max(1.0, 2 * tuning.get("health_interval", 5)), **tuning}
    lines = ["[cache]", "memory_mb = 64", "[edge]", *(f"{k} = {v}" for k, v in edge.items()),
             "[partners.demo]", f'admin_secret = "{ADMIN_SECRET}"', f'token_keys = {{ k1 = "{TOKEN_KEY}" }}']
    config = log_dir / f"edge-{port}.toml"
    config.write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "cli.main", "serve", "--role", "edge", "--config", str(config),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    for url in upstreams:
        cmd += ["--upstream", url]
    if redis:
        cmd += ["--redis", redis]
    return Process(cmd, port, log_dir / f"edge-{port}.log")


def origin_requests(origin: Process, path: str) -> list[str]:
    """Requests for ``path`` (any query) in the origin's access log, as ``METHOD path?query``."""
    pattern = re.compile(rf'"(GET|HEAD) ({re.escape(path)}(?:\?[^"]*?)?) HTTP/1\.1"')
    return [f"{m[1]} {m[2]}" for m in pattern.finditer(origin.log())]


def wait_for(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- Redis


def services_required() -> bool:
    return os.environ.get("VODGATE_REQUIRE_SERVICES") == "1"


def _missing(reason: str):
    if services_required():
        pytest.fail(f"{reason} (VODGATE_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


class RedisServer:
    def __init__(self, exe: str, workdir: Path, port: int | None = None) -> None:
        self.exe, self.workdir = exe, workdir
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log = open(workdir / f"redis-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self._log.close()


def _redis_exe() -> str | None:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    return exe if os.path.exists(exe) else None


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A private redis-server, or None when not installed (tests that need it skip, or fail in CI)."""
    exe = _redis_exe()
    try:
        import redis  # noqa: F401
    except ImportError:
        exe = None
    if exe is None:
        if services_required():
            pytest.fail("redis-server or the redis Python package is missing (VODGATE_REQUIRE_SERVICES=1)")
        yield None
        return
    server = RedisServer(exe, tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def need_redis(redis_server) -> "RedisServer":
    if redis_server is None:
        _missing("redis-server is not installed (apt-get install redis-server) or `pip install redis` is missing")
    return redis_server


# --------------------------------------------------------------------------- the deployment under test


@pytest.fixture(scope="module")
def deployment(media_library, redis_server, tmp_path_factory):
    """One origin; edge A (a dead upstream first, then the origin) and edge B, sharing Redis."""
    logs = tmp_path_factory.mktemp("edge-role")
    origin = start_origin(media_library, logs)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    redis = redis_server.url if redis_server is not None else None
    edges = []
    try:
        edges.append(start_edge([dead, origin.base], logs, redis, chunk_kb=64, health_interval=1))
        edges.append(start_edge([origin.base], logs, redis, chunk_kb=64, health_interval=1))
        yield origin, edges[0], edges[1], dead
    finally:
        for proc in (*edges, origin):
            proc.stop()


def _decode_checks(base: str) -> None:
    """A player session: master -> variant -> segments (video), and audio, decoded bit-exactly."""
    import oracle
    from test_hls_decode import get_master, source_frames, variant_index

    master = get_master(base, "ladder", "hls")
    n = variant_index(master, "hi")
    ours = oracle.framemd5(f"{base}/p/demo/e/ladder/hls/master.m3u8", f"p:{n}:v")
    assert [f.md5 for f in ours] == [f.md5 for f in source_frames("ladder_hi", "v:0")]
    cmaf = oracle.framemd5(f"{base}/p/demo/e/h264_high_bframes/cmaf/main/index.m3u8", "v:0")
    assert [f.md5 for f in cmaf] == [f.md5 for f in source_frames("h264_high_bframes", "v:0")]
    audio = oracle.framemd5(f"{base}/p/demo/e/h264_high_bframes/cmaf/main/a1/index.m3u8", "a:0")
    match = oracle.audio_hashes_match(source_frames("h264_high_bframes", "a:0"), audio)
    assert match, match.reason


def test_player_sessions_through_each_edge_decode_bit_exactly(deployment):
    origin, edge_a, edge_b, dead = deployment
    for edge in (edge_a, edge_b):
        _decode_checks(edge.base)
    # the second edge's session cost the origin one fetch per object, like the first
    segment = "/p/demo/e/ladder/hls/hi/seg-2.ts"
    assert len(origin_requests(origin, segment)) == 2
    # a third session through edge A is served entirely from its cache
    seen = len(origin.log())
    _decode_checks(edge_a.base)
    assert '"GET /p/' not in origin.log()[seen:]
    response = httpx.get(f"{edge_a.base}{segment}", timeout=10)
    assert response.headers["x-cache"] == "HIT"
    health = httpx.get(f"{edge_a.base}/healthz", timeout=5).json()
    assert health["role"] == "edge" and health["upstreams"][0]["url"] == dead and health["upstreams"][0]["up"] is False
    assert health["upstreams"][1]["up"] is True


def test_100_concurrent_requests_for_a_cold_segment_reach_the_origin_once(deployment):
    origin, _, edge_b, _ = deployment
    path = "/p/demo/e/irregular_gop/hls/main/seg-2.ts"
    assert origin_requests(origin, path) == []

    async def burst():
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=edge_b.base, timeout=30, limits=limits) as client:
            return await asyncio.gather(*(client.get(path) for _ in range(100)))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses) and len({r.content for r in responses}) == 1
    statuses = [r.headers["x-cache"] for r in responses]
    assert statuses.count("MISS") == 1 and statuses.count("MISS") + statuses.count("COALESCED") + statuses.count("HIT") == 100
    wait_for(lambda: len(origin_requests(origin, path)) >= 1, what="the origin's access log")
    time.sleep(0.2)
    assert origin_requests(origin, path) == [f"GET {path}"]


def test_tokens_never_split_or_leak_the_cache_through_an_edge(deployment):
    origin, edge_a, _, _ = deployment
    master = "/p/demo/e/h264_baseline/hls/master.m3u8"
    viewer_one, viewer_two = viewer_token("h264_baseline", 0), viewer_token("h264_baseline", 1)
    one = httpx.get(f"{edge_a.base}{master}?token={viewer_one}&playSessionId=s1", timeout=10)
    two = httpx.get(f"{edge_a.base}{master}?token={viewer_two}", timeout=10)
    anonymous = httpx.get(f"{edge_a.base}{master}", timeout=10)
    assert (one.headers["x-cache"], two.headers["x-cache"], anonymous.headers["x-cache"]) == ("MISS", "HIT", "HIT")
    assert f"token={viewer_one}&playSessionId=s1" in one.text and viewer_two not in one.text
    assert f"token={viewer_two}" in two.text and viewer_one not in two.text and "s1" not in two.text
    assert "token" not in anonymous.text
    assert origin_requests(origin, master) == [f"GET {master}"]  # asked once, token-free
    segment = "/p/demo/e/h264_baseline/hls/main/seg-1.ts"
    a = httpx.get(f"{edge_a.base}{segment}?token={viewer_one}", timeout=10)
    b = httpx.get(f"{edge_a.base}{segment}?token={viewer_two}", timeout=10)
    assert a.content == b.content and b.headers["x-cache"] == "HIT"
    forwarded = origin_requests(origin, segment)  # forwarded with the query as sent (the origin log redacts it), once
    assert len(forwarded) == 1 and forwarded[0].startswith(f"GET {segment}?token=") and viewer_two not in forwarded[0]


def test_a_seeking_progressive_player_does_not_pull_the_whole_file(deployment, media_library):
    origin, _, edge_b, _ = deployment
    path = "/p/demo/e/ladder/mp4/mid.mp4"
    data = (media_library / "demo/ladder/mid.mp4").read_bytes()
    seek = httpx.get(f"{edge_b.base}{path}", headers={"Range": "bytes=600000-600999"}, timeout=10)
    assert seek.status_code == 206 and seek.content == data[600000:601000]
    assert len(origin_requests(origin, path)) == 2  # the first 64 KiB chunk (size, validators) + the chunk sought
    again = httpx.get(f"{edge_b.base}{path}", headers={"Range": "bytes=600500-601499"}, timeout=10)
    assert again.content == data[600500:601500] and again.headers["x-cache"] == "HIT"
    assert len(origin_requests(origin, path)) == 2


def test_purge_on_one_edge_empties_both(deployment, redis_server):
    need_redis(redis_server)
    origin, edge_a, edge_b, _ = deployment
    paths = ["/p/demo/e/video_only/hls/main/seg-1.ts", "/p/demo/e/video_only/cmaf/master.m3u8"]
    for edge in (edge_a, edge_b):
        for path in paths:
            httpx.get(f"{edge.base}{path}", timeout=10)
            assert httpx.get(f"{edge.base}{path}", timeout=10).headers["x-cache"] == "HIT"
    before = {p: len(origin_requests(origin, p)) for p in paths}
    received = httpx.get(f"{edge_b.base}/healthz", timeout=5).json()["purge_bus"]["received"]
    assert httpx.post(f"{edge_a.base}/admin/partners/demo/purge", json={"entry": "video_only"}, timeout=10).status_code == 401
    result = httpx.post(f"{edge_a.base}/admin/partners/demo/purge", json={"entry": "video_only"}, headers=ADMIN, timeout=10)
    assert result.status_code == 200, result.text
    assert result.json() == {"purged": "/p/demo/e/video_only/", "removed": 2, "notified": 1, "bus_error": None}
    wait_for(lambda: httpx.get(f"{edge_b.base}/healthz", timeout=5).json()["purge_bus"]["received"] > received,
             what="edge B to receive the purge")
    for edge in (edge_a, edge_b):
        for path in paths:
            assert httpx.get(f"{edge.base}{path}", timeout=10).headers["x-cache"] == "MISS", (edge.base, path)
    # the origin's hot lane (it answers the master too) writes its access log lines a moment later
    wait_for(lambda: {p: len(origin_requests(origin, p)) - before[p] for p in paths} == {p: 2 for p in paths},
             what=f"two origin requests for each of {paths} in its access log")
    other = httpx.get(f"{edge_b.base}/p/demo/e/h264_baseline/hls/main/seg-1.ts?token=viewer-TWO", timeout=10)
    assert other.status_code == 200  # other entries untouched (cached or not, still served)


def test_edges_serve_cached_and_stale_copies_when_the_origin_dies(media_library, tmp_path):
    origin = start_origin(media_library, tmp_path)
    edges: list[Process] = []
    try:
        for _ in range(2):
            edges.append(start_edge([origin.base], tmp_path, ttl=2, stale_if_error=600, health_interval=0.5, read_timeout=2))
        session = ["/p/demo/e/h264_baseline/hls/master.m3u8", "/p/demo/e/h264_baseline/hls/main/index.m3u8",
                   "/p/demo/e/h264_baseline/hls/main/seg-1.ts", "/p/demo/e/h264_baseline/hls/main/seg-2.ts",
                   "/p/demo/e/h264_baseline/hls/main/a1/index.m3u8", "/p/demo/e/h264_baseline/hls/main/a1/seg-1.ts",
                   "/p/demo/e/h264_baseline/hls/main/a1/seg-2.ts"]
        warm = {}
        for edge in edges:
            for path in session:
                response = httpx.get(f"{edge.base}{path}", timeout=10)
                assert response.status_code == 200, (path, response.text)
                warm[(edge.base, path)] = response.content
        origin.stop(kill=True)
        for edge in edges:
            hit = httpx.get(f"{edge.base}{session[2]}", timeout=10)
            assert hit.status_code == 200 and hit.headers["x-cache"] in ("HIT", "STALE")
        time.sleep(2.2)  # past the 2 s freshness: every copy is stale now
        import oracle
        from test_hls_decode import source_frames

        for edge in edges:
            for path in session:
                response = httpx.get(f"{edge.base}{path}", timeout=10)
                assert response.status_code == 200 and response.headers["x-cache"] == "STALE", (path, response.headers)
                assert response.content == warm[(edge.base, path)]
            frames = oracle.framemd5(f"{edge.base}{session[1]}", "v:0")  # a player session on stale copies
            assert [f.md5 for f in frames] == [f.md5 for f in source_frames("h264_baseline", "v:0")]
            cold = httpx.get(f"{edge.base}/p/demo/e/h264_baseline/hls/main/seg-9.ts", timeout=10)
            assert cold.status_code in (502, 504) and cold.headers["x-cache"] == "MISS"
            body = cold.json()
            assert body["error"] in ("upstream_unavailable", "upstream_timeout") and origin.base in body["detail"]
            health = httpx.get(f"{edge.base}/healthz", timeout=5).json()
            assert health["upstreams"][0]["up"] is False
    finally:
        for proc in (*edges, origin):
            proc.stop()


# --------------------------------------------------------------------------- the purge bus on its own


def test_purge_bus_reaches_every_node_and_reports_redis_failures(redis_server):
    server = need_redis(redis_server)
    from edge.purge import PurgeBus, PurgeBusError, PurgeRequest

    async def main():
        seen: dict[str, list] = {"a": [], "b": [], "c": []}
        buses = {name: PurgeBus(server.url, lambda r, n=name: seen[n].append(r) or 1, channel="test:purge") for name in seen}
        try:
            assert all([await bus.start() for bus in buses.values()])
            notified = await buses["a"].publish(PurgeRequest(partner="demo", entry="x"))
            await asyncio.sleep(0.3)
            broken = PurgeBus("redis://127.0.0.1:1/0", lambda r: 0)
            with pytest.raises(PurgeBusError, match="127.0.0.1:1"):
                await broken.publish(PurgeRequest(partner="demo"))
            await broken.close()
            return notified, seen
        finally:
            for bus in buses.values():
                await bus.close()

    notified, seen = asyncio.run(main())
    assert notified == 2
    assert seen["a"] == [] and seen["b"] == seen["c"] == [PurgeRequest(partner="demo", entry="x")]


def test_purge_bus_resubscribes_after_redis_restarts(redis_server, tmp_path):
    need_redis(redis_server)
    from edge.purge import PurgeBus, PurgeRequest

    server = RedisServer(redis_server.exe, tmp_path)

    async def main():
        nonlocal server
        seen: list[PurgeRequest] = []
        listener = PurgeBus(server.url, lambda r: seen.append(r) or 0)
        sender = PurgeBus(server.url, lambda r: 0)
        try:
            assert await listener.start() and await sender.start()
            server.stop()
            await asyncio.sleep(0.3)
            assert not listener.subscribed
            server = RedisServer(server.exe, tmp_path, port=server.port)
            deadline = time.monotonic() + 15
            while not listener.subscribed and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert listener.subscribed, "no resubscription after Redis came back"
            await sender.publish(PurgeRequest(prefix="/p/demo/e/x/"))
            await asyncio.sleep(0.3)
            return seen
        finally:
            await listener.close()
            await sender.close()

    try:
        assert asyncio.run(main()) == [PurgeRequest(prefix="/p/demo/e/x/")]
    finally:
        server.stop()


# --------------------------------------------------------------------------- the launcher


def _hot_answers(base: str) -> int:
    return hot_answers_in(httpx.get(f"{base}/metrics", timeout=5).text)


def test_an_edge_answers_warm_segments_from_its_hot_lane(deployment):
    origin, _, edge_b, _ = deployment
    path = "/p/demo/e/h264_2997/hls/main/seg-2.ts"
    source = httpx.get(f"{origin.base}{path}", timeout=10).content
    first = httpx.get(f"{edge_b.base}{path}", timeout=10)
    for _ in range(2):  # a remembered answer lives 1 s: the retry is fresh when one lapsed in between
        before = _hot_answers(edge_b.base)
        hot = httpx.get(f"{edge_b.base}{path}", timeout=10)
        if _hot_answers(edge_b.base) == before + 1:
            break
    else:
        raise AssertionError("the edge never answered from its hot lane")
    assert hot.content == first.content == source
    assert hot.headers["x-cache"] == "HIT" and hot.headers["etag"] == first.headers["etag"]
    # once the partner has any rule, every request is decided again (here: by a profile no entry uses yet)
    put = httpx.put(f"{edge_b.base}/admin/partners/demo/profiles/strict", headers=ADMIN, timeout=10,
                    json={"rules": [{"then": [{"block": "maintenance"}]}]})
    assert put.status_code == 200, put.text
    try:
        before = _hot_answers(edge_b.base)
        decided = httpx.get(f"{edge_b.base}{path}", timeout=10)
        assert decided.status_code == 200 and decided.content == source
        assert _hot_answers(edge_b.base) == before, "a partner with rules must not be answered by the hot lane"
    finally:
        assert httpx.delete(f"{edge_b.base}/admin/partners/demo/profiles/strict", headers=ADMIN, timeout=10).status_code == 204
