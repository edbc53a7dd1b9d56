"""packager.fmp4 box writers, init and media segments: structure, golden bytes, timing.

Synthetic tracks only (no ffmpeg): the real-decoder checks are in
tests/test_fmp4_decode.py. ``read_fragment`` / ``walk`` here are a small
independent fMP4 reader those tests share.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import pytest

from packager.errors import MalformedMedia, UnsupportedMedia
from packager.fmp4 import init_segment, media_segment, media_segment_size
from packager.fmp4.boxes import (
    FileTypeBox,
    MediaDataBox,
    MediaHeaderBox,
    MovieFragmentHeaderBox,
    SampleFlags,
    TrackFragmentBaseMediaDecodeTimeBox,
    TrackFragmentHeaderBox,
    TrackRunBox,
    TrunFlags,
    pack_language,
)
from packager.media import AudioInfo, SampleBatch, Track, VideoInfo

CONTAINERS = {"moov", "trak", "mdia", "minf", "stbl", "dinf", "mvex", "moof", "traf", "edts"}


# --------------------------------------------------------------------------- a tiny independent reader


@dataclass
class BoxRef:
    type: str
    offset: int
    size: int
    children: list["BoxRef"]

    @property
    def payload(self) -> int:
        return self.offset + 8

    def find(self, path: str) -> "BoxRef | None":
        first, _, rest = path.partition("/")
        for child in self.children:
            if child.type == first:
                return child.find(rest) if rest else child
        return None


def walk(data: bytes, start: int = 0, end: int | None = None) -> list[BoxRef]:
    """Boxes of data[start:end], recursing into containers; asserts sizes tile exactly."""
    end = len(data) if end is None else end
    out, pos = [], start
    while pos < end:
        assert pos + 8 <= end, "truncated box header"
        size, typ = struct.unpack_from(">I4s", data, pos)
        assert size >= 8 and pos + size <= end, f"{typ!r} size {size} overruns its parent"
        name = typ.decode("latin-1")
        children = walk(data, pos + 8, pos + size) if name in CONTAINERS else []
        out.append(BoxRef(name, pos, size, children))
        pos += size
    assert pos == end, "children do not add up to the parent's size"
    return out


def root(data: bytes) -> BoxRef:
    return BoxRef("", -8, len(data) + 8, walk(data))


@dataclass
class Fragment:
    sequence_number: int
    track_id: int
    tfhd_flags: int
    default_sample_flags: int | None
    tfdt_version: int
    base_decode_time: int
    trun_version: int
    trun_flags: int
    data_offset: int
    durations: np.ndarray
    sizes: np.ndarray
    sample_flags: np.ndarray | None
    composition_offsets: np.ndarray
    payload: bytes  # mdat payload, as data_offset locates it
    top_level: list[str]

    @property
    def dts(self) -> np.ndarray:
        return self.base_decode_time + np.concatenate(([0], np.cumsum(self.durations)[:-1]))

    @property
    def pts(self) -> np.ndarray:
        return self.dts + self.composition_offsets


def read_fragment(seg: bytes) -> Fragment:
    """Parse one media segment (one moof, one traf, one trun) the way a player would."""
    tree = root(seg)
    moof = tree.find("moof")
    mdat = tree.find("mdat")
    assert moof and mdat
    (seq,) = struct.unpack_from(">I", seg, moof.find("mfhd").payload + 4)
    tfhd = moof.find("traf/tfhd")
    vf, track_id = struct.unpack_from(">II", seg, tfhd.payload)
    tfhd_flags = vf & 0xFFFFFF
    default_flags = None
    if tfhd_flags & 0x20:
        assert tfhd_flags & ~0x020020 == 0, "only default-base-is-moof + default flags expected"
        (default_flags,) = struct.unpack_from(">I", seg, tfhd.payload + 8)
    tfdt = moof.find("traf/tfdt")
    (vf,) = struct.unpack_from(">I", seg, tfdt.payload)
    tfdt_version = vf >> 24
    base = struct.unpack_from(">Q" if tfdt_version else ">I", seg, tfdt.payload + 4)[0]
    trun = moof.find("traf/trun")
    vf, count = struct.unpack_from(">II", seg, trun.payload)
    version, flags = vf >> 24, vf & 0xFFFFFF
    pos = trun.payload + 8
    data_offset = 0
    if flags & TrunFlags.DATA_OFFSET_PRESENT:
        (data_offset,) = struct.unpack_from(">i", seg, pos)
        pos += 4
    assert not flags & TrunFlags.FIRST_SAMPLE_FLAGS_PRESENT
    fields = [
        f
        for f in (
            TrunFlags.SAMPLE_DURATION_PRESENT,
            TrunFlags.SAMPLE_SIZE_PRESENT,
            TrunFlags.SAMPLE_FLAGS_PRESENT,
            TrunFlags.SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT,
        )
        if flags & f
    ]
    table = np.frombuffer(seg, ">u4", count * len(fields), pos).reshape(count, len(fields)).astype(np.int64)
    assert pos + table.size * 4 == trun.offset + trun.size
    columns = dict(zip(fields, table.T))
    offsets = columns.get(TrunFlags.SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT, np.zeros(count, np.int64))
    if version == 1:
        offsets = offsets.astype(np.uint32).view(np.int32).astype(np.int64)
    sizes = columns[TrunFlags.SAMPLE_SIZE_PRESENT]
    start = moof.offset + data_offset
    payload = seg[start : start + int(sizes.sum())]
    return Fragment(
        seq, track_id, tfhd_flags, default_flags, tfdt_version, base, version, flags, data_offset,
        columns[TrunFlags.SAMPLE_DURATION_PRESENT], sizes, columns.get(TrunFlags.SAMPLE_FLAGS_PRESENT),
        offsets, payload, [b.type for b in tree.children],
    )  # fmt: skip


# --------------------------------------------------------------------------- synthetic media


def sample_entry(fourcc: str, body: bytes = b"\x00" * 6 + b"\x00\x01" + b"vodgate-test") -> bytes:
    return struct.pack(">I4s", 8 + len(body), fourcc.encode()) + body


def init_edits(track: Track) -> list[tuple[int, int]] | None:
    """(segment_duration, media_time) rows of the init segment's elst, None without an edts."""
    data = init_segment(track)
    boxes = {b.type: b for b in walk(data)}
    elst = boxes["moov"].find("trak/edts/elst")
    if boxes["moov"].find("trak/edts") is None:
        return None
    version = data[elst.payload]
    (count,) = struct.unpack_from(">I", data, elst.payload + 4)
    row = ">Qqhh" if version else ">Iihh"
    width = struct.calcsize(row)
    return [struct.unpack_from(row, data, elst.payload + 8 + i * width)[:2] for i in range(count)]


