"""packager.preview.clip_point: the cut rule of free previews.

Unit level, on synthetic sample tables: the exact rule (decode-order prefix,
whole frames ending by N, B-frames shown before N dropped with the reference
frame shown after it), edges (N past the end, N before the first frame ends,
edit list ends) and a brute-force check of maximality on random B-frame
patterns.

Decoder level, on real files: ffmpeg decodes the source; the frames it shows
with pts < E are exactly the samples clip_point keeps, E <= N, and E is a frame
boundary. (The clipped outputs are decoded in test_preview_mp4.py and
test_preview_media_set.py.)

Helpers here (``fixture``, ``source_frames``, ``track_of``) are shared by the
other test_preview_* modules.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from packager.media import AudioInfo, Track, VideoInfo
from packager.preview import as_seconds, clip_point, clip_tracks, frame_ends

media_fixtures = pytest.importorskip("media_fixtures")
oracle = pytest.importorskip("oracle")
local = pytest.importorskip("origin.local")


# --------------------------------------------------------------------------- shared helpers


def fixture(name: str) -> Path:
    try:
        return media_fixtures.fixture_path(name)
    except media_fixtures.FfmpegNotAvailable as exc:  # pragma: no cover - environment
        pytest.skip(str(exc))


@functools.lru_cache(maxsize=None)
def index_of(name: str):
    return local.read_index_sync(fixture(name))


@functools.lru_cache(maxsize=None)
def source_frames(name: str, kind: str, timescale: int) -> tuple:
    """ffmpeg's decode of the source, timestamps as the file presents them (-copyts)."""
    stream = "v:0" if kind == "video" else "a:0"
    return tuple(
        oracle.framemd5(fixture(name), stream, extra_input_args=["-copyts"], video_time_base=f"1:{timescale}")
    )


def decode(path: Path, kind: str, timescale: int, *extra: str) -> list:
    stream = "v:0" if kind == "video" else "a:0"
    return oracle.framemd5(path, stream, extra_input_args=["-copyts", *extra], video_time_base=f"1:{timescale}")


def frames_before(frames, end: Fraction) -> list:
    return [f for f in frames if f.pts * f.tb < end]


# --------------------------------------------------------------------------- synthetic tracks


def make_track(
    kind: str,
    pts_in_decode_order,
    *,
    timescale: int = 1,
    durations=None,
    keyframes=None,
    shift: int = 0,
    edit_end: int | None = None,
) -> Track:
    pts = np.asarray(pts_in_decode_order, dtype=np.int64)
    n = pts.size
    durations = np.ones(n, dtype=np.int64) if durations is None else np.asarray(durations, dtype=np.int64)
    dts = np.zeros(n, dtype=np.int64)
    np.cumsum(durations[:-1], out=dts[1:])
    return Track(
        track_id=1,
        kind=kind,
        fourcc="avc1" if kind == "video" else "mp4a",
        codec_string="x",
        timescale=timescale,
        language="und",
        sample_entry=b"",
        video=VideoInfo(16, 16, 4, ()) if kind == "video" else None,
        audio=AudioInfo(48000, 2, b"\x11\x90", 2) if kind == "audio" else None,
        dts=dts,
        cts_offsets=pts - dts - shift,
        durations=durations,
        sizes=np.full(n, 10, dtype=np.int64),
        offsets=np.arange(n, dtype=np.int64) * 10,
        keyframes=np.ones(n, dtype=bool) if keyframes is None else np.asarray(keyframes, dtype=bool),
        presentation_shift=shift,
        edit_end=edit_end,
    )


# I0 P3 B1 B2 P6 B4 B5 P9 B7 B8: one reference frame then the two B-frames shown before it
BFRAMES = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8]


def test_frame_ends_video_is_next_presented_frame():
    track = make_track("video", BFRAMES)
    assert frame_ends(track).tolist() == [1, 4, 2, 3, 7, 5, 6, 10, 8, 9]


def test_no_bframes_keeps_whole_frames_ending_by_n():
    track = make_track("video", range(10))
    assert clip_point(track, Fraction(33, 10)) == (3, Fraction(3))  # frame 3 would show until 4
    assert clip_point(track, 3) == (3, Fraction(3))
    assert clip_point(track, Fraction(2999, 1000)) == (2, Fraction(2))


def test_reference_frame_past_n_takes_its_bframes_with_it():
    track = make_track("video", BFRAMES)
    # N=5: P6 (decoded 5th) is shown after N: the prefix stops before it, so B4
    # (shown 4..5, within N) goes too.
    assert clip_point(track, 5) == (4, Fraction(4))
    # N=3.5: P3 ends at 4 > N: only I0 survives, B1 and B2 (shown before N) go with P3.
    assert clip_point(track, Fraction(7, 2)) == (1, Fraction(1))
    assert clip_point(track, 7) == (7, Fraction(7))


def test_audio_frame_straddling_n_is_dropped():
    track = make_track("audio", [-100, 0, 100, 200, 300], timescale=1000, durations=[100] * 5, shift=-100)
    assert clip_point(track, Fraction(1, 4)) == (3, Fraction(1, 5))  # [200, 300) would leak 50 ms
    assert clip_point(track, Fraction(3, 10)) == (4, Fraction(3, 10))


def test_preview_past_the_end_keeps_everything():
    track = make_track("video", BFRAMES)
    assert clip_point(track, 10) == (10, Fraction(10))
    assert clip_point(track, 1000) == (10, Fraction(10))


