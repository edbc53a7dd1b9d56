"""Async access to an entry's media: cached indexes, cached media sets, segment samples.

Each flavor's moov is parsed once per (storage key, size, mtime) and kept in
an LRU bounded in bytes; concurrent first requests share one parse (single
flight). Failures are cached too, so a corrupt file is parsed and logged once,
not once per request; so is an audio track a parse leaves out (a codec we cannot
package), which /healthz also lists (``skipped_report``).

Memory. An index weighs what its tracks hold: six per-sample arrays, 41 bytes
a sample (int64 dts, composition offset, duration, size, offset; a bool
keyframe flag), plus 24 bytes a sample once a preview has clipped the track
(packager.preview keeps three int64 arrays per clipped track for as long as
the track lives). The index cache (``server.index_cache_mb``) owns that
memory. Media sets and previews are derived from cached indexes and share
their tracks: each is kept only while every index it was built from is
cached (an evicted index takes them along, so no track outlives the budget
that counts it), and they are bounded by what they add (segment lists,
clipped moovs) in a quarter of that budget each. Everything MediaService
keeps is therefore at most 1.5 x ``index_cache_mb``, whatever the files hold.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Awaitable, Callable, Collection, Generic, Hashable, Iterable, TypeVar

import numpy as np

from packager.errors import MediaError
from packager.media import ByteRange, MediaIndex, SampleBatch, Segment, SkippedTrack, Track
from packager.subtitles import MAX_BYTES as SUBTITLE_MAX_BYTES
from packager.subtitles import Cue, MalformedSubtitles, parse_subtitles
from packager.media_set import MediaSet, Rendition, build_media_set
from packager.mp4.index import index_reader
from packager.clip import ClipMediaSet, clip_file, clip_set
from packager.mp4.writer import VirtualFile, clipped_mp4
from packager.preview import clip_media_set, keeps_everything
from packager.samples import byte_ranges, make_batch
from packager.formats import SegmentFormat

from .catalog import Catalog, Entry, Flavor, SubtitleFile
from .storage import ObjectStat, Storage, StorageChanged

log = logging.getLogger("vodgate.origin")

STAT_TTL = 1.0  # seconds a file's size/mtime is trusted before asking the storage again
JOIN_OFF_LOOP_BYTES = 256 * 1024  # a segment's samples are joined in a worker thread above this size
MB = 1024 * 1024
INDEX_CACHE_BYTES = 256 * MB  # the default of server.index_cache_mb
INDEX_CACHE_ENTRIES = 1024  # the default of server.index_cache_entries

# Weights (bytes) of what the caches keep besides numpy arrays, measured with tracemalloc
# (docs/PERFORMANCE.md, "Parsed media in memory") and rounded up.
INDEX_OVERHEAD = 1024  # the MediaIndex object
TRACK_OVERHEAD = 2048  # a Track: its object, array headers, codec info (the sample entry is added)
CLIP_TABLE_BYTES_PER_SAMPLE = 24  # packager.preview's per-track clip table: three int64 arrays
SEGMENT_BYTES = 512  # one Segment of a media set (about 400 measured: object, span, two Fractions)
MEDIA_SET_OVERHEAD = 4096  # a media set or preview set and its renditions
SOURCE_RANGE_BYTES = 192  # one source range of a clipped MP4 (a ByteRange: about 160 measured)
FAILURE_BYTES = 4096  # a remembered failure (its traceback is dropped)
SKIPPED_FILES_KEPT = 1000  # files whose left-out tracks /healthz lists (the most recently parsed)
# A moov may hold hundreds of tracks of an unknown codec (the box budget allows ~500): what is kept, logged
# and listed stays bounded, so a few such files cannot make every health probe megabytes (edges probe every
# few seconds) or the log thousands of lines. The count stays exact.
SKIPPED_TRACKS_LISTED = 100  # /healthz lists at most this many left-out tracks in all (and keeps as many a file)
SKIPPED_TRACKS_LOGGED = 5  # a file's warning names at most this many, then says how many more

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FlavorError(Exception):
    """A flavor's file cannot be packaged; carries the packager's error and the file."""

    def __init__(self, key: str, error: MediaError) -> None:
        super().__init__(f"{key}: {error}")
        self.key = key
        self.error = error


class AsyncLRU(Generic[K, V]):
    """An LRU bounded in bytes, and in entries, whose misses are computed once however many callers ask at once.

    ``weigh(value)`` is what a value keeps in memory; a remembered failure weighs FAILURE_BYTES. A value
    heavier than the whole budget is given to the callers that asked for it but not kept (logged once per
    key): the next request computes it again.

    A cache may be *derived from* another (``derived_from``): each of its values names the keys of the other
    cache it was built from (``sources``), is kept only if they are all there, and leaves when one of them
    does. Values derived from an index share its arrays, so they must not outlive the index that counts them.
    """

    def __init__(
        self, name: str, max_bytes: int, weigh: Callable[[V], int], max_entries: int | None = None,
        derived_from: "AsyncLRU | None" = None, setting: str = "server.index_cache_mb",
    ) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.weigh = weigh
        self.setting = setting
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._items: OrderedDict[K, V | BaseException] = OrderedDict()
        self._weights: dict[K, int] = {}
        self._pending: dict[K, asyncio.Future] = {}
        self._sources: dict[K, Collection[Hashable]] = {}
        self._derived: list[AsyncLRU] = []
        self._upstream = derived_from
        if derived_from is not None:
            derived_from._derived.append(self)
        self._too_heavy: OrderedDict[K, None] = OrderedDict()  # keys already logged as over the budget

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    async def get(self, key: K, compute: Callable[[], Awaitable[V]], sources: Collection[Hashable] = ()) -> V:
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
            value = _without_frames(exc)
        except BaseException as exc:
            future.set_result(exc)
            del self._pending[key]
            raise
        future.set_result(value)
        del self._pending[key]
        if self._upstream is None or all(source in self._upstream for source in sources):
            self._keep(key, value, sources)
        return self._unwrap(value)

    def reweigh(self, key: K) -> None:
        """Weigh a kept value again (it came to hold more, e.g. a clip table), evicting others to make room."""
        value = self._items.get(key)
        if value is None or isinstance(value, BaseException):
            return
        weight = self.weigh(value)
        self.bytes += weight - self._weights[key]
        self._weights[key] = weight
        if weight > self.max_bytes:
            self._too_heavy_once(key, weight)
            self._drop(key)
        self._shrink()

    def _keep(self, key: K, value: V | BaseException, sources: Collection[Hashable]) -> None:
        weight = FAILURE_BYTES if isinstance(value, BaseException) else self.weigh(value)
        if weight > self.max_bytes:
            self._too_heavy_once(key, weight)
            return
        self._items[key] = value
        self._weights[key] = weight
        if sources:
            self._sources[key] = sources
        self.bytes += weight
        self._shrink()

    def _shrink(self) -> None:
        while self._items and (self.bytes > self.max_bytes or (self.max_entries is not None and len(self._items) > self.max_entries)):
            self.evictions += 1
            self._drop(next(iter(self._items)))

    def _drop(self, key: K) -> None:
        del self._items[key]
        self.bytes -= self._weights.pop(key)
        self._sources.pop(key, None)
        for derived in self._derived:
            derived._drop_derived_from(key)

    def _drop_derived_from(self, source: Hashable) -> None:
        for key in [k for k, sources in self._sources.items() if source in sources]:
            self._drop(key)

    def _too_heavy_once(self, key: K, weight: int) -> None:
        if key in self._too_heavy:
            return
        self._too_heavy[key] = None
        if len(self._too_heavy) > 1024:
            self._too_heavy.popitem(last=False)
        log.warning(
            "%s: %s weighs %.1f MB, more than the whole %.1f MB budget: used for the requests that asked, not kept"
            " (raise %s to keep it)", self.name, key, weight / MB, self.max_bytes / MB, self.setting,
        )

    @staticmethod
    def _unwrap(value: V | BaseException) -> V:
        if isinstance(value, BaseException):
            raise value
        return value


def _without_frames(exc: BaseException) -> BaseException:
    """A failure to remember, without tracebacks: the parser's frames hold the bytes it read (a whole moov)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
    return exc


