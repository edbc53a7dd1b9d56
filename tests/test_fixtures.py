"""The test media are what they claim to be -- judged by ffmpeg or by bytes."""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from pathlib import Path

import pytest

import media_fixtures as mf
import oracle
from media_fixtures import ALL_BAD, ALL_GOOD, FIXTURES

VIDEO_FIXTURES = tuple(n for n in ALL_GOOD if FIXTURES[n].expect.video_codec)
AUDIO_FIXTURES = tuple(n for n in ALL_GOOD if FIXTURES[n].expect.audio_streams)
REGULAR_GOP = tuple(n for n in VIDEO_FIXTURES if FIXTURES[n].expect.gop_seconds)


@pytest.fixture(scope="module")
def paths(media_fixture_paths) -> dict[str, Path]:
    return media_fixture_paths


@functools.cache
def _frames(path: Path, stream: str) -> list[oracle.FrameHash]:
    return oracle.framemd5(path, stream)


@functools.cache
def _keyframes(path: Path) -> list[float]:
    return oracle.keyframe_times(path)


# --------------------------------------------------------------------------- good fixtures

@pytest.mark.parametrize("name", ALL_GOOD)
def test_decodes_without_errors(paths, name):
    ok, stderr = oracle.decode_ok(paths[name])
    assert ok, stderr


@pytest.mark.parametrize("name", ALL_GOOD)
def test_streams_as_declared(paths, name):
    exp = FIXTURES[name].expect
    streams = oracle.probe_streams(paths[name])
    video = [s for s in streams if s.kind == "Video"]
    audio = [s for s in streams if s.kind == "Audio"]
    assert [s.codec for s in video] == ([exp.video_codec] if exp.video_codec else [])
    assert [s.codec for s in audio] == ["aac"] * exp.audio_streams
    if exp.languages:
        assert tuple(s.language for s in audio) == exp.languages
    # and the same from the bytes
    trks = mf.tracks(paths[name])
    assert [t.handler for t in trks] == ["vide"] * len(video) + ["soun"] * len(audio)
    fourcc = {"h264": "avc1", "hevc": "hvc1"}
    for t in trks:
        if t.handler == "vide":
            assert t.codec == fourcc[exp.video_codec]
        else:
            assert t.codec == "mp4a" and t.timescale == exp.audio_rate


@pytest.mark.parametrize("name", VIDEO_FIXTURES)
def test_video_frame_count_and_rate(paths, name):
    exp = FIXTURES[name].expect
    frames = _frames(paths[name], "v:0")
    assert len(frames) == exp.video_frames
    assert frames[0].size == exp.width * exp.height * 3 // 2  # yuv420p
    step = frames[1].pts_time - frames[0].pts_time
    assert step == pytest.approx(1 / float(exp.fps), abs=1e-4)
    assert len({f.md5 for f in frames}) > len(frames) * 0.9  # moving picture


@pytest.mark.parametrize("name", AUDIO_FIXTURES)
def test_audio_duration(paths, name):
    exp = FIXTURES[name].expect
    for i in range(exp.audio_streams):
        frames = _frames(paths[name], f"a:{i}")
        assert frames, name
        assert all(f.tb == Fraction(1, exp.audio_rate) for f in frames)
        # the MP4 edit list trims priming and padding: exactly the nominal duration
        samples = sum(f.duration for f in frames)
        assert samples == round(exp.duration * exp.audio_rate)
        assert all(f.duration == 1024 for f in frames[:-1])


@pytest.mark.parametrize("name", REGULAR_GOP)
def test_regular_gop(paths, name):
    exp = FIXTURES[name].expect
    frame = 1 / float(exp.fps)
    gop_frames = round(exp.gop_seconds * exp.fps)
    n_gops = math.ceil(exp.video_frames / gop_frames)
    expected = [exp.video_start + k * exp.gop_seconds for k in range(n_gops)]
    assert _keyframes(paths[name]) == pytest.approx(expected, abs=frame / 2)


def test_faststart_vs_moov_at_end(paths):
    for name in ALL_GOOD:
        order = [b.type for b in mf.top_level_boxes(paths[name]) if b.type in ("moov", "mdat")]
        expected = ["moov", "mdat"] if FIXTURES[name].expect.faststart else ["mdat", "moov"]
        assert order == expected, name
    assert not FIXTURES["moov_at_end"].expect.faststart


