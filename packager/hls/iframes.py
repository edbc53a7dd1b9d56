"""I-frame playlist entries: where each keyframe of a segment lies, and how long it stands.

MPEG-TS (``/hls/``): every keyframe of every segment gets its own entry
(RFC 8216 section 4.3.3.6): the TS packets of its PES, found in the segment
layout (packager/ts/layout.py: one PES per video access unit, so PES k is
sample k), lasting until the next keyframe in presentation order (the last
one until the segment's end). Only a segment's first packets hold the PAT
and PMT, so the playlist names them once with EXT-X-MAP (the first 376 bytes
of segment 1: PAT and PMT are the same in every segment but for their
continuity counters, which a demuxer does not compare across PIDs); a player
prepends them to each range.

fMP4 (``/cmaf/``): one entry per segment, its first keyframe. Our fragments
are one ``moof`` + ``mdat`` per segment, and a later keyframe's bytes inside
the ``mdat`` are not decodable on their own: its ``trun`` entry and data
offset live in the segment's ``moof``. Per-keyframe entries in fMP4 need a
fragment per GOP (Apple's and shaka-packager's I-frame playlists address
whole fragments), which the fMP4 muxer does not produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from .. import ts
from ..formats import SegmentFormat
from ..media import Segment, Track

PSI_RANGE = (ts.PSI_BYTES, 0)  # (length, offset) of the PAT and PMT that open a TS segment


@dataclass(frozen=True)
class IFrame:
    segment: Segment
    duration: Fraction  # seconds, until the next keyframe (or the segment's end)
    byterange: tuple[int, int]  # (length, offset) within the segment


def iframes(track: Track, segments: Sequence[Segment], fmt: SegmentFormat) -> list[IFrame]:
    if fmt.has_init or not segments:
        return [IFrame(s, s.duration, fmt.first_frame_range(track, s)) for s in segments]
    starts = [s.span.first for s in segments]
    ranges = ts.keyframe_ranges(track, starts, segments[-1].span.stop)
    out: list[IFrame] = []
    for segment, keys in zip(segments, ranges):
        keys = sorted(keys, key=lambda key: int(track.pts[key[0]]))  # presentation order (stable)
        end = segment.start + segment.duration
        times = [segment.start] + [min(max(Fraction(int(track.pts[k]), track.timescale), segment.start), end) for k, _, _ in keys[1:]]
        times.append(end)
        out.extend(IFrame(segment, times[n + 1] - times[n], (length, offset)) for n, (_, length, offset) in enumerate(keys))
    return out
