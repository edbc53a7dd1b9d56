"""Remote storage origin: HttpStorage over a real local HTTP server with Range support.

The server (RangeServer, below) is a small threaded HTTP/1.1 server that
answers HEAD, single-range GETs (206 + Content-Range), If-Match (412), and
records every request, so the tests count what the storage really saw.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from edge.app import create_app
from config.settings import Settings
from origin.catalog import Entry, FileCatalog, Flavor, StaticCatalog
from origin.http_storage import (
    HttpStorage,
    RemoteObjectStat,
    StorageChanged,
    StorageNotFound,
    StorageTimeout,
    StorageUnavailable,
    plan_spans,
)
from origin.media import MediaService
from origin.storage import STREAM_CHUNK, LocalStorage, StorageError
from packager.formats import FORMATS
from packager.media import ByteRange

TARGET = Fraction(4)


# --------------------------------------------------------------------------- a range-capable HTTP server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"", head: bool = False) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        owner = self.server.owner
        owner.record(self.command, unquote(urlsplit(self.path).path), self.headers.get("Range"))
        if owner.delay:
            time.sleep(owner.delay)
        if owner.fail_status:
            self._send(owner.fail_status, {"Content-Type": "text/plain"}, b"storage says no", head)
            return
        if head and owner.no_head:
            self._send(405, {}, b"", head)
            return
        path = owner.root / unquote(urlsplit(self.path).path).lstrip("/")
        if ".." in path.parts or not path.is_file():
            self._send(404, {"Content-Type": "text/plain"}, b"no such key", head)
            return
        data = path.read_bytes()
        info = path.stat()
        etag = f'"{info.st_size:x}-{info.st_mtime_ns:x}"'
        headers = {"ETag": etag, "Last-Modified": self.date_time_string(int(info.st_mtime)), "Accept-Ranges": "bytes",
                   "Content-Type": "video/mp4"}
        if_match = self.headers.get("If-Match")
        if if_match and if_match not in ("*", etag):
            self._send(412, {}, b"", head)
            return
        spec = self.headers.get("Range")
        if spec and not owner.ignore_range and spec.startswith("bytes=") and "," not in spec:
            first, _, last = spec[6:].partition("-")
            if first == "":
                start, end = max(0, len(data) - int(last)), len(data) - 1
            else:
                start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            if start >= len(data):
                self._send(416, {"Content-Range": f"bytes */{len(data)}"}, b"", head)
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(206, headers, data[start : end + 1], head)
            return
        self._send(200, headers, data, head)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "RangeServer"


class RangeServer:
    """Serves files under ``root`` on 127.0.0.1 with HEAD and single ranges; counts requests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.delay = 0.0
        self.fail_status = 0
        self.no_head = False
        self.ignore_range = False
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, range_header))

    def count(self, method: str | None = None, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, p, _ in self.requests if (method is None or m == method) and (path is None or p == path))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def range_server(media_library):
    server = RangeServer(media_library)
    yield server
    server.stop()


def run(coro):
    return asyncio.run(coro)


async def _with_storage(base: str, body, **kw):
    async with httpx.AsyncClient(timeout=httpx.Timeout(kw.pop("timeout", 10.0), connect=2.0)) as client:
        return await body(HttpStorage(base, client, **kw))


# --------------------------------------------------------------------------- pure planning


def test_plan_spans_coalesces_close_ranges_and_keeps_far_ones_apart():
    ranges = [ByteRange(1000, 10), ByteRange(0, 100), ByteRange(50_000, 100), ByteRange(500_000, 10)]
    spans = plan_spans(ranges, gap=64 * 1024, max_request=16 << 20)
    assert [(s.start, s.end) for s in spans] == [(0, 50_100), (500_000, 500_010)]
    assert sorted(spans[0].members) == [0, 1, 2]
    capped = plan_spans([ByteRange(0, 100), ByteRange(200, 100)], gap=64 * 1024, max_request=150)
    assert len(capped) == 2  # a merged span may not exceed max_request


# --------------------------------------------------------------------------- stat, read, stream


def test_stat_reads_size_and_validators_with_one_head(range_server, media_library):
    key = "demo/ladder/hi.mp4"
    local = (media_library / key).stat()

    async def body(storage: HttpStorage):
        first = await storage.stat(key)
        again = await asyncio.gather(*(storage.stat(key) for _ in range(10)))
        return first, again

    first, again = run(_with_storage(range_server.base, body))
    assert isinstance(first, RemoteObjectStat)
    assert first.size == local.st_size and first.etag.startswith('"')
    assert first.mtime_ns == int(local.st_mtime) * 1_000_000_000
    assert all(s == first for s in again)
    assert range_server.count("HEAD") == 1  # cached for stat_ttl, concurrent stats share one HEAD


