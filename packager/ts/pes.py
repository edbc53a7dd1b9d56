"""PES packet headers (13818-1 2.4.3.6).

A PES header here is: start code prefix, stream id, PES_packet_length, two
flag bytes, PES_header_data_length, then the PTS, the DTS when it differs from
the PTS, and optional 0xFF stuffing bytes (at most 32 are allowed). Video
headers always reserve the DTS slot, filled with stuffing when there is no
DTS, so a PES header's size never depends on timestamps and a segment's size
is computable from sample sizes alone.
"""

from __future__ import annotations

import numpy as np

PACKET_START_CODE_PREFIX = b"\x00\x00\x01"
# stream_id (13818-1 table 2-22): the first MPEG video / audio stream numbers,
# which is what every HLS packager uses for H.264/HEVC and AAC.
STREAM_ID_VIDEO = 0xE0
STREAM_ID_AUDIO = 0xC0
# AC-3 and E-AC-3 are not MPEG audio: ATSC A/52 Annex A puts them in private_stream_1, as ffmpeg does.
STREAM_ID_PRIVATE_1 = 0xBD

TIMESTAMP_SIZE = 5  # a PTS or DTS field: 4-bit prefix, 33 bits, 3 marker bits
# Bytes before the optional fields: prefix (3), stream_id, PES_packet_length (2),
# the two flag bytes and PES_header_data_length.
FIXED_HEADER_SIZE = 9
# Bytes of PES_packet_length counts after itself that are part of the header.
_LENGTH_COUNTED_HEADER = 3
MAX_HEADER_STUFFING = 32  # 13818-1 2.4.3.7: "no more than 32 stuffing bytes"
MAX_PES_PACKET_LENGTH = 0xFFFF
# Bytes of a PES that PES_packet_length does not count: the start code prefix, stream_id and the field itself.
UNCOUNTED_SIZE = FIXED_HEADER_SIZE - _LENGTH_COUNTED_HEADER

# '10' marker, not scrambled, no priority, data_alignment_indicator 1 (every
# PES starts with an access unit / ADTS frame), no copyright, original_or_copy 0
_FLAGS1 = 0x84
_PTS_ONLY = 0x80  # PTS_DTS_flags '10'
_PTS_AND_DTS = 0xC0  # PTS_DTS_flags '11'
_PREFIX_PTS_ONLY = 0x2  # '0010' before a lone PTS
_PREFIX_PTS_WITH_DTS = 0x3  # '0011' before a PTS followed by a DTS
_PREFIX_DTS = 0x1  # '0001' before the DTS

_MASK_33 = (1 << 33) - 1


def header_size(reserve_dts: bool, stuffing: int = 0) -> int:
    """Bytes of a PES header with a PTS, a DTS slot if ``reserve_dts``, and ``stuffing``."""
    return FIXED_HEADER_SIZE + TIMESTAMP_SIZE * (2 if reserve_dts else 1) + stuffing


def encode_timestamps(prefix: int, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The 5-byte PTS/DTS fields of ``values`` as an (n, 5) uint8 array (or
    into ``out``): a 4-bit prefix, then the value modulo 2^33 split 3/15/15
    bits, each part followed by a marker bit.

    Built as one 40-bit big-endian integer per value, then viewed as bytes.
    """
    v = np.asarray(values, dtype=np.int64) & _MASK_33
    word = (
        (prefix << 36)
        | ((v >> 30) << 33)
        | (1 << 32)
        | (((v >> 15) & 0x7FFF) << 17)
        | (1 << 16)
        | ((v & 0x7FFF) << 1)
        | 1
    )
    fields = word.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 3:]
    if out is None:
        return fields.copy()
    out[...] = fields
    return out


def pes_headers(
    stream_id: int,
    pts: np.ndarray,
    dts: np.ndarray | None,
    payload_size: np.ndarray,
    stuffing: np.ndarray,
    *,
    reserve_dts: bool,
    bounded: bool,
) -> np.ndarray:
    """One PES header per element, as an (n, header_size(reserve_dts)) uint8 array.

    Row k is header k without its ``stuffing[k]`` trailing 0xFF bytes (the
    caller places them). A DTS is written where it differs from the PTS
    (``dts`` None: never); with ``reserve_dts`` its 5 bytes become stuffing
    otherwise, so every header is :func:`header_size` + ``stuffing`` bytes.
    ``bounded`` PES packets state their length; unbounded ones (video, which
    may exceed 64 KiB) write PES_packet_length 0.
    """
    pts = np.asarray(pts, dtype=np.int64)
    n = pts.shape[0]
    stuffing = np.asarray(stuffing, dtype=np.int64)
    has_dts = np.zeros(n, dtype=bool) if dts is None else (np.asarray(dts, dtype=np.int64) != pts)
    if not reserve_dts and has_dts.any():
        raise ValueError("DTS given but no room reserved for it")
    if n and int(stuffing.max()) + (TIMESTAMP_SIZE if reserve_dts else 0) > MAX_HEADER_STUFFING:
        raise ValueError("too many PES header stuffing bytes")
    # PES_header_data_length: the PTS, the DTS slot (DTS or stuffing), the stuffing
    data_length = TIMESTAMP_SIZE * (2 if reserve_dts else 1) + stuffing
    template = np.full(header_size(reserve_dts), 0xFF, dtype=np.uint8)
    template[:9] = np.frombuffer(PACKET_START_CODE_PREFIX + bytes((stream_id, 0, 0, _FLAGS1, _PTS_ONLY, 0)), dtype=np.uint8)
    rows = np.empty((n, template.shape[0]), dtype=np.uint8)
    rows[:] = template
    if bounded:
        length = _LENGTH_COUNTED_HEADER + data_length + np.asarray(payload_size, dtype=np.int64)
        if n and int(length.max()) > MAX_PES_PACKET_LENGTH:
            raise ValueError("PES packet too long for a bounded PES")
        rows[:, 4] = length >> 8
        rows[:, 5] = length & 0xFF
    rows[:, 8] = data_length
    encode_timestamps(_PREFIX_PTS_ONLY, pts, out=rows[:, FIXED_HEADER_SIZE : FIXED_HEADER_SIZE + TIMESTAMP_SIZE])
    if has_dts.any():
        assert dts is not None
        rows[has_dts, 7] = _PTS_AND_DTS
        rows[has_dts, FIXED_HEADER_SIZE] |= (_PREFIX_PTS_WITH_DTS ^ _PREFIX_PTS_ONLY) << 4
        rows[has_dts, FIXED_HEADER_SIZE + TIMESTAMP_SIZE :] = encode_timestamps(_PREFIX_DTS, np.asarray(dts)[has_dts])
    return rows


def pes_header(stream_id: int, pts: int, dts: int | None, payload_size: int, *, reserve_dts: bool, stuffing: int = 0, bounded: bool) -> bytes:
    """One PES header as bytes (the scalar form of :func:`pes_headers`)."""
    rows = pes_headers(
        stream_id,
        np.array([pts]),
        None if dts is None else np.array([dts]),
        np.array([payload_size]),
        np.array([stuffing]),
        reserve_dts=reserve_dts,
        bounded=bounded,
    )
    return rows[0].tobytes() + b"\xff" * stuffing
