"""Hostile or odd files against the edit-list, TS-timing and audio-codec code (review of 7863acc, d67d839).

Each case failed before its fix:

* edit lists: a media_time past the end of the media (a track with nothing to present: EXTINF 0 and
  frames at negative times), a media_time below -1, and an empty edit too long for the first frame to be
  held over it (a 64-bit one overflowed int64 -- an unexpected 500 for the whole entry; one of two days
  made fMP4 segment 1 fail its u32 sample duration after the playlist had listed it) are refused by the
  index with the usual JSON error; a million empty edits no longer hold the event loop for seconds;
* TS timing: an open GOP (x264 ``open-gop=1``: the B-frames after a keyframe in decode order present
  before it) got decode times that went backwards at the segment start; every DTS now rises strictly, within
  a segment and across segments, and stays at or below its PTS;
* a pre-roll longer than the TS clock leaves room for (a start trim of a file with GOPs over ~9 s) wrapped
  the 33-bit timestamps to ~26.5 h in segment 1; /hls/ now refuses such a track (404
  ``pre_roll_needs_cmaf``, like HEVC and Opus), /cmaf/ serves it;
* audio passed through into TS (AC-3, E-AC-3, MP3) has no ADTS frame limit: a sample table claiming a
  70000-byte frame overflowed the PES length (ValueError, 500 internal_error) after BANDWIDTH had counted it;
* a ladder whose first flavor has Opus and another AAC (same language) kept only the Opus: no audio at all
  over /hls/;
* a file of hundreds of left-out audio tracks made /healthz (probed every few seconds, unauthenticated)
  ~60 KB per file and the log one line per track; both are bounded now, the count stays exact.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import time
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import pytest

import media_fixtures as mf
from conftest import fixture_bytes, serving
from origin.local import read_batch_sync, read_index_sync
from packager.errors import MalformedMedia, PreRollNeedsFmp4, UnsupportedMedia
from packager.fmp4 import init_segment
from packager.formats import FMP4, TS
from packager.hls.build import MasterUris, build_master, check_format
from packager.media import SampleBatch, SampleSpan, Segment
from packager.media_set import build_media_set
from packager.preview import clip_index, clip_media_set, preview_end
from packager.ts.timing import TIMESTAMP_OFFSET_90K, fit_decode_times

TS_PACKET = 188
MOVIE_TS = 48_000  # movie timescale of the fixtures edited here (video 12800, audio 48000)
LEFT_OUT_COPIES = 300  # extra copies of aac_and_alac's ALAC track: about what the moov box budget allows


def _pre_roll(seconds: int) -> bytes:
    """irregular_gop (16 s) start-trimmed by ``seconds`` the way ``ffmpeg -ss -c copy`` does it: both tracks'
    edits start that far into their media (plus the video's B-frame delay and the AAC priming, 1024 each)."""
    data = mf.with_edit_list(fixture_bytes("irregular_gop"), "vide", [(MOVIE_TS * 4, 1024 + seconds * 12_800)])
    return mf.with_edit_list(data, "soun", [(MOVIE_TS * 4, 1024 + seconds * 48_000)])


def _derived() -> dict[str, bytes]:
    bframes = fixture_bytes("h264_high_bframes")  # 8 s: 102400 ticks of video media
    only_alac = mf.with_track_copies(fixture_bytes("aac_and_alac"), "soun", LEFT_OUT_COPIES)
    return {
        "edit_past_end": mf.with_edit_list(bframes, "vide", [(MOVIE_TS * 8, 10**6)]),
        "edit_minus_2": mf.with_edit_list(bframes, "vide", [(MOVIE_TS * 8, -2)]),
        "empty_edit_2_63": mf.with_edit_list(bframes, "vide", [(2**63 - 1, -1), (MOVIE_TS * 8, 1024)], version=1),
        "audio_2_days_late": mf.with_edit_list(bframes, "soun", [(MOVIE_TS * 2 * 86_400, -1), (MOVIE_TS * 8, 1024)], version=1),
        "pre_roll_11s": _pre_roll(11),
        "many_left_out": only_alac,
    }


@pytest.fixture(scope="module")
def derived(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("attack_files")
    paths = {}
    for name, data in _derived().items():
        paths[name] = root / f"{name}.mp4"
        paths[name].write_bytes(data)
    return paths


# --------------------------------------------------------------------------- edit lists (the index)


REFUSED = {
    "edit_past_end": (MalformedMedia, "past the end of its media"),
    "edit_minus_2": (MalformedMedia, "media_time -2 is neither -1"),
    "empty_edit_2_63": (UnsupportedMedia, "32-bit sample duration"),
    "audio_2_days_late": (UnsupportedMedia, "32-bit sample duration"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_edit_lists_that_cannot_be_presented_are_refused_by_the_index(derived, name) -> None:
    error, phrase = REFUSED[name]
    with pytest.raises(error, match=phrase):
        read_index_sync(derived[name])


def test_an_edit_ending_2_64_seconds_on_still_clips_for_a_preview(tmp_path) -> None:
    """A media edit of 2^64 - 1 at movie timescale 1 ends past int64 in the track's timescale: a preview
    grant's clip (numpy over the presentation ends) raised OverflowError -- 500 internal_error."""
    data = bytearray(mf.with_edit_list(fixture_bytes("h264_high_bframes"), "vide", [(2**64 - 1, 1024)], version=1))
    mvhd = mf.find_boxes(bytes(data), "moov/mvhd")[0]
    struct.pack_into(">I", data, mvhd.payload_offset + (20 if data[mvhd.payload_offset] == 1 else 12), 1)  # timescale 1
    path = tmp_path / "long_edit.mp4"
    path.write_bytes(bytes(data))
    index = read_index_sync(path)
    assert index.video.end_time == 102_400  # the edit ends nothing: the media's own end
    preview = clip_media_set(build_media_set([("main", index)], Fraction(4)), Fraction(3))
    assert preview_end(preview) == Fraction(3)
    assert clip_index(index, Fraction(3))[0] == Fraction(3)


def test_a_million_empty_edits_parse_fast(tmp_path) -> None:
    """The index runs on the event loop: walking elst a row at a time held every request for 2.5 s here."""
    path = tmp_path / "many_edits.mp4"
    path.write_bytes(mf.with_edit_list(fixture_bytes("h264_high_bframes"), "vide", [(1, -1)] * 1_000_000 + [(MOVIE_TS * 8, 1024)]))
    started = time.perf_counter()
    video = read_index_sync(path).video
    assert time.perf_counter() - started < 1.0
    assert video.presentation_shift == -1024  # each 1-tick edit of the movie timescale rounds to 0 video ticks


# --------------------------------------------------------------------------- TS decode times


def _pes_times(segment: bytes) -> list[tuple[int, int]]:
    """(PTS, DTS) of every PES of a one-stream TS segment (payloads of a PES joined: its header may span packets)."""
    pes: list[bytearray] = []
    for at in range(0, len(segment), TS_PACKET):
        packet = segment[at : at + TS_PACKET]
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        control = (packet[3] >> 4) & 3
        if pid in (0, 0x1000) or not control & 1:
            continue
        start = 4 + (1 + packet[4] if control & 2 else 0)
        if packet[1] & 0x40:
            pes.append(bytearray())
        pes[-1] += packet[start:]

    def stamp(b: bytes) -> int:
        return ((b[0] >> 1) & 7) << 30 | (b[1] << 7 | b[2] >> 1) << 15 | (b[3] << 7 | b[4] >> 1)

    times = []
    for header in pes:
        pts = stamp(header[9:14])
        times.append((pts, stamp(header[14:19]) if header[7] >> 6 == 3 else pts))
    return times


def _ts_times(path: Path, kind: str, target: Fraction) -> list[list[tuple[int, int]]]:
    media_set = build_media_set([("main", read_index_sync(path))], target)
    rendition = (media_set.videos if kind == "video" else media_set.audios)[0]
    return [
        _pes_times(TS.mux(read_batch_sync(path, rendition.track, s.span.first, s.span.stop, s.number)))
        for s in rendition.segments
    ]


def _assert_decode_order(segments: list[list[tuple[int, int]]]) -> None:
    dts = [d for times in segments for _, d in times]
    assert all(d <= p for times in segments for p, d in times)
    assert all(b > a for a, b in zip(dts, dts[1:])), dts


def test_fit_decode_times_keeps_the_order_of_an_open_gop() -> None:
    # keyframe at 7200, two leading B-frames (0, 3600) decoded after it, then P/B; the next segment at 14400
    pts = np.array([7200, 0, 3600, 18000, 10800, 14400], dtype=np.int64)
    dts = np.array([-7200, -3600, 0, 3600, 7200, 10800], dtype=np.int64)
    fitted = fit_decode_times(pts, dts, pts + 3600, 14400)
    assert (fitted <= pts).all() and (np.diff(fitted) > 0).all() and fitted[-1] < 14400, fitted
    # a closed GOP: the first DTS is still the first PTS
    pts = np.array([7200, 21600, 14400, 10800, 18000], dtype=np.int64)
    fitted = fit_decode_times(pts, np.arange(5, dtype=np.int64) * 3600, pts + 3600, 18000)
    assert fitted[0] == 7200 and (fitted <= pts).all() and (np.diff(fitted) > 0).all(), fitted


def test_a_last_frame_of_duration_0_keeps_its_segment_fitted() -> None:
    """Some muxers end a track on a 0 stts delta: the cross-segment bound must still leave the last segment room."""
    path = mf.fixture_path("h264_high_bframes")
    index = read_index_sync(path)
    durations = index.video.durations.copy()
    durations[-1] = 0
    video = dataclasses.replace(index.video, durations=durations)
    last = build_media_set([("main", dataclasses.replace(index, tracks=(video,)))], Fraction(4)).videos[0].segments[-1]
    times = _pes_times(TS.mux(read_batch_sync(path, video, last.span.first, last.span.stop, last.number)))
    _assert_decode_order([times])
    assert times[0][0] == times[0][1]  # the segment's first DTS is its first PTS


def test_open_gop_ts_decode_times_rise_across_segments() -> None:
    path = mf.fixture_path("open_gop")
    track = read_index_sync(path).video
    # the fixture is what it says: a keyframe followed (in decode order) by a frame presented before it
    leading = [int(k) for k in np.flatnonzero(track.keyframes)[1:] if track.pts[k + 1] < track.pts[k]]
    assert leading, "x264 wrote no open GOP"
    segments = _ts_times(path, "video", Fraction(2))  # 2 s segments: every GOP starts one
    assert len(segments) == 4
    _assert_decode_order(segments)


def test_pre_roll_ts_timestamps_do_not_wrap(derived) -> None:
    """11 s of pre-roll is more than TS timestamps hold before the origin: refused over TS, served over fMP4."""
    path = derived["pre_roll_11s"]
    media_set = build_media_set([("main", read_index_sync(path))], Fraction(4))
    for rendition in (*media_set.videos, *media_set.audios):
        track = rendition.track
        with pytest.raises(PreRollNeedsFmp4, match=r"keeps 11\.0\d s of frames"):
            check_format(rendition, TS)
        first = rendition.segments[0]
        with pytest.raises(PreRollNeedsFmp4):
            TS.mux(read_batch_sync(path, track, first.span.first, first.span.stop, 1))
        check_format(rendition, FMP4)
        init = init_segment(track)
        (info,) = mf.tracks(init)
        assert [e.media_time for e in info.edits] == [track.pre_roll]
        assert len(FMP4.mux(read_batch_sync(path, track, first.span.first, first.span.stop, 1))) == FMP4.segment_size(track, first)


def test_a_pre_roll_within_the_ts_clock_still_plays_over_ts(tmp_path) -> None:
    path = tmp_path / "pre_roll_8s.mp4"
    path.write_bytes(_pre_roll(8))
    for kind in ("video", "audio"):
        segments = _ts_times(path, kind, Fraction(4))
        _assert_decode_order(segments)
        earliest = min(d for times in segments for _, d in times)
        assert 0 < earliest < TIMESTAMP_OFFSET_90K - 8 * 90_000 + 1  # positive, not wrapped to ~2^33


@pytest.mark.parametrize("fixture", ["h264_ac3", "h264_eac3", "h264_mp3"])
def test_an_oversized_passed_through_audio_sample_is_refused_not_a_crash(fixture) -> None:
    """AC-3/E-AC-3/MP3 frames go into TS as they are (no ADTS limit): one a sample table says is 70000 bytes
    made a PES longer than its 16-bit length -- a ValueError (500 internal_error) after the playlist's size."""
    audio = read_index_sync(mf.fixture_path(fixture)).audios[0]
    sizes = audio.sizes.copy()
    sizes[3] = 70_000
    track = dataclasses.replace(audio, sizes=sizes)
    segment = Segment(1, SampleSpan(0, 10), Fraction(0), Fraction(1))
    with pytest.raises(UnsupportedMedia, match="longer than MPEG-TS allows"):
        TS.segment_size(track, segment)
    batch = SampleBatch(track, bytes(int(sizes[:10].sum())), sizes[:10], track.dts[:10] + track.presentation_shift,
                        track.cts_offsets[:10], track.durations[:10], track.keyframes[:10])
    with pytest.raises(UnsupportedMedia, match="longer than MPEG-TS allows"):
        TS.mux(batch)


def test_a_ladder_keeps_the_aac_of_a_language_another_flavor_has_in_opus() -> None:
    """Flavor hi has Opus, lo AAC, both "und": only hi's Opus was kept (one rendition per language), so the TS
    master had no audio at all and the fMP4 one offered Opus only (no sound on players without Opus)."""
    flavors = [(flavor, read_index_sync(mf.fixture_path(name))) for flavor, name in (("hi", "h264_opus"), ("lo", "h264_high_bframes"))]
    media_set = build_media_set(flavors, Fraction(4))
    uris = MasterUris(lambda r: f"{r.flavor}/{r.audio}/index.m3u8", lambda r: f"{r.flavor}/iframes.m3u8")
    ts_master = build_master(media_set, TS, uris)
    assert 'URI="lo/1/index.m3u8"' in ts_master and ts_master.count("mp4a.40.2") == 2, ts_master
    cmaf_master = build_master(media_set, FMP4, uris)
    assert 'URI="hi/1/index.m3u8"' in cmaf_master and 'URI="lo/1/index.m3u8"' in cmaf_master, cmaf_master
    assert cmaf_master.count(",opus") == 2 and cmaf_master.count(",mp4a.40.2") == 2, cmaf_master


# --------------------------------------------------------------------------- on a real server


@pytest.fixture(scope="module")
def server(derived, media_fixture_paths, tmp_path_factory):
    root = tmp_path_factory.mktemp("attack_library")
    files = {name: derived[name] for name in ("edit_past_end", "empty_edit_2_63", "pre_roll_11s", "many_left_out")}
    files["good"] = media_fixture_paths["h264_high_bframes"]
    for name, src in files.items():
        dest = root / "demo" / name / "main.mp4"
        dest.parent.mkdir(parents=True)
        shutil.copyfile(src, dest)
    yield from serving(["--media", str(root), "--segment-duration", "4"], tmp_path_factory.mktemp("srv") / "server.log")


def _get(server, path: str) -> httpx.Response:
    return httpx.get(f"{server.base}/p/demo/e/{path}", timeout=30)


def _error(response: httpx.Response, status: int | str, code: str) -> None:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert body["error"] == code and body["detail"], body
    if status == "5xx":
        assert 500 <= response.status_code < 600, (response.status_code, body)
    else:
        assert response.status_code == status, (response.status_code, body)


def test_bad_edit_lists_answer_their_json_error(server) -> None:
    for fmt, ext in (("hls", "ts"), ("cmaf", "m4s")):
        for resource in ("master.m3u8", "main/index.m3u8", f"main/seg-1.{ext}"):
            _error(_get(server, f"edit_past_end/{fmt}/{resource}"), "5xx", "malformed_media")
            _error(_get(server, f"empty_edit_2_63/{fmt}/{resource}"), 415, "unsupported_media")
        assert _get(server, f"good/{fmt}/main/seg-1.{ext}").status_code == 200  # everyone else is served


def test_long_pre_roll_is_offered_over_cmaf_only(server) -> None:
    for resource in ("master.m3u8", "main/index.m3u8", "main/seg-1.ts", "main/iframes.m3u8", "main/a1/seg-1.ts"):
        _error(_get(server, f"pre_roll_11s/hls/{resource}"), 404, "pre_roll_needs_cmaf")
    for resource in ("master.m3u8", "main/init.mp4", "main/seg-1.m4s", "main/a1/seg-1.m4s"):
        assert _get(server, f"pre_roll_11s/cmaf/{resource}").status_code == 200, resource


def test_healthz_and_log_stay_small_with_hundreds_of_left_out_tracks(server) -> None:
    assert _get(server, "many_left_out/cmaf/master.m3u8").status_code == 200
    response = httpx.get(f"{server.base}/healthz", timeout=5)
    skipped = response.json()["skipped_tracks"]
    assert skipped["count"] == LEFT_OUT_COPIES + 1  # exact
    assert len(skipped["tracks"]) == 100 and len(response.content) < 30_000, len(response.content)
    log = server.log_path.read_text(errors="replace")
    lines = [line for line in log.splitlines() if "left out" in line and "many_left_out" in line]
    assert len(lines) == 1 and f"and {LEFT_OUT_COPIES + 1 - 5} more tracks" in lines[0] and len(lines[0]) < 2_000, log[-2000:]
    assert json.loads(httpx.get(f"{server.base}/healthz", timeout=5).text)["status"] == "ok"