def test_irregular_gop(paths):
    exp = FIXTURES["irregular_gop"].expect
    times = _keyframes(paths["irregular_gop"])
    assert times == pytest.approx(list(exp.keyframe_times), abs=0.02)
    gops = [b - a for a, b in zip(times, times[1:] + [exp.duration])]
    assert len(set(round(g, 2) for g in gops)) == len(gops)  # all different
    assert max(gops) > 6 and min(gops) < 0.5
    # the byte view agrees: as many sync samples as decoder keyframes
    (video,) = [t for t in mf.tracks(paths["irregular_gop"]) if t.handler == "vide"]
    assert video.sync_samples == len(times)


def test_edit_list(paths):
    trks = mf.tracks(paths["edit_list"])
    (video,) = [t for t in trks if t.handler == "vide"]
    assert video.nontrivial_edits
    assert len(video.edits) == 2
    empty, normal = video.edits
    assert empty.media_time == -1  # empty edit: the video starts late
    movie_timescale = mf.movie_timescale(paths["edit_list"])  # segment_duration unit
    assert empty.segment_duration / movie_timescale == pytest.approx(0.6, abs=1e-3)
    assert normal.media_time > 0  # B-frame composition delay skipped
    # ffmpeg honours it: first video frame 0.6 s after the first audio sample
    frames = oracle.framemd5(paths["edit_list"], ["v:0", "a:0"])
    v0 = min(f.pts_time for f in frames if f.stream == 0)
    a0 = min(f.pts_time for f in frames if f.stream == 1)
    assert v0 - a0 == pytest.approx(0.6, abs=1e-3)
    # whereas the other fixtures have no empty edit
    for name in ("h264_high_bframes", "h264_baseline", "two_languages"):
        assert all(e.media_time >= 0 for t in mf.tracks(paths[name]) for e in t.edits), name


def test_two_languages(paths):
    a0 = [f.md5 for f in _frames(paths["two_languages"], "a:0")]
    a1 = [f.md5 for f in _frames(paths["two_languages"], "a:1")]
    assert len(a0) == len(a1)
    assert not set(a0) & set(a1)  # different content (440 vs 880 Hz)
    langs = [t.language for t in mf.tracks(paths["two_languages"]) if t.handler == "soun"]
    assert langs == ["eng", "fra"]


def test_ladder_is_aligned(paths):
    names = [mf.LADDER[f] for f in ("hi", "mid", "lo")]
    kfs = [_keyframes(paths[n]) for n in names]
    assert kfs[0] == kfs[1] == kfs[2]
    assert len(kfs[0]) == 6
    counts = [len(_frames(paths[n], "v:0")) for n in names]
    assert counts[0] == counts[1] == counts[2] == 300
    sizes = [FIXTURES[n].expect.width for n in names]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 3
    bytes_ = [paths[n].stat().st_size for n in names]
    assert bytes_ == sorted(bytes_, reverse=True)
    audio = [[f.md5 for f in _frames(paths[n], "a:0")] for n in names]
    assert audio[0] == audio[1] == audio[2]  # same audio in every flavor


# --------------------------------------------------------------------------- bad fixtures

def test_truncated(paths):
    boxes = mf.top_level_boxes(paths["truncated"])
    size = paths["truncated"].stat().st_size
    assert [b.type for b in boxes] == ["ftyp", "moov"]
    assert boxes[-1].end > size  # moov declared longer than the file
    assert not oracle.decode_ok(paths["truncated"])[0]


def test_corrupt(paths):
    good = paths[FIXTURES["corrupt"].base].read_bytes()
    bad = paths["corrupt"].read_bytes()
    assert len(bad) == len(good) and bad != good
    moov = next(b for b in mf.iter_boxes(good) if b.type == "moov")
    diff = [i for i, (x, y) in enumerate(zip(good, bad)) if x != y]
    assert moov.offset < diff[0] and diff[-1] < moov.end  # only inside moov
    # box structure still parses; the tables are garbage
    assert [t.handler for t in mf.tracks(bad)] == ["vide", "soun"]
    ok, stderr = oracle.decode_ok(paths["corrupt"])
    assert not ok and stderr


@pytest.mark.parametrize("name", ["text_as_mp4", "empty"])
def test_not_mp4(paths, name):
    data = paths[name].read_bytes()
    assert b"ftyp" not in data[:16]
    ok, stderr = oracle.decode_ok(paths[name])
    assert not ok and "Invalid data" in stderr


