"""HLS SAMPLE-AES for MPEG-TS: Apple's "MPEG-2 Stream Encryption Format for HTTP Live Streaming".

Only media samples are encrypted, never the TS, PES, NAL or ADTS structure, with AES-128-CBC, no padding,
the IV reset to its original value (the playlist's explicit IV: the media sequence number of the first
segment under the segment's key) at the start of every protected block:

* **H.264** (spec 2.2): NAL units of type 1 and 5 only, as the byte stream carries them (emulation
  prevention bytes included). Their first 32 bytes (the type byte and a 31-byte leader) stay clear; then,
  while more than 16 bytes remain, one 16-byte block is encrypted and up to 144 bytes (nine blocks) stay
  clear; so a NAL unit of 48 bytes or fewer is clear and a last block of 16 bytes or fewer always is. The
  CBC chain runs on across the encrypted blocks of one NAL unit. Emulation prevention is then applied to the
  result ("each NAL unit is formed with start code emulation prevention applied": the ciphertext may emulate
  start codes). A player removes it and decrypts, and so gets the NAL unit back exactly as the encoder wrote
  it, which is what ffmpeg (libavformat/hls_sample_encryption.c) and hls.js hand their decoders.
* **AAC** (spec 2.3.2): per ADTS frame, the header (7 bytes: ours have no CRC) and the next 16 bytes stay
  clear, then every whole 16-byte block is encrypted, a trailing partial block clear; a frame whose raw
  data is 31 bytes or fewer is clear.
* **Signalling** (spec 3.0): PMT stream_type 0xDB (H.264) / 0xCF (AAC) with a private data indicator
  descriptor ('zavc' / 'aacd'); for AAC a registration descriptor 'apad' carries the audio setup
  information (spec 2.3.4: 'zaac', priming, version, the AudioSpecificConfig).

Other codecs (HEVC, AC-3, E-AC-3, MP3) are refused (:class:`SampleAesUnsupported`). Pure and synchronous;
the cipher is `cryptography`'s.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import SampleAesUnsupported
from ..media import Track
from . import psi

__all__ = ["SampleAesUnsupported", "SampleEncryptor", "check_track", "pmt_stream"]

BLOCK = 16
NAL_LEADER = 32  # nal_unit_type byte + 31 clear bytes
NAL_MIN_ENCRYPTED = 48  # NAL units of 48 bytes or fewer are clear
NAL_STRIDE = 160  # one encrypted block, then up to nine clear ones
AUDIO_LEADER = 16  # clear bytes after the ADTS header
H264_SLICE_TYPES = (1, 5)

STREAM_TYPE_H264 = 0xDB
STREAM_TYPE_AAC = 0xCF
PRIVATE_DATA_INDICATOR_DESCRIPTOR = 0x0F  # 13818-1 2.6.28
REGISTRATION_DESCRIPTOR = 0x05
AUDIO_SETUP_FORMAT = b"apad"
AUDIO_SETUP_VERSION = 1
# the apad descriptor repeats the AudioSpecificConfig in the PMT, which must fit one 188-byte packet (with the
# language descriptor and the CRC); encoders write 2-5 bytes, a program config element a few more
MAX_AUDIO_SPECIFIC_CONFIG = 64

_NEEDS_EPB = re.compile(rb"\x00\x00(?=[\x00-\x03])")  # two zeros before a byte that would make a start code


@dataclass(frozen=True)
class SampleEncryptor:
    """The key and IV of one segment (IV: the sequence number of the first segment under its key, 16 bytes
    big-endian, as the playlist's EXT-X-KEY says)."""

    key: bytes
    iv: bytes

    def _cbc(self, data: bytes) -> bytes:
        encryptor = Cipher(algorithms.AES(self.key), modes.CBC(self.iv)).encryptor()
        return encryptor.update(data) + encryptor.finalize()

    def nal_unit(self, nal) -> bytes:
        """An H.264 NAL unit (as the byte stream carries it, no start code) as SAMPLE-AES carries it: unchanged
        unless type 1 or 5 and longer than 48 bytes."""
        nal = bytes(nal)
        if not nal or nal[0] & 0x1F not in H264_SLICE_TYPES or len(nal) <= NAL_MIN_ENCRYPTED:
            return nal
        starts = nal_block_offsets(len(nal))
        data = np.frombuffer(nal, dtype=np.uint8).copy()
        at = (starts[:, None] + np.arange(BLOCK)).ravel()
        data[at] = np.frombuffer(self._cbc(data[at].tobytes()), dtype=np.uint8)
        return _NEEDS_EPB.sub(b"\x00\x00\x03", data.tobytes())

    def adts_frames(self, frames: np.ndarray, sizes: np.ndarray, header_size: int) -> np.ndarray:
        """ADTS frames back to back (``sizes``: raw sizes, each behind ``header_size`` header bytes), encrypted
        in place of a copy."""
        out = np.array(frames, dtype=np.uint8, copy=True)
        pos = 0
        for size in np.asarray(sizes, dtype=np.int64).tolist():
            blocks = audio_blocks(size)
            if blocks:
                a = pos + header_size + AUDIO_LEADER
                b = a + blocks * BLOCK
                out[a:b] = np.frombuffer(self._cbc(out[a:b].tobytes()), dtype=np.uint8)
            pos += header_size + size
        return out


def nal_block_offsets(length: int) -> np.ndarray:
    """Offsets of the encrypted 16-byte blocks in a NAL unit of ``length`` bytes (before our emulation prevention)."""
    if length <= NAL_MIN_ENCRYPTED:
        return np.zeros(0, dtype=np.int64)
    count = (length - NAL_MIN_ENCRYPTED + NAL_STRIDE - 1) // NAL_STRIDE  # blocks with more than 16 bytes from them on
    return NAL_LEADER + NAL_STRIDE * np.arange(count, dtype=np.int64)


def audio_blocks(raw_size: int) -> int:
    """Encrypted 16-byte blocks of an AAC frame of ``raw_size`` bytes after its header."""
    return 0 if raw_size < AUDIO_LEADER + BLOCK else (raw_size - AUDIO_LEADER) // BLOCK


def check_track(track: Track) -> None:
    """SampleAesUnsupported unless SAMPLE-AES over TS covers ``track`` (H.264 video, AAC audio)."""
    if track.kind == "video" and track.fourcc in ("avc1", "avc3"):
        return
    if track.kind == "audio" and track.audio is not None and track.audio.codec == "aac":
        if len(track.audio.audio_specific_config) > MAX_AUDIO_SPECIFIC_CONFIG:
            raise SampleAesUnsupported(
                f"this AAC rendition's AudioSpecificConfig is {len(track.audio.audio_specific_config)} bytes; SAMPLE-AES "
                f"carries it in the PMT, one TS packet, so at most {MAX_AUDIO_SPECIFIC_CONFIG} bytes (encoders write 2-5)")
        return
    codec = track.audio.codec if track.kind == "audio" and track.audio is not None else track.fourcc
    raise SampleAesUnsupported(f"SAMPLE-AES covers H.264 video and AAC audio only; this {track.kind} rendition is {codec}")


def pmt_stream(stream_type: int, audio_specific_config: bytes | None) -> tuple[int, bytes]:
    """(stream_type, ES descriptors) of a clear stream type's SAMPLE-AES form (spec 3.0)."""
    if stream_type == psi.STREAM_TYPE_H264:
        return STREAM_TYPE_H264, _private_data_indicator(b"zavc")
    if stream_type == psi.STREAM_TYPE_AAC_ADTS:
        asc = bytes(audio_specific_config or b"")
        setup = b"zaac" + struct.pack(">HBB", 0, AUDIO_SETUP_VERSION, len(asc)) + asc  # priming 0
        registration = bytes((REGISTRATION_DESCRIPTOR, 4 + len(setup))) + AUDIO_SETUP_FORMAT + setup
        return STREAM_TYPE_AAC, _private_data_indicator(b"aacd") + registration
    raise SampleAesUnsupported(f"SAMPLE-AES does not cover stream type 0x{stream_type:02X}")


def _private_data_indicator(value: bytes) -> bytes:
    return bytes((PRIVATE_DATA_INDICATOR_DESCRIPTOR, 4)) + value