def make_track(
    kind: str = "video",
    *,
    ctts: list[int] | None = None,
    shift: int = 0,
    count: int = 8,
    duration: int = 512,
    timescale: int = 12800,
    track_id: int = 1,
    language: str = "und",
) -> Track:
    durations = np.full(count, duration, np.int64)
    dts = np.concatenate(([0], np.cumsum(durations)[:-1]))
    cts = np.array(ctts if ctts is not None else [0] * count, np.int64)
    sizes = np.arange(count, dtype=np.int64) * 7 + 10
    keyframes = np.zeros(count, bool) if kind == "video" else np.ones(count, bool)
    keyframes[0] = True
    return Track(
        track_id=track_id, kind=kind, fourcc="avc1" if kind == "video" else "mp4a",
        codec_string="avc1.64001f" if kind == "video" else "mp4a.40.2", timescale=timescale,
        language=language, sample_entry=sample_entry("avc1" if kind == "video" else "mp4a"),
        video=VideoInfo(640, 360, 4, (b"\x67", b"\x68")) if kind == "video" else None,
        audio=AudioInfo(48000, 2, b"\x11\x90", 2) if kind == "audio" else None,
        dts=dts, cts_offsets=cts, durations=durations, sizes=sizes,
        offsets=np.cumsum(sizes) - sizes, keyframes=keyframes, presentation_shift=shift,
    )  # fmt: skip


def make_batch(track: Track, first: int = 0, stop: int | None = None, sequence_number: int = 1) -> SampleBatch:
    stop = track.sample_count if stop is None else stop
    sizes = track.sizes[first:stop]
    data = b"".join(bytes([(first + i) & 0xFF]) * int(n) for i, n in enumerate(sizes))
    return SampleBatch(
        track=track, data=data, sizes=sizes, dts=track.dts[first:stop] + track.presentation_shift,
        cts_offsets=track.cts_offsets[first:stop], durations=track.durations[first:stop],
        keyframes=track.keyframes[first:stop], sequence_number=sequence_number,
    )  # fmt: skip


# B-frames, ffmpeg style: I P B B ... with ctts starting at 2 frames; edit media_time 1024 -> shift -1024
BFRAME_CTTS = [1024, 2560, 1024, 0, 512, 2560, 1024, 0]


