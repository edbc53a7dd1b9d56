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
    """The one-sample span of the keyframe presented last at or before ``seconds`` (the first one if none is).
    Only keyframes presented at 0 or later count: a start trim's pre-roll (decoded, never shown) is no picture."""
    keys = _presented_keyframes(track)
    times = track.pts[keys]  # in the track's timescale
    limit = math.floor(seconds * track.timescale)
    before = np.flatnonzero(times <= limit)
    at = int(before[np.argmax(times[before])]) if before.size else int(np.argmin(times))
    first = int(keys[at])
    return SampleSpan(first, first + 1)


def keyframe_seconds(track: Track, span: SampleSpan) -> Fraction:
    """When the keyframe of ``span`` is presented."""
    return Fraction(int(track.pts[span.first]), track.timescale)


def _presented_keyframes(track: Track) -> np.ndarray:
    keys = np.flatnonzero(track.keyframes) if track.kind == "video" else np.zeros(0, dtype=np.int64)
    keys = keys[track.pts[keys] >= 0] if keys.size else keys
    if keys.size == 0:
        raise NoKeyframe(f"track {track.track_id} has no presented video keyframe to make a thumbnail of")
    return keys


MAX_TILES = 100  # a sprite sheet of at most this many thumbnails (10 per row)
SPRITE_COLUMNS = 10
TILE_WIDTH = 160


def tile_height(track: Track, width: int = TILE_WIDTH) -> int:
    """The height ffmpeg's ``scale=width:-2`` gives the track's pictures: in proportion, rounded to even."""
    info = track.video
    if info is None or not info.width:
        raise NoKeyframe(f"track {track.track_id} has no picture size")
    return max(2, round(width * info.height / (info.width * 2)) * 2)


def sprite_plan(track: Track, duration: Fraction) -> list[tuple[SampleSpan, Fraction, Fraction]]:
    """The keyframes a scrubbing sprite shows, each with the time span its tile stands for: every keyframe, or
    every k-th so that at most MAX_TILES remain; a tile lasts until the next one (the last until ``duration``)."""
    keys = _presented_keyframes(track)
    order = keys[np.argsort(track.pts[keys], kind="stable")]
    chosen = order[:: -(-order.size // MAX_TILES)]
    starts = [Fraction(int(track.pts[k]), track.timescale) for k in chosen]
    starts[0] = Fraction(0)  # the first tile stands for the start, even where the first keyframe comes later
    ends = starts[1:] + [max(duration, starts[-1])]
    return [(SampleSpan(int(k), int(k) + 1), a, b) for k, a, b in zip(chosen, starts, ends) if b > a or b == duration]


def sprite_vtt(plan: list[tuple[SampleSpan, Fraction, Fraction]], height: int, sprite_uri: str) -> str:
    """A WebVTT thumbnail track: one cue per tile, its text the sprite URI with the tile's ``#xywh`` fragment."""
    lines = ["WEBVTT", ""]
    for i, (_, start, end) in enumerate(plan):
        x, y = (i % SPRITE_COLUMNS) * TILE_WIDTH, (i // SPRITE_COLUMNS) * height
        lines += [f"{_vtt_time(start)} --> {_vtt_time(end)}", f"{sprite_uri}#xywh={x},{y},{TILE_WIDTH},{height}", ""]
    return "\n".join(lines)


def _vtt_time(seconds: Fraction) -> str:
    ms = math.floor(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"
