"""Sample times -> the 90 kHz clock of PTS, DTS and PCR.

Conversion starts from each sample's *absolute* time in its track (not from
the segment start), so consecutive segments are continuous and a segment's
bytes do not depend on which segments were requested before it.
"""

from __future__ import annotations

import weakref

import numpy as np

from ..errors import PreRollNeedsFmp4
from ..media import SampleBatch, Track, rescale

CLOCK_HZ = 90_000  # PTS/DTS and the PCR base tick at 90 kHz (13818-1 2.4.2.2)

# Added to every timestamp. Presentation time 0 is the movie start, but with
# B-frames (or an edit list trimming the start) the first samples decode -- and
# may present -- before 0; 10 s keeps every PTS, DTS and the PCR, which leads
# the DTS by PCR_LEAD_90K, positive. (Timestamps are 33-bit counters, so a
# negative value would wrap to ~26.5 h and players would see a jump; a track whose pre-roll needs
# more room is not offered over TS: see clock_fits.)
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
    ends90 = rescale(pts + batch.durations, timescale, CLOCK_HZ)
    dts90 = rescale(dts, timescale, CLOCK_HZ)
    # where the next segment's decode times start (a last sample of duration 0 -- the track's end in some
    # muxers' files -- still leaves this segment a tick)
    next_dts90 = max(rescale(int(dts[-1]) + int(batch.durations[-1]), timescale, CLOCK_HZ), int(dts90[-1]) + 1) if dts.size else 0
    if dts90.size and int(dts90[0]) < EARLIEST_DTS_90K:  # clock_fits, for callers that did not ask it
        raise PreRollNeedsFmp4(pre_roll_message(batch.track))
    dts90 = fit_decode_times(pts90, dts90, ends90, next_dts90)
    return pts90 + TIMESTAMP_OFFSET_90K, dts90 + TIMESTAMP_OFFSET_90K


# The earliest decode time (90 kHz, presentation 0 = 0) whose PCR, PCR_LEAD_90K before it, is still >= 0
# once TIMESTAMP_OFFSET_90K is added: earlier, the 33-bit PCR/DTS/PTS counters would wrap to ~26.5 h.
EARLIEST_DTS_90K = PCR_LEAD_90K - TIMESTAMP_OFFSET_90K


def clock_fits(track: Track) -> bool:
    """Whether every timestamp of ``track`` fits the TS clock: its first decode time is no earlier than
    EARLIEST_DTS_90K. Only a long :attr:`~packager.media.Track.pre_roll` (with the B-frame delay, over 9.3 s:
    a start trim of a file with longer GOPs) breaks it; fitting (:func:`fit_decode_times`) only raises decode times."""
    return _first_decode_90k(track) >= EARLIEST_DTS_90K


def _first_decode_90k(track: Track) -> int:
    if track.sample_count == 0:
        return 0
    first = int(track.dts[0]) + track.presentation_shift - track.late_start - decode_shift(track)  # as make_batch
    return int(rescale(first, track.timescale, CLOCK_HZ))


def pre_roll_message(track: Track) -> str:
    """What a track that does not :func:`clock_fits` is refused with."""
    return (
        f"{track.kind} track {track.track_id} starts decoding {-_first_decode_90k(track) / CLOCK_HZ:.2f} s before its "
        f"first presented frame (a start trim keeps {track.pre_roll / track.timescale:.2f} s of frames it does not "
        f"present): more than MPEG-TS timestamps hold here ({(TIMESTAMP_OFFSET_90K - PCR_LEAD_90K) / CLOCK_HZ:.1f} s); "
        "use /cmaf/ instead of /hls/"
    )


def fit_decode_times(pts: np.ndarray, dts: np.ndarray, ends: np.ndarray, next_dts: int) -> np.ndarray:
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

    Every DTS stays at or below its PTS, strictly increasing, and below ``next_dts`` (the next
    segment's first decode time before fitting, which fitting never lowers): decoders need the order,
    within a segment and across segments. Where the wish breaks that -- an open GOP, whose leading
    B-frames decode after the keyframe but present before it, or times a tick apart -- each decode
    time gets as close to it as the order allows (:func:`_in_order`). Only a few frames at each end of
    a segment move; without B-frames nothing does.
    """
    n = dts.size
    if n == 0 or dts[0] >= pts[0]:
        return dts
    wanted = dts.copy()
    first = int(pts[0])
    after = int(np.searchsorted(dts, first, side="right"))  # first decode time past the first presentation
    end = int(dts[after]) if after < n else first + after
    head = dts[:after]
    wanted[:after] = np.minimum(first + (head - head[0]) * (end - first) // (end - int(head[0])), pts[:after])
    if n >= 2 and after < n:
        last = n - 1
        target = (int(ends.max()) + int(wanted[last - 1])) // 2
        wanted[last] = max(int(dts[last]), target)
    return _in_order(wanted, dts, pts, next_dts)


def _in_order(wanted: np.ndarray, dts: np.ndarray, pts: np.ndarray, next_dts: int) -> np.ndarray:
    """``wanted`` (never below ``dts``) lowered just enough that every DTS is at most its PTS, below
    ``next_dts`` and strictly increasing; ``dts`` itself when even it breaks that (a source whose decode
    times repeat)."""
    steps = np.arange(dts.size, dtype=np.int64)
    # the latest each DTS may be: at most its PTS, and leaving one tick for each later DTS up to next_dts
    bound = np.minimum(pts, next_dts - (dts.size - steps)) - steps
    latest = np.minimum.accumulate(bound[::-1])[::-1] + steps
    if (dts > latest).any():
        return dts
    fitted = np.minimum(wanted, latest)
    # strictly increasing: each at least one tick after the one before (never past ``latest``, which
    # itself rises by at least one tick a frame)
    return np.maximum.accumulate(fitted - steps) + steps