# --------------------------------------------------------------------------- golden bytes


def test_golden_small_boxes():
    assert bytes(MovieFragmentHeaderBox(7)) == bytes.fromhex("00000010 6d666864 00000000 00000007")
    assert bytes(TrackFragmentBaseMediaDecodeTimeBox(0x1_0000_0002)) == bytes.fromhex(
        "00000014 74666474 01000000 00000001 00000002"
    )
    assert bytes(TrackFragmentHeaderBox(3)) == bytes.fromhex("00000010 74666864 00020000 00000003")
    assert bytes(TrackFragmentHeaderBox(3, default_sample_flags=SampleFlags.SYNC)) == bytes.fromhex(
        "00000014 74666864 00020020 00000003 02000000"
    )
    assert bytes(FileTypeBox(b"iso6", 0, (b"iso6", b"mp41"))) == bytes.fromhex(
        "00000018 66747970 69736f36 00000000 69736f36 6d703431"
    )
    assert bytes(MediaDataBox(b"abc")) == bytes.fromhex("0000000b 6d646174") + b"abc"
    # mdhd: language "eng" = (5<<10)|(14<<5)|7 = 0x15c7
    assert bytes(MediaHeaderBox(90000, "eng")) == bytes.fromhex(
        "00000020 6d646864 00000000 00000000 00000000 00015f90 00000000 15c70000"
    )


def test_golden_trun_v0_and_v1():
    run = TrackRunBox.from_columns(
        durations=np.array([512, 512]),
        sizes=np.array([100, 20]),
        sample_flags=np.array([SampleFlags.SYNC, SampleFlags.NON_SYNC]),
        composition_offsets=np.array([1024, 0]),
        data_offset=0x70,
    )
    assert bytes(run) == bytes.fromhex(
        "00000034 7472756e 00000f01 00000002 00000070"
        "00000200 00000064 02000000 00000400"
        "00000200 00000014 01010000 00000000"
    )
    run = TrackRunBox.from_columns(durations=np.array([1024]), sizes=np.array([9]), composition_offsets=np.array([-1024]))
    assert bytes(run) == bytes.fromhex("00000020 7472756e 01000b01 00000001 00000000 00000400 00000009 fffffc00")


def test_sample_flag_constants():
    assert SampleFlags.SYNC == 0x0200_0000  # sample_depends_on = 2
    assert SampleFlags.NON_SYNC == 0x0101_0000  # depends_on = 1, is_non_sync_sample = 1


def test_trun_range_checks():
    with pytest.raises(UnsupportedMedia):
        TrackRunBox.from_columns(durations=np.array([2**32]))
    with pytest.raises(UnsupportedMedia):
        TrackRunBox.from_columns(durations=np.array([1]), composition_offsets=np.array([-(2**31) - 1]))
    with pytest.raises(MalformedMedia):
        TrackRunBox.from_columns(durations=np.array([1, 2]), sizes=np.array([1]))


def test_language_packing():
    assert pack_language("und") == 0x55C4
    assert pack_language("fra") == ((6 << 10) | (18 << 5) | 1)
    assert pack_language("") == pack_language("und") == pack_language("EN1")


