"""HLS AES-128 whole-segment encryption (RFC 8216 section 5.2): AES-128-CBC with PKCS#7 padding.

The IV is the segment's media sequence number as a 128-bit big-endian integer, the RFC's default when
EXT-X-KEY has no IV attribute; our media sequence starts at 1 and equals the segment number, so the
playlist need not carry an IV. The fMP4 init segment stays clear: playlists write EXT-X-MAP before the
first EXT-X-KEY, and a key applies only to the init sections declared after it (RFC 8216 4.3.2.4).

The cipher is `cryptography`'s (OpenSSL, AES-NI); nothing here is hand-written crypto.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .scratch import scratch

BLOCK_BYTES = 16
CHUNK_BYTES = 1 << 16


def sequence_iv(media_sequence: int) -> bytes:
    return media_sequence.to_bytes(BLOCK_BYTES, "big")


def encrypt_segment(body: bytes, key: bytes, media_sequence: int) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CBC(sequence_iv(media_sequence))).encryptor()
    size = encrypted_size(len(body))
    whole = len(body) - len(body) % BLOCK_BYTES
    # Into one buffer, 64 KiB at a time: update() returning a new object per call, or one multi-megabyte
    # update(), runs at a third of the cipher's speed (measured on 2 MB: 4.5-5.5 ms against 1.8 ms), and
    # only the last partial block goes through the padder, which would otherwise copy the whole segment.
    # update_into wants room for a block - 1 more than it is given.
    # The thread's scratch buffer (packager/scratch.py) takes the output, so the returned bytes are the one
    # fresh full-size allocation.
    view, target, written = memoryview(body), memoryview(scratch(size + BLOCK_BYTES - 1)), 0
    for start in range(0, whole, CHUNK_BYTES):
        written += encryptor.update_into(view[start : min(start + CHUNK_BYTES, whole)], target[written:])
    padder = padding.PKCS7(BLOCK_BYTES * 8).padder()
    written += encryptor.update_into(padder.update(bytes(view[whole:])) + padder.finalize(), target[written:])
    encryptor.finalize()  # CBC holds nothing back once the input is whole blocks
    return target[:written].tobytes()


def encrypted_size(clear_size: int) -> int:
    """PKCS#7 always adds 1-16 bytes: a whole block when the size is already a multiple of 16."""
    return (clear_size // BLOCK_BYTES + 1) * BLOCK_BYTES
