"""Whole TS segments from synthetic batches, read back with a small demuxer.

Checks the packet layout (188-byte packets, sync bytes, PIDs, continuity
counters, adaptation fields only on a PES's first packet), that
``segment_size`` equals ``len(mux_segment(...))`` for every remainder case of
the layout, and that the PES stream carries exactly the expected Annex B /
ADTS bytes with the right PTS, DTS and PCR. Real-decoder checks are in
test_ts_decode.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from packager.errors import MalformedMedia, UnsupportedMedia
from packager.media import AudioInfo, SampleBatch, Track, VideoInfo, rescale
from packager.ts import mux_segment, segment_size, segment_sizes
from packager.ts.layout import AUDIO_MAX_FRAMES_PER_PES, AUDIO_PES_PAYLOAD_TARGET, compute_layout
from packager.ts.psi import AUDIO_PID, PAT_PID, PMT_PID, VIDEO_PID
from packager.ts.streams import elementary_stream
from packager.ts.timing import PCR_LEAD_90K, TIMESTAMP_OFFSET_90K

SC = b"\x00\x00\x00\x01"
SPS, PPS = bytes.fromhex("6764001facd9"), bytes.fromhex("68ebe3cb")
H264_AUD = SC + b"\x09\xf0"

# --------------------------------------------------------------------------- a tiny TS demuxer


@dataclass
class Pes:
    pid: int
    stream_id: int
    pts: int
    dts: int | None
    payload: bytes
    packet_length: int
    pcr: int | None
    random_access: bool
    packets: int
    header: bytes = field(repr=False, default=b"")


def _ts(b: bytes) -> int:
    return ((b[0] >> 1) & 7) << 30 | (b[1] << 22) | ((b[2] >> 1) << 15) | (b[3] << 7) | (b[4] >> 1)


def demux(data: bytes, continuity_start: int = 0, psi_cc: int = 0) -> list[Pes]:
    """Parse a segment strictly; returns its PES packets."""
    assert len(data) % 188 == 0 and len(data) >= 376
    rows = [data[i : i + 188] for i in range(0, len(data), 188)]
    assert all(r[0] == 0x47 for r in rows)
    pids = [((r[1] & 0x1F) << 8) | r[2] for r in rows]
    assert pids[0] == PAT_PID and pids[1] == PMT_PID
    assert rows[0][3] == rows[1][3] == 0x10 | psi_cc
    es_pid = None
    out: list[Pes] = []
    current: dict | None = None

    def finish():
        if current is None:
            return
        raw = b"".join(current["chunks"])
        assert raw[:3] == b"\x00\x00\x01"
        flags, hdl = raw[7], raw[8]
        assert raw[6] == 0x84
        pts = _ts(raw[9:14])
        dts = _ts(raw[14:19]) if flags & 0x40 else None
        assert raw[9] >> 4 == (3 if dts is not None else 2)
        ts_len = 10 if dts is not None else 5
        assert raw[9 + ts_len : 9 + hdl] == b"\xff" * (hdl - ts_len)  # the rest of the header is stuffing
        out.append(
            Pes(es_pid, raw[3], pts, dts, raw[9 + hdl :], (raw[4] << 8) | raw[5], current["pcr"], current["rai"], current["n"], raw[: 9 + hdl])
        )

    for i, r in enumerate(rows[2:]):
        pid = pids[i + 2]
        es_pid = pid if es_pid is None else es_pid
        assert pid == es_pid
        assert r[3] & 0x0F == (continuity_start + i) & 0x0F
        pusi, afc = bool(r[1] & 0x40), r[3] >> 4
        assert afc in (1, 3) and r[1] & 0x80 == 0
        pos, pcr, rai = 4, None, False
        if afc == 3:
            assert pusi, "adaptation fields only on a PES's first packet"
            length = r[4]
            if length:
                flags = r[5]
                rai = bool(flags & 0x40)
                if flags & 0x10:
                    b = r[6:12]
                    pcr = (b[0] << 25) | (b[1] << 17) | (b[2] << 9) | (b[3] << 1) | (b[4] >> 7)
                    stuffing_from = 12
                else:
                    stuffing_from = 6
                assert r[stuffing_from : 5 + length] == b"\xff" * (5 + length - stuffing_from)
            pos = 5 + length
        assert pos < 188, "every packet carries payload"
        if pusi:
            finish()
            current = {"chunks": [], "pcr": pcr, "rai": rai, "n": 0}
        assert current is not None
        current["chunks"].append(r[pos:])
        current["n"] += 1
    finish()
    return out


# --------------------------------------------------------------------------- synthetic tracks


def video_track(timescale=12800, cts=None, n=1, fourcc="avc1", nal_length_size=4, dts_step=512) -> Track:
    dts = np.arange(n, dtype=np.int64) * dts_step
    return Track(
        track_id=1, kind="video", fourcc=fourcc, codec_string="avc1.64001f", timescale=timescale, language="und",
        sample_entry=b"", video=VideoInfo(64, 64, nal_length_size, (SPS, PPS)), audio=None,
        dts=dts, cts_offsets=np.zeros(n, np.int64) if cts is None else np.asarray(cts, np.int64),
        durations=np.full(n, dts_step, np.int64), sizes=np.zeros(n, np.int64), offsets=np.zeros(n, np.int64),
        keyframes=np.ones(n, bool), presentation_shift=0,
    )


def audio_track(rate=48000, asc=bytes((0x11, 0x90)), language="eng") -> Track:
    return Track(
        track_id=2, kind="audio", fourcc="mp4a", codec_string="mp4a.40.2", timescale=rate, language=language,
        sample_entry=b"", video=None, audio=AudioInfo(rate, 2, asc, 2),
        dts=np.zeros(0, np.int64), cts_offsets=np.zeros(0, np.int64), durations=np.zeros(0, np.int64),
        sizes=np.zeros(0, np.int64), offsets=np.zeros(0, np.int64), keyframes=np.zeros(0, bool), presentation_shift=0,
    )


def nal(size: int, seed: int, first: int = 0x41) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes((first,)) + rng.integers(0, 256, size - 1, dtype=np.uint8).tobytes()


def video_batch(track: Track, payload_sizes, keyframes, dts, cts=None, seq=1, length_size=4) -> tuple[SampleBatch, list[bytes]]:
    """One single-NAL sample per size; returns the batch and each sample's expected Annex B access unit."""
    samples, expected = [], []
    for i, (size, key) in enumerate(zip(payload_sizes, keyframes)):
        unit = nal(size, i, 0x65 if key else 0x41)
        samples.append(len(unit).to_bytes(length_size, "big") + unit)
        expected.append(H264_AUD + (SC + SPS + SC + PPS if key else b"") + SC + unit)
    n = len(samples)
    dts = np.asarray(dts, np.int64)
    batch = SampleBatch(
        track, b"".join(samples), np.array([len(s) for s in samples], np.int64), dts,
        np.zeros(n, np.int64) if cts is None else np.asarray(cts, np.int64),
        np.full(n, 512, np.int64), np.asarray(keyframes, bool), seq,
    )
    return batch, expected


