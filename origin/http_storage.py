"""Flavor bytes from any HTTP server with Range support (object storage, nginx, a CDN bucket).

    storage = HttpStorage("http://storage:9000/bucket", httpx.AsyncClient(timeout=httpx.Timeout(10, connect=2)))
    create_app(settings, storage=storage)          # the catalog still lists the flavors

* ``stat``: HEAD (or, where HEAD is refused, ``GET Range: bytes=0-0``). Size from
  Content-Length (Content-Range), version from ETag and Last-Modified, so
  replacing an object changes every cache key and ETag built on it. Results
  are kept ``stat_ttl`` seconds (the server stats every flavor on every
  request; a HEAD per request per flavor would be the real cost of remote
  storage) and concurrent stats of one key share one HEAD.
* ``read``: ranges closer than ``coalesce_gap`` are merged into one
  ``Range`` request (up to ``max_request`` bytes) and sliced apart, the
  requests run in parallel (``max_parallel``). A single small read (the MP4
  indexer's 16-byte box headers) is widened to ``readahead`` bytes and the
  block kept, so the moov that follows is usually already here: indexing
  costs 1 request with moov at the start, 2 with moov at the end.
* ``stream``: one ranged GET, passed on in chunks of at most STREAM_CHUNK.
* Requests carry ``If-Match`` with the ETag of the last stat, so an object
  replaced under us fails loudly (:class:`StorageChanged`) instead of mixing
  bytes of two versions.

Errors are :class:`~origin.storage.StorageError` subclasses with the URL and
the reason: :class:`StorageTimeout` (map to 504), :class:`StorageUnavailable`,
:class:`StorageNotFound`, :class:`StorageChanged` (map to 502).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import AsyncIterator, Callable, Mapping, Sequence
from urllib.parse import quote

import httpx

from packager.media import ByteRange

from .storage import STREAM_CHUNK, ObjectStat, StorageChanged, StorageError

log = logging.getLogger("vodgate.storage.http")

KB = 1024
MB = 1024 * KB
SMALL_READ = 4 * KB  # single reads below this are widened to `readahead`


class StorageUnavailable(StorageError):
    """The storage server could not be reached or failed (refused, reset, 5xx, bad answer): 502."""


class StorageTimeout(StorageUnavailable):
    """The storage server did not answer in time (connect or read timeout): 504."""


class StorageNotFound(StorageError):
    """The storage has no such object (404/410), though the catalog lists it: 502."""


@dataclass(frozen=True)
class RemoteObjectStat(ObjectStat):
    etag: str = ""

    @property
    def version(self) -> str:
        if not self.etag:
            return super().version
        digest = hashlib.blake2b(self.etag.encode(), digest_size=8).hexdigest()
        return f"{self.size:x}-{digest}"


@dataclass(frozen=True)
class _Span:
    start: int
    end: int  # exclusive
    members: tuple[int, ...]  # indexes of the requested ranges inside it


def plan_spans(ranges: Sequence[ByteRange], gap: int, max_request: int) -> list[_Span]:
    """Merge ranges closer than ``gap`` bytes into spans of at most ``max_request`` bytes (one request each)."""
    order = sorted(range(len(ranges)), key=lambda i: ranges[i].offset)
    spans: list[_Span] = []
    start = end = -1
    members: list[int] = []
    for i in order:
        r = ranges[i]
        r_end = r.offset + r.size
        if members and r.offset - end <= gap and max(end, r_end) - start <= max_request:
            end = max(end, r_end)
            members.append(i)
            continue
        if members:
            spans.append(_Span(start, end, tuple(members)))
        start, end, members = r.offset, r_end, [i]
    if members:
        spans.append(_Span(start, end, tuple(members)))
    return spans


class HttpStorage:
    def __init__(
        self,
        base_url: str,
        client: httpx.AsyncClient,
        *,
        headers: Mapping[str, str] | None = None,
        coalesce_gap: int = 64 * KB,
        max_request: int = 16 * MB,
        readahead: int = 256 * KB,
        stat_ttl: float = 5.0,
        max_parallel: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client
        self.headers = dict(headers or {})
        self.coalesce_gap = coalesce_gap
        self.max_request = max_request
        self.readahead = readahead
        self.stat_ttl = stat_ttl
        self.clock = clock
        self.requests = 0  # HTTP requests sent (all kinds)
        self._parallel = asyncio.Semaphore(max_parallel)
        self._stats: dict[str, tuple[float, RemoteObjectStat]] = {}
        self._stat_pending: dict[str, asyncio.Future] = {}
        self._blocks: OrderedDict[tuple[str, int], bytes] = OrderedDict()  # (key, offset) -> bytes
        self._max_blocks = 16
        self._ignores_range: set[str] = set()

    def url(self, key: str) -> str:
        return f"{self.base_url}/{quote(key, safe='/')}"

    # --- stat --------------------------------------------------------------------------

    async def stat(self, key: str) -> RemoteObjectStat:
        cached = self._stats.get(key)
        if cached is not None and self.clock() - cached[0] < self.stat_ttl:
            return cached[1]
        pending = self._stat_pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._stat_pending[key] = future
        try:
            stat = await self._stat(key)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else StorageUnavailable(f"{self.url(key)}: stat cancelled"))
            raise
        finally:
            del self._stat_pending[key]
        future.set_result(stat)
        if cached is not None and cached[1].version != stat.version:
            self._forget_blocks(key)
        self._stats[key] = (self.clock(), stat)
        return stat

    async def _stat(self, key: str) -> RemoteObjectStat:
        url = self.url(key)
        response = await self._send("HEAD", url)
        if response.status_code in (405, 501):  # no HEAD here: one byte says the same
            response = await self._send("GET", url, {"Range": "bytes=0-0"})
        self._check(response, url)
        size = _total_size(response)
        if size is None:
            raise StorageUnavailable(f"{url}: the storage answered without Content-Length or Content-Range; cannot size the object")
        return RemoteObjectStat(size, _mtime_ns(response.headers.get("last-modified")), response.headers.get("etag", ""))

    def invalidate(self, key: str) -> None:
        """Forget what we know about ``key`` (it changed)."""
        self._stats.pop(key, None)
        self._forget_blocks(key)

    # --- read ----------------------------------------------------------------------------

    async def read(self, key: str, ranges: Sequence[ByteRange]) -> list[bytes]:
        if not ranges:
            return []
        out: list[bytes | None] = [self._from_blocks(key, r) for r in ranges]
        missing = [i for i, data in enumerate(out) if data is None]
        if len(missing) == 1 and ranges[missing[0]].size < SMALL_READ:
            out[missing[0]] = await self._small_read(key, ranges[missing[0]])
        elif missing:
            wanted = [ranges[i] for i in missing]
            spans = plan_spans(wanted, self.coalesce_gap, self.max_request)
            bodies = await asyncio.gather(*(self._get_range(key, s.start, s.end - s.start) for s in spans))
            for span, body in zip(spans, bodies):
                view = memoryview(body)
                for j in span.members:
                    r = wanted[j]
                    out[missing[j]] = bytes(view[r.offset - span.start : r.offset - span.start + r.size])
        return out  # type: ignore[return-value]

    def _from_blocks(self, key: str, r: ByteRange) -> bytes | None:
        for (block_key, offset), block in self._blocks.items():
            if block_key == key and offset <= r.offset and r.offset + r.size <= offset + len(block):
                self._blocks.move_to_end((block_key, offset))
                return block[r.offset - offset : r.offset - offset + r.size]
        return None

    async def _small_read(self, key: str, r: ByteRange) -> bytes:
        block = await self._get_range(key, r.offset, max(r.size, self.readahead), allow_short=True)
        if len(block) < r.size:
            raise StorageError(f"{self.url(key)}: short read at offset {r.offset} ({len(block)} of {r.size} bytes)")
        self._blocks[(key, r.offset)] = block
        while len(self._blocks) > self._max_blocks:
            self._blocks.popitem(last=False)
        return block[: r.size]

    def _forget_blocks(self, key: str) -> None:
        for block_key in [k for k in self._blocks if k[0] == key]:
            del self._blocks[block_key]

    async def _get_range(self, key: str, offset: int, size: int, allow_short: bool = False) -> bytes:
        """``size`` bytes at ``offset`` (fewer only with ``allow_short``, at the end of the object)."""
        url = self.url(key)
        headers = {"Range": f"bytes={offset}-{offset + size - 1}", **self._if_match(key)}
        async with self._parallel:
            response = await self._send("GET", url, headers)
        if response.status_code == 416:
            self.invalidate(key)
            raise StorageChanged(f"{url}: range {offset}-{offset + size - 1} is past the end (the object shrank?)")
        self._check(response, url, key)
        body = response.content
        if response.status_code == 200:  # the server ignored Range: it sent the whole object
            if url not in self._ignores_range:
                self._ignores_range.add(url)
                log.warning("storage %s ignores Range requests: whole objects are downloaded", url)
            body = body[offset : offset + size]
        elif response.status_code == 206:
            expected = f"bytes {offset}-"
            if not response.headers.get("content-range", "").startswith(expected):
                raise StorageUnavailable(f"{url}: asked for bytes {offset}-, got Content-Range {response.headers.get('content-range')!r}")
        else:
            raise StorageUnavailable(f"{url}: unexpected HTTP {response.status_code} to a range request")
        if len(body) != size and not (allow_short and body):
            raise StorageError(f"{url}: short read at offset {offset} ({len(body)} of {size} bytes)")
        return body

    def _if_match(self, key: str) -> dict[str, str]:
        cached = self._stats.get(key)
        etag = cached[1].etag if cached else ""
        return {"If-Match": etag} if etag and not etag.startswith("W/") else {}

    # --- stream -------------------------------------------------------------------------------

    async def stream(self, key: str, start: int, length: int) -> AsyncIterator[bytes]:
        if length <= 0:
            return
        url = self.url(key)
        headers = {**self.headers, "Range": f"bytes={start}-{start + length - 1}", **self._if_match(key)}
        self.requests += 1
        try:
            async with self.client.stream("GET", url, headers=headers) as response:
                if response.status_code not in (200, 206):
                    await response.aread()
                    self._check(response, url, key)
                    raise StorageUnavailable(f"{url}: unexpected HTTP {response.status_code} to a range request")
                skip = start if response.status_code == 200 else 0
                remaining = length
                async for chunk in response.aiter_bytes(STREAM_CHUNK):
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    if not chunk:
                        continue
                    chunk = chunk[:remaining]
                    remaining -= len(chunk)
                    yield chunk
                    if remaining <= 0:
                        break
        except httpx.TimeoutException as exc:
            raise StorageTimeout(f"{url}: timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise StorageUnavailable(f"{url}: {exc or type(exc).__name__} ({type(exc).__name__})") from None

    def read_sync(self, key: str, ranges: Sequence[ByteRange]) -> list[bytes]:
        raise NotImplementedError(
            f"HttpStorage is async only (key {key!r}): synchronous reads serve the CLI's local tools; "
            "run `vodgate check` on a local copy of the library"
        )

    # --- plumbing -------------------------------------------------------------------------------

    async def _send(self, method: str, url: str, headers: Mapping[str, str] | None = None) -> httpx.Response:
        self.requests += 1
        try:
            return await self.client.request(method, url, headers={**self.headers, **(headers or {})})
        except httpx.TimeoutException as exc:
            raise StorageTimeout(f"{url}: timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise StorageUnavailable(f"{url}: {exc or type(exc).__name__} ({type(exc).__name__})") from None

    def _check(self, response: httpx.Response, url: str, key: str | None = None) -> None:
        status = response.status_code
        if status in (404, 410):
            raise StorageNotFound(f"{url}: no such object (HTTP {status})")
        if status == 412:
            if key is not None:
                self.invalidate(key)
            raise StorageChanged(f"{url}: the object changed since it was indexed (HTTP 412); retry")
        if status in (401, 403):
            raise StorageUnavailable(f"{url}: access denied (HTTP {status}): check the storage credentials or headers")
        if status == 504:
            raise StorageTimeout(f"{url}: the storage gateway timed out (HTTP 504)")
        if status >= 500:
            raise StorageUnavailable(f"{url}: storage server error (HTTP {status})")
        if status >= 400:
            raise StorageUnavailable(f"{url}: unexpected HTTP {status}")


def _total_size(response: httpx.Response) -> int | None:
    content_range = response.headers.get("content-range", "")
    if response.status_code == 206 and "/" in content_range:
        total = content_range.rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("content-length", "")
    return int(length) if length.isdigit() else None


def _mtime_ns(value: str | None) -> int:
    if not value:
        return 0
    try:
        return int(parsedate_to_datetime(value).timestamp()) * 1_000_000_000
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0
