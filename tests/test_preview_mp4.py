"""packager.mp4.writer.clipped_mp4: a preview as one progressive MP4, checked by decoding it.

The VirtualFile is materialised here (header bytes + the source ranges it
names), written out and decoded with ffmpeg (-copyts, so the edit lists count):

* video: the frames, their MD5s and their pts are the source's frames shown
  before E, and nothing at or past N;
* audio: the source's first frames (the edit list drops the AAC priming frame,
  as in the source), exactly as many as kept, none running past E;
* ``ffmpeg -v error`` prints nothing;
* the source ranges are exactly the kept samples' bytes: not one byte of a
  dropped sample;
* :meth:`VirtualFile.slice` gives the materialised file's bytes for any range;
* both mdat layouts (source order, time slots) and the 64-bit forms (co64,
  mdat largesize) decode.
"""

from __future__ import annotations

import itertools
import random
import struct
from fractions import Fraction

import numpy as np
import pytest

from packager.media import ByteRange
from packager.mp4 import boxes_out, writer
from packager.mp4.writer import VirtualFile, clipped_mp4
from packager.preview import EmptyPreview, clip_index
from test_preview_clip import decode, fixture, frames_before, index_of, oracle, source_frames

FILES = ["h264_high_bframes", "hevc", "h264_2997", "edit_list"]
PREVIEWS = [Fraction("3.3"), Fraction(5)]


def reader(name: str):
    data = fixture(name).read_bytes()
    return lambda offset, size: data[offset : offset + size]


def materialise(name: str, vf: VirtualFile, tmp_path, label: str = "clip"):
    out = tmp_path / f"{name}-{label}.mp4"
    out.write_bytes(vf.materialise(reader(name)))
    return out


def top_level(data: bytes) -> list[tuple[str, int, int]]:
    boxes, at = [], 0
    while at < len(data):
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, at + 8)
            header = 16
        boxes.append((kind.decode(), at, size, header))
        at += size
    assert at == len(data)
    return boxes


def check_decodes_to_source(name: str, path, seconds: Fraction, end: Fraction, clips):
    ok, err = oracle.decode_ok(path)
    assert ok, err
    for clip in clips:
        track = clip.track
        ours = decode(path, track.kind, track.timescale)
        src = source_frames(name, track.kind, track.timescale)
        if track.kind == "video":
            expected = frames_before(src, end)
            assert len(ours) == len(expected) == clip.count
            assert [f.md5 for f in ours] == [f.md5 for f in expected]
            assert [f.pts for f in ours] == [f.pts for f in expected]  # same timeline (edit list)
            assert all(f.pts * f.tb < end <= seconds for f in ours)
        else:
            # the priming frame is decoded but dropped by the edit list, as in the source
            assert len(ours) == clip.count - 1
            assert [f.md5 for f in ours] == [f.md5 for f in src[: len(ours)]]
            assert [f.pts for f in ours] == [f.pts for f in src[: len(ours)]]
            last = ours[-1]
            assert (last.pts + last.duration) * last.tb <= end


@pytest.mark.parametrize("name,seconds", list(itertools.product(FILES, PREVIEWS)))
def test_clipped_mp4_decodes_to_the_source_frames_before_e(name, seconds, tmp_path):
    index = index_of(name)
    vf = clipped_mp4(index, seconds)
    end, clips = clip_index(index, seconds)
    assert vf.end == end <= seconds
    data = vf.materialise(reader(name))
    assert len(data) == vf.size
    # faststart: ftyp, moov, then mdat
    assert [b[0] for b in top_level(data)] == ["ftyp", "moov", "mdat"]
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    check_decodes_to_source(name, path, seconds, end, clips)
    # the file indexes back to the kept samples, with the source's presentation times
    again = local_index(path)
    for clip, track in zip(clips, again.tracks):
        k = clip.count
        assert track.sample_count == k
        assert track.pts.tolist() == clip.track.pts[:k].tolist()
        assert track.keyframes.tolist() == clip.track.keyframes[:k].tolist()
        assert track.sizes.tolist() == clip.track.sizes[:k].tolist()
        assert track.sample_entry == clip.track.sample_entry
        assert track.end_time == int(clip.end * track.timescale)


def local_index(path):
    from origin.local import read_index_sync

    return read_index_sync(path)


