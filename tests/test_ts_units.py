"""Golden bytes for the small pieces of the MPEG-TS muxer (packager/ts/).

Reference values come from the standards' worked fields and from ffmpeg's
own mpegts/adts muxers (PAT/PMT/ADTS bytes below were cut out of
``ffmpeg -f mpegts`` / ``-f adts`` output, ffmpeg 9.0.2).
"""

from __future__ import annotations

import numpy as np
import pytest

from packager.errors import MalformedMedia, UnsupportedMedia
from packager.ts import adts, annexb, packets, pes, psi
from packager.ts.adts import AdtsConfig
from packager.ts.annexb import AnnexB

# --------------------------------------------------------------------------- CRC / PSI


def test_crc32_mpeg2_check_value():
    assert psi.crc32_mpeg2(b"123456789") == 0x0376E6E7  # the catalogued CRC-32/MPEG-2 check
    assert psi.crc32_mpeg2(b"") == 0xFFFFFFFF


def test_pat_matches_ffmpeg():
    # ffmpeg -f mpegts: tsid 1, program 1 -> PMT PID 0x1000, CRC 2AB104B2
    assert psi.pat_section() == bytes.fromhex("00b00d0001c100000001f0002ab104b2")


def test_crc_over_whole_section_is_zero():
    for section in (psi.pat_section(), psi.pmt_section(psi.STREAM_TYPE_HEVC, psi.VIDEO_PID)):
        assert psi.crc32_mpeg2(section) == 0


def test_pmt_matches_ffmpeg():
    # H.264 on PID 0x100 carrying its own PCR, no descriptors
    assert psi.pmt_section(psi.STREAM_TYPE_H264, 0x100) == bytes.fromhex("02b0120001c10000e100f0001be100f00015bd4d56")
    # AAC with an ISO 639 language descriptor "eng"
    assert psi.pmt_section(psi.STREAM_TYPE_AAC_ADTS, 0x100, "eng") == bytes.fromhex(
        "02b0180001c10000e100f0000fe100f0060a04656e670090d31b58"
    )
    # "und" (and junk) means no descriptor
    assert psi.pmt_section(psi.STREAM_TYPE_AAC_ADTS, 0x100, "und") == psi.pmt_section(psi.STREAM_TYPE_AAC_ADTS, 0x100)


def test_psi_packet_layout():
    pkt = psi.psi_packet(psi.PMT_PID, psi.pmt_section(psi.STREAM_TYPE_H264, psi.VIDEO_PID), 5)
    assert len(pkt) == 188
    assert pkt[:5] == bytes((0x47, 0x50, 0x00, 0x15, 0x00))  # PUSI, PID 0x1000, payload only, CC 5, pointer 0
    section_end = 5 + 21
    assert pkt[section_end:] == b"\xff" * (188 - section_end)


# --------------------------------------------------------------------------- ADTS


def test_adts_header_aac_lc_44100_stereo():
    cfg = AdtsConfig.from_audio_specific_config(bytes((0x12, 0x10)))
    assert (cfg.profile, cfg.sampling_index, cfg.channel_config) == (1, 4, 2)
    headers = cfg.headers(np.array([100, 336]))
    assert headers[0].tobytes() == bytes.fromhex("fff150800d7ffc")  # frame_length 107
    assert headers[1].tobytes() == bytes.fromhex("fff150802afffc")  # 343, as ffmpeg -f adts writes it


def test_adts_frames_interleave_headers():
    cfg = AdtsConfig.from_audio_specific_config(bytes((0x11, 0x90)))  # LC 48 kHz stereo
    data = b"\x01" * 3 + b"\x02" * 5
    out = cfg.frames(data, np.array([3, 5])).tobytes()
    h = cfg.headers(np.array([3, 5]))
    assert out == h[0].tobytes() + b"\x01" * 3 + h[1].tobytes() + b"\x02" * 5
    assert cfg.frames(b"", np.array([], dtype=np.int64)).size == 0


