"""The decisive fMP4 check: ffmpeg decodes our init + media segments to the source's frames.

For each fixture track: index the MP4 (origin.local), cut it (video at every
keyframe, audio every ~1 s), mux init + segments, then

* box level: every segment's tfdt + durations + composition offsets give back
  the track's presentation times exactly (what any player computes);
* decoder level, one file: init + all segments concatenated, decoded with
  ``-copyts`` -> same frame count and md5s as the source MP4, and the same pts;
* decoder level, HLS: a media playlist with ``#EXT-X-MAP`` over the files.

Two ffmpeg behaviours shape the comparisons (measured with ffmpeg 9.0.2):

* ffmpeg's mov demuxer never returns pts < dts: when a trun has negative
  composition offsets it adds ``dts_shift = max(-offset)`` to every pts of
  the track. So our pts come out shifted by that constant; we compute it from
  the segments and subtract it. (Without ``-copyts`` ffmpeg also rebases both
  files to start at 0, which hides any constant error: hence ``-copyts``.)
* AAC priming: the source's edit list makes ffmpeg discard the first decoded
  frame and cut the last; fMP4 without an edit list carries the priming
  packet at pts -1024 (a negative offset), which ffmpeg decodes and outputs.
  tests/oracle.py:audio_hashes_match encodes exactly that rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from packager.fmp4 import init_segment, media_segment, media_segment_size
from packager.media import Track
from test_fmp4_muxer import read_fragment

media_fixtures = pytest.importorskip("media_fixtures")
oracle = pytest.importorskip("oracle")
local = pytest.importorskip("origin.local")


def _fixture(name: str) -> Path:
    try:
        return media_fixtures.fixture_path(name)
    except media_fixtures.FfmpegNotAvailable as exc:  # pragma: no cover - environment
        pytest.skip(str(exc))


def _track(index, kind: str) -> Track:
    return index.video if kind == "video" else index.audios[0]


def _cuts(track: Track) -> list[tuple[int, int]]:
    if track.kind == "video":
        starts = np.flatnonzero(track.keyframes).tolist()
    else:
        starts = list(range(0, track.sample_count, 47))  # ~1 s of AAC, deliberately unaligned
    assert starts[0] == 0
    return list(zip(starts, starts[1:] + [track.sample_count]))


def _package(path: Path, kind: str, out: Path):
    index = local.read_index_sync(path)
    track = _track(index, kind)
    out.mkdir(parents=True, exist_ok=True)
    init = init_segment(track)
    (out / "init.mp4").write_bytes(init)
    segments, batches = [], []
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-PLAYLIST-TYPE:VOD", '#EXT-X-MAP:URI="init.mp4"']
    longest = 0.0
    for number, (first, stop) in enumerate(_cuts(track), 1):
        batch = local.read_batch_sync(path, track, first, stop, number)
        seg = media_segment(batch)
        assert len(seg) == media_segment_size(track, batch.sizes)
        segments.append(seg)
        batches.append(batch)
        (out / f"seg-{number}.m4s").write_bytes(seg)
        seconds = float(batch.durations.sum()) / track.timescale
        longest = max(longest, seconds)
        lines += [f"#EXTINF:{seconds:.6f},", f"seg-{number}.m4s"]
    lines.insert(2, f"#EXT-X-TARGETDURATION:{int(longest + 0.5) + 1}")
    lines.append("#EXT-X-ENDLIST")
    (out / "index.m3u8").write_text("\n".join(lines) + "\n")
    (out / "whole.mp4").write_bytes(init + b"".join(segments))
    return track, segments, batches


CASES = [
    ("h264_high_bframes", "video"),  # B-frames, edit media_time 1024 -> negative offsets, trun v1
    ("hevc", "video"),  # hvc1, B-frames
    ("h264_2997", "video"),  # timescale 30000, 1001 ticks a frame
    ("h264_baseline", "video"),  # no B-frames
    ("edit_list", "video"),  # empty edit 0.6 s + media_time: positive shift, in tfdt
    ("irregular_gop", "video"),  # uneven segments
    ("h264_high_bframes", "audio"),
    ("h264_2997", "audio"),  # 44.1 kHz
    ("audio_only", "audio"),
]


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{k}" for n, k in CASES])
def packaged(request, tmp_path_factory):
    name, kind = request.param
    src = _fixture(name)
    out = tmp_path_factory.mktemp(f"fmp4-{name}-{kind}")
    track, segments, batches = _package(src, kind, out)
    return src, out, track, segments, batches


def test_box_level_times_are_presentation_times(packaged):
    _, _, track, segments, batches = packaged
    written_pts, written_dts = [], []
    for seg, batch in zip(segments, batches):
        frag = read_fragment(seg)
        assert frag.sequence_number == batch.sequence_number
        assert frag.payload == bytes(batch.data)
        # a segment starts where its first sample presents (a keyframe for video), plus the
        # track's pre-roll that the init's edit list takes off
        assert frag.base_decode_time == batch.pts[0] + track.pre_roll
        written_pts.append(frag.pts)
        written_dts.append(frag.dts)
    # the first frame of a track behind an empty edit presents from 0 (Track.late_start)
    expected = track.pts + track.pre_roll
    expected[0] -= track.late_start
    assert np.concatenate(written_pts).tolist() == expected.tolist()
    dts = np.concatenate(written_dts)
    assert dts.min() >= 0 and (np.diff(dts) > 0).all()  # continuous decode clock across segments


def _shift(segments) -> int:
    """ffmpeg's mov demuxer dts_shift: pts come out late by max(-composition offset)."""
    return max(0, max(int(-read_fragment(seg).composition_offsets.min()) for seg in segments))