def test_preview_shorter_than_the_first_frame_keeps_nothing():
    assert clip_point(make_track("video", BFRAMES), Fraction(99, 100)) == (0, Fraction(0))
    assert clip_point(make_track("video", BFRAMES), 0) == (0, Fraction(0))
    assert clip_point(make_track("video", BFRAMES), -5) == (0, Fraction(0))
    # a delayed track (empty edit): nothing before its first frame ends
    assert clip_point(make_track("video", [b + 6 for b in BFRAMES]), 6) == (0, Fraction(0))
    # audio keeps only the priming frame, presented before 0: E = 0, an empty preview
    audio = make_track("audio", [-100, 0, 100], timescale=1000, durations=[100] * 3, shift=-100)
    assert clip_point(audio, Fraction(5, 100)) == (1, Fraction(0))


def test_samples_past_the_edit_end_are_media_past_n():
    # edit list ends the track at 5, samples continue to 10
    track = make_track("video", range(10), edit_end=5)
    assert track.end_time == 5
    assert clip_point(track, 5) == (5, Fraction(5))
    assert clip_point(track, 7) == (7, Fraction(7))  # never presented, but their bytes are past 7: kept only up to 7
    assert clip_point(track, 100) == (10, Fraction(5))  # everything; the presentation still ends at 5


def test_exact_rational_boundaries():
    track = make_track("video", [i * 1001 for i in range(10)], timescale=30000, durations=[1001] * 10)
    n = Fraction(3 * 1001, 30000)
    assert clip_point(track, n) == (3, n)
    assert clip_point(track, n - Fraction(1, 10**9)) == (2, Fraction(2002, 30000))
    assert as_seconds(3.3) == Fraction(33, 10)
    assert clip_point(track, 0.1001) == clip_point(track, Fraction("0.1001"))


def _brute_force(pts: list[int], ends: list[int], n: Fraction) -> int:
    """Largest prefix whose frames all end by N and are exactly the frames shown before some time."""
    best = 0
    for k in range(len(pts) + 1):
        kept, dropped = pts[:k], pts[k:]
        if any(e > n for e in ends[:k]):
            break
        if not kept or not dropped or max(kept) < min(dropped):
            best = k
    return best


@pytest.mark.parametrize("seed", range(40))
def test_random_bframe_patterns_against_brute_force(seed):
    rng = random.Random(seed)
    # mini-GOPs: a reference frame decoded first, then its B-frames in a random order
    pts, at = [], 0
    while at < 60:
        size = rng.randint(1, 5)
        group = list(range(at, at + size))
        pts += [group[-1]] + rng.sample(group[:-1], size - 1)
        at += size
    track = make_track("video", pts, timescale=25)
    ends = frame_ends(track).tolist()
    for _ in range(25):
        n = Fraction(rng.randint(-5, 70 * 25), 25 * 25)
        k, end = clip_point(track, n)
        assert k == _brute_force(pts, ends, n * 25)
        assert end <= max(n, 0)
        kept = set(pts[:k])
        assert kept == {p for p in pts if Fraction(p, 25) < end}
        if 0 < k < len(pts):
            assert end * 25 in set(pts)  # a frame boundary: the first dropped frame


def test_clip_tracks_one_end_for_all():
    video = make_track("video", BFRAMES)
    audio = make_track("audio", [i * 3 - 1 for i in range(40)], timescale=10, durations=[3] * 40, shift=-1)
    end, clips = clip_tracks([video, audio], Fraction(9, 2))
    assert end == 4  # video frames end by 4.5 only up to 4 (P6 decodes before B4)
    # audio is cut at E, not N: its frames end by 4 (the one from 3.8 to 4.1 goes)
    assert [(c.count, c.end, c.cut) for c in clips] == [(4, Fraction(4), True), (13, Fraction(19, 5), True)]


# --------------------------------------------------------------------------- real files, ffmpeg as the oracle

FILES = ["h264_high_bframes", "hevc", "h264_2997", "edit_list"]
PREVIEWS = [Fraction("3.3"), Fraction(5)]


@pytest.mark.parametrize("name,seconds", list(itertools.product(FILES, PREVIEWS)))
def test_clip_point_keeps_what_the_decoder_shows_before_e(name, seconds):
    index = index_of(name)
    for track in index.tracks:
        k, end = clip_point(track, seconds)
        assert 0 < k < track.sample_count and 0 < end <= seconds
        src = source_frames(name, track.kind, track.timescale)
        ts = track.timescale
        if track.kind == "video":
            shown = frames_before(src, end)
            # the decoder shows exactly the kept samples before E, and none of the others
            assert len(shown) == k
            assert [f.pts for f in shown] == sorted(track.pts[:k].tolist())
            assert all(f.pts * f.tb >= end for f in src[k:])
            assert end * ts in {f.pts for f in src}  # E is a frame boundary: the next frame's pts
            assert all(f.pts * f.tb + f.duration * f.tb <= seconds for f in shown)
        else:
            # AAC: the demuxer drops the priming frame (pts < 0); frames keep their 1024 samples
            shown = frames_before(src, end)
            assert len(shown) == k - 1 == int((track.pts[:k] >= 0).sum())
            assert all(f.pts * f.tb + f.duration * f.tb <= end for f in shown)
            assert src[k - 1].pts * src[k - 1].tb + src[k - 1].duration * src[k - 1].tb > seconds  # next one straddles


@pytest.mark.parametrize("name", FILES)
def test_fixture_edges(name):
    index = index_of(name)
    video = index.video
    assert clip_point(video, 1000) == (video.sample_count, video.duration_seconds)
    assert clip_point(video, Fraction(1, 50)) == (0, Fraction(0))  # 1 frame lasts 40 ms (33 ms at 29.97)
    start = Fraction(int(video.pts.min()), video.timescale)
    assert clip_point(video, start + Fraction(1, 100))[0] == 0
    assert math.isclose(float(clip_point(video, 100)[1]), float(video.duration_seconds))
