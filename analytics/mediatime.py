"""Media time covered by a byte range of a progressive MP4: a pure function of the sample table.

A progressive viewer receives bytes, not seconds. The samples whose bytes lie
entirely inside the bytes actually sent are the ones the player could decode;
their presentation window is the media time that response delivered
(:func:`byte_range_media_time`). Over a session, :class:`DeliveredBytes` keeps
the union of the byte ranges sent and counts each sample once, when its last
byte arrives, however the player split, repeated or overlapped its requests.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

import numpy as np

from packager.media import MediaIndex, Track


@dataclass(frozen=True)
class MediaSpan:
    start: float  # seconds of presentation time
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def reference_track(index: MediaIndex) -> Track | None:
    """The track whose samples stand for the file's media time: the video, else the first audio."""
    video = index.video
    if video is not None and video.sample_count:
        return video
    return next((t for t in index.audios if t.sample_count), None)


def byte_range_media_time(index: MediaIndex, first_byte: int, last_byte: int) -> MediaSpan | None:
    """Presentation window of the reference track's samples fully inside ``[first_byte, last_byte]``.

    ``None`` when no whole sample is inside (a range over the moov box only, or
    smaller than one frame). Times are seconds on the movie timeline (edit list
    applied, clamped at the edit list's end).
    """
    track = reference_track(index)
    if track is None or last_byte < first_byte:
        return None
    offsets = track.offsets
    inside = (offsets >= first_byte) & (offsets + track.sizes - 1 <= last_byte)
    if not inside.any():
        return None
    pts = track.pts[inside]
    ends = pts + track.durations[inside]
    start = int(pts.min())
    end = int(ends.max())
    if track.edit_end is not None:
        end = min(end, track.edit_end)
    start = max(start, 0)
    if end <= start:
        return None
    scale = track.timescale
    return MediaSpan(start / scale, end / scale)


def index_duration(index: MediaIndex) -> float:
    return float(index.duration_seconds)


ByteRange = tuple[int, int]  # first and last byte, inclusive


def merge_byte_range(ranges: list[ByteRange], first: int, last: int) -> list[ByteRange]:
    """``ranges`` (sorted, disjoint, not touching) with ``[first, last]`` added.

    Touching ranges merge too (``0-99`` + ``100-199`` = ``0-199``): a sample
    split across two consecutive requests has all its bytes delivered.
    """
    merged: list[ByteRange] = []
    for a, b in ranges:
        if b + 1 < first or a > last + 1:
            merged.append((a, b))
        else:
            first, last = min(a, first), max(b, last)
    merged.append((first, last))
    merged.sort()
    return merged


def covered_ticks(track: Track, ranges: list[ByteRange]) -> int:
    """Presentation time (track timescale) of ``track``'s samples whose bytes lie entirely inside one of ``ranges``.

    Each such sample counts its own presentation interval ``[pts, pts + duration)``,
    clamped to the edit list (before 0 and after its end nothing is presented).
    Samples rather than one window: what is counted is exactly what the bytes
    hold, so requests that split a sample between them, overlap or leave holes
    add up to the media time of their union.
    """
    if not ranges:
        return 0
    starts = np.fromiter((a for a, _ in ranges), dtype=np.int64, count=len(ranges))
    ends = np.fromiter((b for _, b in ranges), dtype=np.int64, count=len(ranges))
    offsets = track.offsets
    slot = np.searchsorted(starts, offsets, side="right") - 1  # the range starting at or before each sample
    inside = (slot >= 0) & (offsets + track.sizes - 1 <= ends[np.maximum(slot, 0)])
    pts = track.pts[inside]
    shown_end = pts + track.durations[inside]
    limit = track.edit_end if track.edit_end is not None else np.iinfo(np.int64).max
    shown = np.clip(shown_end, 0, limit) - np.clip(pts, 0, limit)
    return int(shown.sum())


MAX_RANGES = 64  # per session and file: a player seeking all over a file stays about 1 KB of state


def _no_ranges() -> np.ndarray:
    return np.empty((0, 2), dtype=np.int64)


