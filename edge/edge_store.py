"""The edge's cache of upstream answers: what is kept (Stored), for how long (freshness), single flight.

EdgeProxy (edge/proxy.py) asks :class:`EdgeStore` for an object by key; the store answers from the
SegmentCache's memory LRU or disk tier while the copy is fresh, else runs one upstream fetch for every
concurrent asker, and can hand out a stale copy when every upstream fails (stale-if-error).
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Mapping

from .cache import COALESCED, HIT, MISS, SegmentCache
from .cdn import ACCESS_HEADER
from .upstream import UpstreamUnavailable

STALE = "STALE"

# response headers worth keeping with a cached object (hop-by-hop and length headers are recomputed)
STORED_HEADERS = (
    "content-type", "etag", "last-modified", "cache-control", "surrogate-key", "surrogate-control",
    "cache-tag", "vary", "content-language", "content-location", ACCESS_HEADER.lower(),
)


@dataclass
class Stored:
    """An upstream answer as kept in the cache: status, kept headers, freshness, body."""

    status: int
    headers: dict[str, str]
    fetched: float  # wall-clock time (the disk tier survives restarts)
    ttl: float  # seconds of freshness; 0 = not cacheable, and not shared with coalesced waiters
    body: bytes | memoryview = b""
    extra: dict[str, Any] = field(default_factory=dict)
    revalidated: bool = False  # transient: this copy was refreshed by a 304

    MAGIC = b"VGE1"

    def encode(self) -> bytes:
        meta = json.dumps(
            {"s": self.status, "h": self.headers, "f": self.fetched, "t": self.ttl, "x": self.extra},
            separators=(",", ":"),
        ).encode()
        return b"".join((self.MAGIC, struct.pack(">I", len(meta)), meta, self.body))

    @classmethod
    def decode(cls, blob: bytes) -> "Stored | None":
        if len(blob) < 8 or not blob.startswith(cls.MAGIC):
            return None
        (size,) = struct.unpack_from(">I", blob, 4)
        try:
            meta = json.loads(blob[8 : 8 + size])
        except ValueError:
            return None
        return cls(meta["s"], meta["h"], meta["f"], meta["t"], memoryview(blob)[8 + size :], meta.get("x", {}))

    def fresh(self, now: float) -> bool:
        return now < self.fetched + self.ttl

    def servable_stale(self, now: float, bound: float) -> bool:
        return self.status == 200 and now <= self.fetched + self.ttl + bound


def kept_headers(headers: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The upstream headers kept with a cached object (lower-case names)."""
    return {name: headers[name] for name in (*STORED_HEADERS, *extra) if name in headers}


def freshness(headers: Mapping[str, str], default_ttl: float) -> float:
    """Seconds of freshness: ours, capped by the origin's s-maxage/max-age; 0 when it says not to cache."""
    directives: dict[str, str | None] = {}
    for part in headers.get("cache-control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip().strip('"') or None
    if {"no-store", "private", "no-cache"} & directives.keys():
        return 0.0
    for name in ("s-maxage", "max-age"):
        value = directives.get(name)
        if value is not None and value.isdigit():
            return min(default_ttl, float(value))
    return default_ttl


class EdgeStore:
    """Freshness-aware layer over SegmentCache's tiers, with single flight per key.

    SegmentCache.get_or_make serves whatever it holds, which is right for the
    embedded role (keys carry the media version) but not for an edge, whose
    keys cannot know the upstream version: an expired object must be refetched
    while staying servable as a stale copy. So this class uses the cache's
    memory LRU and disk tier for storage (and its purge_prefix) and runs its
    own single flight, in which the fetch is a task of its own.
    """

    def __init__(self, cache: SegmentCache, stale_if_error: float, clock: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.stale_if_error = stale_if_error
        self.clock = clock
        self.epoch = 0  # bumped by every purge: a fetch that started before one is not stored
        # the cache's own counters, which the hot lane adds its HITs to (edge/hot.py): one set of lookups for
        # /healthz and /metrics (vodgate_segment_cache_lookups_total), STALE beside HIT, MISS and COALESCED
        self.stats = cache.stats
        self.stats.setdefault(STALE, 0)
        self._inflight: dict[str, asyncio.Task] = {}

    async def peek(self, key: str) -> Stored | None:
        blob = self.cache.memory.get(key)
        if blob is None and self.cache.disk is not None:
            blob = await asyncio.to_thread(self.cache.disk.get, key)
            if blob is not None:
                self.cache.memory.put(key, blob)
        return Stored.decode(blob) if blob is not None else None

    async def put(self, key: str, stored: Stored) -> None:
        blob = stored.encode()
        self.cache.memory.put(key, blob)
        if self.cache.disk is not None and stored.status == 200:
            await asyncio.to_thread(self.cache.disk.put, key, blob)

    def drop(self, key: str) -> None:
        self.cache.purge_prefix(key)  # keys are unique prefixes of themselves here (see _key users)

    async def get(self, key: str, fetch: Callable[[Stored | None], Awaitable[Stored]], all_down: Callable[[], bool]) -> tuple[Stored, str]:
        while True:
            current = await self.peek(key)
            now = self.clock()
            if current is not None and current.fresh(now):
                return self._count(current, HIT)
            stale = current if current is not None and current.servable_stale(now, self.stale_if_error) else None
            task = self._inflight.get(key)
            if task is not None and task.done():
                task = None
            leader = task is None
            if leader:
                if stale is not None and all_down():
                    return self._count(stale, STALE)  # no point waiting for a connect timeout
                task = asyncio.get_running_loop().create_task(self._fill(key, current, fetch))
                self._inflight[key] = task
                task.add_done_callback(lambda t, k=key: self._done(k, t))
            try:
                stored = await asyncio.shield(task)
            except UpstreamUnavailable:
                if stale is not None:
                    return self._count(stale, STALE)
                raise
            if not leader and stored.ttl <= 0:
                continue  # an answer for that request only (403, 5xx relay...): ask for ourselves
            if leader:
                return self._count(stored, HIT if stored.revalidated else MISS)
            return self._count(stored, COALESCED)

    async def _fill(self, key: str, current: Stored | None, fetch: Callable[[Stored | None], Awaitable[Stored]]) -> Stored:
        epoch = self.epoch
        stored = await fetch(current)
        if stored.ttl > 0 and epoch == self.epoch:
            await self.put(key, stored)
        return stored

    def _done(self, key: str, task: asyncio.Task) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: waiters re-raise it; no "exception never retrieved" noise

    def _count(self, stored: Stored, status: str) -> tuple[Stored, str]:
        self.stats[status] += 1
        return stored, status