def held_bytes(array: np.ndarray) -> int:
    """Bytes an array keeps alive: its own, or the whole buffer it is a view of."""
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    return max(array.nbytes, root.nbytes)


def track_weight(track: Track, clipped: bool = False) -> int:
    """Bytes a parsed track holds: its per-sample arrays, its sample entry, a constant; and its clip table."""
    arrays = (track.dts, track.cts_offsets, track.durations, track.sizes, track.offsets, track.keyframes)
    weight = TRACK_OVERHEAD + len(track.sample_entry) + sum(held_bytes(a) for a in arrays)
    return weight + (CLIP_TABLE_BYTES_PER_SAMPLE * (track.sample_count + 1) if clipped else 0)


def media_set_weight(media_set: MediaSet) -> int:
    """Bytes a media set adds to the tracks it shares with its indexes: its segment lists."""
    renditions = media_set.videos + media_set.audios
    return MEDIA_SET_OVERHEAD + SEGMENT_BYTES * sum(len(r.segments) for r in renditions)


def preview_weight(value: MediaSet | VirtualFile | ClipFile) -> int:
    """A preview set weighs as a media set (a clip's also its rebased tracks); a clipped MP4 its header bytes and
    source ranges."""
    if isinstance(value, ClipFile):
        value = value.file
    if isinstance(value, ClipMediaSet) and value.start:  # a clip holds its own rebased tracks (and their clip tables)
        return media_set_weight(value) + sum(track_weight(r.track, clipped=True) for r in value.videos + value.audios)
    if isinstance(value, VirtualFile):
        literal = sum(len(part) for part in value.parts if isinstance(part, (bytes, bytearray)))
        return MEDIA_SET_OVERHEAD + literal + SOURCE_RANGE_BYTES * len(value.parts)
    return media_set_weight(value)


