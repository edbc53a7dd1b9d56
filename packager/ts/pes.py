"""PES packet headers (13818-1 2.4.3.6).

A PES header here is: start code prefix, stream id, PES_packet_length, two
flag bytes, PES_header_data_length, then the PTS, the DTS when it differs from
the PTS, and optional 0xFF stuffing bytes (at most 32 are allowed). Video
headers always reserve the DTS slot, filled with stuffing when there is no
DTS, so a PES header's size never depends on timestamps and a segment's size
is computable from sample sizes alone.
"""

from __future__ import annotations

PACKET_START_CODE_PREFIX = b"\x00\x00\x01"
# stream_id (13818-1 table 2-22): the first MPEG video / audio stream numbers,
# which is what every HLS packager uses for H.264/HEVC and AAC.
STREAM_ID_VIDEO = 0xE0
STREAM_ID_AUDIO = 0xC0

TIMESTAMP_SIZE = 5  # a PTS or DTS field: 4-bit prefix, 33 bits, 3 marker bits
# Bytes before the optional fields: prefix (3), stream_id, PES_packet_length (2),
# the two flag bytes and PES_header_data_length.
FIXED_HEADER_SIZE = 9
# Bytes of PES_packet_length counts after itself that are part of the header.
_LENGTH_COUNTED_HEADER = 3
MAX_HEADER_STUFFING = 32  # 13818-1 2.4.3.7: "no more than 32 stuffing bytes"
MAX_PES_PACKET_LENGTH = 0xFFFF

_FLAGS1 = 0x84  # '10' marker, not scrambled, no priority, data_alignment_indicator=1 (PES starts an access unit), not copyrighted, copy
_PTS_ONLY = 0x80  # PTS_DTS_flags '10'
_PTS_AND_DTS = 0xC0  # PTS_DTS_flags '11'
_PREFIX_PTS_ONLY = 0x2  # '0010' before a lone PTS
_PREFIX_PTS_WITH_DTS = 0x3  # '0011' before a PTS followed by a DTS
_PREFIX_DTS = 0x1  # '0001' before the DTS

_MASK_33 = (1 << 33) - 1


def header_size(reserve_dts: bool, stuffing: int = 0) -> int:
    """Bytes of a PES header with a PTS, a DTS slot if ``reserve_dts``, and ``stuffing``."""
    return FIXED_HEADER_SIZE + TIMESTAMP_SIZE * (2 if reserve_dts else 1) + stuffing


def encode_timestamp(prefix: int, value: int) -> bytes:
    """The 5-byte PTS/DTS field: value modulo 2^33 split 3/15/15 with marker bits."""
    v = value & _MASK_33
    return bytes(
        (
            (prefix << 4) | ((v >> 29) & 0x0E) | 1,
            (v >> 22) & 0xFF,
            ((v >> 14) & 0xFE) | 1,
            (v >> 7) & 0xFF,
            ((v << 1) & 0xFE) | 1,
        )
    )


def pes_header(stream_id: int, pts: int, dts: int | None, payload_size: int, *, reserve_dts: bool, stuffing: int = 0, bounded: bool) -> bytes:
    """One PES header.

    ``dts`` is written only when it differs from ``pts``; if ``reserve_dts``
    and it is not written, its 5 bytes become stuffing so the header size stays
    :func:`header_size`. ``bounded`` PES packets state their length; unbounded
    ones (video, which may exceed 64 KiB) write PES_packet_length 0.
    """
    has_dts = dts is not None and dts != pts
    if has_dts and not reserve_dts:
        raise ValueError("DTS given but no room reserved for it")
    fill = stuffing + (TIMESTAMP_SIZE if reserve_dts and not has_dts else 0)
    if fill > MAX_HEADER_STUFFING:
        raise ValueError("too many PES header stuffing bytes")
    data_length = TIMESTAMP_SIZE * (2 if has_dts else 1) + fill
    if bounded:
        length = _LENGTH_COUNTED_HEADER + data_length + payload_size
        if length > MAX_PES_PACKET_LENGTH:
            raise ValueError("PES packet too long for a bounded PES")
    else:
        length = 0
    head = PACKET_START_CODE_PREFIX + bytes(
        (stream_id, length >> 8, length & 0xFF, _FLAGS1, _PTS_AND_DTS if has_dts else _PTS_ONLY, data_length)
    )
    if has_dts:
        assert dts is not None
        return head + encode_timestamp(_PREFIX_PTS_WITH_DTS, pts) + encode_timestamp(_PREFIX_DTS, dts) + b"\xff" * fill
    return head + encode_timestamp(_PREFIX_PTS_ONLY, pts) + b"\xff" * fill
