"""Free previews: cut media at N seconds so that no frame presented at or after N is ever served.

An access rule may grant only the first N seconds of an entry. The cut must not
be bypassable, so it is decided here, on the sample tables, and everything
served for the preview (playlists, segments, a progressive MP4) is built from
the clipped plan: no sample past the cut is ever named, so no byte of it can be
read.

The rule (one for video and audio)
----------------------------------
A track keeps a *decode-order prefix* of its samples (a prefix is always
decodable: every reference a kept frame needs was decoded before it). A sample
may be kept only if its whole presentation interval ends by N:

* audio: ``pts + duration <= N``; a frame that starts before N but ends after
  it would leak up to one frame of sound past N, so it goes;
* video: the frame is shown from its pts until the next frame's pts (in
  presentation order; the last frame until the track's end), and that end must
  be ``<= N``.

The prefix stops at the first sample (in decode order) that breaks the rule,
and then shortens further if needed so that the kept samples are *exactly* the
samples presented before some time E: with B-frames a reference frame shown
after N is decoded before B-frames shown before N; the prefix stops before the
reference frame, so those B-frames go too, and E is the pts of the earliest of
them. Formally E is the presentation end of the kept samples (the largest
``pts + duration`` for audio, the pts of the first dropped frame in
presentation order for video): it is a frame boundary, ``E <= N``, and the
kept samples are exactly those with ``pts < E``.

* N at or beyond the track's end keeps everything (E = the track's end). A
  frame straddling the edit list's end counts as ending there; samples wholly
  past it (never presented) are still media past their time, kept only if they
  end by N.
* N before the first frame ends keeps nothing: :func:`clip_point` returns
  ``(0, 0)`` (an audio track may keep just its AAC priming frame, which is
  presented before 0: E is then 0). There is no "minimum one GOP": the caller
  answers 403; :func:`clip_media_set` and the MP4 writer raise
  :class:`EmptyPreview`, which says so.

One end for a whole set of tracks
---------------------------------
Renditions of an entry (and tracks of one file) stop at one time E so that
playlists agree: E starts at N and is lowered until every video track (every
audio track when there is no video) is clipped exactly at E; audio is then cut
at E by the audio rule (its last kept frame may end up to one frame before E).
For a media set E also drops to a segment start if some rendition would keep no
sample of the segment E falls in (audio frames straddling a keyframe boundary),
so every rendition has the same number of non-empty segments. When N cuts no
video track, E is where the media ends.

Cost: the first clip of a track builds three int64 arrays of its length (kept
per Track, weakly); every later :func:`clip_point` is two binary searches.
Callers should still cache :func:`clip_media_set` per (media set, N).
"""

from __future__ import annotations

import bisect
import math
import weakref
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Callable, Iterable, Sequence

import numpy as np

from .errors import PackagerError
from .media import MediaIndex, SampleSpan, Segment, Track
from .media_set import MediaSet, Rendition

Seconds = Fraction | int | Decimal | float | str


class EmptyPreview(PackagerError):
    """The preview is too short to hold a single complete frame: nothing may be served (403)."""

    code = "preview_empty"


# --------------------------------------------------------------------------- one track


def as_seconds(seconds: Seconds) -> Fraction:
    """A preview length as an exact Fraction. Floats go through their shortest repr (3.3 -> 33/10)."""
    if isinstance(seconds, float):
        if not math.isfinite(seconds):
            raise ValueError(f"preview length must be finite, not {seconds}")
        return Fraction(repr(seconds))
    return Fraction(seconds)


def frame_ends(track: Track) -> np.ndarray:
    """Presentation end of each sample (decode order), in the track's timescale.

    Audio: ``pts + duration``. Video: the next pts in presentation order (decode
    durations say nothing about display with B-frames); the last frame shown
    ends at ``pts + duration``.
    """
    pts = track.pts
    if track.kind != "video" or pts.size == 0:
        return pts + track.durations
    order = np.argsort(pts, kind="stable")
    ends_sorted = np.empty_like(pts)
    ends_sorted[:-1] = pts[order[1:]]
    ends_sorted[-1] = pts[order[-1]] + track.durations[order[-1]]
    ends = np.empty_like(pts)
    ends[order] = ends_sorted
    return ends