@dataclass(frozen=True)
class ClipFile:
    """A clipped progressive MP4 and, when a preview cut it short, its end in entry seconds (cache value)."""

    file: VirtualFile
    end: Fraction | None


def _clip_file_entry(index: MediaIndex, first: Fraction, last: Fraction, preview: Fraction | None) -> ClipFile:
    return ClipFile(*clip_file(index, first, last, preview))


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

    @property
    def index_keys(self) -> frozenset[tuple[str, str]]:
        """The index cache keys (storage key, version) of the flavors its media set was built from."""
        return frozenset((self.entry.flavor(fid).key, stat.version) for fid, stat in self.stats.items() if fid not in self.broken)


SUBTITLE_CACHE_BYTES = 32 * 2**20
SUBTITLE_CACHE_ENTRIES = 2048


def _cues_weight(cues: tuple[Cue, ...]) -> int:
    return 200 + sum(120 + len(cue.text) + len(cue.settings) for cue in cues)


class MediaService:
    """Indexes, media sets and previews of a catalog's files, cached within ``index_cache_bytes`` (see the module doc).

    ``index_cache_entries`` is a second bound on the number of indexes (media sets and previews: a quarter
    of it, at least 16 each); whichever bound is reached first evicts.
    """

    def __init__(
        self, catalog: Catalog, storage: Storage, target: Fraction, index_cache_entries: int = INDEX_CACHE_ENTRIES,
        stat_ttl: float = STAT_TTL, index_cache_bytes: int = INDEX_CACHE_BYTES,
    ) -> None:
        self.catalog = catalog
        self.storage = storage
        self.target = target
        self.stat_ttl = stat_ttl
        self._stats: dict[str, tuple[ObjectStat, float]] = {}
        self._clipped: weakref.WeakSet[Track] = weakref.WeakSet()  # tracks holding a clip table (weighed with their index)
        # what a format carries over between segments (TS continuity counters), per rendition: one byte a segment,
        # kept as long as the media set holding the rendition (not weighed: SEGMENT_BYTES has room)
        self._continuity_by_rendition: weakref.WeakKeyDictionary[Rendition, dict[str, np.ndarray | None]] = (
            weakref.WeakKeyDictionary()
        )
        self.indexes: AsyncLRU[tuple[str, str], MediaIndex] = AsyncLRU(
            "index cache", index_cache_bytes, self._index_weight, index_cache_entries
        )
        derived_bytes, derived_entries = max(index_cache_bytes // 4, 1), max(16, index_cache_entries // 4)
        self.media_sets: AsyncLRU[tuple, MediaSet] = AsyncLRU(
            "media set cache", derived_bytes, media_set_weight, derived_entries, derived_from=self.indexes
        )
        self.previews: AsyncLRU[tuple, MediaSet | VirtualFile | ClipFile] = AsyncLRU(
            "preview cache", derived_bytes, preview_weight, derived_entries, derived_from=self.indexes
        )
        # sidecar subtitle files, parsed (packager/subtitles.py): small, but bounded like everything else
        self.subtitle_cues: AsyncLRU[tuple[str, str], tuple[Cue, ...]] = AsyncLRU(
            "subtitle cache", SUBTITLE_CACHE_BYTES, _cues_weight, SUBTITLE_CACHE_ENTRIES
        )
        # storage key -> (how many tracks its last parse left out, the first of them), for /healthz
        self.skipped: OrderedDict[str, tuple[int, tuple[SkippedTrack, ...]]] = OrderedDict()

    def _index_weight(self, index: MediaIndex) -> int:
        return INDEX_OVERHEAD + sum(track_weight(t, t in self._clipped) for t in index.tracks)

    def _charge_clip_tables(self, sources: Iterable[tuple[str, str]], tracks: Iterable[Track]) -> None:
        """Tracks about to be clipped get a clip table for life: their cached indexes weigh that from now on."""
        new = [t for t in tracks if t not in self._clipped]
        if new:
            for track in new:
                self._clipped.add(track)
            for key in sources:
                self.indexes.reweigh(key)

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

    def fresh_for(self, entry: Entry) -> float:
        """Seconds until the first of the entry's remembered stats must be asked again: how long an answer built
        on them may be repeated unasked (edge/hot.py) and still notice a replaced file as soon as this service
        would. Every answer is built on every flavor's stat (entry_media), so one not remembered or due gives 0;
        a subtitle file's counts while remembered (an answer that read it, a master or a subtitle playlist, has
        just asked for it; one that did not leaves it to lapse)."""
        now = time.monotonic()
        left = self.stat_ttl
        for key in [f.key for f in entry.flavors]:
            cached = self._stats.get(key)
            left = min(left, 0.0 if cached is None else cached[1] + self.stat_ttl - now)
        for key in [s.key for s in entry.subtitles]:
            cached = self._stats.get(key)
            if cached is not None and cached[1] + self.stat_ttl > now:
                left = min(left, cached[1] + self.stat_ttl - now)
        return max(left, 0.0)

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
            index: MediaIndex = done.value
        except MediaError as exc:
            self.skipped.pop(key, None)  # what /healthz lists is about playable files
            log.warning("unplayable flavor %s: %s", key, exc)  # logged once: the failure is cached
            raise FlavorError(key, exc) from exc
        self._note_skipped(key, index.skipped)
        return index

    def _note_skipped(self, key: str, skipped: tuple[SkippedTrack, ...]) -> None:
        """Log the tracks a parse left out (once per file version: the index is cached) and keep them for /healthz."""
        self.skipped.pop(key, None)
        if not skipped:
            return
        named = "; ".join(track.describe() for track in skipped[:SKIPPED_TRACKS_LOGGED])
        more = len(skipped) - SKIPPED_TRACKS_LOGGED
        log.warning("flavor %s: %s%s; the rest of the file plays", key, named, f"; and {more} more tracks" if more > 0 else "")
        self.skipped[key] = (len(skipped), skipped[:SKIPPED_TRACKS_LISTED])
        if len(self.skipped) > SKIPPED_FILES_KEPT:
            self.skipped.popitem(last=False)

    def skipped_report(self) -> dict:
        """What /healthz says about left-out tracks: how many, and which (file, track, codec, reason), the
        first SKIPPED_TRACKS_LISTED of them."""
        listed = itertools.islice(((key, t) for key, (_, kept) in self.skipped.items() for t in kept), SKIPPED_TRACKS_LISTED)
        tracks = [{"file": key, "track": t.track_id, "kind": t.kind, "codec": t.codec, "reason": t.reason} for key, t in listed]
        return {"count": sum(count for count, _ in self.skipped.values()), "tracks": tracks}

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
                broken[flavor.id] = exc.with_traceback(None)  # the cached failure must not hold this frame (and its indexes)
        if not indexed:
            raise next(iter(broken.values()))
        key = (partner, entry_id, tuple((fid, stats[fid].version) for fid, _ in indexed))
        sources = frozenset((entry.flavor(fid).key, stats[fid].version) for fid, _ in indexed)

        async def build() -> MediaSet:
            # segmenting a long ladder is CPU work: keep it off the event loop
            return await asyncio.to_thread(build_media_set, indexed, self.target)

        return EntryMedia(entry, await self.media_sets.get(key, build, sources), stats, broken)

    async def subtitles(self, sub: SubtitleFile) -> tuple[tuple[Cue, ...], str]:
        """A sidecar's cues and file version; MalformedSubtitles (cached, logged once) for one that does not parse."""
        stat = await self.stat(sub)  # type: ignore[arg-type]  (a sidecar has a storage key, as a flavor does)

        async def parse() -> tuple[Cue, ...]:
            if stat.size > SUBTITLE_MAX_BYTES:
                raise MalformedSubtitles(f"{sub.key}: {stat.size} bytes; subtitle files over {SUBTITLE_MAX_BYTES} are not read")
            (data,) = await self.storage.read(sub.key, [ByteRange(0, stat.size)]) if stat.size else (b"",)
            try:
                return await asyncio.to_thread(parse_subtitles, bytes(data), sub.format)
            except MalformedSubtitles as exc:
                log.warning("subtitles %s left out: %s", sub.key, exc)
                raise MalformedSubtitles(f"{sub.key}: {exc}") from None

        return await self.subtitle_cues.get((sub.key, stat.version), parse), stat.version

    async def preview_set(self, em: EntryMedia, seconds: Fraction) -> MediaSet:
        """The entry's media set clipped to a preview (cached: every viewer of a preview shares it)."""
        key = (em.entry.partner, em.entry.id, em.version, seconds)
        sources = em.index_keys

        async def clip() -> MediaSet:
            self._charge_clip_tables(sources, (r.track for r in em.media_set.videos + em.media_set.audios))
            return await asyncio.to_thread(clip_media_set, em.media_set, seconds)

        return await self.previews.get(key, clip, sources)

    async def clip_set(self, em: EntryMedia, first: Fraction, last: Fraction, preview: Fraction | None) -> ClipMediaSet:
        """The entry from ``first`` to ``last`` rebased to 0, ended earlier by a preview of ``preview`` s (cached)."""
        key = ("clip", em.entry.partner, em.entry.id, em.version, first, last, preview)
        sources = em.index_keys

        async def build() -> ClipMediaSet:
            # the indexes only on a miss: a cached clip needs none of them
            playable = [f for f in em.entry.flavors if f.id in em.stats and f.id not in em.broken]  # as entry_media built it
            indexed = [(f.id, await self.index(f, em.stats[f.id])) for f in playable]
            return await asyncio.to_thread(clip_set, indexed, first, last, preview, self.target)

        return await self.previews.get(key, build, sources)  # type: ignore[return-value]

    async def clip_file(self, flavor: Flavor, stat: ObjectStat, first: Fraction, last: Fraction,
                        preview: Fraction | None) -> tuple[VirtualFile, Fraction | None]:
        """A progressive MP4 of a clip of one flavor (packager.clip.clip_file), cached."""
        index = await self.index(flavor, stat)
        key = ("clip", flavor.key, stat.version, first, last, preview)
        found = await self.previews.get(key, lambda: asyncio.to_thread(_clip_file_entry, index, first, last, preview),
                                        ((flavor.key, stat.version),))
        return found.file, found.end

    async def clipped_file(self, flavor: Flavor, stat: ObjectStat, seconds: Fraction) -> VirtualFile | None:
        """A progressive MP4 holding the first ``seconds`` of a flavor, as literal bytes and source ranges;
        None when the preview keeps every sample (the file itself is the answer)."""
        index = await self.index(flavor, stat)
        sources = ((flavor.key, stat.version),)
        self._charge_clip_tables(sources, index.tracks)  # keeps_everything clips every track
        if keeps_everything(index, seconds):
            return None
        return await self.previews.get(
            (flavor.key, stat.version, seconds), lambda: asyncio.to_thread(clipped_mp4, index, seconds), sources
        )

    async def batch(self, entry: Entry, rendition: Rendition, segment: Segment, fmt: SegmentFormat | None = None) -> SampleBatch:
        """The segment's samples; with ``fmt``, carrying what that format continues from the rendition's earlier
        segments (``SampleBatch.continuity_start``)."""
        flavor = entry.flavor(rendition.id.flavor)
        ranges = byte_ranges(rendition.track, segment.span)
        try:
            chunks = await self.storage.read(flavor.key, ranges)
        except StorageChanged:
            self._stats.pop(flavor.key, None)  # the next request indexes the new file instead of failing for STAT_TTL
            raise
        if len(chunks) > 1 and sum(map(len, chunks)) > JOIN_OFF_LOOP_BYTES:
            # joining the pieces read copies the whole segment: a few ms for a video segment, which on the event
            # loop held up every other request (measured: 40 % of the loop's time serving cold 1080p segments)
            batch = await asyncio.to_thread(make_batch, rendition.track, segment.span, chunks, segment.number)
        else:
            batch = make_batch(rendition.track, segment.span, chunks, sequence_number=segment.number)
        if fmt is None:
            return batch
        starts = await self._continuity(rendition, fmt)
        return batch if starts is None else replace(batch, continuity_start=int(starts[segment.number - rendition.segments[0].number]))

    async def _continuity(self, rendition: Rendition, fmt: SegmentFormat) -> np.ndarray | None:
        """What ``fmt`` carries over between the rendition's segments (TS continuity counters), computed once per
        rendition and format and kept exactly as long as the media set holding the rendition."""
        per_format = self._continuity_by_rendition.setdefault(rendition, {})
        if fmt.name not in per_format:
            segments = rendition.segments  # a layout pass over the track: off the event loop
            per_format[fmt.name] = await asyncio.to_thread(fmt.continuity, rendition.track, segments)
        return per_format[fmt.name]
