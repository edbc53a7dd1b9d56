"""Hostile and broken files fail fast with a clear error; TS continuity counters run on across segments.

Each bad file is derived from a real fixture (tests/media_fixtures.py: ``with_boxes_before_moov``,
``with_empty_parameter_set``, byte patches here) and checked twice: the index refuses it with a
message naming what is wrong, and a real server answers the JSON error of docs/URLS.md instead of
200s that do not decode. The continuity check parses the served segments' 188-byte packets, and
ffmpeg (the oracle) still decodes the served HLS to the source's frames.
"""

from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path

import httpx
import m3u8
import pytest

import media_fixtures as mf
import oracle
from conftest import ServerProcess, fixture_bytes, serving
from origin.local import read_index_sync
from packager.errors import MalformedMedia, TruncatedMedia
from packager.mp4.index import MAX_BOXES_BEFORE_MOOV, MAX_BOXES_IN_MOOV

PARTNER = "robust"
FAST = 2.0  # seconds: generous; the refusals take milliseconds (an unbounded walk took minutes)
TS_PACKET = 188


def _mdat_64bit_past_eof(data: bytes) -> bytes:
    """ffmpeg writes ``free(8) mdat(8)``: the same 16 bytes as one 64-bit mdat header, here claiming 1 TB."""
    boxes = list(mf.iter_boxes(data))
    free = next(b for b in boxes if b.type == "free")
    assert boxes[boxes.index(free) + 1].type == "mdat" and free.size == 8, [b.type for b in boxes]
    return data[: free.offset] + struct.pack(">I4sQ", 1, b"mdat", 10**12) + data[free.offset + 16 :]


def _co64_wrapping_negative(data: bytes) -> bytes:
    """moov_at_end with 64-bit chunk offsets, the video's first one 2^64 - 16 (-16 read as a signed int64)."""
    out = bytearray(mf.with_co64(data))
    video = next(t for t in mf.tracks(bytes(out)) if t.handler == "vide")
    co64 = next(b for b in video.sample_table_boxes if b.type == "co64")
    struct.pack_into(">Q", out, co64.payload_offset + 8, 2**64 - 16)
    return bytes(out)


def _derived() -> dict[str, bytes]:
    faststart = fixture_bytes("h264_baseline")
    return {
        "many_boxes": mf.with_boxes_before_moov(faststart, 2_000_000),
        "many_boxes_in_moov": mf.with_boxes_in_moov(fixture_bytes("moov_at_end"), 2_000_000),
        "empty_sps": mf.with_empty_parameter_set(faststart, "avcC", 0),
        "empty_pps": mf.with_empty_parameter_set(faststart, "avcC", 1),
        "hevc_empty_vps": mf.with_empty_parameter_set(fixture_bytes("hevc"), "hvcC", 0),
        "hevc_empty_sps": mf.with_empty_parameter_set(fixture_bytes("hevc"), "hvcC", 1),
        "mdat_past_eof_moov_last": _mdat_64bit_past_eof(fixture_bytes("moov_at_end")),
        "mdat_past_eof_cut": _mdat_64bit_past_eof(faststart)[:-100_000],
        "co64_past_any_file": _co64_wrapping_negative(fixture_bytes("moov_at_end")),
    }


# name -> (error class, code, phrase the message names)
EXPECTED = {
    "many_boxes": (MalformedMedia, "malformed_media", f"more than {MAX_BOXES_BEFORE_MOOV} boxes before 'moov'"),
    "many_boxes_in_moov": (MalformedMedia, "malformed_media", f"more than {MAX_BOXES_IN_MOOV} boxes in the 'moov' box at offset 276344"),
    "empty_sps": (MalformedMedia, "malformed_media", "avcC SPS 1 of 1 is empty"),
    "empty_pps": (MalformedMedia, "malformed_media", "avcC PPS 1 of 1 is empty"),
    "hevc_empty_vps": (MalformedMedia, "malformed_media", "hvcC VPS 1 of 1 is empty"),
    "hevc_empty_sps": (MalformedMedia, "malformed_media", "hvcC SPS 1 of 1 is empty"),
    "mdat_past_eof_moov_last": (TruncatedMedia, "truncated_media", "'mdat' box at offset 32 claims 1000000000000 bytes"),
    "mdat_past_eof_cut": (TruncatedMedia, "truncated_media", "but the file ends at"),
    "co64_past_any_file": (MalformedMedia, "malformed_media", "'co64' holds chunk offset 18446744073709551600"),
}


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("robust-library")
    for name, data in _derived().items():
        (root / PARTNER / name).mkdir(parents=True)
        (root / PARTNER / name / "main.mp4").write_bytes(data)
    (root / PARTNER / "good").mkdir()
    shutil.copy(mf.fixture_path("h264_high_bframes"), root / PARTNER / "good" / "main.mp4")
    return root


@pytest.fixture(scope="module")
def robust_server(library, tmp_path_factory):
    # 2 s segments: the 8 s fixture gets 4 video segments (GOP 2 s), so 3 boundaries to check
    yield from serving(["--media", str(library), "--segment-duration", "2"], tmp_path_factory.mktemp("robust-srv") / "server.log")