def _presented_ends(track: Track) -> np.ndarray:
    """:func:`frame_ends` with the edit list's end applied to the samples it cuts.

    A frame straddling the edit end is presented only until it; a sample wholly
    past it is never presented, but its bytes are still media after that time,
    so it keeps its own end (and is kept only if that end fits).
    """
    ends = frame_ends(track)
    if track.edit_end is None:
        return ends
    return np.where(track.pts < track.edit_end, np.minimum(ends, track.edit_end), ends)


@dataclass(frozen=True, eq=False)
class _ClipTable:
    """Per-track arrays that make :func:`clip_point` two binary searches (built once per track)."""

    reach: np.ndarray  # reach[i] = max presented end of samples [0, i]: prefix k fits N iff reach[k-1] <= N
    splits: np.ndarray  # prefix lengths k whose samples are exactly those shown before the rest (0 and n included)
    next_pts: np.ndarray  # next_pts[j] = min pts of samples [splits[j], n): the first dropped frame

    @classmethod
    def build(cls, track: Track) -> _ClipTable:
        n = track.sample_count
        pts = track.pts
        reach = np.maximum.accumulate(_presented_ends(track))
        suffix_min = np.minimum.accumulate(pts[::-1])[::-1]
        valid = np.ones(n + 1, dtype=bool)
        valid[1:n] = np.maximum.accumulate(pts)[:-1] < suffix_min[1:]
        splits = np.flatnonzero(valid)
        next_pts = np.append(suffix_min, np.iinfo(np.int64).max)[splits]
        return cls(reach, splits, next_pts)


_tables: "weakref.WeakKeyDictionary[Track, _ClipTable]" = weakref.WeakKeyDictionary()


def _table(track: Track) -> _ClipTable:
    table = _tables.get(track)
    if table is None:
        table = _tables[track] = _ClipTable.build(track)
    return table


def clip_point(track: Track, seconds: Seconds) -> tuple[int, Fraction]:
    """(samples to keep: a decode-order prefix, presentation end E those samples cover).

    E <= N is a frame boundary and the kept samples are exactly those with
    ``pts < E`` (see the module docstring). ``(0, Fraction(0))`` when not even
    the first frame fits; ``(sample_count, track end)`` when N reaches the end.
    """
    n = track.sample_count
    ts = track.timescale
    limit_seconds = as_seconds(seconds)
    if n == 0:
        return 0, Fraction(0)
    limit = math.floor(limit_seconds * ts)  # end <= N*ts  <=>  end <= floor(N*ts) for integer ends
    table = _table(track)
    # the longest prefix whose frames all end by N (the first one ending later stops it) ...
    k_max = int(np.searchsorted(table.reach, limit, side="right"))
    if k_max == n:
        return n, min(Fraction(track.end_time, ts), limit_seconds)
    # ... shortened to the longest prefix that is exactly the frames shown before some time
    at = int(np.searchsorted(table.splits, k_max, side="right")) - 1
    k = int(table.splits[at])
    if k == 0:
        return 0, Fraction(0)
    if track.kind == "video":
        end = int(table.next_pts[at])  # the first dropped frame in presentation order
    else:
        end = int(table.reach[k - 1])  # the end of the last kept frame
    return k, Fraction(min(end, limit), ts)


@dataclass(frozen=True)
class TrackClip:
    """One track cut at a set's end: its first ``count`` samples, presented until ``end``."""

    track: Track
    count: int
    end: Fraction  # seconds; presentation end of the kept samples

    @property
    def cut(self) -> bool:
        return self.count < self.track.sample_count

    @property
    def span(self) -> SampleSpan:
        return SampleSpan(0, self.count)


def _clip_constraint(track: Track) -> Callable[[Fraction], Fraction]:
    """E -> the largest end <= E at which ``track`` can be clipped exactly (E if E does not cut it)."""

    def constrain(end: Fraction) -> Fraction:
        count, clip_end = clip_point(track, end)
        return clip_end if count < track.sample_count else end

    return constrain


