"""The cut rule on synthetic sample tables: exact, never empty, aligned, continuous."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from packager.errors import SegmentNotFound
from packager.media import Track
from packager.segmenter import (
    duration_boundaries,
    find_segment,
    keyframe_boundaries,
    plan_segments,
    target_duration,
)


def make_track(kind: str, timescale: int, frame: int, count: int, keyframes=(), shift: int = 0) -> Track:
    durations = np.full(count, frame, dtype=np.int64)
    key = np.zeros(count, dtype=bool) if kind == "video" else np.ones(count, dtype=bool)
    key[list(keyframes)] = True
    return Track(
        track_id=1, kind=kind, fourcc="avc1" if kind == "video" else "mp4a", codec_string="", timescale=timescale,
        language="und", sample_entry=b"", video=None, audio=None,
        dts=np.arange(count, dtype=np.int64) * frame, cts_offsets=np.zeros(count, dtype=np.int64),
        durations=durations, sizes=np.full(count, 100, dtype=np.int64), offsets=np.arange(count, dtype=np.int64) * 100,
        keyframes=key, presentation_shift=shift,
    )


def test_irregular_gop_cuts_on_first_keyframe_past_each_grid_line():
    # 25 fps, keyframes at 0, 0.72, 2.92, 3.2, 7.52, 8.12 s, 16 s long
    keys = [0, 18, 73, 80, 188, 203]
    video = make_track("video", 12800, 512, 400, keys)
    bounds = keyframe_boundaries(video, Fraction(6))
    assert bounds == [0, Fraction(188, 25)]  # 7.52 s; no keyframe at or after the next grid line (12 s)
    segments = plan_segments(video, bounds)
    assert [s.span.count for s in segments] == [188, 212]
    assert sum(s.duration for s in segments) == Fraction(16)
    assert target_duration(segments) == 8  # 8.48 s rounds to 8 (RFC 8216 4.3.3.1)


def test_gop_longer_than_target_makes_long_segments_never_empty():
    video = make_track("video", 90000, 3600, 250, keyframes=[0, 240])  # keyframes at 0 s and 9.6 s
    segments = plan_segments(video, keyframe_boundaries(video, Fraction(2)))
    assert [s.span.count for s in segments] == [240, 10]
    assert all(s.span.count > 0 for s in segments)
    assert [float(s.duration) for s in segments] == [9.6, 0.4]


def test_every_segment_starts_on_a_keyframe():
    video = make_track("video", 30000, 1001, 900, keyframes=range(0, 900, 48))
    segments = plan_segments(video, keyframe_boundaries(video, Fraction(4)))
    assert all(video.keyframes[s.span.first] for s in segments)
    assert sum(s.span.count for s in segments) == 900
    assert [s.number for s in segments] == list(range(1, len(segments) + 1))


def test_flavors_with_the_same_keyframe_times_in_other_timescales_cut_identically():
    a = make_track("video", 12800, 512, 300, keyframes=range(0, 300, 50))  # 25 fps
    b = make_track("video", 90000, 3600, 300, keyframes=range(0, 300, 50))
    assert keyframe_boundaries(a, Fraction(5)) == keyframe_boundaries(b, Fraction(5))


def test_audio_cut_at_video_boundaries_is_continuous():
    video = make_track("video", 12800, 512, 300, keyframes=range(0, 300, 50))
    audio = make_track("audio", 44100, 1024, 517, shift=-1024)  # priming frame at negative time
    bounds = keyframe_boundaries(video, Fraction(4))
    segments = plan_segments(audio, bounds)
    assert segments[0].span.first == 0  # the priming frame belongs to segment 1
    assert sum(s.span.count for s in segments) == 517
    for prev, nxt in zip(segments, segments[1:]):
        assert prev.span.stop == nxt.span.first
        assert prev.start + prev.duration == nxt.start
    pts = audio.pts
    for segment, start in zip(segments[1:], bounds[1:]):
        first_time = Fraction(int(pts[segment.span.first]), 44100)
        assert first_time >= start > Fraction(int(pts[segment.span.first - 1]), 44100)


def test_audio_only_uses_the_duration_grid():
    audio = make_track("audio", 48000, 1024, 470)  # ~10.03 s
    segments = plan_segments(audio, duration_boundaries(audio, Fraction(4)))
    assert [float(s.start) for s in segments] == [0, 4, 8]
    assert sum(s.duration for s in segments) == audio.duration_seconds


def test_edit_delay_keeps_segment_one_at_zero():
    video = make_track("video", 12800, 512, 150, keyframes=[0, 50, 100], shift=7680)  # starts at 0.6 s
    segments = plan_segments(video, keyframe_boundaries(video, Fraction(2)))
    assert segments[0].start == 0
    assert sum(s.duration for s in segments) == video.duration_seconds == Fraction(66, 10)


def test_segment_lookup_errors_name_the_range():
    video = make_track("video", 12800, 512, 100, keyframes=[0, 50])
    segments = plan_segments(video, keyframe_boundaries(video, Fraction(2)))
    assert find_segment(segments, 2).number == 2
    for bad in (0, 3, 10**12):
        with pytest.raises(SegmentNotFound, match=f"has {len(segments)}"):
            find_segment(segments, bad)
