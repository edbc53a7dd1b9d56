"""Cut tracks into segments.

The cut rule is deterministic and depends only on keyframe presentation
times, so flavors of one entry whose keyframes line up are cut identically
even though each is segmented on its own (shaka-packager's "consistent
chunking"): a boundary falls on the first keyframe at or after the next
multiple of the target duration. When a GOP is longer than the target the
segment simply runs to the next keyframe: segments are never empty, and their
EXTINF is always their real duration.

Boundaries are presentation times in seconds (Fractions). Audio of the same
file is cut at the video's boundaries; audio-only media on the plain grid.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np

from .errors import SegmentNotFound
from .media import SampleSpan, Segment, Track

DEFAULT_TARGET = Fraction(6)


def keyframe_boundaries(video: Track, target: Fraction = DEFAULT_TARGET) -> list[Fraction]:
    """Segment start times (seconds) for a video track: 0, then keyframes on the target grid."""
    timescale = video.timescale
    key_pts = np.sort(video.pts[video.keyframes])
    end_time = video.end_time  # a whole-track reduction: compute once, not per boundary
    boundaries = [Fraction(0)]
    grid_step = 1
    while True:
        # first keyframe whose time is >= grid_step * target, exactly: pts >= ceil(n*T*ts)
        threshold = math.ceil(grid_step * target * timescale)
        at = int(np.searchsorted(key_pts, threshold, side="left"))
        if at >= key_pts.size:
            break
        cut = int(key_pts[at])
        if cut >= end_time:
            break
        boundaries.append(Fraction(cut, timescale))
        # next grid line strictly after this cut
        grid_step = math.floor(Fraction(cut, timescale) / target) + 1
    return boundaries


def duration_boundaries(track: Track, target: Fraction = DEFAULT_TARGET) -> list[Fraction]:
    """Plain grid for audio-only media: 0, T, 2T, ... before the track's end."""
    end = track.duration_seconds
    count = max(1, math.ceil(end / target))
    return [target * n for n in range(count)]


def plan_segments(track: Track, boundaries: Sequence[Fraction]) -> list[Segment]:
    """Assign the track's samples to the segments starting at ``boundaries``.

    A sample belongs to the segment whose window holds its presentation time;
    video is split at keyframes in decode order so every segment starts with one.
    Segments that would hold no sample are merged away: no empty segments.
    """
    ts = track.timescale
    if track.sample_count == 0:
        return []
    edges = np.array([math.ceil(b * ts) for b in boundaries[1:]], dtype=np.int64)
    if track.kind == "video":
        cut_points = _video_cut_points(track, edges)
    else:
        cut_points = np.searchsorted(track.pts, edges, side="left")
    starts = [Fraction(0)] + [boundaries[i + 1] for i in range(len(edges))]
    return _segments_from_cuts(track, cut_points, starts)


def _video_cut_points(track: Track, edges: np.ndarray) -> np.ndarray:
    """Decode index of the keyframe whose pts equals each edge (or the first keyframe after)."""
    key_index = np.flatnonzero(track.keyframes)
    key_pts = track.pts[key_index]
    order = np.argsort(key_pts, kind="stable")
    at = np.searchsorted(key_pts[order], edges, side="left")
    cuts = np.full(edges.shape, track.sample_count, dtype=np.int64)
    valid = at < key_index.size
    cuts[valid] = key_index[order][at[valid]]
    return cuts


def _segments_from_cuts(track: Track, cut_points: np.ndarray, starts: Sequence[Fraction]) -> list[Segment]:
    end = track.duration_seconds
    first_samples = [0] + [int(c) for c in cut_points]
    segments: list[Segment] = []
    for i, first in enumerate(first_samples):
        stop = first_samples[i + 1] if i + 1 < len(first_samples) else track.sample_count
        if stop <= first:
            continue  # nothing fell in this window; its time goes to the previous segment
        segment_end = starts[i + 1] if i + 1 < len(starts) else end
        if segments and segments[-1].start + segments[-1].duration < starts[i]:
            prev = segments[-1]  # extend over a skipped empty window so times stay continuous
            segments[-1] = Segment(prev.number, prev.span, prev.start, starts[i] - prev.start)
        start = Fraction(0) if not segments else starts[i]
        segments.append(Segment(len(segments) + 1, SampleSpan(first, stop), start, max(segment_end, start) - start))
    if segments and segments[-1].start + segments[-1].duration < end:
        last = segments[-1]
        segments[-1] = Segment(last.number, last.span, last.start, end - last.start)
    return segments


def find_segment(segments: Sequence[Segment], number: int) -> Segment:
    if not 1 <= number <= len(segments):
        raise SegmentNotFound(f"segment {number} does not exist (this track has {len(segments)})")
    return segments[number - 1]


def target_duration(segments: Sequence[Segment]) -> int:
    """EXT-X-TARGETDURATION: every EXTINF rounded to the nearest integer must fit (RFC 8216 4.3.3.1)."""
    longest = max((s.duration for s in segments), default=Fraction(0))
    return max(1, math.floor(longest + Fraction(1, 2)))