def _decode(source, track: Track, *extra):
    stream = "v:0" if track.kind == "video" else "a:0"
    return oracle.framemd5(
        source, stream, extra_input_args=["-copyts", *extra], video_time_base=f"1:{track.timescale}"
    )


def _check_decoded(src_frames, our_frames, track: Track, shift: int):
    if track.kind == "video":
        assert len(our_frames) == len(src_frames)
        assert [f.md5 for f in our_frames] == [f.md5 for f in src_frames]
        # where the source presents each frame, but the first of a track behind an empty edit
        # (Track.late_start), which presents from 0
        src_pts = [f.pts for f in src_frames]
        src_pts[0] -= track.late_start
        assert [f.pts - shift for f in our_frames] == src_pts
        assert sorted(f.pts for f in src_frames) == sorted(track.pts.tolist())
    else:
        # the init's edit list trims the AAC priming as the source's does: ffmpeg decodes the
        # priming packet and drops its samples, so the frames are the source's, from the first
        match = oracle.audio_hashes_match(src_frames, our_frames, max_leading=0)
        assert match, match.reason
        body = our_frames[: len(src_frames)]
        assert [f.pts - shift for f in body] == [f.pts for f in src_frames]


def test_concatenated_file_decodes_to_source_frames(packaged):
    src, out, track, segments, _ = packaged
    _check_decoded(_decode(src, track), _decode(out / "whole.mp4", track), track, _shift(segments))


def test_hls_playlist_decodes_to_source_frames(packaged):
    src, out, track, segments, _ = packaged
    ours = _decode(out / "index.m3u8", track, "-allowed_extensions", "ALL")
    _check_decoded(_decode(src, track), ours, track, _shift(segments))


def test_each_segment_decodes_alone(packaged):
    """init + one segment is a complete file: every segment starts decodable (video: a keyframe)."""
    src, out, track, segments, batches = packaged
    init = (out / "init.mp4").read_bytes()
    stream = "v:0" if track.kind == "video" else "a:0"
    for number in sorted({1, len(segments) // 2 + 1, len(segments)}):
        one = out / f"alone-{number}.mp4"
        one.write_bytes(init + segments[number - 1])
        ok, err = oracle.decode_ok(one, maps=(f"0:{stream}",))
        assert ok, err
        batch = batches[number - 1]
        # ffmpeg skips the edit's pre-roll (AAC priming: 1024 samples) at the start of whatever it
        # decodes, so a segment decoded alone loses the frames that fill it
        hidden = int((np.cumsum(batch.durations) <= track.pre_roll).sum()) if track.kind == "audio" else 0
        assert oracle.decoded_frame_count(one, stream) == batch.sample_count - hidden
