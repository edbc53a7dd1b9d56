"""A bounded in-memory event queue, flushed to a sink in batches by one background task.

    queue = EventQueue(sink, maxsize=20000, batch_size=500, flush_interval=1.0, prepare=...)
    await queue.start()            # at server startup (or lazily on the first put)
    queue.put(item)                # request path: never blocks, never raises, O(1)
    await queue.close()            # at shutdown: drains everything queued, then closes the sink

Items are events, or what ``prepare`` turns into events before each sink
write (the analytics service queues request observations and builds their
events there, in batches). ``maxsize``, ``accepted`` and ``dropped`` count
items; ``written`` and ``lost`` count events.

``put`` only appends to a deque. When the queue holds ``maxsize`` events the
new event is dropped and counted (``dropped``), and a warning is logged at
most once a minute. A failing sink keeps its batch and is retried with
backoff; meanwhile new events still queue (and drop once full). At close, a
sink that keeps failing for ``shutdown_timeout`` seconds gives up: what it
held is counted in ``lost`` and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Awaitable, Callable, Protocol

log = logging.getLogger("vodgate.analytics")

Event = dict[str, Any]
Prepare = Callable[[list[Event]], Awaitable[list[Event]]]

DROP_LOG_INTERVAL = 60.0


class Sink(Protocol):
    async def write(self, events: list[Event]) -> None: ...

    async def close(self) -> None: ...


class EventQueue:
    def __init__(self, sink: Sink, maxsize: int = 20_000, batch_size: int = 500, flush_interval: float = 1.0,
                 shutdown_timeout: float = 15.0, prepare: Prepare | None = None) -> None:
        self.sink = sink
        self.maxsize = maxsize
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.shutdown_timeout = shutdown_timeout
        self.prepare = prepare
        self._items: deque[Event] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._closed = False
        self._in_flight = 0
        self.accepted = 0
        self.dropped = 0
        self.written = 0
        self.lost = 0
        self.sink_errors = 0
        self._dropped_logged = 0
        self._last_drop_log = float("-inf")

    # -- request path

    def put(self, event: Event) -> bool:
        """Queue one item; False (and counted) when the queue is full or closed. Never raises."""
        items = self._items
        if len(items) >= self.maxsize or self._closed:
            self._drop(1)
            return False
        items.append(event)
        self.accepted += 1
        if self._task is None:
            self._start_lazily()
        if len(items) >= self.batch_size and self._wakeup is not None:
            self._wakeup.set()
        return True

    def put_many(self, events: list[Event]) -> int:
        return sum(1 for e in events if self.put(e))

    def _drop(self, n: int) -> None:
        self.dropped += n
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL:
            self._last_drop_log = now
            log.warning(
                "analytics queue full (%d requests): dropped the events of %d requests since the last report, %d in total",
                self.maxsize, self.dropped - self._dropped_logged, self.dropped,
            )
            self._dropped_logged = self.dropped

    def _start_lazily(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._start(loop)

    # -- lifecycle

    @property
    def size(self) -> int:
        """Events waiting in memory (queued plus the batch being written)."""
        return len(self._items) + self._in_flight

    async def start(self) -> None:
        if self._task is None:
            self._start(asyncio.get_running_loop())

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._wakeup = asyncio.Event()
        self._task = loop.create_task(self._run(), name="analytics-flush")

    async def close(self) -> None:
        """Flush everything queued (bounded by shutdown_timeout while the sink fails), close the sink."""
        if self._closed:
            return
        self._closing = True
        if self._task is None and self._items:
            await self.start()
        if self._task is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._closed = True
        try:
            await self.sink.close()
        except Exception as exc:  # noqa: BLE001 - shutdown goes on
            log.warning("analytics sink close failed: %s", exc)

    async def flush(self) -> None:
        """Write everything queued now (tests, admin); the background task keeps running."""
        while self._items:
            await self._write(self._take())

    # -- background task

    def _take(self) -> list[Event]:
        items = self._items
        n = min(len(items), self.batch_size)
        batch = [items.popleft() for _ in range(n)]
        self._in_flight = len(batch)
        return batch

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._closing and len(self._items) < self.batch_size:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self.flush_interval)
                except asyncio.TimeoutError:
                    pass
                self._wakeup.clear()
            if self._items:
                await self._write(self._take())
            elif self._closing:
                return

    async def _write(self, batch: list[Event]) -> None:
        if self.prepare is not None:
            try:
                batch = await self.prepare(batch)
            except Exception:  # noqa: BLE001 - never expected (prepare guards each item); never fatal
                log.exception("analytics: preparing a batch of %d failed; it is lost", len(batch))
                self.lost += len(batch)
                self._in_flight = 0
                return
        self._in_flight = len(batch)
        delay = 0.2
        deadline = None
        while True:
            try:
                await self.sink.write(batch)
                self.written += len(batch)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - sinks fail in many ways; retry them all
                self.sink_errors += 1
                now = time.monotonic()
                if self._closing:
                    deadline = deadline or now + self.shutdown_timeout
                    if now >= deadline:
                        self.lost += len(batch) + len(self._items)
                        log.error("analytics: sink still failing at shutdown (%s); %d events lost", exc, self.lost)
                        self._items.clear()
                        break
                log.warning("analytics sink write failed (%s); retrying in %.1fs (%d queued)", exc, delay, len(self._items))
                await asyncio.sleep(min(delay, deadline - now) if deadline is not None else delay)
                delay = min(delay * 2, 10.0)
        self._in_flight = 0