def _asc(fields: list[tuple[int, int]]) -> bytes:
    """Pack (value, bits) fields MSB first, zero-padded to whole bytes."""
    value = nbits = 0
    for v, n in fields:
        value, nbits = (value << n) | v, nbits + n
    pad = -nbits % 8
    return (value << pad).to_bytes((nbits + pad) // 8, "big")


def test_adts_explicit_rate_maps_to_index():
    # samplingFrequencyIndex 0xF + 24-bit rate
    exact = _asc([(2, 5), (0xF, 4), (44100, 24), (2, 4)])
    assert AdtsConfig.from_audio_specific_config(exact).sampling_index == 4
    odd = _asc([(2, 5), (0xF, 4), (22000, 24), (1, 4)])  # table 4.82: 18783 <= f < 23004 -> 22050
    assert AdtsConfig.from_audio_specific_config(odd).sampling_index == 7
    assert adts.index_for_rate(100_000) == 0 and adts.index_for_rate(8000) == 11 and adts.index_for_rate(5000) == 11


def test_adts_he_aac_writes_core_lc():
    # AOT 5 (SBR), core 24 kHz stereo, extension 48 kHz, core AOT 2
    he = _asc([(5, 5), (6, 4), (2, 4), (3, 4), (2, 5), (0, 3)])
    assert he == bytes.fromhex("2b118800")
    cfg = AdtsConfig.from_audio_specific_config(he)
    assert (cfg.profile, cfg.sampling_index, cfg.channel_config) == (1, 6, 2)
    # AOT 29 (PS): mono core
    ps = _asc([(29, 5), (6, 4), (1, 4), (3, 4), (2, 5), (0, 3)])
    assert AdtsConfig.from_audio_specific_config(ps).channel_config == 1


@pytest.mark.parametrize(
    "asc, error",
    [
        (_asc([(31, 5), (42 - 32, 6), (4, 4), (2, 4)]), UnsupportedMedia),  # xHE-AAC (escape AOT 42)
        (_asc([(2, 5), (4, 4), (0, 4)]), UnsupportedMedia),  # channel config 0: PCE
        (_asc([(2, 5), (4, 4), (8, 4)]), UnsupportedMedia),  # not expressible in 3 bits
        (_asc([(2, 5), (13, 4), (2, 4)]), MalformedMedia),  # reserved frequency index
        (b"\x12", MalformedMedia),  # truncated
    ],
)
def test_adts_rejects(asc, error):
    with pytest.raises(error):
        AdtsConfig.from_audio_specific_config(asc)


def test_adts_rejects_oversized_frame():
    cfg = AdtsConfig.from_audio_specific_config(bytes((0x12, 0x10)))
    cfg.headers(np.array([adts.MAX_RAW_FRAME]))
    with pytest.raises(UnsupportedMedia):
        cfg.headers(np.array([adts.MAX_RAW_FRAME + 1]))


# --------------------------------------------------------------------------- PES


def test_timestamp_encoding_golden():
    # 1.4 s = 126000: the PTS of ffmpeg's first PES ("21 00 07 d8 61")
    assert pes.encode_timestamps(2, np.array([126000]))[0].tobytes() == bytes.fromhex("210007d861")
    assert pes.encode_timestamps(2, np.array([(1 << 33) - 1]))[0].tobytes() == bytes.fromhex("2fffffffff")
    assert pes.encode_timestamps(1, np.array([0]))[0].tobytes() == bytes.fromhex("1100010001")
    # 33-bit wrap: a negative time is its value modulo 2^33
    assert (pes.encode_timestamps(3, np.array([-1])) == pes.encode_timestamps(3, np.array([(1 << 33) - 1]))).all()


def _decode_ts(field: bytes) -> int:
    return ((field[0] >> 1) & 7) << 30 | (field[1] << 22) | ((field[2] >> 1) << 15) | (field[3] << 7) | (field[4] >> 1)


def test_pes_header_video_pts_and_dts():
    h = pes.pes_header(0xE0, 900_000 + 7200, 900_000, 1234, reserve_dts=True, bounded=False)
    assert h[:9] == bytes((0, 0, 1, 0xE0, 0, 0, 0x84, 0xC0, 10))
    assert h[9] >> 4 == 3 and h[14] >> 4 == 1
    assert _decode_ts(h[9:14]) == 907_200 and _decode_ts(h[14:19]) == 900_000
    assert len(h) == pes.header_size(True) == 19


def test_pes_header_video_without_dts_keeps_its_size():
    h = pes.pes_header(0xE0, 900_000, 900_000, 1234, reserve_dts=True, bounded=False)
    assert h[:9] == bytes((0, 0, 1, 0xE0, 0, 0, 0x84, 0x80, 10))
    assert h[9] >> 4 == 2 and _decode_ts(h[9:14]) == 900_000
    assert h[14:] == b"\xff" * 5  # the DTS slot becomes stuffing


def test_pes_header_audio_bounded_with_stuffing():
    h = pes.pes_header(0xC0, 12345, None, 1000, reserve_dts=False, stuffing=3, bounded=True)
    assert len(h) == pes.header_size(False, 3) == 17
    assert h[:9] == bytes((0, 0, 1, 0xC0, (3 + 8 + 1000) >> 8, (3 + 8 + 1000) & 0xFF, 0x84, 0x80, 8))
    assert _decode_ts(h[9:14]) == 12345 and h[14:] == b"\xff" * 3
    with pytest.raises(ValueError):
        pes.pes_header(0xC0, 0, 1, 10, reserve_dts=False, bounded=True)  # DTS without room
    with pytest.raises(ValueError):
        pes.pes_header(0xC0, 0, None, 70_000, reserve_dts=False, bounded=True)  # > 64 KiB


# --------------------------------------------------------------------------- adaptation field / PCR


def _decode_pcr(b: bytes) -> tuple[int, int, int]:
    base = (b[0] << 25) | (b[1] << 17) | (b[2] << 9) | (b[3] << 1) | (b[4] >> 7)
    return base, (b[4] >> 1) & 0x3F, ((b[4] & 1) << 8) | b[5]


def test_adaptation_field_with_pcr():
    af = packets.adaptation_field(12, pcr_base=837_000, random_access=True)
    assert af[0] == 11 and af[1] == 0x50  # length excludes itself; RAI + PCR flags
    assert _decode_pcr(af[2:8]) == (837_000, 0x3F, 0)
    assert af[8:] == b"\xff" * 4
    assert packets.adaptation_field(8, pcr_base=1)[2:8] == bytes.fromhex("00000000fe00")
    assert packets.adaptation_field(8, pcr_base=1 << 32)[2:8] == bytes.fromhex("800000007e00")


def test_adaptation_field_stuffing_only():
    assert packets.adaptation_field(1) == b"\x00"
    assert packets.adaptation_field(2) == b"\x01\x00"
    assert packets.adaptation_field(5, random_access=True) == b"\x04\x40\xff\xff\xff"
    with pytest.raises(ValueError):
        packets.adaptation_field(7, pcr_base=0)


def test_packet_headers_vectorised():
    rows = np.zeros((20, 188), dtype=np.uint8)
    packets.write_packet_headers(rows, 0x101, np.array([0, 3, 19]), np.array([0, 8, 1]), 14)
    assert (rows[:, 0] == 0x47).all()
    assert rows[0, :4].tobytes() == bytes((0x47, 0x41, 0x01, 0x1E))  # PUSI, PID 0x101, payload only, CC 14
    assert rows[1, :4].tobytes() == bytes((0x47, 0x01, 0x01, 0x1F))
    assert rows[2, 3] == 0x10  # CC wraps to 0
    assert rows[3, :4].tobytes() == bytes((0x47, 0x41, 0x01, 0x31))  # adaptation field + payload
    assert rows[19, 1] & 0x40 and rows[19, 3] >> 4 == 3
    assert ((rows[:, 3] & 0x0F) == (np.arange(14, 34) & 0x0F)).all()
    assert not rows[:, 4:].any()


# --------------------------------------------------------------------------- Annex B

SPS, PPS = bytes.fromhex("6742c01e"), bytes.fromhex("68ce3c80")


def _sample(nals: list[bytes], length_size: int = 4) -> bytes:
    return b"".join(len(n).to_bytes(length_size, "big") + n for n in nals)


def _convert(conv: AnnexB, samples: list[bytes], keys: list[bool]) -> list[bytes]:
    sizes = np.array([len(s) for s in samples])
    units, counts = conv.access_units(b"".join(samples), sizes, np.array(keys))
    out = [b"".join(bytes(p) for p in unit) for unit in units]
    expected = conv.access_unit_sizes(sizes, np.array(keys), counts)
    assert [len(o) for o in out] == expected.tolist()
    return out


def test_annexb_h264_two_nal_sample():
    conv = AnnexB.for_track(annexb.H264, 4, (SPS, PPS))
    sei, idr, p = bytes.fromhex("060501ff80"), bytes.fromhex("65888400"), bytes.fromhex("419a2c")
    key, delta = _convert(conv, [_sample([sei, idr]), _sample([p])], [True, False])
    sc = b"\x00\x00\x00\x01"
    assert key == sc + b"\x09\xf0" + sc + SPS + sc + PPS + sc + sei + sc + idr
    assert delta == sc + b"\x09\xf0" + sc + p


def test_annexb_hevc_aud():
    conv = AnnexB.for_track(annexb.HEVC, 4, (b"\x40\x01\x0c", b"\x42\x01\x01", b"\x44\x01\xc1"))
    (delta,) = _convert(conv, [_sample([b"\x02\x01\xd0\x09"])], [False])
    assert delta == bytes.fromhex("00000001 460150 00000001 0201d009")


def test_annexb_short_length_prefixes():
    conv = AnnexB.for_track(annexb.H264, 2, (SPS, PPS))
    a, b = bytes.fromhex("65aa"), bytes.fromhex("65bbcc")
    (key,) = _convert(conv, [_sample([a, b], 2)], [True])
    sc = b"\x00\x00\x00\x01"
    assert key == sc + b"\x09\xf0" + sc + SPS + sc + PPS + sc + a + sc + b
    with pytest.raises(UnsupportedMedia):  # size depends on NAL counts
        conv.access_unit_sizes(np.array([9]), np.array([True]))


def test_annexb_keeps_in_band_aud_and_size():
    conv = AnnexB.for_track(annexb.H264, 4, (SPS, PPS))
    aud, idr, p = b"\x09\x10", bytes.fromhex("65888400"), bytes.fromhex("419a")
    key, delta = _convert(conv, [_sample([aud, idr]), _sample([aud, p])], [True, False])
    sc = b"\x00\x00\x00\x01"
    # our 6-byte AUD becomes 6 zero bytes in front (trailing_zero_8bits), params go after the in-band AUD
    assert key == bytes(6) + sc + aud + sc + SPS + sc + PPS + sc + idr
    assert delta == bytes(6) + sc + aud + sc + p
    assert key.count(b"\x00\x00\x01\x09") == 1


def test_annexb_trailing_zero_padding_kept():
    conv = AnnexB.for_track(annexb.H264, 4, ())
    (au,) = _convert(conv, [_sample([b"\x41\x9a"]) + b"\x00\x00"], [False])
    assert au.endswith(b"\x41\x9a\x00\x00")


@pytest.mark.parametrize(
    "sample",
    [
        b"\x00\x00\x00\x09\x65\x88",  # NAL runs past the sample
        _sample([b"\x65\x88"]) + b"\x00\x01",  # junk after the last NAL
    ],
)
def test_annexb_malformed(sample):
    conv = AnnexB.for_track(annexb.H264, 4, ())
    with pytest.raises(MalformedMedia):
        conv.access_units(sample, np.array([len(sample)]), np.array([True]))


def test_annexb_rejects_bad_length_size():
    with pytest.raises(UnsupportedMedia):
        AnnexB.for_track(annexb.H264, 3, ())