def audio_batch(track: Track, frame_sizes, first_dts=0, seq=1) -> SampleBatch:
    frames = [nal(s, 1000 + i, 0x21) for i, s in enumerate(frame_sizes)]
    n = len(frames)
    return SampleBatch(
        track, b"".join(frames), np.asarray(frame_sizes, np.int64), first_dts + np.arange(n, dtype=np.int64) * 1024,
        np.zeros(n, np.int64), np.full(n, 1024, np.int64), np.ones(n, bool), seq,
    )


def to90k(t, timescale):
    return rescale(np.asarray(t, np.int64), timescale, 90000) + TIMESTAMP_OFFSET_90K


# --------------------------------------------------------------------------- video


def test_video_segment_round_trip():
    rng = np.random.default_rng(7)
    n = 60
    sizes = rng.integers(1, 40_000, n).tolist()
    keys = [i % 25 == 0 for i in range(n)]
    track = video_track(n=n)
    dts = np.arange(n) * 512 - 1024  # starts before 0, like B-frame streams
    cts = np.tile([1024, 2560, 512, 0, 1024], 12)
    batch, expected = video_batch(track, sizes, keys, dts, cts)
    data = mux_segment(batch)
    assert len(data) == segment_size(track, batch.sizes, batch.keyframes)
    pes_list = demux(data)
    assert [p.payload for p in pes_list] == expected
    assert all(p.pid == VIDEO_PID and p.stream_id == 0xE0 and p.packet_length == 0 for p in pes_list)
    pts90, source_dts90 = to90k(dts + cts, 12800), to90k(dts, 12800)
    assert [p.pts for p in pes_list] == pts90.tolist()
    dts90 = np.array([p.dts if p.dts is not None else p.pts for p in pes_list])
    # fitted to the segment (packager.ts.timing.fit_decode_times): the first DTS is the first PTS, the
    # three decode times up to it squeezed after it, the last raised; the rest are the source's
    assert dts90[0] == pts90[0]
    assert (dts90[1:3] > pts90[0]).all() and (dts90[1:3] < source_dts90[3]).all()
    assert dts90[3:-1].tolist() == source_dts90[3:-1].tolist()
    assert source_dts90[-1] <= dts90[-1] <= pts90[-1]
    assert (np.diff(dts90) > 0).all() and (dts90 <= pts90).all()
    assert all((p.dts is None) == (d == t) for p, d, t in zip(pes_list, dts90, pts90))  # DTS only when it differs
    layout = compute_layout(elementary_stream(track), batch.sizes, batch.keyframes)
    assert [len(p.header) for p in pes_list] == (19 + layout.header_stuffing).tolist()
    for i, p in enumerate(pes_list):
        if i == 0 or keys[i]:
            assert p.pcr == dts90[i] - PCR_LEAD_90K
            assert p.random_access == keys[i]
        else:
            assert p.pcr is None
    assert min(p.pcr for p in pes_list if p.pcr is not None) > 0