def _fixpoint(start: Fraction, constraints: Sequence[Callable[[Fraction], Fraction]]) -> Fraction:
    """Lower ``start`` until every constraint accepts it unchanged.

    Each constraint returns a value <= its argument, drawn from a finite set
    (frame boundaries, segment starts, 0), so this terminates; it usually takes
    one round.
    """
    end = start
    while True:
        lowered = end
        for constrain in constraints:
            lowered = min(lowered, constrain(lowered))
        if lowered == end:
            return end
        if lowered > end:  # pragma: no cover - constraints never raise the end
            raise AssertionError("preview end went up")
        end = lowered


def _primary(tracks: Iterable[Track]) -> list[Track]:
    tracks = list(tracks)
    videos = [t for t in tracks if t.kind == "video"]
    return videos or tracks


def clip_tracks(tracks: Sequence[Track], seconds: Seconds) -> tuple[Fraction, tuple[TrackClip, ...]]:
    """Cut tracks played together (one file's, or an entry's renditions) at one end time.

    Returns (E, one TrackClip per track, in order). Video tracks (audio tracks
    when there is no video) are clipped exactly at E; audio keeps its whole
    frames ending by E. When N cuts no video track, E is where the media ends
    (the latest track end, <= N). Does not raise for an empty result: check
    ``E > 0``.
    """
    limit = max(as_seconds(seconds), Fraction(0))
    end = _fixpoint(limit, [_clip_constraint(t) for t in _primary(tracks)])
    clips = tuple(TrackClip(t, *clip_point(t, end)) for t in tracks)
    return _covered_end(clips), clips


def _covered_end(clips: Iterable[TrackClip]) -> Fraction:
    """The end the clipped tracks really reach: E when a video track is cut, the media's end when none is."""
    return max((c.end for c in clips), default=Fraction(0))


def clip_index(index: MediaIndex, seconds: Seconds) -> tuple[Fraction, tuple[TrackClip, ...]]:
    """:func:`clip_tracks` over a file's tracks; raises :class:`EmptyPreview` when nothing would play."""
    end, clips = clip_tracks(index.tracks, seconds)
    _check_not_empty(seconds, [(f"{c.track.kind} track {c.track.track_id}", c) for c in clips])
    return end, clips


def keeps_everything(index: MediaIndex, seconds: Seconds) -> bool:
    """Whether a preview of ``seconds`` keeps every sample of the file: then it is no clip at all."""
    _, clips = clip_tracks(index.tracks, seconds)
    return all(clip.count == clip.track.sample_count for clip in clips)


def _check_not_empty(seconds: Seconds, clips: Sequence[tuple[str, TrackClip]]) -> None:
    """Raise EmptyPreview when some track would present nothing (the caller answers 403)."""
    for name, clip in clips:
        if clip.count == 0 or clip.end <= 0:
            first = _first_frame_end(clip.track)
            after = f" (its first frame ends at {float(first):.3f} s)" if first is not None else ""
            raise EmptyPreview(
                f"a {float(as_seconds(seconds)):.3f} s preview holds no complete frame of {name}{after}: nothing to serve"
            )


def _first_frame_end(track: Track) -> Fraction | None:
    if track.sample_count == 0:
        return None
    ends = frame_ends(track)
    presented = ends[ends > 0]
    return Fraction(int(presented.min()), track.timescale) if presented.size else None


# --------------------------------------------------------------------------- media sets


@dataclass(frozen=True)
class ClippedSegment(Segment):
    """A segment shortened by a preview: fewer samples and/or a shorter duration than ``full``.

    Its bytes differ from those of the full segment with the same number, so the
    edge must give it its own URL or ETag (and cache key); every other segment
    of a preview is the full segment, byte for byte.
    """

    full: Segment | None = None  # the segment before clipping

    @property
    def clipped(self) -> bool:
        return True


def is_clipped(segment: Segment) -> bool:
    return isinstance(segment, ClippedSegment)


@dataclass(frozen=True, eq=False)
class PreviewMediaSet(MediaSet):
    """A media set cut at ``end`` (E <= ``preview``, the N asked for).

    Renditions keep their full Track (so the segments before the cut mux to the
    same bytes as without a preview); only their segment lists are shorter.
    Serve a preview only through these segments. Clipped segments depend on
    ``end`` alone (and the files), not on ``preview``: key caches on ``end``.
    """

    preview: Fraction = Fraction(0)
    end: Fraction = Fraction(0)


