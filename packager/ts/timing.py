"""Sample times -> the 90 kHz clock of PTS, DTS and PCR.

Conversion starts from each sample's *absolute* time in its track (not from
the segment start), so consecutive segments are continuous and a segment's
bytes do not depend on which segments were requested before it.
"""

from __future__ import annotations

import weakref

import numpy as np

from ..media import SampleBatch, Track, rescale

CLOCK_HZ = 90_000  # PTS/DTS and the PCR base tick at 90 kHz (13818-1 2.4.2.2)

# Added to every timestamp. Presentation time 0 is the movie start, but with
# B-frames (or an edit list trimming the start) the first samples decode -- and
# may present -- before 0; 10 s keeps every PTS, DTS and the PCR, which leads
# the DTS by PCR_LEAD_90K, positive. (Timestamps are 33-bit counters, so a
# negative value would wrap to ~26.5 h and players would see a jump.)
TIMESTAMP_OFFSET_90K = 10 * CLOCK_HZ

# How far the PCR runs ahead of the DTS of the PES it precedes: the time the
# decoder is given to buffer a frame before it must decode it. 700 ms is the
# value nginx-vod-module and nginx-rtmp use (HLS_DELAY = 63000) and ffmpeg's
# default -muxdelay.
PCR_LEAD_90K = 63_000

_decode_shifts: "weakref.WeakKeyDictionary[Track, int]" = weakref.WeakKeyDictionary()


def decode_shift(track: Track) -> int:
    """How much to move decode times earlier so that no DTS exceeds its PTS.

    MPEG-TS requires DTS <= PTS, but a ctts version 1 box may hold negative
    composition offsets. Shifting the whole track's decode times by its most
    negative offset restores the order while keeping them continuous across
    segments. 0 for the usual non-negative offsets. Cached per track.
    """
    shift = _decode_shifts.get(track)
    if shift is None:
        offsets = track.cts_offsets
        shift = max(0, -int(offsets.min())) if offsets.size else 0
        _decode_shifts[track] = shift
    return shift


def timestamps_90k(batch: SampleBatch) -> tuple[np.ndarray, np.ndarray]:
    """(pts, dts) of each sample of ``batch`` in 90 kHz, offset by TIMESTAMP_OFFSET_90K.

    Decode times are then fitted to the segment (:func:`fit_decode_times`).
    """
    timescale = batch.track.timescale
    dts = np.asarray(batch.dts, dtype=np.int64)
    pts = dts + np.asarray(batch.cts_offsets, dtype=np.int64)
    shift = decode_shift(batch.track)
    if shift:
        dts = dts - shift
    pts90 = rescale(pts, timescale, CLOCK_HZ)
    dts90 = fit_decode_times(pts90, rescale(dts, timescale, CLOCK_HZ), rescale(pts + batch.durations, timescale, CLOCK_HZ))
    return pts90 + TIMESTAMP_OFFSET_90K, dts90 + TIMESTAMP_OFFSET_90K


def fit_decode_times(pts: np.ndarray, dts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The decode times of one segment, moved so that players place it where its playlist does.

    With B-frames a segment's first frame (a keyframe) decodes before it presents: DTS 3.92 s,
    PTS 4.00 s. Players place a TS segment by its first timestamp, the DTS: shaka sets each
    segment's timestampOffset from its first PES's min(DTS, PTS), hls.js starts the timeline at
    the first segment's DTS. So:

    * head: the decode times up to the segment's first presentation are squeezed, in order, between
      that presentation and the first decode time after it (4.00 / 4.013 / 4.027 s instead of
      3.92 / 3.96 / 4.00 s): the segment's first DTS is its first PTS;
    * tail: the last frame's decode time moves up (never past its own PTS) so that the decode clock,
      stepped by its last interval, reaches the segment's end -- where the next segment's first DTS
      now is: hls.js checks that decode times run on across segments and otherwise moves frames.

    Every DTS stays at or below its PTS and strictly increasing; decoders only need the order.
    Only a few frames at each end of a segment move; without B-frames nothing does.
    """
    n = dts.size
    if n == 0 or dts[0] >= pts[0]:
        return dts
    dts = dts.copy()
    first = int(pts[0])
    after = int(np.searchsorted(dts, first, side="right"))  # first decode time past the first presentation
    end = int(dts[after]) if after < n else first + after
    head = dts[:after]
    squeezed = first + (head - head[0]) * (end - first) // (end - int(head[0]))
    dts[:after] = np.minimum(squeezed, pts[:after])
    if n >= 2 and after < n:
        last = n - 1
        target = (int(ends.max()) + int(dts[last - 1])) // 2
        dts[last] = min(int(pts[last]), max(int(dts[last]), target))
    return dts
