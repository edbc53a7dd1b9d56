"""Where event batches go: JSON-lines files (embedded default) and Redis Streams.

Every sink has ``async write(events)`` (raise to have the queue retry the
batch) and ``async close()``. File and network I/O never runs on the request
path: the queue's background task calls the sink.

JSON lines: one event per line, UTF-8, in ``DIR/events-<node>-<UTC start>-<pid>-<seq>.jsonl``.
A new file starts when the current one passes ``rotate_bytes`` or
``rotate_seconds``; each process writes its own files, so several workers
and nodes can share a folder. A line is written whole or (crash) cut short:
readers skip a torn last line and report it.

Redis: ``XADD <stream> MAXLEN ~ <maxlen> * e <json>`` for each event, a batch
in one MULTI/EXEC (all or nothing on the server). The aggregator
(analytics/aggregator.py) consumes the stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

Event = dict[str, Any]


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)

try:  # orjson (optional) serialises an event in about a fifth of the time
    import orjson

    def dumps_bytes(event: Event) -> bytes:
        return orjson.dumps(event, default=str)
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

    def dumps_bytes(event: Event) -> bytes:
        return _ENCODER.encode(event).encode()


def dumps(event: Event) -> str:
    """One event as compact JSON text (no spaces), the line format of the JSONL files and the stream."""
    return dumps_bytes(event).decode()


def jsonl(events: list[Event]) -> bytes:
    """A batch as JSON lines, each ending in a newline."""
    return b"".join([dumps_bytes(e) + b"\n" for e in events])


class JsonlSink:
    SUFFIX = ".jsonl"

    def __init__(self, directory: Path | str, node: str = "node", rotate_bytes: int = 64 * 1024 * 1024,
                 rotate_seconds: float = 3600.0, clock=time.time) -> None:
        self.directory = Path(directory)
        self.node = node
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.clock = clock
        self._fh = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._size = 0
        self._seq = 0
        self.files: list[Path] = []  # every file this sink created, in order

    @property
    def path(self) -> Path | None:
        return self._path

    async def write(self, events: list[Event]) -> None:
        data = jsonl(events)  # CPU: here (a thread would only contend for the GIL); file I/O: in a thread
        await asyncio.to_thread(self.write_bytes, data)

    def write_sync(self, events: list[Event]) -> None:
        self.write_bytes(jsonl(events))

    def write_bytes(self, data: bytes) -> None:
        now = self.clock()
        if self._fh is None or self._size >= self.rotate_bytes or now - self._opened_at >= self.rotate_seconds:
            self._rotate(now)
        self._fh.write(data)
        self._fh.flush()
        self._size += len(data)

    def _rotate(self, now: float) -> None:
        self._close_file()
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        while True:
            self._seq += 1
            path = self.directory / f"events-{self.node}-{stamp}-{os.getpid()}-{self._seq}{self.SUFFIX}"
            try:
                self._fh = open(path, "xb")  # never append to another process's file
                break
            except FileExistsError:
                continue
        self._path = path
        self.files.append(path)
        self._opened_at = now
        self._size = 0

    def _close_file(self) -> None:
        if self._fh is not None:
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            finally:
                self._fh.close()
                self._fh = None

    async def close(self) -> None:
        await asyncio.to_thread(self._close_file)


class RedisStreamSink:
    def __init__(self, url: str, stream: str = "vodgate:events", maxlen: int = 1_000_000, client: Any = None) -> None:
        self.url = url
        self.stream = stream
        self.maxlen = maxlen
        self._client = client

    def client(self) -> Any:
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        return self._client

    async def write(self, events: list[Event]) -> None:
        pipe = self.client().pipeline(transaction=True)
        for event in events:
            pipe.xadd(self.stream, {"e": dumps_bytes(event)}, maxlen=self.maxlen, approximate=True)
        await pipe.execute()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class MultiSink:
    """Several sinks for the same events (e.g. JSONL archive + Redis fleet stream).

    A retried batch goes again only to the sinks that failed it.
    """

    def __init__(self, sinks: Sequence[Any]) -> None:
        self.sinks = list(sinks)
        self._batch: list[Event] | None = None
        self._done: set[int] = set()

    async def write(self, events: list[Event]) -> None:
        if events is not self._batch:
            self._batch, self._done = events, set()
        errors = []
        for i, sink in enumerate(self.sinks):
            if i in self._done:
                continue
            try:
                await sink.write(events)
                self._done.add(i)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{type(sink).__name__}: {exc}")
        if errors:
            raise RuntimeError("; ".join(errors))
        self._batch, self._done = None, set()

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()


class MemorySink:
    """Keeps events in a list (tests, and the in-process report of a test server)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.closed = False

    async def write(self, events: list[Event]) -> None:
        self.events.extend(events)

    async def close(self) -> None:
        self.closed = True


class DelayedSink:
    """Waits ``delay`` seconds before each write: makes a slow sink on purpose (shutdown tests, drills)."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    async def write(self, events: list[Event]) -> None:
        await asyncio.sleep(self.delay)
        await self.inner.write(events)

    async def close(self) -> None:
        await self.inner.close()
