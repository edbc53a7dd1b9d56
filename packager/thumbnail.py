"""Which sample a thumbnail is made from: the keyframe presented at or before a time (the first keyframe before
any), so a thumbnail decodes from one sample alone. Pure; decoding it is edge/thumbnails.py's (ffmpeg)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .errors import NotFound
from .media import SampleSpan, Track


class NoKeyframe(NotFound):
    code = "no_video"


def keyframe_at(track: Track, seconds: Fraction) -> SampleSpan:
    """The one-sample span of the keyframe presented last at or before ``seconds`` (the first one if none is)."""
    keys = np.flatnonzero(track.keyframes)
    if track.kind != "video" or keys.size == 0:
        raise NoKeyframe(f"track {track.track_id} has no video keyframe to make a thumbnail of")
    times = track.pts[keys]  # in the track's timescale
    limit = math.floor(seconds * track.timescale)
    before = np.flatnonzero(times <= limit)
    at = int(before[np.argmax(times[before])]) if before.size else int(np.argmin(times))
    first = int(keys[at])
    return SampleSpan(first, first + 1)