# --------------------------------------------------------------------------- init segment


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_init_segment_structure(kind):
    track = make_track(kind, track_id=2, language="fra", timescale=48000 if kind == "audio" else 12800)
    init = init_segment(track)
    tree = root(init)  # walk() asserts every box's children add up to its size
    assert [b.type for b in tree.children] == ["ftyp", "moov"]
    ftyp = tree.find("ftyp")
    major, _minor = struct.unpack_from(">4sI", init, ftyp.payload)
    brands = {init[p : p + 4] for p in range(ftyp.payload + 8, ftyp.offset + ftyp.size, 4)}
    assert major in (b"iso6", b"cmf2") and {b"iso6", b"cmfc"} <= brands

    moov = tree.find("moov")
    assert [b.type for b in moov.children] == ["mvhd", "trak", "mvex"]
    trak = moov.find("trak")
    assert [b.type for b in trak.children] == ["tkhd", "mdia"], "no edts: times already carry the edit list"
    assert b"elst" not in init and b"edts" not in init

    tkhd = trak.find("tkhd")
    vf, _, _, tid = struct.unpack_from(">IIII", init, tkhd.payload)
    assert tid == 2 and vf & 0xFFFFFF == 0x3
    w, h = struct.unpack_from(">II", init, tkhd.offset + tkhd.size - 8)
    assert (w >> 16, h >> 16) == ((640, 360) if kind == "video" else (0, 0))

    mdhd = trak.find("mdia/mdhd")
    _, _, _, timescale, duration, lang = struct.unpack_from(">IIIIIH", init, mdhd.payload)
    assert timescale == track.timescale and duration == 0 and lang == pack_language("fra")
    hdlr = trak.find("mdia/hdlr")
    assert init[hdlr.payload + 8 : hdlr.payload + 12] == (b"vide" if kind == "video" else b"soun")
    assert trak.find("mdia/minf/vmhd" if kind == "video" else "mdia/minf/smhd")
    assert trak.find("mdia/minf/dinf/dref")

    stbl = trak.find("mdia/minf/stbl")
    assert [b.type for b in stbl.children] == ["stsd", "stts", "stsc", "stsz", "stco"]
    stsd = stbl.find("stsd")
    assert struct.unpack_from(">I", init, stsd.payload + 4)[0] == 1
    assert init[stsd.payload + 8 : stsd.offset + stsd.size] == track.sample_entry  # verbatim
    for name in ("stts", "stsc", "stco"):
        box = stbl.find(name)
        assert box.size == 16 and struct.unpack_from(">I", init, box.payload + 4)[0] == 0
    assert stbl.find("stsz").size == 20

    trex = moov.find("mvex/trex")
    assert struct.unpack_from(">5I", init, trex.payload + 4) == (2, 1, 0, 0, 0)
    mvhd = moov.find("mvhd")
    assert struct.unpack_from(">I", init, mvhd.offset + mvhd.size - 4)[0] == 3  # next_track_ID


def test_init_segment_rejects_bad_sample_entry():
    track = make_track()
    bad = Track(**{**track.__dict__, "sample_entry": track.sample_entry[:-1]})
    with pytest.raises(MalformedMedia):
        init_segment(bad)


# --------------------------------------------------------------------------- media segments


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_media_segment_layout(kind):
    track = make_track(kind, ctts=BFRAME_CTTS if kind == "video" else None)
    batch = make_batch(track, 0, 8, sequence_number=5)
    seg = media_segment(batch)
    frag = read_fragment(seg)
    assert frag.top_level == ["styp", "moof", "mdat"]
    assert frag.sequence_number == 5 and frag.track_id == track.track_id
    assert frag.tfhd_flags & 0x020000  # default-base-is-moof
    assert frag.tfdt_version == 1
    # data_offset points at the first payload byte of the mdat right after the moof
    tree = root(seg)
    assert tree.find("moof").offset + frag.data_offset == tree.find("mdat").offset + 8
    assert frag.payload == batch.data
    assert seg.endswith(batch.data) and len(seg) == tree.find("mdat").offset + 8 + len(batch.data)
    assert frag.sizes.tolist() == batch.sizes.tolist()
    assert frag.durations.tolist() == batch.durations.tolist()
    if kind == "video":
        assert frag.trun_flags == 0xF01
        assert frag.sample_flags.tolist() == [0x02000000] + [0x01010000] * 7
        assert frag.default_sample_flags is None
    else:
        assert frag.trun_flags == 0xB01  # no per-sample flags: tfhd default says sync
        assert frag.sample_flags is None and frag.default_sample_flags == SampleFlags.SYNC


def test_negative_shift_b_frames_write_raw_decode_time_and_signed_offsets():
    track = make_track("video", ctts=BFRAME_CTTS, shift=-1024)
    batch = make_batch(track, 0, 8)
    assert batch.dts[0] == -1024
    frag = read_fragment(media_segment(batch))
    assert frag.base_decode_time == 0  # the source's own decode time
    assert frag.trun_version == 1
    assert frag.composition_offsets.tolist() == (track.cts_offsets - 1024).tolist()
    assert frag.pts.tolist() == batch.pts.tolist()
    assert frag.pts[0] == 0


def test_negative_shift_later_segment():
    track = make_track("video", ctts=BFRAME_CTTS, shift=-1024)
    batch = make_batch(track, 4, 8, sequence_number=2)
    frag = read_fragment(media_segment(batch))
    assert frag.base_decode_time == track.dts[4]
    assert frag.pts.tolist() == batch.pts.tolist()


def test_positive_shift_tfdt_is_the_keyframes_presentation_time():
    """Behind a 0.6 s empty edit the segment's tfdt is where its keyframe presents (0.6 s + the
    B-frame delay the media edit trims, here 0), not its decode time: players place a segment
    by tfdt."""
    track = make_track("video", ctts=BFRAME_CTTS, shift=7680 - BFRAME_CTTS[0])
    batch = make_batch(track, 0, 8)
    assert batch.pts[0] == 7680
    frag = read_fragment(media_segment(batch))
    assert frag.base_decode_time == 7680
    assert frag.pts.tolist() == batch.pts.tolist()
    assert track.pre_roll == 0 and init_edits(track) is None