def test_version_changes_when_the_object_is_replaced(range_server, media_library, tmp_path):
    root = tmp_path / "store"
    (root / "p" / "e").mkdir(parents=True)
    target = root / "p" / "e" / "f.mp4"
    shutil.copyfile(media_library / "demo/h264_baseline/main.mp4", target)
    server = RangeServer(root)
    try:
        async def body(storage: HttpStorage):
            before = await storage.stat("p/e/f.mp4")
            head = (await storage.read("p/e/f.mp4", [ByteRange(0, 8)]))[0]
            shutil.copyfile(media_library / "demo/video_only/main.mp4", target)
            os.utime(target, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
            with pytest.raises(StorageChanged):  # If-Match with the old ETag: 412, never mixed bytes
                await storage.read("p/e/f.mp4", [ByteRange(300_000, 50_000)])
            after = await storage.stat("p/e/f.mp4")
            return before, head, after

        before, head, after = run(_with_storage(server.base, body, stat_ttl=60))
        assert head[4:8] == b"ftyp"
        assert before.version != after.version and after.size == target.stat().st_size
    finally:
        server.stop()


def test_read_coalesces_nearby_ranges_into_one_request(range_server, media_library):
    key = "demo/ladder/hi.mp4"
    data = (media_library / key).read_bytes()
    ranges = [ByteRange(200_000, 5000), ByteRange(100_000, 1000), ByteRange(130_000, 20_000), ByteRange(1_200_000, 4096)]

    async def body(storage: HttpStorage):
        return await storage.read(key, ranges)

    chunks = run(_with_storage(range_server.base, body))
    assert chunks == [data[r.offset : r.offset + r.size] for r in ranges]
    gets = [r for r in range_server.requests if r[0] == "GET"]
    assert len(gets) == 2, gets  # 100 000-205 000 in one request, 1 200 000 in another
    assert sorted(g[2] for g in gets) == ["bytes=100000-204999", "bytes=1200000-1204095"]


def test_stream_yields_bounded_chunks_from_one_request(range_server, media_library):
    key = "demo/ladder/hi.mp4"
    data = (media_library / key).read_bytes()

    async def body(storage: HttpStorage):
        return [chunk async for chunk in storage.stream(key, 1000, 700_000)]

    chunks = run(_with_storage(range_server.base, body))
    assert b"".join(chunks) == data[1000:701_000]
    assert all(len(c) <= STREAM_CHUNK for c in chunks) and len(chunks) >= 3
    assert range_server.count("GET") == 1


def test_server_without_head_or_ranges_still_works(range_server, media_library):
    key = "demo/h264_baseline/main.mp4"
    data = (media_library / key).read_bytes()
    range_server.no_head = True

    async def body(storage: HttpStorage):
        stat = await storage.stat(key)
        range_server.ignore_range = True
        chunks = await storage.read(key, [ByteRange(300_000, 10_000)])
        streamed = b"".join([c async for c in storage.stream(key, 5, 100_000)])
        return stat, chunks, streamed

    stat, chunks, streamed = run(_with_storage(range_server.base, body))
    assert stat.size == len(data)
    assert chunks == [data[300_000:310_000]] and streamed == data[5:100_005]


def test_read_sync_is_not_supported_and_says_why(range_server):
    storage = HttpStorage(range_server.base, httpx.AsyncClient())
    with pytest.raises(NotImplementedError, match="async only"):
        storage.read_sync("demo/x/y.mp4", [ByteRange(0, 8)])


# --------------------------------------------------------------------------- errors


def test_missing_object_is_storage_not_found(range_server):
    async def body(storage: HttpStorage):
        return await storage.stat("demo/none/such.mp4")

    with pytest.raises(StorageNotFound, match="no such object") as info:
        run(_with_storage(range_server.base, body))
    assert isinstance(info.value, StorageError) and "demo/none/such.mp4" in str(info.value)


def test_refused_connection_is_storage_unavailable():
    server = RangeServer(Path("/nonexistent"))
    base = server.base
    server.stop()  # nothing listens there any more

    async def body(storage: HttpStorage):
        return await storage.read("a/b/c.mp4", [ByteRange(0, 100_000)])

    with pytest.raises(StorageUnavailable) as info:
        run(_with_storage(base, body))
    assert not isinstance(info.value, StorageTimeout) and base in str(info.value)


def test_slow_server_is_storage_timeout(range_server):
    range_server.delay = 1.0

    async def body(storage: HttpStorage):
        return await storage.stat("demo/ladder/hi.mp4")

    with pytest.raises(StorageTimeout, match="timed out"):
        run(_with_storage(range_server.base, body, timeout=0.2))


@pytest.mark.parametrize("status, error", [(503, StorageUnavailable), (500, StorageUnavailable), (504, StorageTimeout), (403, StorageUnavailable)])
def test_server_errors_map_to_storage_errors(range_server, status, error):
    range_server.fail_status = status

    async def body(storage: HttpStorage):
        return await storage.read("demo/ladder/hi.mp4", [ByteRange(0, 100_000)])

    with pytest.raises(error, match=f"HTTP {status}"):
        run(_with_storage(range_server.base, body))


# --------------------------------------------------------------------------- the packager over HttpStorage


def _service(storage, keys: dict[str, str]) -> tuple[MediaService, Entry]:
    entry = Entry("demo", "e", tuple(Flavor(fid, key) for fid, key in keys.items()))
    return MediaService(StaticCatalog([entry]), storage, TARGET), entry


@pytest.mark.parametrize("fixture, max_gets", [("h264_baseline", 1), ("moov_at_end", 2)])
def test_index_is_read_with_few_range_requests(range_server, media_library, fixture, max_gets):
    key = f"demo/{fixture}/main.mp4"
    local_media, _ = _service(LocalStorage(media_library), {"main": key})

    async def body(storage: HttpStorage):
        media, entry = _service(storage, {"main": key})
        index = await media.index(entry.flavors[0])
        again = await media.index(entry.flavors[0])  # cached: no new request
        return index, again

    async def local():
        _, entry = _service(None, {"main": key})
        return await local_media.index(entry.flavors[0])

    index, again = run(_with_storage(range_server.base, body))
    expected = run(local())
    assert again is index
    assert [(t.track_id, t.kind, t.codec_string, len(t.sizes)) for t in index.tracks] == [
        (t.track_id, t.kind, t.codec_string, len(t.sizes)) for t in expected.tracks
    ]
    assert all((a.offsets == b.offsets).all() and (a.sizes == b.sizes).all() for a, b in zip(index.tracks, expected.tracks))
    assert range_server.count("HEAD") == 1
    assert range_server.count("GET") <= max_gets, range_server.requests


@pytest.mark.parametrize("fixture", ["ladder_hi", "moov_at_end", "two_languages"])
def test_segments_from_http_storage_equal_local_ones(range_server, media_library, fixture):
    key = f"demo/{fixture}/main.mp4" if not fixture.startswith("ladder") else "demo/ladder/hi.mp4"

    async def mux_all(storage) -> tuple[dict, dict[str, int]]:
        media, entry = _service(storage, {"main": key})
        em = await media.entry_media("demo", "e")
        out, gets = {}, {}
        for rendition in [*em.media_set.videos, *em.media_set.audios]:
            for segment in rendition.segments[:3]:
                before = range_server.count("GET")
                batch = await media.batch(entry, rendition, segment)
                gets[f"{rendition.id}/{segment.number}"] = range_server.count("GET") - before
                for name, fmt in FORMATS.items():
                    out[(str(rendition.id), segment.number, name)] = fmt.mux(batch)
        return out, gets

    remote, gets = run(_with_storage(range_server.base, mux_all))
    local, _ = run(mux_all(LocalStorage(media_library)))
    assert remote.keys() == local.keys() and len(remote) >= 6
    for k in local:
        assert remote[k] == local[k], k
    # each segment's samples (interleaved with the other track's small chunks) cost one range request
    assert all(n == 1 for n in gets.values()), gets


def test_origin_app_over_http_storage(range_server, media_library):
    """create_app(storage=HttpStorage): same bytes as the local origin; storage outage -> 502 JSON."""
    settings = Settings(media_root=media_library, segment_duration=TARGET)
    path = "/p/demo/e/moov_at_end/hls/main/seg-1.ts"

    async def scenario():
        async with httpx.AsyncClient(timeout=10) as storage_client:
            remote_app = create_app(settings, FileCatalog(media_library), HttpStorage(range_server.base, storage_client, stat_ttl=0))
            local_app = create_app(settings)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(remote_app), base_url="http://remote") as remote, \
                    httpx.AsyncClient(transport=httpx.ASGITransport(local_app), base_url="http://local") as local:
                a, b = await remote.get(path), await local.get(path)
                master = await remote.get("/p/demo/e/ladder/cmaf/master.m3u8")
                range_server.fail_status = 503
                down = await remote.get("/p/demo/e/ladder/hls/hi/seg-2.ts")
                return a, b, master, down

    a, b, master, down = run(scenario())
    assert a.status_code == 200 and a.content == b.content and a.headers["etag"]
    assert master.status_code == 200 and "#EXT-X-STREAM-INF" in master.text
    assert down.status_code in (502, 504) and down.json()["error"].startswith("storage")
    assert range_server.base in down.json()["detail"]


def test_vodgate_serve_from_remote_storage_decodes_bit_exactly(range_server, media_library, media_fixture_paths, tmp_path):
    """The CLI with [storage] type = "http" and a [catalog]: ffmpeg plays the ladder from the remote objects."""
    from conftest import ServerProcess
    from oracle import video_hashes

    config = tmp_path / "remote.toml"
    config.write_text(
        f'[server]\nsegment_duration = 4\n[storage]\ntype = "http"\nbase_url = "{range_server.base}"\n'
        '[catalog.demo]\nladder = ["hi", "mid", "lo"]\n'
    )
    server = ServerProcess(["--config", str(config)], tmp_path / "server.log")
    try:
        for fmt in ("hls", "cmaf"):
            url = f"{server.base}/p/demo/e/ladder/{fmt}/mid/index.m3u8"
            assert video_hashes(url) == video_hashes(media_fixture_paths["ladder_mid"])
        missing = httpx.get(f"{server.base}/p/demo/e/other/hls/master.m3u8")
        assert missing.status_code == 404 and missing.json()["error"] == "unknown_entry"
    finally:
        server.stop()
