"""Async access to an entry's media: cached indexes, cached media sets, segment samples.

Each flavor's moov is parsed once per (storage key, size, mtime) and kept in
a bounded LRU; concurrent first requests share one parse (single flight).
Failures are cached too, so a corrupt file is parsed and logged once, not
once per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import Awaitable, Callable, Generic, Hashable, TypeVar

from packager.errors import MediaError
from packager.media import MediaIndex, SampleBatch, Segment
from packager.media_set import MediaSet, Rendition, build_media_set
from packager.mp4.index import index_reader
from packager.mp4.writer import VirtualFile, clipped_mp4
from packager.preview import clip_media_set
from packager.samples import byte_ranges, make_batch

from .catalog import Catalog, Entry, Flavor
from .storage import ObjectStat, Storage, StorageChanged

log = logging.getLogger("vodgate.origin")

STAT_TTL = 1.0  # seconds a file's size/mtime is trusted before asking the storage again

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FlavorError(Exception):
    """A flavor's file cannot be packaged; carries the packager's error and the file."""

    def __init__(self, key: str, error: MediaError) -> None:
        super().__init__(f"{key}: {error}")
        self.key = key
        self.error = error


class AsyncLRU(Generic[K, V]):
    """A bounded LRU whose misses are computed once however many callers ask at the same time."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, V | BaseException] = OrderedDict()
        self._pending: dict[K, asyncio.Future] = {}
        self.hits = 0
        self.misses = 0

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        if key in self._items:
            self.hits += 1
            self._items.move_to_end(key)
            return self._unwrap(self._items[key])
        pending = self._pending.get(key)
        if pending is not None:
            self.hits += 1
            return self._unwrap(await asyncio.shield(pending))
        self.misses += 1
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            value: V | BaseException = await compute()
        except (MediaError, FlavorError) as exc:  # remembered: a bad file stays bad until it changes
            value = exc
        except BaseException as exc:
            future.set_result(exc)
            del self._pending[key]
            raise
        future.set_result(value)
        del self._pending[key]
        self._items[key] = value
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return self._unwrap(value)

    @staticmethod
    def _unwrap(value: V | BaseException) -> V:
        if isinstance(value, BaseException):
            raise value
        return value


@dataclass(frozen=True)
class EntryMedia:
    entry: Entry
    media_set: MediaSet
    stats: dict[str, ObjectStat]  # flavor id -> stat, for ETag / Last-Modified
    broken: dict[str, FlavorError]  # flavors left out of the media set, and why

    def flavor_version(self, flavor_id: str) -> str:
        return self.stats[flavor_id].version

    @property
    def version(self) -> str:
        return ".".join(f"{fid}:{stat.version}" for fid, stat in sorted(self.stats.items()))

    @property
    def last_modified_ns(self) -> int:
        return max(stat.mtime_ns for stat in self.stats.values())

    def check_flavor(self, flavor_id: str) -> None:
        """Raise the reason a flavor cannot be served, if it cannot."""
        if flavor_id in self.broken:
            raise self.broken[flavor_id]


class MediaService:
    def __init__(
        self, catalog: Catalog, storage: Storage, target: Fraction, index_cache_entries: int = 1024, stat_ttl: float = STAT_TTL
    ) -> None:
        self.catalog = catalog
        self.storage = storage
        self.target = target
        self.stat_ttl = stat_ttl
        self._stats: dict[str, tuple[ObjectStat, float]] = {}
        self.indexes: AsyncLRU[tuple[str, str], MediaIndex] = AsyncLRU(index_cache_entries)
        self.media_sets: AsyncLRU[tuple, MediaSet] = AsyncLRU(max(16, index_cache_entries // 4))
        self.previews: AsyncLRU[tuple, object] = AsyncLRU(max(16, index_cache_entries // 4))

    async def stat(self, flavor: Flavor) -> ObjectStat:
        """The file's size and mtime, remembered for STAT_TTL: a replaced file is noticed within that time."""
        now = time.monotonic()
        cached = self._stats.get(flavor.key)
        if cached is not None and now - cached[1] < self.stat_ttl:
            return cached[0]
        stat = await self.storage.stat(flavor.key)
        if len(self._stats) > 100_000:
            self._stats.clear()
        self._stats[flavor.key] = (stat, now)
        return stat

    async def index(self, flavor: Flavor, stat: ObjectStat | None = None) -> MediaIndex:
        stat = stat or await self.stat(flavor)
        return await self.indexes.get((flavor.key, stat.version), lambda: self._parse(flavor.key, stat.size))

    async def _parse(self, key: str, size: int) -> MediaIndex:
        reader = index_reader(size)
        try:
            request = next(reader)
            while True:
                (data,) = await self.storage.read(key, [request])
                request = reader.send(data)
        except StopIteration as done:
            return done.value
        except MediaError as exc:
            log.warning("unplayable flavor %s: %s", key, exc)  # logged once: the failure is cached
            raise FlavorError(key, exc) from exc

    async def entry_media(self, partner: str, entry_id: str) -> EntryMedia:
        """The entry's media set over its playable flavors.

        A broken flavor is left out, so one bad upload does not take its
        siblings down; requests for it get its error. Only when no flavor is
        playable does the whole entry fail.
        """
        entry = await self.catalog.entry(partner, entry_id)
        flavors = list(entry.flavors)
        stats = {f.id: await self.stat(f) for f in flavors}
        indexed: list[tuple[str, MediaIndex]] = []
        broken: dict[str, FlavorError] = {}
        for flavor in flavors:
            try:
                indexed.append((flavor.id, await self.index(flavor, stats[flavor.id])))
            except FlavorError as exc:
                broken[flavor.id] = exc
        if not indexed:
            raise next(iter(broken.values()))
        key = (partner, entry_id, tuple((fid, stats[fid].version) for fid, _ in indexed))

        async def build() -> MediaSet:
            # segmenting a long ladder is CPU work: keep it off the event loop
            return await asyncio.to_thread(build_media_set, indexed, self.target)

        return EntryMedia(entry, await self.media_sets.get(key, build), stats, broken)

    async def preview_set(self, em: EntryMedia, seconds: Fraction) -> MediaSet:
        """The entry's media set clipped to a preview (cached: every viewer of a preview shares it)."""
        key = (em.entry.partner, em.entry.id, em.version, seconds)
        return await self.previews.get(key, lambda: asyncio.to_thread(clip_media_set, em.media_set, seconds))

    async def clipped_file(self, flavor: Flavor, stat: ObjectStat, seconds: Fraction) -> VirtualFile:
        """A progressive MP4 holding the first ``seconds`` of a flavor, as literal bytes and source ranges."""
        index = await self.index(flavor, stat)
        return await self.previews.get((flavor.key, stat.version, seconds), lambda: asyncio.to_thread(clipped_mp4, index, seconds))

    async def batch(self, entry: Entry, rendition: Rendition, segment: Segment) -> SampleBatch:
        flavor = entry.flavor(rendition.id.flavor)
        ranges = byte_ranges(rendition.track, segment.span)
        try:
            chunks = await self.storage.read(flavor.key, ranges)
        except StorageChanged:
            self._stats.pop(flavor.key, None)  # the next request indexes the new file instead of failing for STAT_TTL
            raise
        return make_batch(rendition.track, segment.span, chunks, sequence_number=segment.number)