@pytest.mark.parametrize("name", FILES)
def test_source_ranges_are_exactly_the_kept_samples(name):
    index = index_of(name)
    vf = clipped_mp4(index, Fraction("3.3"))
    _, clips = clip_index(index, Fraction("3.3"))
    assert isinstance(vf.parts[0], bytes) and isinstance(vf.parts[1], bytes)
    ranges = vf.parts[2:]
    assert all(isinstance(r, ByteRange) for r in ranges)
    covered = np.zeros(index.file_size, dtype=np.int8)
    for r in ranges:
        covered[r.offset : r.offset + r.size] += 1
    kept = np.zeros(index.file_size, dtype=np.int8)
    for clip in clips:
        for offset, size in zip(clip.track.offsets[: clip.count].tolist(), clip.track.sizes[: clip.count].tolist()):
            kept[offset : offset + size] += 1
    assert covered.max() == 1  # no byte twice
    assert (covered == kept).all()  # every kept byte, and nothing else: no byte of a dropped sample
    assert len(ranges) <= 8  # the source order is kept: a few merged ranges, not one per frame


def test_slice_gives_the_materialised_bytes(tmp_path):
    name = "h264_high_bframes"
    read = reader(name)
    for layout in ("auto", "time"):
        vf = clipped_mp4(index_of(name), Fraction(5), interleave=layout)
        whole = vf.materialise(read)
        rng = random.Random(7)
        header = len(vf.parts[0]) + len(vf.parts[1])
        cuts = [(0, vf.size), (0, 1), (vf.size - 1, vf.size), (header - 3, header + 5), (vf.size - 10, vf.size + 10)]
        cuts += [tuple(sorted(rng.randrange(vf.size + 1) for _ in range(2))) for _ in range(300)]
        cuts += [(a, a + rng.randrange(1, 64)) for a in (rng.randrange(vf.size) for _ in range(100))]
        for start, stop in cuts:
            pieces = vf.slice(start, stop)
            got = b"".join(p if isinstance(p, bytes) else read(p.offset, p.size) for p in pieces)
            assert got == whole[start:stop], (start, stop)
            assert all((len(p) if isinstance(p, bytes) else p.size) > 0 for p in pieces)
        assert vf.slice(10, 10) == [] and vf.slice(vf.size, vf.size + 5) == []


def test_time_slot_layout_decodes_and_interleaves(tmp_path):
    name, seconds = "h264_2997", Fraction(5)
    index = index_of(name)
    vf = clipped_mp4(index, seconds, interleave="time")
    end, clips = clip_index(index, seconds)
    path = materialise(name, vf, tmp_path, "time")
    check_decodes_to_source(name, path, seconds, end, clips)
    # chunks of <= 0.5 s per track, in time order: the decode times along the file never step back by more
    again = local_index(path)
    samples = sorted(
        (int(o), float((d + t.presentation_shift) / t.timescale))
        for t in again.tracks
        for o, d in zip(t.offsets, t.dts)
    )
    times = np.array([s for _, s in samples])
    assert (np.maximum.accumulate(times) - times).max() <= 0.5 + 0.05
    assert len(vf.parts) > 20  # genuinely re-chunked (the source interleaves per frame)


def test_large_file_forms_co64_and_largesize(tmp_path, monkeypatch):
    """Force the 64-bit forms with a tiny 32-bit limit: offsets in co64, mdat with a largesize header."""
    name, seconds = "edit_list", Fraction("3.3")
    monkeypatch.setattr(writer, "STCO_LIMIT", 1000)
    monkeypatch.setattr(boxes_out, "MDAT_32BIT_LIMIT", 100_000)  # mdat payload ~130 kB > 100 kB: largesize
    index = index_of(name)
    vf = clipped_mp4(index, seconds)
    data = vf.materialise(reader(name))
    assert b"co64" in data[: len(vf.parts[0])] and b"stco" not in data[: len(vf.parts[0])]
    mdat = top_level(data)[-1]
    assert mdat[0] == "mdat" and mdat[3] == 16
    monkeypatch.undo()
    path = tmp_path / "large.mp4"
    path.write_bytes(data)
    end, clips = clip_index(index, seconds)
    check_decodes_to_source(name, path, seconds, end, clips)


def test_two_audio_tracks_one_alternate_group(tmp_path):
    name = "two_languages"
    index = index_of(name)
    vf = clipped_mp4(index, Fraction(4))
    path = materialise(name, vf, tmp_path)
    ok, err = oracle.decode_ok(path, maps=("0:v", "0:a:0", "0:a:1"))
    assert ok, err
    streams = oracle.probe_streams(path)
    assert [s.language for s in streams if s.kind == "Audio"] == ["eng", "fra"]
    for stream in ("a:0", "a:1"):
        assert oracle.framemd5(path, stream) == oracle.framemd5(fixture(name), stream)[: len(oracle.framemd5(path, stream))]


