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


def adaptation_fields(size: np.ndarray, pcr_base: np.ndarray, has_pcr: np.ndarray, random_access: np.ndarray) -> np.ndarray:
    """The start of one adaptation field per element, as an (n, 8) uint8 array.

    Field k is ``size[k]`` bytes; row k holds its first ``min(size[k], 8)``
    bytes and every later byte of the field is 0xFF stuffing. A field of size 1
    is the lone ``adaptation_field_length = 0`` byte; larger ones get a flags
    byte (random_access_indicator where asked) and, where ``has_pcr``, the PCR:
    ``pcr_base`` in 90 kHz, extension 0.
    """
    size = np.asarray(size, dtype=np.int64)
    has_pcr = np.asarray(has_pcr, dtype=bool)
    if (size[has_pcr] < PCR_ADAPTATION_SIZE).any():
        raise ValueError("adaptation field too small for a PCR")
    # Each row as one big-endian 64-bit word: length byte, flags byte, then the
    # 48-bit PCR (33-bit base, 6 reserved bits set, 9-bit extension 0) or stuffing.
    length = np.maximum(size - 1, 0).astype(np.uint64)  # adaptation_field_length excludes itself
    flags = (np.where(has_pcr, AF_PCR, 0) | np.where(random_access, AF_RANDOM_ACCESS, 0)).astype(np.uint64)
    base = (np.asarray(pcr_base, dtype=np.int64) % PCR_BASE_MODULUS).astype(np.uint64)
    ext = np.uint64(0)
    pcr = (base << np.uint64(15)) | np.uint64(0x3F << 9) | ext
    tail = np.where(has_pcr, pcr, np.uint64(0xFFFF_FFFF_FFFF))
    word = (length << np.uint64(56)) | (flags << np.uint64(48)) | tail
    return word.astype(">u8").view(np.uint8).reshape(-1, PCR_ADAPTATION_SIZE)


def adaptation_field(size: int, pcr_base: int | None = None, random_access: bool = False) -> bytes:
    """One adaptation field of exactly ``size`` bytes (the scalar form of
    :func:`adaptation_fields`)."""
    row = adaptation_fields(np.array([size]), np.array([pcr_base or 0]), np.array([pcr_base is not None]), np.array([random_access]))[0]
    head = row[: min(size, PCR_ADAPTATION_SIZE)].tobytes()
    return head + b"\xff" * (size - len(head))


def write_packet_headers(
    packets: np.ndarray,
    pid: int,
    first_packet: np.ndarray,
    adaptation_size: np.ndarray,
    continuity_start: int,
) -> None:
    """Write the 4-byte header of every packet of one PID in one step.

    ``packets`` is an (n, 188) uint8 view whose rows start 4-byte aligned;
    ``first_packet`` holds the row index of each PES's first packet (those
    get payload_unit_start_indicator) and ``adaptation_size`` the bytes of
    adaptation field that packet carries (0 for none). Every packet carries
    payload, so the continuity counter advances on each one:
    ``(continuity_start + i) mod 16``.

    The header is written as one little-endian uint32 per packet (188 is a
    multiple of 4): one strided store instead of four.
    """
    n = packets.shape[0]
    if n == 0:
        return
    words = packets.view(np.uint32)[:, 0] if packets.flags.c_contiguous else None
    # byte 0 sync; byte 1 TEI 0, PUSI, priority 0, PID high bits; byte 2 PID low
    # bits; byte 3 scrambling 00, adaptation_field_control, continuity counter
    base = SYNC_BYTE | (((pid >> 8) & 0x1F) << 8) | ((pid & 0xFF) << 16) | ((AFC_PAYLOAD_ONLY << 4) << 24)
    value = (np.arange(continuity_start, continuity_start + n, dtype=np.uint32) & 0x0F) << 24
    value |= np.uint32(base)
    value[first_packet] |= np.uint32(0x40 << 8)
    value[first_packet[adaptation_size > 0]] |= np.uint32((AFC_ADAPTATION_AND_PAYLOAD << 4) << 24)
    if words is not None and np.little_endian:
        words[:] = value
    else:  # pragma: no cover - big-endian hosts or odd views
        packets[:, :HEADER_SIZE] = value.astype("<u4").view(np.uint8).reshape(n, HEADER_SIZE)


def add_continuity_packets(segment: bytes | memoryview, pid: int, extra: int) -> bytes:
    """``segment`` with ``extra`` (1-15) more packets on ``pid``, carrying the same payload bytes, so its
    continuity counters end ``extra`` further on.

    The last plain continuation packet of ``pid`` (no adaptation field, 184 payload bytes) is spread over
    ``extra + 1`` packets: ``extra`` with one payload byte behind a 183-byte stuffing adaptation field, and one
    with the remaining ``184 - extra`` bytes behind an ``extra``-byte field. Demuxers see the same PES bytes
    (13818-1 allows stuffing in any packet's adaptation field); the counters of later packets of ``pid`` move
    on by ``extra``. ValueError when ``pid`` has no such packet.
    """
    if not 1 <= extra <= 15:
        raise ValueError(f"extra packets {extra} outside 1..15")
    packets = np.frombuffer(segment, dtype=np.uint8).reshape(-1, PACKET_SIZE)
    pids = ((packets[:, 1].astype(np.int64) & 0x1F) << 8) | packets[:, 2]
    plain = (pids == pid) & ((packets[:, 1] & 0x40) == 0) & (((packets[:, 3] >> 4) & 0b11) == AFC_PAYLOAD_ONLY)
    candidates = np.flatnonzero(plain)
    if candidates.size == 0:
        raise ValueError(f"PID 0x{pid:04X} has no plain continuation packet to spread")
    at = int(candidates[-1])
    header, data, counter = packets[at, :3], packets[at, HEADER_SIZE:], int(packets[at, 3]) & 0x0F
    spread = np.empty((extra + 1, PACKET_SIZE), dtype=np.uint8)
    spread[:, :3] = header
    spread[:, 3] = ((AFC_ADAPTATION_AND_PAYLOAD << 4) | ((counter + np.arange(extra + 1)) & 0x0F)).astype(np.uint8)
    spread[:extra, 4] = 182  # adaptation_field_length: flags + 181 stuffing bytes
    spread[:extra, 5] = 0  # no flags
    spread[:extra, 6:187] = 0xFF
    spread[:extra, 187] = data[:extra]
    last = spread[extra]
    last[4 : 4 + extra] = np.frombuffer(adaptation_field(extra), dtype=np.uint8)
    last[4 + extra :] = data[extra:]
    after = packets[at + 1 :].copy()
    later = np.flatnonzero(pids[at + 1 :] == pid)
    after[later, 3] = (after[later, 3] & 0xF0) | ((after[later, 3] & 0x0F) + extra) & 0x0F
    return b"".join((packets[:at].tobytes(), spread.tobytes(), after.tobytes()))
