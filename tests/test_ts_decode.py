"""The decisive TS check: ffmpeg decodes our segments to the source's frames.

For each fixture track: index the MP4 (origin.local), cut it (video at every
keyframe, audio every 47 frames, deliberately not aligned to anything), mux
each cut with ``mux_segment`` and check ``segment_size`` agrees, then

* one file: the segments concatenated (continuity counters carried across
  segments with ``continuity_start``) decode cleanly (nothing on stderr at
  ``-v error``) to the same frames as the source MP4 -- same count, same md5s
  -- at the source's presentation times plus TIMESTAMP_OFFSET_90K (``-copyts``);
* HLS: a media playlist over the segments as served (each segment's counters
  start at 0) decodes to the same frames;
* each video segment alone is decodable and holds exactly its frames.

AAC priming (see tests/oracle.py): the source's edit list makes ffmpeg drop
the first decoded frame of the MP4 and cut its last; TS has no edit list, so
the priming frame comes out too, at presentation time -1024 samples, i.e.
exactly one leading extra frame, and the last frame is whole.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from packager.media import Track, rescale
from packager.ts import mux_segment, segment_size
from packager.ts.timing import TIMESTAMP_OFFSET_90K

media_fixtures = pytest.importorskip("media_fixtures")
oracle = pytest.importorskip("oracle")
local = pytest.importorskip("origin.local")


def _fixture(name: str) -> Path:
    try:
        return media_fixtures.fixture_path(name)
    except media_fixtures.FfmpegNotAvailable as exc:  # pragma: no cover - environment
        pytest.skip(str(exc))


def _cuts(track: Track) -> list[tuple[int, int]]:
    if track.kind == "video":
        starts = np.flatnonzero(track.keyframes).tolist()
    else:
        starts = list(range(0, track.sample_count, 47))
    assert starts[0] == 0
    return list(zip(starts, starts[1:] + [track.sample_count]))


def _package(path: Path, kind: str, out: Path):
    index = local.read_index_sync(path)
    track = index.video if kind == "video" else index.audios[0]
    out.mkdir(parents=True, exist_ok=True)
    served, continuous, batches = [], [], []
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-PLAYLIST-TYPE:VOD"]
    longest, cc = 0.0, 0
    for number, (first, stop) in enumerate(_cuts(track), 1):
        batch = local.read_batch_sync(path, track, first, stop, number)
        seg = mux_segment(batch)
        assert len(seg) == segment_size(track, track.sizes[first:stop], track.keyframes[first:stop])
        served.append(seg)
        continuous.append(mux_segment(batch, continuity_start=cc))
        cc = (cc + len(seg) // 188 - 2) % 16
        batches.append(batch)
        (out / f"seg-{number}.ts").write_bytes(seg)
        seconds = float(batch.durations.sum()) / track.timescale
        longest = max(longest, seconds)
        lines += [f"#EXTINF:{seconds:.6f},", f"seg-{number}.ts"]
    lines.insert(2, f"#EXT-X-TARGETDURATION:{int(longest + 0.5) + 1}")
    lines.append("#EXT-X-ENDLIST")
    (out / "index.m3u8").write_text("\n".join(lines) + "\n")
    (out / "whole.ts").write_bytes(b"".join(continuous))
    return track, served, batches


CASES = [
    ("h264_high_bframes", "video"),  # B-frames, edit list media_time 1024: first DTS < 0
    ("hevc", "video"),  # hvc1, B-frames
    ("h264_2997", "video"),  # timescale 30000: 1001 ticks do not map to whole 90 kHz ticks
    ("h264_baseline", "video"),  # no B-frames: no DTS written
    ("edit_list", "video"),  # empty edit 0.6 s + media_time
    ("irregular_gop", "video"),  # uneven segments, a 7.88 s GOP
    ("h264_high_bframes", "audio"),
    ("h264_2997", "audio"),  # 44.1 kHz
    ("audio_only", "audio"),
]


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{k}" for n, k in CASES])
def packaged(request, tmp_path_factory):
    name, kind = request.param
    src = _fixture(name)
    out = tmp_path_factory.mktemp(f"ts-{name}-{kind}")
    track, segments, batches = _package(src, kind, out)
    return src, out, track, segments, batches


def _decode(source, track: Track, *extra):
    stream = "v:0" if track.kind == "video" else "a:0"
    return oracle.framemd5(source, stream, extra_input_args=list(extra), video_time_base="1:90000")


def _check_frames(src_frames, our_frames, track: Track) -> None:
    if track.kind == "video":
        assert len(our_frames) == len(src_frames) == track.sample_count
        assert [f.md5 for f in our_frames] == [f.md5 for f in src_frames]
    else:
        match = oracle.audio_hashes_match(src_frames, our_frames)
        assert match, match.reason
        assert match.leading == 1  # the priming frame


def test_concatenated_file_decodes_to_source_frames(packaged):
    src, out, track, _, _ = packaged
    ok, err = oracle.decode_ok(out / "whole.ts", maps=("0",))
    assert ok, err
    ours = _decode(out / "whole.ts", track, "-copyts")
    source = _decode(src, track)
    _check_frames(source, ours, track)
    if track.kind == "video":
        # every frame where ffmpeg presents the source's, behind the TS origin (10 s); except that a track
        # behind an empty edit (edit_list: 0.6 s) presents its first frame from 0, held over the delay
        expected = [TIMESTAMP_OFFSET_90K + f.pts for f in source]
        expected[0] = TIMESTAMP_OFFSET_90K
        assert source[0].tb == ours[0].tb == Fraction(1, 90000)
        assert [f.pts for f in ours] == expected
    else:
        # the priming frame presents at the track's first pts (-1024 samples)
        first = Fraction(TIMESTAMP_OFFSET_90K, 90000) + Fraction(int(track.pts[0]), track.timescale)
        assert ours[0].pts * ours[0].tb == first


def test_hls_playlist_decodes_to_source_frames(packaged):
    src, out, track, _, _ = packaged
    _check_frames(_decode(src, track), _decode(out / "index.m3u8", track), track)


def test_each_segment_decodes_alone(packaged):
    _, out, track, segments, batches = packaged
    stream = "v" if track.kind == "video" else "a"
    for number in sorted({1, len(segments) // 2 + 1, len(segments)}):
        one = out / f"seg-{number}.ts"
        ok, err = oracle.decode_ok(one, maps=(f"0:{stream}",))
        assert ok, err
        assert oracle.decoded_frame_count(one, f"{stream}:0") == batches[number - 1].sample_count


@pytest.mark.parametrize("name, bsf", [("h264_high_bframes", "h264_metadata=aud=insert"), ("hevc", "hevc_metadata=aud=insert")])
def test_in_band_access_unit_delimiters(tmp_path, name, bsf):
    """Samples that already start with an AUD (as MP4s remuxed from TS do) keep
    it instead of getting a second one, and still decode to the same frames."""
    src = tmp_path / f"{name}-aud.mp4"
    oracle.run_ffmpeg(["-y", "-v", "error", "-i", str(_fixture(name)), "-c", "copy", "-bsf:v", bsf, str(src)])
    track = local.read_index_sync(src).video
    first = bytes(local.read_batch_sync(src, track, 0, 1).data[4:5])
    assert (first[0] & 0x1F == 9) if name.startswith("h264") else ((first[0] >> 1) & 0x3F == 35)
    segments = []
    for first_sample, stop in _cuts(track):
        batch = local.read_batch_sync(src, track, first_sample, stop)
        seg = mux_segment(batch)
        assert len(seg) == segment_size(track, batch.sizes, batch.keyframes)
        segments.append(seg)
    out = tmp_path / "whole.ts"
    out.write_bytes(b"".join(segments))
    ok, err = oracle.decode_ok(out, maps=("0:v",))
    assert ok, err
    assert oracle.video_hashes(out) == oracle.video_hashes(src)


def _packet_times(segment: Path, kind: str) -> list[tuple[int, int]]:
    """(dts, pts) in 90 kHz of every packet of one segment's stream, as ffmpeg's demuxer reads them."""
    out = media_fixtures.run_ffmpeg(["-v", "error", "-copyts", "-i", str(segment), "-map", f"0:{kind[0]}",
                                     "-c", "copy", "-f", "framecrc", "-"])
    rows = [line.split(",") for line in out.stdout.splitlines() if line and not line.startswith("#")]
    return [(int(r[1]), int(r[2])) for r in rows]


def test_each_segment_starts_decoding_where_it_presents_and_decode_times_run_on(packaged):
    """Players place a TS segment by its first DTS (shaka: each segment's timestampOffset from its first
    PES's min(DTS, PTS); hls.js: the timeline's start) and hls.js moves frames when the decode clock
    jumps between segments by more than a frame (packager.ts.timing.fit_decode_times)."""
    _, out, track, _, batches = packaged
    previous = None
    for number, batch in enumerate(batches, 1):
        times = _packet_times(out / f"seg-{number}.ts", track.kind)
        if track.kind == "audio":  # ffmpeg's parser splits PES into frames
            assert len(times) == batch.sample_count and all(d == p for d, p in times)
        assert len(times) == batch.sample_count
        first_presented = min(pts for _, pts in times)
        assert times[0][0] == times[0][1] == first_presented
        dts = [d for d, _ in times]
        assert all(b > a for a, b in zip(dts, dts[1:])) and all(d <= p for d, p in times)
        if previous is not None:
            # hls.js: the next decode time is the last plus the last interval; a jump of more than a
            # frame ("hole") or back by more than a tick ("overlap") makes it move frames
            expected_next = previous[-1] + (previous[-1] - previous[-2])
            frame = rescale(int(np.median(batch.durations)), track.timescale, 90_000)
            assert -1 <= dts[0] - expected_next <= frame, (number, dts[0], expected_next)
        previous = dts
