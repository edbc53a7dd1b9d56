"""Edit lists that trim a file's start: ``ffmpeg -ss 3.32 -i in.mp4 -c copy out.mp4``.

The copy keeps the keyframe at 2.0 s and writes edits that start the presentation 1.32 s later:
33 video frames (and 1.32 s of audio) are decoded but not presented. What vodgate promises
(docs/URLS.md, "Edit lists"), checked with ffmpeg as the client:

* fMP4: the init segment carries the edit (an ``elst`` whose media_time is the pre-roll), the
  segments the samples from the kept keyframe on; a player that honours edit lists presents the
  source's first presented frame at 0. (ffmpeg applies the edit's time offset to fragmented
  files but still outputs the pre-roll frames, at negative times.)
* MPEG-TS has no edit list: the pre-roll frames are in the first segment with timestamps before
  the presented origin (10 s), so a player that presents them shows them before 0.
* Both: the playlists' EXTINF follow the presented timeline (8.68 s in all, segment 1 covers
  0 to the keyframe at 6.68 s), and the frames presented from the origin on are the source's,
  bit for bit, at the source's times.
"""
from __future__ import annotations

from fractions import Fraction

import httpx
import m3u8
import pytest

import media_fixtures as mf
import oracle
from packager.ts.timing import TIMESTAMP_OFFSET_90K

FIXTURE = "start_trimmed"
PRE_ROLL_FRAMES = 33  # 1.32 s at 25 fps
TS_ORIGIN = Fraction(TIMESTAMP_OFFSET_90K, 90_000)
# ffmpeg's mov demuxer delays fMP4 pts by the largest negative composition offset of a track
# (its dts_shift): two B-frames here, 0.08 s.
FFMPEG_FMP4_DELAY = Fraction(2, 25)


def _url(server, fmt: str, path: str) -> str:
    return f"{server.base}/p/demo/e/{FIXTURE}/{fmt}/{path}"


def _seconds(frame: oracle.FrameHash) -> Fraction:
    return frame.pts * frame.tb


def _decode(source, stream: str, *extra: str) -> list[oracle.FrameHash]:
    return oracle.framemd5(source, stream, extra_input_args=["-copyts", *extra])


@pytest.fixture(scope="module")
def source_video() -> list[oracle.FrameHash]:
    """The source as ffmpeg presents it (its edit list honoured): 217 frames from 0."""
    frames = _decode(mf.fixture_path(FIXTURE), "v:0")
    assert len(frames) == mf.FIXTURES[FIXTURE].expect.video_frames == 217
    assert _seconds(frames[0]) == 0
    return frames


def test_the_fixture_is_start_trimmed() -> None:
    video = next(t for t in mf.tracks(mf.fixture_path(FIXTURE)) if t.handler == "vide")
    assert video.sample_count == 217 + PRE_ROLL_FRAMES
    # the edit starts 1.4 s of media time after the keyframe (1.32 s + the 0.08 s B-frame delay)
    assert [e.media_time for e in video.edits] == [Fraction(14, 10) * video.timescale]


def test_fmp4_init_carries_the_edit_and_the_presented_frames_start_at_0(server, source_video) -> None:
    init = httpx.get(_url(server, "cmaf", "main/init.mp4")).content
    (track,) = mf.tracks(init)
    assert [(e.segment_duration, e.media_time) for e in track.edits] == [(0, PRE_ROLL_FRAMES * 512)]

    ours = _decode(_url(server, "cmaf", "main/index.m3u8"), "v:0")
    assert len(ours) == 217 + PRE_ROLL_FRAMES  # ffmpeg outputs the pre-roll of fragmented files too
    presented = [f for f in ours if _seconds(f) >= FFMPEG_FMP4_DELAY]
    assert len(ours) - len(presented) == PRE_ROLL_FRAMES
    assert [f.md5 for f in presented] == [f.md5 for f in source_video]
    assert [_seconds(f) - FFMPEG_FMP4_DELAY for f in presented] == [_seconds(f) for f in source_video]


def test_ts_carries_the_pre_roll_before_the_presented_origin(server, source_video) -> None:
    ours = _decode(_url(server, "hls", "main/index.m3u8"), "v:0")
    presented = [f for f in ours if _seconds(f) >= TS_ORIGIN]
    assert len(ours) - len(presented) == PRE_ROLL_FRAMES
    assert [f.md5 for f in presented] == [f.md5 for f in source_video]
    assert [_seconds(f) - TS_ORIGIN for f in presented] == [_seconds(f) for f in source_video]


@pytest.mark.parametrize("fmt", ["hls", "cmaf"])
@pytest.mark.parametrize("playlist", ["main/index.m3u8", "main/a1/index.m3u8"])
def test_extinf_follows_the_presented_timeline(server, fmt: str, playlist: str) -> None:
    media = m3u8.loads(httpx.get(_url(server, fmt, playlist)).text)
    durations = [Fraction(s.duration).limit_denominator(1000) for s in media.segments]
    # 8.68 s presented in all; segment 1 covers the presentation from 0 to a keyframe (they
    # present at 0.68 s + every 2 s), not the 1.32 s of pre-roll before it
    assert sum(durations) == Fraction("8.68")
    assert (durations[0] - Fraction("0.68")) % 2 == 0


def test_fmp4_audio_presents_the_sources_frames_at_the_sources_times(server) -> None:
    source = _decode(mf.fixture_path(FIXTURE), "a:0")
    ours = _decode(_url(server, "cmaf", "main/a1/index.m3u8"), "a:0")
    # ffmpeg honours the init's audio edit fully (it drops the pre-roll's samples): the frames
    # and times are the source's. (The bytes of some frames differ: ffmpeg's AAC decoder seeds
    # its noise substitution at the first packet it decodes, and with the edit honoured it starts
    # the source near 2 s but our stream at the kept 0.68 s; the TS test below compares bytes
    # from the same first packet.)
    assert [(_seconds(f), f.size) for f in ours[:-1]] == [(_seconds(f), f.size) for f in source[:-1]]
    # the last: the source's edit also ends the track inside its last frame, the init's open edit
    # (duration 0: to the end) does not
    assert len(ours) == len(source) and _seconds(ours[-1]) == _seconds(source[-1])


def test_ts_audio_is_every_source_packet_with_the_pre_roll_before_the_origin(server) -> None:
    # the source decoded from its first packet, its edit list ignored: what TS carries
    source = _decode(mf.fixture_path(FIXTURE), "a:0", "-ignore_editlist", "1")
    ours = _decode(_url(server, "hls", "main/a1/index.m3u8"), "a:0")
    assert len(ours) == len(source)
    # every frame but the last, which the decoder flushes differently at the end of the file
    assert [f.md5 for f in ours[:-1]] == [f.md5 for f in source[:-1]]
    shift = _seconds(ours[0]) - _seconds(source[0])
    # the source's media time 1.4 s (the audio edit's media_time) is the presented origin
    assert shift == TS_ORIGIN - Fraction(14, 10)
