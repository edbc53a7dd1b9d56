"""Clips by URL: an entry played from ``from`` to ``to`` with its timestamps rebased to 0.

The start. A clip starts at a keyframe at or before ``from``: S, the same time
in every video track so ladders stay aligned (the latest time at or before
``from`` where every video track has a keyframe; 0, the unclipped start, when
there is none). Each track is then *rebased*: a new :class:`Track` over the
samples from S on, its decode times starting at 0 and its presentation shift
set so that S presents at 0. Sample offsets and sizes still point into the
source file, so every later stage (segmenter, preview cut, TS and fMP4
muxers, the progressive MP4 writer) works on it unchanged: segments, EXTINF,
PTS/DTS and tfdt all follow the clip's own timeline.

Audio starts with its first frame presented at or after S, shifted by
``floor(S * timescale)`` ticks (so no audio frame is ever placed later than
the video: a frame ending by N - S in the clip ends by N in the entry); its
first frame is held from 0 over the fraction of a frame between S and it, as
for a track behind an empty edit (``Track.late_start``).

The end is the preview machinery's (:mod:`packager.preview`): the rebased set
is cut at ``to - S``, frame-accurately, every rendition at one end. A free
preview of N seconds bounds the entry's timeline, so a clip for such a viewer
ends at ``min(to, N)``.

A clip whose start is 0 uses the source tracks as they are (bytes identical
to the unclipped entry's up to the end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Sequence

import numpy as np

from .errors import NotFound
from .media import MediaIndex, Track
from .media_set import MediaSet, build_media_set
from .mp4.writer import VirtualFile, clipped_mp4
from .preview import Seconds, as_seconds, clip_media_set, preview_end
from .segmenter import DEFAULT_TARGET


class ClipOutOfRange(NotFound):
    """The clip starts at or after the end of the media (404)."""

    code = "clip_out_of_range"


@dataclass(frozen=True, eq=False)
class ClipMediaSet(MediaSet):
    """An entry's media set from ``start`` (S, entry seconds) to ``end`` (entry seconds), rebased to 0.

    ``clip_end`` is where the clip ends without a preview (``to``, or the media's end); ``end`` is
    lower only when a preview cut it shorter. Segments cut at ``end`` are
    :class:`packager.preview.ClippedSegment` as in a preview.
    """

    start: Fraction = Fraction(0)
    end: Fraction = Fraction(0)
    clip_end: Fraction = Fraction(0)

    @property
    def preview_end(self) -> Fraction | None:
        """The entry time a preview cut this clip at (E, for URL markers), None when it did not."""
        return self.end if self.end < self.clip_end else None


def _key_times(track: Track) -> np.ndarray:
    """Presentation times of the track's keyframes, sorted (track timescale)."""
    return np.sort(track.pts[track.keyframes])


def clip_start(videos: Sequence[Track], seconds: Seconds) -> Fraction:
    """S: the latest time <= ``seconds`` at which every video track has a keyframe (0 when there is none)."""
    if not videos:
        return Fraction(0)
    start = max(as_seconds(seconds), Fraction(0))
    key_times = [(track, _key_times(track)) for track in videos]
    for _ in range(64):  # each round lowers S to an earlier keyframe; aligned ladders agree at once
        lowered = start
        for track, keys in key_times:
            at = int(np.searchsorted(keys, math.floor(lowered * track.timescale), side="right")) - 1
            if at < 0:
                return Fraction(0)
            lowered = min(lowered, Fraction(int(keys[at]), track.timescale))
        if lowered == start and all((start * t.timescale).denominator == 1 for t in videos):
            return max(start, Fraction(0))
        start = lowered
    return Fraction(0)


def rebase_track(track: Track, start: Fraction) -> Track:
    """The track's samples from ``start`` (entry seconds) on, with ``start`` presented at 0."""
    shift = math.floor(start * track.timescale)
    pts = track.pts
    if track.kind == "video":
        hits = np.flatnonzero(track.keyframes & (pts == shift))
        if hits.size == 0:
            raise ValueError(f"track {track.track_id} has no keyframe at {float(start):.3f} s")
        first = int(hits[0])
    else:
        later = np.flatnonzero(pts >= shift)
        first = int(later[0]) if later.size else track.sample_count
    dts = track.dts[first:]
    base = int(dts[0]) if dts.size else 0
    return replace(
        track,
        dts=dts - base,
        cts_offsets=track.cts_offsets[first:],
        durations=track.durations[first:],
        sizes=track.sizes[first:],
        offsets=track.offsets[first:],
        keyframes=track.keyframes[first:],
        presentation_shift=track.presentation_shift + base - shift,
        edit_end=None if track.edit_end is None else track.edit_end - shift,
    )


def rebase_index(index: MediaIndex, start: Fraction) -> MediaIndex:
    """A file's tracks rebased at ``start`` (the index itself when ``start`` is 0); tracks left empty are dropped."""
    if start == 0:
        return index
    tracks = tuple(t for t in (rebase_track(t, start) for t in index.tracks) if t.sample_count)
    return replace(index, tracks=tracks)


def clip_set(
    flavors: Sequence[tuple[str, MediaIndex]], first: Seconds, last: Seconds, preview: Seconds | None = None,
    target: Fraction = DEFAULT_TARGET,
) -> ClipMediaSet:
    """An entry played from the keyframe at or before ``first`` to ``last`` (entry seconds), rebased to 0.

    ``preview``: a free preview's N (entry seconds), which ends the clip earlier when it is lower.
    Raises :class:`ClipOutOfRange` for a clip starting at or after the media's end and
    :class:`packager.preview.EmptyPreview` when nothing would remain.
    """
    first, last = as_seconds(first), as_seconds(last)
    duration = max((index.duration_seconds for _, index in flavors), default=Fraction(0))
    if first >= duration:
        raise ClipOutOfRange(f"the clip starts at {float(first):g} s but the media ends at {float(duration):.3f} s")
    videos = [index.video for _, index in flavors if index.video is not None]
    if videos:
        start = clip_start(videos, first)
    else:  # audio only: every frame is a sync sample; start at the frame at or before ``first``
        start = _audio_start([i.audios[0] for _, i in flavors if i.audios][:1], first)
    full = build_media_set([(fid, rebase_index(index, start)) for fid, index in flavors], target)
    clip = _cut(full, start, last)
    if preview is not None and as_seconds(preview) < clip.end:
        return replace(_cut(full, start, as_seconds(preview)), clip_end=clip.end)
    return clip


def clip_file(index: MediaIndex, first: Seconds, last: Seconds, preview: Seconds | None = None) -> tuple[VirtualFile, Fraction | None]:
    """A progressive MP4 of one file from the keyframe at or before ``first`` to ``last`` (rebased to 0).

    Returns the virtual file and, when ``preview`` cut it short of the clip's own end, that end in
    entry seconds (E, for the ``-p{M}`` marker); None otherwise.
    """
    first, last = as_seconds(first), as_seconds(last)
    if first >= index.duration_seconds:
        raise ClipOutOfRange(f"the clip starts at {float(first):g} s but the file ends at {float(index.duration_seconds):.3f} s")
    start = clip_start([index.video], first) if index.video is not None else _audio_start(index.audios[:1], first)
    rebased = rebase_index(index, start)
    whole = clipped_mp4(rebased, last - start)
    if preview is not None and as_seconds(preview) < start + whole.end:
        cut = clipped_mp4(rebased, as_seconds(preview) - start)
        return cut, start + cut.end
    return whole, None


def _cut(full: MediaSet, start: Fraction, last: Fraction) -> ClipMediaSet:
    cut = clip_media_set(full, last - start)
    relative = preview_end(cut)
    end = start + (relative if relative is not None else full.duration)
    return ClipMediaSet(cut.videos, cut.audios, cut.target, cut.boundaries, start=start, end=end, clip_end=end)


def _audio_start(tracks: Sequence[Track], first: Fraction) -> Fraction:
    if not tracks:
        return Fraction(0)
    track = tracks[0]
    pts = np.sort(track.pts)
    at = int(np.searchsorted(pts, math.floor(first * track.timescale), side="right")) - 1
    return Fraction(max(0, int(pts[at])), track.timescale) if at >= 0 else Fraction(0)


__all__ = ["ClipMediaSet", "ClipOutOfRange", "clip_file", "clip_set", "clip_start", "rebase_index", "rebase_track"]