@dataclass(slots=True)
class DeliveredBytes:
    """The bytes of one progressive file sent to one play session, and the media time they hold.

    ``add`` answers how much media time a new response delivered that the
    session did not already have: a player that re-reads bytes (ffmpeg on a
    file whose moov is at the end reads the file, the moov, then the media
    again; browsers re-request after seeks) is not counted twice.
    """

    # (n, 2) first and last byte: 16 bytes a range. A list of int tuples takes 130 (8 KB at MAX_RANGES), and the
    # tracker holds one of these per session and flavor, for up to 100 000 sessions anyone can open
    ranges: np.ndarray = field(default_factory=_no_ranges)
    ticks: int = 0  # covered_ticks of ranges

    def add(self, index: MediaIndex, first: int, last: int) -> float:
        """Seconds of media time that ``[first, last]`` adds to what this session was sent."""
        track = reference_track(index)
        if track is None or last < first:
            return 0.0
        old: list[ByteRange] = [(a, b) for a, b in self.ranges.tolist()]
        merged = merge_byte_range(old, first, last)
        if len(merged) > MAX_RANGES:  # the new range touched none of the old ones
            # Forget the smallest old range: if its bytes come again they count again (a bounded
            # overcount, rather than unbounded state for a pathological client).
            smallest = min(old, key=lambda r: r[1] - r[0])
            merged.remove(smallest)
            self.ticks = covered_ticks(track, [r for r in old if r != smallest])
        self.ranges = np.array(merged, dtype=np.int64).reshape(-1, 2)
        ticks = covered_ticks(track, merged)
        added = max(0, ticks - self.ticks)
        self.ticks = ticks
        return added / track.timescale


MAX_PIECES = 64  # per session: a viewer seeking all over an entry stays a few KB of state (in memory or in Redis)


@dataclass(slots=True)
class DeliveredTime:
    """The media time delivered to one play session: a union of ``[start, end)`` windows in milliseconds.

    ``add`` answers how much of a new window the session did not already have.
    Milliseconds as integers, the unit every sum of media time uses
    (``events.media_ms``): the union is exact and the same on every node and in
    every report that replays the same windows.

    Pieces that touch merge (``[0, 4000)`` + ``[4000, 8000)`` is one piece), so
    a session watched in order is one piece. Past :data:`MAX_PIECES` the
    smallest old piece is forgotten: if that time comes again it counts again
    (a bounded overcount, rather than unbounded state for a client seeking
    everywhere).
    """

    starts: list[int] = field(default_factory=list)  # sorted; pieces disjoint and not touching
    ends: list[int] = field(default_factory=list)

    def add(self, start: int, end: int) -> int:
        """Milliseconds of ``[start, end)`` that were not delivered before; records the window."""
        if end <= start:
            return 0
        starts, ends = self.starts, self.ends
        if starts and starts[-1] <= start <= ends[-1]:  # the common case: at or after the latest piece's start
            if end <= ends[-1]:
                return 0  # delivered already (a refetch of the time just played)
            added = end - ends[-1]  # the next segment in order: the latest piece grows
            ends[-1] = end
            return added
        first = bisect_left(ends, start)  # first piece ending at or after start: touches or overlaps
        past = bisect_right(starts, end)  # pieces [first, past) touch or overlap the window
        if first == past:
            starts.insert(first, start)
            ends.insert(first, end)
            added = end - start
        else:
            if first + 1 == past and starts[first] <= start and end <= ends[first]:
                return 0  # already delivered: the refetch case, kept cheap
            covered = 0
            for k in range(first, past):
                covered += ends[k] - starts[k]
            merged_start = min(start, starts[first])
            merged_end = max(end, ends[past - 1])
            added = (merged_end - merged_start) - covered
            starts[first:past] = [merged_start]
            ends[first:past] = [merged_end]
        if len(starts) > MAX_PIECES:
            self._forget_smallest(keep=first)
        return added

    def _forget_smallest(self, keep: int) -> None:
        candidates = [k for k in range(len(self.starts)) if k != keep]
        smallest = min(candidates, key=lambda k: self.ends[k] - self.starts[k])
        del self.starts[smallest]
        del self.ends[smallest]

    def merge(self, other: "DeliveredTime") -> None:
        for start, end in zip(other.starts, other.ends):
            self.add(start, end)

    @property
    def total(self) -> int:
        """Milliseconds delivered (of the pieces still remembered)."""
        return sum(self.ends) - sum(self.starts)

    def to_text(self) -> str:
        """``"0-8000,12000-16000"``: how the Redis aggregator stores a session's union."""
        return ",".join(f"{a}-{b}" for a, b in zip(self.starts, self.ends))

    @classmethod
    def from_text(cls, text: str | bytes | None) -> "DeliveredTime":
        """The union :meth:`to_text` wrote; ``None`` or ``""``: nothing delivered yet."""
        union = cls()
        if text:
            if isinstance(text, bytes):
                text = text.decode()
            for piece in text.split(","):
                start, _, end = piece.partition("-")
                union.add(int(start), int(end))
        return union


__all__ = [
    "ByteRange", "DeliveredBytes", "DeliveredTime", "MAX_PIECES", "MediaSpan", "byte_range_media_time", "covered_ticks", "index_duration",
    "merge_byte_range", "reference_track",
]
