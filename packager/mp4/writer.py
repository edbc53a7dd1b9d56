"""A clipped progressive MP4 (a free preview as one file), described, never materialised.

:func:`clipped_mp4` rewrites the moov for the samples a preview keeps (see
:mod:`packager.preview` for the cut rule) and returns a :class:`VirtualFile`:
the new header bytes plus the *source* byte ranges that form the new mdat.
The caller reads those ranges (it owns I/O) and streams them; an HTTP range
over the file is :meth:`VirtualFile.slice`.

Layout (faststart: the moov comes first, so playback can start as bytes arrive)::

    ftyp | moov | mdat header | chunk, chunk, ...

The mdat keeps the source's sample order when that order is already a good
progressive layout (each track in decode order, no track more than
:data:`MAX_SOURCE_LAG` seconds ahead of another: any faststart file from a sane
muxer), so it is a few merged source ranges and chunks are the source's track
runs. Otherwise samples are laid out in chunks of :data:`CHUNK_SECONDS` of
decode time per track, interleaved by time (slot by slot, tracks in file order
inside a slot). Either way a progressive player reads audio and video of the
same moment together.
Chunk offsets are 32-bit (stco) unless the file passes 4 GiB (co64).

Each track keeps its sample entry verbatim, its decode and composition times
(stts/ctts, version 1 when an offset is negative), its sync samples and an
edit list reproducing the source's presentation shift: an empty edit for a
delay, a media_time for a trim (B-frame delay, AAC priming), and an edit end at
the clip, so a player's timeline matches the source's.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np

from ..errors import MalformedMedia
from ..fmp4.boxes import (
    U32_MAX,
    EditBox,
    EditListBox,
    FileTypeBox,
    MovieBox,
    MovieHeaderBox,
    SampleDescriptionBox,
    SampleTableBox,
    TrackBox,
)
from ..fmp4.init import track_header_and_media
from ..media import ByteRange, MediaIndex, rescale
from ..preview import EmptyPreview, Seconds, TrackClip, clip_index
from .boxes_out import (
    ChunkLargeOffsetBox,
    ChunkOffsetBox,
    CompositionOffsetBox,
    SampleSizeBox,
    SampleToChunkBox,
    SyncSampleBox,
    TimeToSampleBox,
    mdat_header,
)

#: Decode time each chunk covers, per track: small enough that a progressive
#: reader never needs to skip far ahead for the other track.
CHUNK_SECONDS = Fraction(1, 2)

#: How far (seconds of decode time) one track may run ahead of another in the
#: source's sample order for that order to be kept as the layout.
MAX_SOURCE_LAG = 1.0

#: Largest chunk offset stco can hold; past it the moov uses co64 (a name, so tests can lower it).
STCO_LIMIT = U32_MAX

Part = bytes | ByteRange


@dataclass(frozen=True)
class VirtualFile:
    """A file made of literal bytes and ranges of another file, in order.

    ``size`` is the file's length; ``parts`` its pieces (for a clipped MP4:
    ftyp + moov, the mdat header, then source sample ranges); ``end`` the
    presentation end (seconds) of the clip it holds.
    """

    size: int
    parts: tuple[Part, ...]
    end: Fraction = Fraction(0)
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts, at = [], 0
        for part in self.parts:
            starts.append(at)
            at += len(part) if isinstance(part, (bytes, bytearray)) else part.size
        if at != self.size:
            raise MalformedMedia(f"virtual file parts add up to {at} bytes, not {self.size}")
        object.__setattr__(self, "_starts", tuple(starts))

    def slice(self, start: int, end: int) -> list[Part]:
        """The pieces holding bytes [start, end) (end exclusive, clamped to the file), source ranges cut to fit."""
        start, end = max(0, start), min(self.size, end)
        out: list[Part] = []
        if start >= end:
            return out
        at = bisect.bisect_right(self._starts, start) - 1
        while at < len(self.parts) and self._starts[at] < end:
            part, base = self.parts[at], self._starts[at]
            lo, hi = max(start, base) - base, end - base
            if isinstance(part, (bytes, bytearray)):
                piece = part[lo:hi]
                if piece:
                    out.append(bytes(piece))
            else:
                hi = min(hi, part.size)
                if hi > lo:
                    out.append(ByteRange(part.offset + lo, hi - lo))
            at += 1
        return out

    def materialise(self, read: Callable[[int, int], bytes], start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) with ``read(offset, size)`` for the source ranges (tests, small files)."""
        pieces = self.slice(start, self.size if end is None else end)
        return b"".join(p if isinstance(p, bytes) else read(p.offset, p.size) for p in pieces)


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Layout:
    """Where every kept sample goes: chunks per track and the source ranges of the new mdat."""

    chunk_counts: list[np.ndarray]  # per track: samples in each of its chunks, in sample order
    chunk_offsets: list[np.ndarray]  # per track: each chunk's offset within the mdat payload
    ranges: list[ByteRange]  # source ranges forming the payload, merged where adjacent
    payload_size: int
    interleave: str  # "source" or "time": which order was used


