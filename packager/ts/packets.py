"""188-byte transport packets: headers, adaptation fields, PCR (13818-1 2.4.3).

The muxer lays a PES stream out so that only the *first* packet of each PES
carries an adaptation field (PCR and/or stuffing); every later packet of the
PES is a plain 4-byte header plus 184 payload bytes. That makes the headers of
all packets of a segment a pure function of a few per-PES numbers, written here
in one vectorised step.
"""

from __future__ import annotations

import numpy as np

PACKET_SIZE = 188  # fixed by 13818-1
SYNC_BYTE = 0x47
HEADER_SIZE = 4
PAYLOAD_SIZE = PACKET_SIZE - HEADER_SIZE  # 184 bytes after a header without adaptation field

# adaptation_field_control (2 bits, packet byte 3 bits 5-4)
AFC_PAYLOAD_ONLY = 0b01
AFC_ADAPTATION_AND_PAYLOAD = 0b11

# adaptation field flag bits (byte after adaptation_field_length)
AF_RANDOM_ACCESS = 0x40
AF_PCR = 0x10

# An adaptation field carrying a PCR: length byte, flags byte, 6 PCR bytes.
PCR_ADAPTATION_SIZE = 8

PCR_BASE_MODULUS = 1 << 33  # PCR base (and PTS/DTS) are 33-bit counters of a 90 kHz clock


def adaptation_field(size: int, pcr_base: int | None = None, random_access: bool = False) -> bytes:
    """An adaptation field of exactly ``size`` bytes (the length byte included).

    ``size`` 1 is the degenerate field of a lone ``adaptation_field_length = 0``,
    which stuffs exactly one byte. Otherwise the field has a flags byte, the
    PCR when given (base in 90 kHz, extension 0), then 0xFF stuffing.
    """
    if size <= 0:
        return b""
    if size == 1:
        return b"\x00"
    flags = (AF_PCR if pcr_base is not None else 0) | (AF_RANDOM_ACCESS if random_access else 0)
    field = bytearray((size - 1, flags))
    if pcr_base is not None:
        base = pcr_base % PCR_BASE_MODULUS
        ext = 0
        field += bytes(
            (
                (base >> 25) & 0xFF,
                (base >> 17) & 0xFF,
                (base >> 9) & 0xFF,
                (base >> 1) & 0xFF,
                ((base & 1) << 7) | 0x7E | (ext >> 8),  # 6 reserved bits set
                ext & 0xFF,
            )
        )
    if len(field) > size:
        raise ValueError(f"adaptation field needs {len(field)} bytes, {size} given")
    field += b"\xff" * (size - len(field))
    return bytes(field)


def write_headers(
    packets: np.ndarray,
    pid: int,
    first_packet: np.ndarray,
    adaptation_size: np.ndarray,
    continuity_start: int,
) -> None:
    """Write the 4-byte header of every packet of one PID in one step.

    ``packets`` is an (n, 188) uint8 view; ``first_packet`` holds the row index
    of each PES's first packet (those get payload_unit_start_indicator) and
    ``adaptation_size`` the bytes of adaptation field that packet carries (0 for
    none). Every packet carries payload, so the continuity counter advances on
    each one: ``(continuity_start + i) mod 16``.
    """
    n = packets.shape[0]
    if n == 0:
        return
    has_af = adaptation_size > 0
    packets[:, 0] = SYNC_BYTE
    packets[:, 1] = (pid >> 8) & 0x1F
    packets[first_packet, 1] |= 0x40  # payload_unit_start_indicator
    packets[:, 2] = pid & 0xFF
    cc = (np.arange(continuity_start, continuity_start + n, dtype=np.int64) & 0x0F).astype(np.uint8)
    packets[:, 3] = (AFC_PAYLOAD_ONLY << 4) | cc
    packets[first_packet[has_af], 3] |= (AFC_ADAPTATION_AND_PAYLOAD << 4) & 0xF0
