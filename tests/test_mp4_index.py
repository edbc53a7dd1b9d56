"""The MP4 index against ffmpeg's own demuxer, and bad input reported precisely.

Oracle: ``ffmpeg -c copy -f framemd5`` lists every packet the mov demuxer
reads (dts, pts after edit lists, size, md5 of the bytes). Our index must
name the same samples with the same times, and the bytes at our offsets
must hash the same.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import media_fixtures
from oracle import parse_framemd5, run_ffmpeg
from origin.local import read_index_sync
from packager.errors import MalformedMedia, MediaError, TruncatedMedia, UnsupportedMedia
from packager.mp4.index import drive, index_reader


def demuxed_packets(path: Path, stream: str):
    out = run_ffmpeg(["-v", "error", "-i", str(path), "-map", f"0:{stream}", "-c", "copy", "-f", "framemd5", "-"])
    # packets may carry side data ("S=1, size, md5") after the six standard columns
    lines = [line.split(", S=")[0] for line in out.stdout.splitlines()]
    return parse_framemd5("\n".join(lines))


@pytest.mark.parametrize("name", media_fixtures.ALL_GOOD)
def test_index_matches_ffmpeg_demuxer(name, media_fixture_paths):
    path = media_fixture_paths[name]
    index = read_index_sync(path)
    kinds = {"video": "v", "audio": "a"}
    counters = {"video": 0, "audio": 0}
    with open(path, "rb") as fh:
        for track in index.tracks:
            stream = f"{kinds[track.kind]}:{counters[track.kind]}"
            counters[track.kind] += 1
            packets = demuxed_packets(path, stream)
            assert len(packets) == track.sample_count, f"{name} {stream}: sample count"
            dts = (track.dts + track.presentation_shift).tolist()
            assert [p.dts for p in packets] == dts, f"{name} {stream}: decode times"
            assert [p.pts for p in packets] == track.pts.tolist(), f"{name} {stream}: presentation times"
            assert [p.size for p in packets] == track.sizes.tolist(), f"{name} {stream}: sizes"
            for i in range(0, track.sample_count, max(1, track.sample_count // 25)):
                fh.seek(int(track.offsets[i]))
                digest = hashlib.md5(fh.read(int(track.sizes[i]))).hexdigest()
                assert digest == packets[i].md5, f"{name} {stream}: bytes of sample {i}"


def test_moov_at_end_is_indexed_without_reading_mdat(media_fixture_paths):
    path = media_fixture_paths["moov_at_end"]
    size = os.path.getsize(path)
    requested = []

    def read(offset: int, length: int) -> bytes:
        requested.append(length)
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(length)

    index = drive(index_reader(size), read)
    assert index.moov_offset > size // 2, "fixture should have its moov after mdat"
    # head read + a header probe or two + the moov itself: never the media data
    assert sum(requested) < 64 * 1024 + index.moov_size + 64, requested


def test_truncated_moov_names_the_box_and_offset(media_fixture_paths):
    with pytest.raises(TruncatedMedia) as info:
        read_index_sync(media_fixture_paths["truncated"])
    message = str(info.value)
    assert "'moov'" in message and "offset" in message


@pytest.mark.parametrize("cut", [7, 20, 100, 400, 1500, 3000])
def test_every_truncation_of_a_header_is_reported(tmp_path, media_fixture_paths, cut):
    data = media_fixture_paths["h264_baseline"].read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[:cut])
    with pytest.raises(MediaError) as info:
        read_index_sync(path)
    assert isinstance(info.value, (TruncatedMedia, MalformedMedia)), info.value


def test_truncated_media_data_is_caught_at_index_time(tmp_path, media_fixture_paths):
    # faststart file cut inside mdat: the index is whole but samples point past the end
    data = media_fixture_paths["h264_baseline"].read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(TruncatedMedia) as info:
        read_index_sync(path)
    assert "the file ends at" in str(info.value)


def test_text_file_is_not_an_mp4(media_fixture_paths):
    with pytest.raises(MalformedMedia) as info:
        read_index_sync(media_fixture_paths["text_as_mp4"])
    assert "not an MP4" in str(info.value)


def test_unsupported_codec_is_named(media_fixture_paths):
    with pytest.raises(UnsupportedMedia) as info:
        read_index_sync(media_fixture_paths["unsupported_codec"])
    assert "not supported" in str(info.value)


def test_random_garbage_never_escapes_as_another_exception(tmp_path, media_fixture_paths):
    """Corrupting bytes inside moov yields a MediaError or a (possibly wrong) index, never a crash."""
    import random

    source = media_fixture_paths["h264_high_bframes"].read_bytes()
    moov_at = source.find(b"moov") - 4
    rng = random.Random(1234)
    path = tmp_path / "fuzz.mp4"
    for _ in range(400):
        data = bytearray(source)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(moov_at, moov_at + 3000)] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            read_index_sync(path)
        except MediaError:
            pass


def test_codec_strings(media_fixture_paths):
    assert read_index_sync(media_fixture_paths["h264_baseline"]).video.codec_string.startswith("avc1.42")
    assert read_index_sync(media_fixture_paths["h264_high_bframes"]).video.codec_string.startswith("avc1.64")
    hevc = read_index_sync(media_fixture_paths["hevc"]).video.codec_string
    assert hevc.startswith("hvc1.1.6.L") and hevc.split(".")[3][1:].isdigit(), hevc
    assert read_index_sync(media_fixture_paths["audio_only"]).audios[0].codec_string == "mp4a.40.2"


def test_languages(media_fixture_paths):
    index = read_index_sync(media_fixture_paths["two_languages"])
    assert [t.language for t in index.audios] == ["eng", "fra"]