def test_audio_priming_is_written_and_the_init_edit_takes_it_off():
    track = make_track("audio", shift=-1024, duration=1024, timescale=48000)
    batch = make_batch(track)
    frag = read_fragment(media_segment(batch))
    assert track.pre_roll == 1024
    assert frag.base_decode_time == 0 and frag.trun_version == 0
    assert set(frag.composition_offsets.tolist()) == {0}
    assert frag.pts.tolist() == (batch.pts + 1024).tolist()
    assert init_edits(track) == [(0, 1024)]


def test_start_trimmed_pre_roll_is_written_from_zero_and_trimmed_by_the_init_edit():
    """ffmpeg -ss T -c copy: the edit starts 1.4 s (35 frames) after the kept keyframe, whose
    B-frame delay is 1024: 33 frames present before 0."""
    track = make_track("video", ctts=BFRAME_CTTS, shift=-35 * 512)
    assert track.pts.min() == 1024 - 35 * 512 and track.pre_roll == 33 * 512
    frag = read_fragment(media_segment(make_batch(track, 0, 8)))
    assert frag.base_decode_time == 0
    assert frag.pts.tolist() == (track.pts[:8] + track.pre_roll).tolist()
    assert init_edits(track) == [(0, 33 * 512)]
    later = read_fragment(media_segment(make_batch(track, 4, 8, sequence_number=2)))
    assert later.pts.tolist() == (track.pts[4:8] + track.pre_roll).tolist()


def test_offsets_follow_durations_when_dts_disagree():
    """tfdt + earlier durations + offset must be the pts even if a duration is off."""
    track = make_track("video", ctts=BFRAME_CTTS)
    batch = make_batch(track)
    odd = np.array(batch.durations)
    odd[2] += 7
    batch = SampleBatch(**{**batch.__dict__, "durations": odd})
    frag = read_fragment(media_segment(batch))
    assert frag.pts.tolist() == batch.pts.tolist()


def test_timescale_beyond_32_bits():
    # 6 hours at timescale 10^6 is 2.16e10 ticks: tfdt must be 64-bit
    track = make_track("video", count=6, duration=2 * 10**9, timescale=10**6)
    frag = read_fragment(media_segment(make_batch(track, 3, 6)))
    assert frag.base_decode_time == 6 * 10**9 > 2**32


@pytest.mark.parametrize("kind", ["video", "audio"])
@pytest.mark.parametrize("count", [1, 2, 3, 7, 8])
def test_media_segment_size_is_exact(kind, count):
    track = make_track(kind, ctts=BFRAME_CTTS if kind == "video" else None, shift=-1024)
    for first in range(0, 8 - count + 1):
        batch = make_batch(track, first, first + count, sequence_number=first + 1)
        seg = media_segment(batch)
        assert media_segment_size(track, batch.sizes) == len(seg)
        assert media_segment_size(track, count) == len(seg) - len(batch.data)


def test_media_segment_size_large_counts():
    for count in (0, 1, 180, 1000, 5000):
        track = make_track("video", count=max(count, 1))
        header = media_segment_size(track, count)
        # styp 20, moof 8, mfhd 16, traf 8, tfhd 16, tfdt 20, trun 20 + 16 per sample, mdat 8
        assert header == 20 + 8 + 16 + 8 + 16 + 20 + 20 + 16 * count + 8
        if count:
            assert media_segment_size(track, track.sizes[:count]) == len(media_segment(make_batch(track, 0, count)))


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_data_buffer_types(wrap):
    track = make_track("video")
    batch = make_batch(track)
    wrapped = SampleBatch(**{**batch.__dict__, "data": wrap(batch.data)})
    assert media_segment(wrapped) == media_segment(batch)


def test_rejects_inconsistent_batches():
    track = make_track("video")
    batch = make_batch(track)
    with pytest.raises(MalformedMedia):
        media_segment(SampleBatch(**{**batch.__dict__, "data": batch.data[:-1]}))
    with pytest.raises(MalformedMedia):
        media_segment(make_batch(track, 3, 3))
    with pytest.raises(MalformedMedia):
        media_segment(SampleBatch(**{**batch.__dict__, "durations": batch.durations[:-1]}))