def _last_segment_before(segments: Sequence[Segment], end: Fraction) -> Segment | None:
    """The segment ``end`` falls in (start < end), if any."""
    starts = [s.start for s in segments]
    at = bisect.bisect_left(starts, end) - 1
    return segments[at] if at >= 0 else None


def _segment_constraint(rendition: Rendition) -> Callable[[Fraction], Fraction]:
    """Drop E to a segment's start when the rendition would keep none of that segment's samples."""

    def constrain(end: Fraction) -> Fraction:
        segment = _last_segment_before(rendition.segments, end)
        if segment is None:
            return end
        count, _ = clip_point(rendition.track, end)
        return segment.start if count <= segment.span.first else end

    return constrain


def _clip_segments(segments: Sequence[Segment], count: int, end: Fraction) -> tuple[Segment, ...]:
    out: list[Segment] = []
    for segment in segments:
        if segment.start >= end:
            break
        stop = min(segment.span.stop, count)
        if stop <= segment.span.first:  # pragma: no cover - the fixpoint rules this out
            raise AssertionError(f"segment {segment.number} would be empty")
        seg_end = segment.start + segment.duration
        if stop < segment.span.stop or seg_end > end:
            out.append(
                ClippedSegment(
                    segment.number,
                    SampleSpan(segment.span.first, stop),
                    segment.start,
                    min(seg_end, end) - segment.start,
                    segment.keyframe_count,
                    full=segment,
                )
            )
        else:
            out.append(segment)
    return tuple(out)


def clip_media_set(media_set: MediaSet, seconds: Seconds) -> MediaSet:
    """The media set as a preview of ``seconds`` allows it to be played.

    Segments wholly past the end E are removed, the segment E falls in is
    shortened (span stop = the clip's sample count, duration = E - start,
    marked as a :class:`ClippedSegment`), earlier segments are unchanged.
    Every rendition ends at the same E, so the segment durations of each sum to
    E. Returns ``media_set`` itself when the preview covers all of it; raises
    :class:`EmptyPreview` when it would hold no complete frame. Apply it to the
    full media set (not to a preview of it): ``ClippedSegment.full`` points there.

    When E falls exactly on a segment boundary the segment before it may be
    kept whole (not marked) in one rendition and lose its last audio frame
    (marked, same duration) in another: test each segment with
    :func:`is_clipped`, not by position.
    """
    limit = max(as_seconds(seconds), Fraction(0))
    renditions = media_set.videos + media_set.audios
    primary = media_set.videos or media_set.audios
    constraints = [_clip_constraint(r.track) for r in primary] + [_segment_constraint(r) for r in renditions]
    end = _fixpoint(limit, constraints)
    clips = [(r, TrackClip(r.track, *clip_point(r.track, end))) for r in renditions]
    end = _covered_end(c for _, c in clips)
    _check_not_empty(seconds, [(_name(r), c) for r, c in clips])

    clipped: dict[int, Rendition] = {}
    changed = False
    for rendition, clip in clips:
        segments = _clip_segments(rendition.segments, clip.count, end)
        if segments != tuple(rendition.segments):
            changed = True
        if not segments:
            raise EmptyPreview(f"a {float(limit):.3f} s preview leaves {_name(rendition)} without a segment")
        clipped[id(rendition)] = Rendition(rendition.id, rendition.track, segments)
    if not changed:
        return media_set
    return PreviewMediaSet(
        videos=tuple(clipped[id(r)] for r in media_set.videos),
        audios=tuple(clipped[id(r)] for r in media_set.audios),
        target=media_set.target,
        boundaries=tuple(b for b in media_set.boundaries if b < end),
        preview=limit,
        end=end,
    )


def preview_end(media_set: MediaSet) -> Fraction | None:
    """E of a clipped media set, None for a full one."""
    return media_set.end if isinstance(media_set, PreviewMediaSet) else None


def _name(rendition: Rendition) -> str:
    rid = rendition.id
    return f"flavor {rid.flavor}" + (f" audio {rid.audio}" if rid.audio else " video")


__all__ = [
    "ClippedSegment",
    "EmptyPreview",
    "PreviewMediaSet",
    "TrackClip",
    "as_seconds",
    "clip_index",
    "clip_media_set",
    "clip_point",
    "clip_tracks",
    "frame_ends",
    "is_clipped",
    "keeps_everything",
    "preview_end",
]