def _source_order_ok(perm: np.ndarray, owner: np.ndarray, decode_seconds: np.ndarray, max_lag: float) -> bool:
    """Is the source's own sample order a good progressive layout?

    Yes when each track's samples come in decode order and a reader never gets
    more than ``max_lag`` seconds ahead in one track of another.
    """
    for number in np.unique(owner).tolist():
        mine = perm[owner[perm] == number]
        if mine.size > 1 and not bool((np.diff(mine) > 0).all()):
            return False
    times = decode_seconds[perm]
    return bool(times.size == 0 or (np.maximum.accumulate(times) - times).max() <= max_lag)


def _layout(clips: Sequence[TrackClip], interleave: str = "auto") -> _Layout:
    """Order the kept samples in the new mdat and cut them into chunks.

    ``"source"`` keeps the source's order (its interleaving, and the fewest
    source ranges: what a faststart file from a sane muxer already has),
    ``"time"`` lays out :data:`CHUNK_SECONDS` slots of decode time, tracks in
    file order in each slot; ``"auto"`` takes the source order when it is a good
    progressive layout (see :func:`_source_order_ok`), else time slots.
    """
    owners, sizes, offsets, slots, seconds = [], [], [], [], []
    for number, clip in enumerate(clips):
        track, k = clip.track, clip.count
        decode = track.dts[:k] + track.presentation_shift
        slots.append((decode * CHUNK_SECONDS.denominator) // (CHUNK_SECONDS.numerator * track.timescale))
        seconds.append(decode / track.timescale)
        owners.append(np.full(k, number, dtype=np.int64))
        sizes.append(track.sizes[:k])
        offsets.append(track.offsets[:k])
    owner = np.concatenate(owners)
    all_sizes = np.concatenate(sizes).astype(np.int64)
    all_offsets = np.concatenate(offsets).astype(np.int64)
    index = np.arange(owner.size)

    perm = None
    if interleave in ("auto", "source"):
        perm = np.argsort(all_offsets, kind="stable")
        max_lag = MAX_SOURCE_LAG if interleave == "auto" else math.inf
        if not _source_order_ok(perm, owner, np.concatenate(seconds), max_lag):
            perm = None
    if perm is None:
        interleave = "time"
        perm = np.lexsort((index, owner, np.concatenate(slots)))  # slot, then track, then sample

    # chunks: runs of consecutive samples of one track in mdat order
    is_start = np.ones(perm.size, dtype=bool)
    is_start[1:] = (owner[perm[1:]] != owner[perm[:-1]]) | (perm[1:] != perm[:-1] + 1)
    chunk_pos = np.flatnonzero(is_start)
    chunk_len = np.diff(np.append(chunk_pos, perm.size))
    chunk_owner = owner[perm[chunk_pos]]
    placed = np.zeros(perm.size, dtype=np.int64)
    np.cumsum(all_sizes[perm][:-1], out=placed[1:])
    chunk_offset = placed[chunk_pos]
    counts, chunk_offsets = [], []
    for number in range(len(clips)):
        mine = chunk_owner == number
        first_samples = perm[chunk_pos[mine]]
        if first_samples.size > 1 and not bool((np.diff(first_samples) > 0).all()):  # pragma: no cover
            raise AssertionError("chunks of a track out of sample order")
        counts.append(chunk_len[mine])
        chunk_offsets.append(chunk_offset[mine])

    src = all_offsets[perm]
    src_end = src + all_sizes[perm]
    breaks = np.flatnonzero(src[1:] != src_end[:-1]) + 1
    run_starts = np.concatenate(([0], breaks))
    run_stops = np.concatenate((breaks, [src.size]))
    ranges = [
        ByteRange(int(src[a]), int(src_end[b - 1] - src[a])) for a, b in zip(run_starts.tolist(), run_stops.tolist())
    ]
    return _Layout(counts, chunk_offsets, ranges, int(all_sizes.sum()), interleave)


# --------------------------------------------------------------------------- moov


@dataclass(frozen=True)
class _TrackPlan:
    clip: TrackClip
    edits: tuple[tuple[int, int], ...]  # (duration in movie timescale, media_time or -1)
    media_duration: int  # track timescale, sum of kept sample durations

    @property
    def movie_duration(self) -> int:
        return sum(d for d, _ in self.edits)


def _edit_plan(clip: TrackClip, movie_timescale: int) -> _TrackPlan:
    """The edit list that presents the kept samples where the source presents them.

    Presentation = composition time + shift. With M = media_time and D = the
    empty edit, D - M = shift: M = max(0, -shift, first composition time) keeps
    every kept sample the source presents and D = M + shift >= 0. The media edit
    lasts until the clip's end.
    """
    track, k = clip.track, clip.count
    ts = track.timescale
    shift = track.presentation_shift
    composition = track.dts[:k] + track.cts_offsets[:k]
    media_time = max(0, -shift, int(composition.min()))
    delay = media_time + shift
    end = math.floor(clip.end * ts)
    if end <= delay:
        raise EmptyPreview(f"track {track.track_id}: nothing is presented before the preview ends")
    edits: list[tuple[int, int]] = []
    delay_movie = int(rescale(delay, ts, movie_timescale))
    if delay_movie > 0:
        edits.append((delay_movie, -1))
    edits.append((-((-(end - delay) * movie_timescale) // ts), media_time))  # ceil: never cut a kept frame
    return _TrackPlan(clip, tuple(edits), int(track.durations[:k].sum()))


def _trak(plan: _TrackPlan, chunk_counts: np.ndarray, chunk_offsets: np.ndarray, large: bool, enabled: bool, group: int):
    track, k = plan.clip.track, plan.clip.count
    tables = [SampleDescriptionBox((bytes(track.sample_entry),)), TimeToSampleBox.from_durations(track.durations[:k])]
    offsets = track.cts_offsets[:k]
    if offsets.size and bool(offsets.any()):
        tables.append(CompositionOffsetBox.from_offsets(offsets))
    keyframes = track.keyframes[:k]
    if not bool(keyframes.all()):
        tables.append(SyncSampleBox.from_keyframes(keyframes))
    tables.append(SampleSizeBox(track.sizes[:k]))
    tables.append(SampleToChunkBox.from_chunk_counts(chunk_counts))
    tables.append((ChunkLargeOffsetBox if large else ChunkOffsetBox).from_offsets(chunk_offsets))
    header, media = track_header_and_media(
        track, SampleTableBox(tuple(tables)), duration=plan.movie_duration, media_duration=plan.media_duration,
        enabled=enabled, alternate_group=group,
    )
    return TrackBox((header, EditBox((EditListBox(plan.edits),)), media))


def _file_type(plans: Sequence[_TrackPlan]) -> FileTypeBox:
    brands = [b"isom", b"iso2"]
    if any(int(p.clip.track.cts_offsets[: p.clip.count].min(initial=0)) < 0 for p in plans):
        brands.append(b"iso4")  # ctts version 1
    brands.append(b"mp41")
    return FileTypeBox(major_brand=b"isom", minor_version=0x200, compatible_brands=tuple(brands))


def _moov(index: MediaIndex, plans: Sequence[_TrackPlan], layout: _Layout, data_start: int, large: bool) -> bytes:
    audio_count = sum(1 for p in plans if p.clip.track.kind == "audio")
    seen: set[str] = set()
    traks = []
    for plan, counts, relative in zip(plans, layout.chunk_counts, layout.chunk_offsets):
        kind = plan.clip.track.kind
        group = 1 if kind == "audio" and audio_count > 1 else 0  # players pick one language, not all
        traks.append(_trak(plan, counts, relative + data_start, large, kind not in seen, group))
        seen.add(kind)
    header = MovieHeaderBox(
        index.movie_timescale,
        next_track_id=max(p.clip.track.track_id for p in plans) + 1,
        duration=max(p.movie_duration for p in plans),
    )
    return bytes(MovieBox((header, *traks)))


def clipped_mp4(index: MediaIndex, seconds: Seconds, *, interleave: str = "auto") -> VirtualFile:
    """The progressive MP4 a preview of ``seconds`` may serve for the file ``index`` describes.

    Every track is cut at one end E (see :func:`packager.preview.clip_index`);
    raises :class:`packager.preview.EmptyPreview` when not one complete frame
    fits. The result names source byte ranges only of kept samples.
    ``interleave`` chooses the mdat order (see :func:`_layout`; tests force one).
    """
    end, clips = clip_index(index, seconds)
    plans = [_edit_plan(clip, index.movie_timescale) for clip in clips]
    layout = _layout(clips, interleave)
    ftyp = bytes(_file_type(plans))
    mdat = mdat_header(layout.payload_size)
    largest = max((int(o.max()) for o in layout.chunk_offsets if o.size), default=0)
    # Box sizes do not depend on offset values, only on stco vs co64: measure with relative offsets.
    large = largest > STCO_LIMIT
    moov_size = len(_moov(index, plans, layout, 0, large))
    if not large and len(ftyp) + moov_size + len(mdat) + largest > STCO_LIMIT:
        large = True
        moov_size = len(_moov(index, plans, layout, 0, large))
    data_start = len(ftyp) + moov_size + len(mdat)
    moov = _moov(index, plans, layout, data_start, large)
    if len(moov) != moov_size:  # pragma: no cover - box sizes never depend on offset values
        raise AssertionError("moov size changed with its chunk offsets")
    parts: tuple[Part, ...] = (ftyp + moov, mdat, *layout.ranges)
    return VirtualFile(data_start + layout.payload_size, parts, end)


__all__ = ["CHUNK_SECONDS", "VirtualFile", "clipped_mp4"]