def test_unsupported_codec_is_valid_mp4(paths):
    # playable by ffmpeg, but the video is MPEG-4 Part 2, which vodgate does not package
    ok, stderr = oracle.decode_ok(paths["unsupported_codec"])
    assert ok, stderr
    assert [s.codec for s in oracle.probe_streams(paths["unsupported_codec"])] == ["mpeg4", "aac"]
    assert [t.codec for t in mf.tracks(paths["unsupported_codec"])] == ["mp4v", "mp4a"]


# --------------------------------------------------------------------------- machinery

def test_cache_keys(paths):
    assert mf.fixture_path("h264_baseline") == paths["h264_baseline"]  # cache hit
    keys = {n: f.key() for n, f in FIXTURES.items()}
    assert len(set(keys.values())) == len(keys)
    for n, p in paths.items():
        assert p.name == f"{n}-{keys[n]}.mp4"
        assert p.parent == mf.cache_dir()


def test_library_layout(media_library):
    root = media_library
    for name in ALL_GOOD:
        assert (root / "demo" / name / "main.mp4").is_file()
    for flavor in ("hi", "mid", "lo"):
        p = root / "demo" / "ladder" / f"{flavor}.mp4"
        assert p.is_file() and not p.is_symlink()
        assert p.read_bytes() == mf.fixture_path(mf.LADDER[flavor]).read_bytes()
    for name in ALL_BAD:
        assert (root / "bad" / name / "main.mp4").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["bad", "demo"]


# --------------------------------------------------------------------------- oracle rules

def _fh(md5: str, size: int = 4096) -> oracle.FrameHash:
    return oracle.FrameHash(0, 0, 0, size // 4, size, md5, Fraction(1, 48000))


def test_audio_match_rules():
    src = [_fh("a1"), _fh("a2"), _fh("a3t", 2720)]
    hls = [_fh("prime"), _fh("a1"), _fh("a2"), _fh("a3")]
    m = oracle.audio_hashes_match(src, hls)
    assert m and m.leading == 1 and m.tail_trimmed and m.compared == 2
    assert oracle.audio_hashes_match(src, hls[1:]).leading == 0
    assert not oracle.audio_hashes_match(src, [_fh("x")] + hls)           # 2 leading frames
    assert not oracle.audio_hashes_match(src, [_fh("prime"), _fh("a2"), _fh("a1"), _fh("a3")])
    assert not oracle.audio_hashes_match([_fh("a1"), _fh("a2"), _fh("zz")], hls)  # not shorter
    assert not oracle.audio_hashes_match(src, hls + [_fh("p1"), _fh("p2")])  # 2 trailing
    assert oracle.audio_hashes_match(["a1", "a2", "a3t"], ["prime", "a1", "a2", "a3"])


def test_aac_priming_in_mpegts(paths, tmp_path):
    """Evidence for the rule: remux the MP4 audio to MPEG-TS without re-encoding."""
    src = paths["h264_2997"]  # 44.1 kHz, 10 s: last AAC frame is padded
    ts = tmp_path / "audio.ts"
    oracle.run_ffmpeg(["-v", "error", "-i", src, "-map", "0:a:0", "-c", "copy",
                       "-f", "mpegts", ts])
    mp4_frames = _frames(src, "a:0")
    ts_frames = oracle.framemd5(ts, "a:0")
    (audio,) = [t for t in mf.tracks(src) if t.handler == "soun"]
    assert audio.edits[0].media_time == 1024               # priming declared in elst
    assert len(ts_frames) == audio.sample_count == len(mp4_frames) + 1
    assert mp4_frames[-1].duration < 1024 == ts_frames[-1].duration  # end trimmed in MP4
    m = oracle.audio_hashes_match(mp4_frames, ts_frames)
    assert m and m.leading == 1 and m.trailing == 0 and m.tail_trimmed


def test_demo_library(tmp_path):
    from origin.demo_media import make_demo_library

    root = make_demo_library(tmp_path, duration=4)
    flavors = sorted(p.name for p in (root / "demo" / "ladder").iterdir())
    assert flavors == ["hi.mp4", "lo.mp4", "mid.mp4"]
    kfs = [oracle.keyframe_times(root / "demo" / "ladder" / f) for f in flavors]
    assert kfs[0] == kfs[1] == kfs[2] == [0.0, 2.0]
    for f in flavors:
        ok, stderr = oracle.decode_ok(root / "demo" / "ladder" / f)
        assert ok, stderr
