"""The two HLS segment formats behind one small interface.

Each format knows how to mux a SampleBatch, how big a segment will be
before muxing it (from sample sizes only: playlists need sizes for BANDWIDTH
and byte ranges), where the first keyframe of a segment ends (I-frame
playlists), and what state carries over between a rendition's segments (TS
continuity counters; fMP4 has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import fmp4, ts
from .hls.playlists import VERSION_FMP4, VERSION_TS, VERSION_TS_IFRAMES
from .errors import PackagerError
from .media import SampleBatch, SampleSpan, Segment, Track


@dataclass(frozen=True)
class SegmentFormat:
    name: str  # URL format segment: "hls" or "cmaf"
    extension: str
    content_type: str
    version: int  # EXT-X-VERSION of media playlists
    iframes_version: int
    has_init: bool
    mux: Callable[[SampleBatch], bytes]
    _size: Callable[[Track, SampleSpan], int]
    _sizes: Callable[[Track, Sequence[Segment]], list[int]]
    _continuity: Callable[[Track, Sequence[Segment]], np.ndarray | None]

    def segment_size(self, track: Track, segment: Segment) -> int:
        return self._size(track, segment.span)

    def segment_sizes(self, track: Track, segments: Sequence[Segment]) -> list[int]:
        """Sizes of consecutive segments, in one pass where the format allows (master playlists need all)."""
        return self._sizes(track, segments)

    def continuity(self, track: Track, segments: Sequence[Segment]) -> np.ndarray | None:
        """``SampleBatch.continuity_start`` of each of a rendition's consecutive segments, or None when the format
        carries nothing over (fMP4) or the sizes depend on the bytes (TS of 1- or 2-byte NAL lengths)."""
        return self._continuity(track, segments)

    def first_frame_range(self, track: Track, segment: Segment) -> tuple[int, int]:
        """(length, offset) of the bytes a player needs to decode the segment's first keyframe."""
        first = SampleSpan(segment.span.first, segment.span.first + 1)
        if not self.has_init:
            return self._size(track, first), 0  # PAT + PMT + the keyframe's packets
        # moof for the whole segment, mdat header, first sample: the moof is
        # sized by sample count, so measure the full segment and subtract.
        rest = int(track.sizes[segment.span.first + 1 : segment.span.stop].sum())
        return self._size(track, segment.span) - rest, 0


def _ts_size(track: Track, span: SampleSpan) -> int:
    return ts.segment_size(track, track.sizes[span.first : span.stop], track.keyframes[span.first : span.stop])


def _ts_sizes(track: Track, segments: Sequence[Segment]) -> list[int]:
    if not segments:
        return []
    starts = np.array([s.span.first for s in segments], dtype=np.int64)
    return ts.segment_sizes(track, starts, segments[-1].span.stop).tolist()


def _ts_continuity(track: Track, segments: Sequence[Segment]) -> np.ndarray | None:
    if not segments:
        return None
    starts = np.array([s.span.first for s in segments], dtype=np.int64)
    try:
        return ts.continuity_starts(track, starts, segments[-1].span.stop)
    except PackagerError:  # a layout that needs the sample bytes: each segment starts at 0
        return None


def _no_continuity(track: Track, segments: Sequence[Segment]) -> None:
    return None


def _fmp4_size(track: Track, span: SampleSpan) -> int:
    return fmp4.media_segment_size(track, track.sizes[span.first : span.stop])


def _fmp4_sizes(track: Track, segments: Sequence[Segment]) -> list[int]:
    return [_fmp4_size(track, s.span) for s in segments]


TS = SegmentFormat(
    "hls", "ts", "video/mp2t", VERSION_TS, VERSION_TS_IFRAMES, False, ts.mux_segment, _ts_size, _ts_sizes, _ts_continuity
)
FMP4 = SegmentFormat(
    "cmaf", "m4s", "video/iso.segment", VERSION_FMP4, VERSION_FMP4, True, fmp4.media_segment, _fmp4_size, _fmp4_sizes,
    _no_continuity,
)

FORMATS = {f.name: f for f in (TS, FMP4)}