def test_every_layout_remainder():
    """Payload sizes covering every residue mod 184, with and without a PCR
    (keyframes carry one), including the PES-header-stuffing case."""
    sizes = list(range(1, 420)) * 2
    keys = [i % 2 == 0 for i in range(len(sizes))]  # each size once as keyframe, once not
    track = video_track(n=len(sizes))
    batch, expected = video_batch(track, sizes, keys, np.arange(len(sizes)) * 512)
    layout = compute_layout(elementary_stream(track), batch.sizes, batch.keyframes)
    assert layout.header_stuffing.any() and (layout.adaptation_size == 1).any() and (layout.adaptation_size == 0).any()
    for cc in (0, 9):
        data = mux_segment(batch, continuity_start=cc)
        assert len(data) == segment_size(track, batch.sizes, batch.keyframes) == layout.size
        pes_list = demux(data, continuity_start=cc)
        assert [p.payload for p in pes_list] == expected
        assert [p.packets for p in pes_list] == layout.packet_count.tolist()
    # the minimum: a PES never takes more packets than its bytes need plus its PCR
    need = -(-(layout.header_size - layout.header_stuffing + layout.payload_size + np.where(layout.pcr, 8, 0)) // 184)
    assert (layout.packet_count == need).all()


def test_psi_continuity_follows_sequence_number():
    track = video_track(n=1)
    batch, _ = video_batch(track, [100], [True], [0], seq=18)
    demux(mux_segment(batch), psi_cc=1)


def test_deterministic_and_continuous_across_segments():
    n = 50
    track = video_track(n=n)
    sizes = list(range(100, 100 + 37 * n, 37))
    keys = [i % 10 == 0 for i in range(n)]
    whole, _ = video_batch(track, sizes, keys, np.arange(n) * 512)
    a, _ = video_batch(track, sizes[:20], keys[:20], np.arange(20) * 512)
    # the second segment alone, built from its absolute times
    b, _ = video_batch(track, sizes[20:], keys[20:], np.arange(20, n) * 512)
    assert mux_segment(a) == mux_segment(a)
    first, second = demux(mux_segment(a)), demux(mux_segment(b))
    assert [p.pts for p in first + second] == [p.pts for p in demux(mux_segment(whole))]
    # counters continue when the caller asks
    cc = (len(mux_segment(a)) // 188 - 2) % 16
    demux(mux_segment(b, continuity_start=cc), continuity_start=cc)


def test_negative_composition_offsets_keep_dts_below_pts():
    # ctts v1 style: the I frame at offset 0, B frames negative
    cts = np.array([0, 1536, -512, -512, 1536, -512, -512, 0], np.int64)
    n = len(cts)
    track = video_track(n=n, cts=cts)
    batch, _ = video_batch(track, [50] * n, [True] + [False] * (n - 1), np.arange(n) * 512, cts)
    pes_list = demux(mux_segment(batch))
    dts = [p.dts if p.dts is not None else p.pts for p in pes_list]
    assert all(d <= p.pts for d, p in zip(dts, pes_list))
    assert dts == sorted(dts) and len(set(dts)) == n
    # shifted by the track's most negative offset, then fitted to the segment: the first DTS is the first PTS
    assert dts[0] == pes_list[0].pts == TIMESTAMP_OFFSET_90K


def test_two_byte_nal_lengths():
    track = video_track(n=3, nal_length_size=2)
    batch, expected = video_batch(track, [10, 300, 20], [True, False, False], [0, 512, 1024], length_size=2)
    assert [p.payload for p in demux(mux_segment(batch))] == expected
    with pytest.raises(UnsupportedMedia):
        segment_size(track, batch.sizes, batch.keyframes)


def test_hevc_stream_type_and_aud():
    track = video_track(n=1, fourcc="hvc1")
    batch, _ = video_batch(track, [30], [True], [0])
    data = mux_segment(batch)
    pmt = data[188 + 5 :]
    assert pmt[12] == 0x24  # stream_type HEVC
    assert demux(data)[0].payload.startswith(SC + bytes.fromhex("460150"))


def test_empty_batch():
    track = video_track(n=0)
    batch = SampleBatch(track, b"", *(np.zeros(0, np.int64),) * 4, np.zeros(0, bool))
    assert len(mux_segment(batch)) == segment_size(track, batch.sizes, batch.keyframes) == 376


def test_size_mismatch_and_unsupported():
    track = video_track(n=1)
    batch, _ = video_batch(track, [30], [True], [0])
    bad = SampleBatch(track, batch.data[:-1], batch.sizes, batch.dts, batch.cts_offsets, batch.durations, batch.keyframes)
    with pytest.raises(MalformedMedia):
        mux_segment(bad)
    mp4v = video_track(n=1, fourcc="mp4v")
    with pytest.raises(UnsupportedMedia):
        segment_size(mp4v, batch.sizes, batch.keyframes)


# --------------------------------------------------------------------------- audio


def parse_adts(payload: bytes) -> list[bytes]:
    frames, pos = [], 0
    while pos < len(payload):
        h = payload[pos : pos + 7]
        assert h[0] == 0xFF and h[1] == 0xF1
        length = ((h[3] & 3) << 11) | (h[4] << 3) | (h[5] >> 5)
        frames.append(payload[pos + 7 : pos + length])
        pos += length
    assert pos == len(payload)
    return frames


def test_audio_segment_round_trip():
    rng = np.random.default_rng(3)
    sizes = rng.integers(200, 900, 94).tolist() + [3000, 8184, 5]
    track = audio_track()
    batch = audio_batch(track, sizes, first_dts=-1024)  # the priming frame presents before 0
    data = mux_segment(batch)
    assert len(data) == segment_size(track, batch.sizes, batch.keyframes)
    pes_list = demux(data)
    frames, first_index = [], []
    for p in pes_list:
        assert p.pid == AUDIO_PID and p.stream_id == 0xC0 and p.dts is None
        assert p.packet_length == len(p.header) - 6 + len(p.payload)
        got = parse_adts(p.payload)
        # within one group of 5 frames counted from the segment start, and
        # every frame starts within the target size of the PES's start
        assert len(frames) // AUDIO_MAX_FRAMES_PER_PES == (len(frames) + len(got) - 1) // AUDIO_MAX_FRAMES_PER_PES
        assert sum(len(f) + 7 for f in got[:-1]) < AUDIO_PES_PAYLOAD_TARGET
        first_index.append(len(frames))
        frames += got
    pos = np.concatenate(([0], np.cumsum(sizes)))
    assert frames == [batch.data[a:b] for a, b in zip(pos[:-1], pos[1:])]
    assert len(pes_list) > len(sizes) // AUDIO_MAX_FRAMES_PER_PES  # the big frames forced extra cuts
    assert [p.pts for p in pes_list] == to90k(batch.dts[first_index], 48000).tolist()
    assert pes_list[0].pcr == pes_list[0].pts - PCR_LEAD_90K and all(p.pcr is None for p in pes_list[1:])
    pmt = data[188 + 5 :]
    assert pmt[12] == 0x0F and pmt[17:23] == b"\x0a\x04eng\x00"


def test_audio_layout_edges():
    track = audio_track(rate=44100, asc=bytes((0x12, 0x10)), language="und")
    for sizes in ([1], list(range(1, 400)), [8184] * 7, [170] * 23):
        batch = audio_batch(track, sizes)
        data = mux_segment(batch, continuity_start=3)
        assert len(data) == segment_size(track, batch.sizes, batch.keyframes)
        assert sum(len(parse_adts(p.payload)) for p in demux(data, continuity_start=3)) == len(sizes)


# --------------------------------------------------------------------------- many segments at once


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_segment_sizes_equal_one_call_per_segment(kind):
    rng = np.random.default_rng(11)
    n = 400
    sizes = rng.integers(1, 3000 if kind == "audio" else 30_000, n)
    base = video_track(n=n) if kind == "video" else audio_track()
    keyframes = (np.arange(n) % 7 == 0) if kind == "video" else np.ones(n, bool)
    track = Track(**{**base.__dict__, "sizes": sizes, "keyframes": keyframes, "dts": np.arange(n) * 512,
                     "cts_offsets": np.zeros(n, np.int64), "durations": np.full(n, 512), "offsets": np.zeros(n, np.int64)})
    starts = np.array([0, 3, 3, 10, 11, 50, 123, 124, 200, 333, 399, 400])  # empty and one-sample segments too
    stops = np.append(starts[1:], n)
    one_by_one = [segment_size(track, sizes[a:b], keyframes[a:b]) for a, b in zip(starts, stops)]
    assert segment_sizes(track, starts).tolist() == one_by_one
    assert segment_sizes(track, starts[3:9], stop=300).tolist() == one_by_one[3:8] + [segment_size(track, sizes[200:300], keyframes[200:300])]
    assert segment_sizes(track, []).tolist() == []


def test_first_keyframe_is_a_prefix_of_its_segment():
    """I-frame playlists address PAT + PMT + the first access unit as the
    byte range [0, segment_size(first sample)) of the full segment."""
    n = 12
    track = video_track(n=n)
    full, _ = video_batch(track, [5000 + 97 * i for i in range(n)], [True] + [False] * (n - 1), np.arange(n) * 512, seq=4)
    first, _ = video_batch(track, [5000], [True], [0], seq=4)
    head = segment_size(track, full.sizes[:1], full.keyframes[:1])
    assert mux_segment(full)[:head] == mux_segment(first)
