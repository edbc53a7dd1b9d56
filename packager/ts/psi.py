"""Program-specific information: the PAT and PMT a segment opens with.

Every HLS segment must be decodable on its own (a player may start at any
segment), so each one repeats the Program Association Table and the Program
Map Table in the first two packets, as ISO/IEC 13818-1 2.4.4 describes them.
Each table is a single section padded with 0xFF to fill its one packet.
"""

from __future__ import annotations

import struct
from functools import lru_cache

import numpy as np

from .packets import PACKET_SIZE, SYNC_BYTE

# --- PIDs -----------------------------------------------------------------
# PID 0 is reserved for the PAT by the standard (13818-1 table 2-3).
PAT_PID = 0x0000
# The PMT and elementary-stream PIDs are free choices; these are ffmpeg's
# defaults (mpegts_pmt_start_pid / mpegts_start_pid), which keeps our output
# familiar to anyone comparing it with `ffmpeg -f mpegts` or `-f hls`.
PMT_PID = 0x1000
VIDEO_PID = 0x0100
AUDIO_PID = 0x0101

# --- table ids and numbers (13818-1 table 2-31) ----------------------------
PAT_TABLE_ID = 0x00
PMT_TABLE_ID = 0x02
# One transport stream with one program; any non-zero program number works
# (0 would mean "network PID" in the PAT). 1 is what every packager uses.
TRANSPORT_STREAM_ID = 0x0001
PROGRAM_NUMBER = 0x0001

# --- stream_type values in the PMT (13818-1 table 2-34 and amendments) -----
STREAM_TYPE_AAC_ADTS = 0x0F  # ISO/IEC 13818-7 audio with ADTS transport syntax
STREAM_TYPE_MPEG1_AUDIO = 0x03  # ISO/IEC 11172-3 audio (MP3 at 32, 44.1, 48 kHz)
STREAM_TYPE_MPEG2_AUDIO = 0x04  # ISO/IEC 13818-3 audio (MP3's half rates, 16-24 kHz)
# Dolby audio as ATSC A/52 Annex A (and Apple's HLS) carries it: user-private stream types, told
# apart by a registration descriptor. DVB's alternative (stream_type 0x06 with an AC-3 descriptor)
# is not what HLS players look for.
STREAM_TYPE_AC3 = 0x81
STREAM_TYPE_EAC3 = 0x87
STREAM_TYPE_H264 = 0x1B  # ITU-T H.264 | ISO/IEC 14496-10 video
STREAM_TYPE_HEVC = 0x24  # ITU-T H.265 | ISO/IEC 23008-2 video

# ISO 639 language descriptor (13818-1 2.6.18), carried for audio so players
# can label the rendition even when they look at the TS rather than the playlist.
ISO_639_LANGUAGE_DESCRIPTOR = 0x0A
AUDIO_TYPE_UNDEFINED = 0x00
# Registration descriptor (13818-1 2.6.8): a format_identifier registered with SMPTE-RA, which
# is what names a user-private stream type: ffmpeg, for one, reads 0x87 as E-AC-3 only with 'EAC3'
# (alone it is Blu-ray's meaning of the number), as ATSC A/52 and ffmpeg's own muxer write it.
REGISTRATION_DESCRIPTOR = 0x05
FORMAT_AC3 = b"AC-3"
FORMAT_EAC3 = b"EAC3"

_SECTION_VERSION = 0  # tables never change within a stream


def _crc32_mpeg2_table() -> np.ndarray:
    """The 256-entry table for CRC-32/MPEG-2: polynomial 0x04C11DB7, MSB
    first, init 0xFFFFFFFF, no reflection, no final XOR (13818-1 annex A)."""
    crc = np.arange(256, dtype=np.uint32) << np.uint32(24)
    for _ in range(8):
        top = (crc & np.uint32(0x80000000)) != 0
        crc = np.where(top, (crc << np.uint32(1)) ^ np.uint32(0x04C11DB7), crc << np.uint32(1))
    return crc.astype(np.uint32)


_CRC_TABLE: tuple[int, ...] = tuple(int(v) for v in _crc32_mpeg2_table())


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 of ``data``; a PSI section ends with this over the section
    so that the CRC of the whole section including its CRC field is 0."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def _section(table_id: int, table_id_extension: int, body: bytes) -> bytes:
    """A long-form PSI section: header, ``body``, CRC32."""
    # section_length counts the bytes after the length field: 5 header bytes
    # (extension, version, section numbers), the body and the 4-byte CRC.
    section_length = 5 + len(body) + 4
    header = struct.pack(
        ">BHHBBB",
        table_id,
        # section_syntax_indicator=1, '0', 2 reserved bits, 12-bit length
        0xB000 | section_length,
        table_id_extension,
        # 2 reserved bits, version_number, current_next_indicator=1
        0xC0 | (_SECTION_VERSION << 1) | 0x01,
        0,  # section_number
        0,  # last_section_number
    )
    section = header + body
    return section + struct.pack(">I", crc32_mpeg2(section))


@lru_cache(maxsize=None)
def pat_section() -> bytes:
    """The PAT: program PROGRAM_NUMBER lives at PMT_PID."""
    body = struct.pack(">HH", PROGRAM_NUMBER, 0xE000 | PMT_PID)  # 3 reserved bits + PID
    return _section(PAT_TABLE_ID, TRANSPORT_STREAM_ID, body)


@lru_cache(maxsize=64)
def pmt_section(stream_type: int, pid: int, language: str | None = None, registration: bytes | None = None,
                descriptors: bytes = b"") -> bytes:
    """The PMT of a one-stream program whose PCR travels on the stream's own PID; ``registration`` is the
    stream's format_identifier, for a user-private stream type; ``descriptors``: more ES descriptors, whole
    (SAMPLE-AES signalling, packager/ts/sample_aes.py)."""
    es_info = descriptors
    if registration is not None:
        es_info += bytes((REGISTRATION_DESCRIPTOR, len(registration))) + registration
    if language and len(language) == 3 and language.isascii() and language != "und":
        es_info += bytes((ISO_639_LANGUAGE_DESCRIPTOR, 4)) + language.encode("ascii") + bytes((AUDIO_TYPE_UNDEFINED,))
    body = struct.pack(
        ">HHBHH",
        0xE000 | pid,  # 3 reserved bits + PCR_PID
        0xF000,  # 4 reserved bits + program_info_length = 0
        stream_type,
        0xE000 | pid,  # 3 reserved bits + elementary_PID
        0xF000 | len(es_info),  # 4 reserved bits + ES_info_length
    ) + es_info
    return _section(PMT_TABLE_ID, PROGRAM_NUMBER, body)


def psi_packet(pid: int, section: bytes, continuity_counter: int) -> bytes:
    """One TS packet carrying a whole section: PUSI set, pointer_field 0,
    payload only (adaptation_field_control '01'), 0xFF padding after the CRC."""
    header = bytes((SYNC_BYTE, 0x40 | (pid >> 8), pid & 0xFF, 0x10 | (continuity_counter & 0x0F), 0x00))
    packet = header + section
    if len(packet) > PACKET_SIZE:  # pragma: no cover - our tables are tiny
        raise ValueError("PSI section does not fit one packet")
    return packet + b"\xff" * (PACKET_SIZE - len(packet))
