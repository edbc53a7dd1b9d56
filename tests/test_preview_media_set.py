"""packager.preview.clip_media_set: HLS renditions cut at a preview's end, checked by decoding.

For each file and preview length, every clipped segment of every rendition is
muxed with both formats (``fmt.mux(make_batch(...))`` over bytes read by
origin.local.read_batch_sync), concatenated (fMP4: the init segment first) and
decoded: exactly the source's frames shown before E come out (audio: the same
frames modulo the AAC priming frame, which TS presents and MP4 and fMP4 hide), and
the segments are sized as the playlists will say. Plan level: one E for every
rendition, durations summing to E, the last segment marked clipped, the
segments before it untouched; previews longer than the media change nothing,
previews shorter than a frame are refused.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from packager.fmp4 import init_segment
from packager.formats import FMP4, TS
from packager.hls.build import build_media
from packager.media_set import build_media_set
from packager.preview import (
    ClippedSegment,
    EmptyPreview,
    PreviewMediaSet,
    clip_media_set,
    clip_point,
    is_clipped,
    preview_end,
)
from test_preview_clip import decode, fixture, frames_before, index_of, local, oracle, source_frames

FILES = ["h264_high_bframes", "hevc", "h264_2997", "edit_list"]
PREVIEWS = [Fraction("3.3"), Fraction(5)]
TARGET = Fraction(2)  # several segments in these short files


def media_set_of(*names: str):
    return build_media_set([(name, index_of(name)) for name in names], TARGET)


def check_plan(full, clipped, seconds: Fraction) -> None:
    assert isinstance(clipped, PreviewMediaSet)
    end = clipped.end
    assert preview_end(clipped) == end and clipped.preview == seconds
    assert 0 < end <= seconds
    assert clipped.boundaries == tuple(b for b in full.boundaries if b < end)
    counts = set()
    for before, after in zip(full.videos + full.audios, clipped.videos + clipped.audios):
        assert after.id == before.id and after.track is before.track
        segments = after.segments
        counts.add(len(segments))
        assert sum(s.duration for s in segments) == end  # every rendition's playlist ends at E
        *kept, last = segments
        assert list(kept) == list(before.segments[: len(kept)])  # untouched before the cut
        assert not any(is_clipped(s) for s in kept)
        original = before.segments[len(kept)]
        if is_clipped(last):  # shortened: marked, so the edge gives it its own URL/ETag
            assert isinstance(last, ClippedSegment) and last.full == original
            assert last.span.first == original.span.first and last.span.stop <= original.span.stop
            assert last.start == original.start and last.start + last.duration == end
            assert last.span != original.span or last.duration < original.duration
        else:  # E fell on a segment boundary and nothing of this segment goes: the full segment itself
            assert last == original and last.start + last.duration == end
        k, _ = clip_point(before.track, end)
        assert last.span.stop == k  # the decode-order prefix the clip rule keeps, nothing more
        assert all(p < end * before.track.timescale for p in before.track.pts[:k].tolist())
        assert segments[0].span.first == 0
        assert all(a.span.stop == b.span.first for a, b in zip(segments, segments[1:]))
    assert len(counts) == 1  # the same segment numbers in every rendition


def mux_all(path, rendition, fmt) -> tuple[bytes, list[bytes]]:
    segments = []
    for segment in rendition.segments:
        batch = local.read_batch_sync(path, rendition.track, segment.span.first, segment.span.stop, segment.number)
        data = fmt.mux(batch)
        assert len(data) == fmt.segment_size(rendition.track, segment)  # what playlists measure
        segments.append(data)
    init = init_segment(rendition.track) if fmt.has_init else b""
    return init, segments


@pytest.mark.parametrize("name,seconds", list(itertools.product(FILES, PREVIEWS)))
def test_clipped_segments_decode_to_the_source_frames_before_e(name, seconds, tmp_path):
    full = media_set_of(name)
    clipped = clip_media_set(full, seconds)
    check_plan(full, clipped, seconds)
    end = clipped.end
    assert all(is_clipped(r.segments[-1]) for r in clipped.videos + clipped.audios)
    path = fixture(name)
    for rendition in clipped.videos + clipped.audios:
        track = rendition.track
        k = rendition.segments[-1].span.stop
        src = source_frames(name, track.kind, track.timescale)
        for fmt in (TS, FMP4):
            init, segments = mux_all(path, rendition, fmt)
            out = tmp_path / f"{track.kind}.{fmt.extension}"
            out.write_bytes(init + b"".join(segments))
            ours = decode(out, track.kind, track.timescale)
            if track.kind == "video":
                expected = frames_before(src, end)
                assert len(ours) == len(expected) == k
                assert [f.md5 for f in ours] == [f.md5 for f in expected]
                ok, err = oracle.decode_ok(out)
                assert ok, err
            else:
                # segments carry the priming frame, then the same frames; the source MP4 and the fMP4
                # init hide it with their edit lists, TS (no edit list) presents it
                primed = fmt is TS
                assert len(ours) == k - (0 if primed else 1)
                match = oracle.audio_hashes_match(src[: k - 1], ours, max_leading=1, max_trailing=0)
                assert match and match.leading == int(primed) and not match.tail_trimmed, match.reason
                assert (ours[-1].pts + ours[-1].duration) * ours[-1].tb - (ours[0].pts + ours[0].duration) * ours[0].tb <= end
        hevc = track.codec_string.startswith("hvc1")  # offered over fMP4 only (packager/hls/build.py NeedsFmp4)
        playlist = build_media(rendition, FMP4 if hevc else TS, lambda s: f"seg-{s.number}.ts", "init.mp4" if hevc else None)
        extinf = [Fraction(line[8:-1]) for line in playlist.splitlines() if line.startswith("#EXTINF:")]
        assert len(extinf) == len(rendition.segments)
        assert abs(sum(extinf) - end) < Fraction(1, 1000)


def test_ladder_renditions_stop_together(tmp_path):
    names = ("ladder_hi", "ladder_mid", "ladder_lo")
    full = media_set_of(*names)
    for seconds in (Fraction("3.3"), Fraction("7.77")):
        clipped = clip_media_set(full, seconds)
        check_plan(full, clipped, seconds)
        ends = {clip_point(v.track, clipped.end)[1] for v in clipped.videos}
        assert ends == {clipped.end}
        durations = {tuple(s.duration for s in r.segments) for r in clipped.videos + clipped.audios}
        assert len(durations) == 1
    # decode one variant through a real playlist, as a player would
    rendition = clipped.videos[-1]
    name = rendition.id.flavor
    init, segments = mux_all(fixture(name), rendition, FMP4)
    (tmp_path / "init.mp4").write_bytes(init)
    for segment, data in zip(rendition.segments, segments):
        (tmp_path / f"seg-{segment.number}.m4s").write_bytes(data)
    (tmp_path / "index.m3u8").write_text(build_media(rendition, FMP4, lambda s: f"seg-{s.number}.m4s", "init.mp4"))
    ours = decode(tmp_path / "index.m3u8", "video", rendition.track.timescale, "-allowed_extensions", "ALL")
    expected = frames_before(source_frames(name, "video", rendition.track.timescale), clipped.end)
    assert [f.md5 for f in ours] == [f.md5 for f in expected]


def test_audio_that_would_leave_a_segment_empty_pulls_the_end_back():
    """h264_2997, N = 2.1 s: the video could stop at 2.035 s (one frame after the 2.002 s keyframe,
    the next P-frame is shown after N), but the audio segment from 2.002 s holds no frame ending by
    2.035 s (44.1 kHz frames straddle): E falls back to the 2.002 s boundary, for every rendition."""
    full = media_set_of("h264_2997")
    video = index_of("h264_2997").video
    seconds = Fraction(21, 10)
    assert clip_point(video, seconds)[1] == Fraction(61061, 30000)
    clipped = clip_media_set(full, seconds)
    assert clipped.end == Fraction(1001, 500) == full.boundaries[1]
    assert [len(r.segments) for r in clipped.videos + clipped.audios] == [1, 1]
    video_seg, audio_seg = clipped.videos[0].segments[0], clipped.audios[0].segments[0]
    assert not is_clipped(video_seg)  # ends on its own boundary: the full segment, same bytes
    assert is_clipped(audio_seg) and audio_seg.duration == audio_seg.full.duration  # loses the straddling frame
    assert audio_seg.span.stop == audio_seg.full.span.stop - 1


@pytest.mark.parametrize("seconds", [Fraction(0), Fraction(3), Fraction("5.5"), Fraction(8)])
def test_audio_only(seconds):
    full = media_set_of("audio_only")
    clipped = clip_media_set(full, seconds) if seconds else None
    if clipped is None:
        with pytest.raises(EmptyPreview):
            clip_media_set(full, seconds)
        return
    check_plan(full, clipped, seconds)
    track = clipped.audios[0].track
    k = clipped.audios[0].segments[-1].span.stop
    assert ((track.pts + track.durations)[:k] <= clipped.end * track.timescale).all()
    assert (track.pts + track.durations)[k] > seconds * track.timescale  # the next frame would leak


@pytest.mark.parametrize("name", ["h264_high_bframes", "edit_list", "audio_only", "two_languages"])
def test_preview_longer_than_the_media_changes_nothing(name):
    full = media_set_of(name)
    assert clip_media_set(full, Fraction(1000)) is full
    assert clip_media_set(full, full.videos[0].track.duration_seconds if full.videos else 10) is full
    assert preview_end(full) is None


@pytest.mark.parametrize(
    "name,seconds",
    [("h264_high_bframes", Fraction(1, 50)), ("hevc", Fraction(0)), ("edit_list", Fraction(1, 2)), ("audio_only", Fraction(1, 100))],
)
def test_preview_shorter_than_the_first_frame_yields_nothing(name, seconds):
    with pytest.raises(EmptyPreview) as raised:
        clip_media_set(media_set_of(name), seconds)
    assert raised.value.code == "preview_empty"
    assert "holds no complete frame" in str(raised.value) and "first frame ends at" in str(raised.value)


def test_no_sample_past_n_is_named_anywhere():
    """Sweep N over a file: every sample any clipped segment names is shown before E <= N."""
    full = media_set_of("h264_high_bframes", "two_languages")
    for hundredths in range(3, 900, 7):
        seconds = Fraction(hundredths, 100)
        try:
            clipped = clip_media_set(full, seconds)
        except EmptyPreview:
            assert hundredths < 8
            continue
        if clipped is full:
            assert seconds >= 8
            continue
        for rendition in clipped.videos + clipped.audios:
            track = rendition.track
            named = np.concatenate([np.arange(s.span.first, s.span.stop) for s in rendition.segments])
            assert (named == np.arange(named.size)).all()
            ends = track.pts[named] + (track.durations[named] if track.kind == "audio" else 0)
            limit = clipped.end * track.timescale
            assert (ends <= limit).all() if track.kind == "audio" else (ends < limit).all()
            assert clipped.end <= seconds