# --------------------------------------------------------------------------- the index


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_file_is_refused_at_index_time_and_fast(name, library):
    error, _, phrase = EXPECTED[name]
    started = time.perf_counter()
    with pytest.raises(error) as info:
        read_index_sync(library / PARTNER / name / "main.mp4")
    elapsed = time.perf_counter() - started
    assert phrase in str(info.value), str(info.value)
    assert elapsed < FAST, f"{name}: refused after {elapsed:.2f} s"


def test_co64_file_indexes_like_its_stco_source(tmp_path):
    """with_co64 itself is sound: the same samples at the same offsets, the same decoded frames."""
    source = mf.fixture_path("moov_at_end")
    path = tmp_path / "co64.mp4"
    path.write_bytes(mf.with_co64(source.read_bytes()))
    want, got = read_index_sync(source), read_index_sync(path)
    for a, b in zip(got.tracks, want.tracks):
        assert (a.offsets == b.offsets).all() and (a.sizes == b.sizes).all()
    assert oracle.video_hashes(path) == oracle.video_hashes(source)


def test_boxes_before_moov_under_the_cap_still_index(tmp_path):
    """The cap refuses box counts, not layouts: the same file with 1,000 boxes indexes to the same samples."""
    source = fixture_bytes("h264_baseline")
    path = tmp_path / "boxes.mp4"
    path.write_bytes(mf.with_boxes_before_moov(source, 1000))
    (tmp_path / "source.mp4").write_bytes(source)
    want, got = read_index_sync(tmp_path / "source.mp4"), read_index_sync(path)
    assert [t.sample_count for t in got.tracks] == [t.sample_count for t in want.tracks]
    for a, b in zip(got.tracks, want.tracks):
        assert (a.sizes == b.sizes).all() and (a.offsets == b.offsets + 8000).all()
    assert oracle.video_hashes(path) == oracle.video_hashes(tmp_path / "source.mp4")


# --------------------------------------------------------------------------- over HTTP


@pytest.mark.parametrize("resource", ["hls/master.m3u8", "hls/main/seg-1.ts", "cmaf/main/seg-1.m4s"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_file_is_a_json_error_over_http_not_a_200(name, resource, robust_server):
    _, code, phrase = EXPECTED[name]
    started = time.perf_counter()
    response = httpx.get(f"{robust_server.base}/p/{PARTNER}/e/{name}/{resource}", timeout=60)
    elapsed = time.perf_counter() - started
    assert response.status_code == 500, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    assert phrase in body["detail"] and f"{PARTNER}/{name}/main.mp4" in body["detail"], body
    assert response.headers["cache-control"] == "no-store"
    assert elapsed < FAST, f"{name} {resource}: answered after {elapsed:.2f} s"


# --------------------------------------------------------------------------- TS continuity counters


def _continuity(segments: list[bytes]) -> dict[int, list[tuple[int, int, int]]]:
    """PID -> (segment, packet, counter) of every packet that carries payload (only those count, 13818-1 2.4.3.3)."""
    seen: dict[int, list[tuple[int, int, int]]] = {}
    for number, data in enumerate(segments, 1):
        assert len(data) % TS_PACKET == 0
        for i in range(0, len(data), TS_PACKET):
            assert data[i] == 0x47, f"segment {number}: lost sync at {i}"
            pid = ((data[i + 1] & 0x1F) << 8) | data[i + 2]
            if data[i + 3] & 0x10:  # adaptation_field_control has payload
                seen.setdefault(pid, []).append((number, i // TS_PACKET, data[i + 3] & 0x0F))
    return seen


def _segments(server: ServerProcess, playlist_path: str) -> tuple[str, list[bytes]]:
    url = f"{server.base}/p/{PARTNER}/e/good/{playlist_path}"
    playlist = m3u8.loads(httpx.get(url, timeout=30).text, uri=url)
    with httpx.Client(timeout=30) as client:
        return url, [client.get(segment.absolute_uri).raise_for_status().content for segment in playlist.segments]


@pytest.mark.parametrize("playlist_path", ["hls/main/index.m3u8", "hls/main/a1/index.m3u8"])
def test_ts_continuity_counters_run_on_across_segments(playlist_path, robust_server):
    url, segments = _segments(robust_server, playlist_path)
    assert len(segments) >= 3, "the check needs segment boundaries"
    counters = _continuity(segments)
    assert {0x0000, 0x1000} <= set(counters), sorted(counters)  # PAT, PMT and the stream
    assert len(counters) == 3, sorted(counters)
    for pid, packets in counters.items():
        for (_, _, before), (number, packet, cc) in zip(packets, packets[1:]):
            assert cc == (before + 1) % 16, f"PID 0x{pid:04x}: segment {number} packet {packet} has {cc} after {before}"
    # still the source's frames, through ffmpeg's HLS demuxer (one TS demuxer across the segments)
    source = mf.fixture_path("h264_high_bframes")
    if "/a1/" in playlist_path:
        match = oracle.audio_hashes_match(oracle.framemd5(source, "a:0"), oracle.framemd5(url, "a:0"))
        assert match, match
    else:
        assert oracle.video_hashes(url) == oracle.video_hashes(source)