def test_preview_longer_than_the_media_is_the_whole_media(tmp_path):
    name = "h264_high_bframes"
    index = index_of(name)
    vf = clipped_mp4(index, Fraction(1000))
    assert vf.end == index.duration_seconds
    path = materialise(name, vf, tmp_path, "whole")
    ok, err = oracle.decode_ok(path)
    assert ok, err
    for track in index.tracks:
        src = source_frames(name, track.kind, track.timescale)
        assert [f.md5 for f in decode(path, track.kind, track.timescale)] == [f.md5 for f in src]


@pytest.mark.parametrize("name,seconds", [("h264_high_bframes", Fraction(1, 50)), ("edit_list", Fraction(1, 2)), ("hevc", 0)])
def test_preview_shorter_than_the_first_frame_is_refused(name, seconds):
    with pytest.raises(EmptyPreview, match="preview"):
        clipped_mp4(index_of(name), seconds)


def test_six_hour_file_past_4_gib_indexes_back():
    """A synthetic 6-hour, 11 GB file (never materialised): co64, mdat largesize, exact tables, and
    every sample's new offset slices back to its source bytes."""
    import dataclasses

    from packager.media import MediaIndex
    from packager.mp4.index import drive, index_reader
    from test_preview_clip import make_track

    real = index_of("h264_high_bframes")
    n, na = 540_000, 1_012_500  # 6 h of 25 fps video, 48 kHz AAC
    pts = np.arange(n).reshape(-1, 4)[:, [3, 1, 0, 2]].reshape(-1) * 512
    video = make_track("video", pts, timescale=12800, durations=[512] * n, keyframes=np.arange(n) % 50 == 0)
    audio = make_track("audio", np.arange(na) * 1024 - 1024, timescale=48000, durations=[1024] * na, shift=-1024)
    sizes = np.concatenate([np.full(n, 20_000), np.full(na, 300)])
    order = np.argsort(np.concatenate([video.dts / 12800, audio.dts / 48000]), kind="stable")
    offsets = np.zeros(n + na, dtype=np.int64)
    offsets[order] = np.concatenate([[0], np.cumsum(sizes[order])[:-1]]) + 1000  # interleaved by time
    video = dataclasses.replace(video, sizes=sizes[:n], offsets=offsets[:n], sample_entry=real.video.sample_entry)
    audio = dataclasses.replace(
        audio, track_id=2, sizes=sizes[n:], offsets=offsets[n:], sample_entry=real.audios[0].sample_entry
    )
    index = MediaIndex((video, audio), 48000, file_size=int(offsets.max()) + 20_000)

    vf = clipped_mp4(index, Fraction(100_000))
    assert vf.size > 2**33 and len(vf.parts) <= 4
    assert b"co64" in vf.parts[0] and struct.unpack_from(">I", vf.parts[1])[0] == 1  # largesize mdat
    back = drive(index_reader(vf.size), lambda o, s: vf.materialise(lambda _, size: bytes(size), o, o + s))
    rng = np.random.default_rng(1)
    for source, ours in zip(index.tracks, back.tracks):
        assert ours.sample_count == source.sample_count
        assert (ours.pts == source.pts).all() and (ours.sizes == source.sizes).all()
        assert (ours.keyframes == source.keyframes).all() and ours.end_time == source.end_time
        for i in rng.integers(0, source.sample_count, 50).tolist() + [source.sample_count - 1]:
            piece = vf.slice(int(ours.offsets[i]), int(ours.offsets[i] + ours.sizes[i]))
            assert piece == [ByteRange(int(source.offsets[i]), int(source.sizes[i]))]
    # a one-hour preview of it: stco, 32-bit mdat, only the first hour's bytes
    hour = clipped_mp4(index, Fraction(3600))
    assert b"stco" in hour.parts[0] and b"co64" not in hour.parts[0]
    starts = np.array([r.offset for r in hour.parts[2:]])
    ends = starts + np.array([r.size for r in hour.parts[2:]])
    kept_bytes = 0
    end, clips = clip_index(index, Fraction(3600))
    assert end == 3600
    for track, clip in zip(index.tracks, clips):
        kept = np.arange(track.sample_count) < clip.count
        assert (track.pts[kept] < 3600 * track.timescale).all() and (track.pts[~kept] >= 3600 * track.timescale).all()
        kept_bytes += int(track.sizes[kept].sum())
        dropped = track.offsets[~kept]
        at = np.searchsorted(starts, dropped, side="right") - 1  # the range starting at or before each
        assert ((at < 0) | (dropped >= ends[np.maximum(at, 0)])).all()  # no dropped sample inside a range
        nxt = np.minimum(at + 1, starts.size - 1)
        assert ((at + 1 >= starts.size) | (dropped + track.sizes[~kept] <= starts[nxt])).all()
    assert int((ends - starts).sum()) == kept_bytes
