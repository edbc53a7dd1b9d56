"""'cbcs' common encryption of fMP4 segments (ISO/IEC 23001-7): what HLS calls SAMPLE-AES over fMP4.

The samples are encrypted in place with AES-128-CBC, no padding, so sample sizes (trun, byte counts) do not
change; the moof says how (senc, saiz, saio, and a 'seig' sample group naming the key of the fragment):

* **H.264 video**: subsample encryption. Each slice NAL unit (types 1 and 5) longer than 48 bytes keeps its
  length prefix and at least 32 bytes clear (the NAL header and, in practice, the slice header: the same
  leader as HLS SAMPLE-AES over TS), then its protected range, a multiple of 16 bytes that ends where the
  NAL unit does, follows the 1:9 pattern: one 16-byte block encrypted, nine clear. Other NAL units (SPS,
  PPS, SEI, AUD) and short slices are clear bytes of the next subsample.
* **AAC audio**: whole-sample encryption, every whole 16-byte block (no pattern: 0:0 in tenc); the
  trailing partial block stays clear. Its senc lists the samples with no entries (no subsamples, no IV),
  and there is no saiz/saio: readers fall back to tenc's (or seig's) constant IV, as shaka-packager writes it.

The IV is constant (in tenc and in the fragment's seig entry; 16 bytes) and every protected range (a NAL
unit's, or an audio sample's) starts the CBC chain from it afresh; within one range the chain runs on from
encrypted block to encrypted block across the clear ones. The init segment declares the scheme: the sample
entry becomes 'encv'/'enca' with a sinf (frma: the original format, schm: 'cbcs' 1.0, schi/tenc: pattern,
the key id of the first key, the IV), and the moov carries a W3C common-system pssh naming that key id
(what ClearKey players read). Later keys (rotation) are named per fragment by sbgp + sgpd 'seig'.

Pure and synchronous; the cipher is `cryptography`'s (AES-NI).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from packager.errors import CbcsTooManySubsamples, MalformedMedia, SampleAesUnsupported
from packager.media import Track

from .boxes import Box, FullBox, u32

BLOCK = 16
SCHEME = b"cbcs"
SCHEME_VERSION = 0x0001_0000  # 1.0
VIDEO_PATTERN = (1, 9)  # crypt, skip: 23001-7 10.4 recommends 1:9 for video
AUDIO_PATTERN = (0, 0)  # no pattern: every whole block of the sample (shaka-packager writes the same)
NAL_LEADER = 32  # clear bytes at the head of an encrypted slice NAL unit, after its length prefix
NAL_MIN_ENCRYPTED = NAL_LEADER + BLOCK  # shorter slices stay clear (no whole block after the leader)
H264_SLICE_TYPES = (1, 5)
MAX_SUBSAMPLES = (255 - 2) // 6  # saiz sizes are one byte: 2 + 6 per subsample
MAX_CLEAR = 0xFFFF  # BytesOfClearData is 16 bits
#: the W3C "common" system id (Common Encryption, W3C, https://www.w3.org/TR/eme-initdata-cenc/): a pssh that
#: lists key ids, which ClearKey players read to ask for the keys
COMMON_SYSTEM_ID = bytes.fromhex("1077efecc0b24d02ace33c1e52e2fb4b")
SEIG = b"seig"
#: sample_group_description_index of the first group description inside the fragment (14496-12 8.9.4)
FRAGMENT_LOCAL_GROUP = 0x10001
SENC_ENTRIES_AT = 12 + 4  # senc's full box header and sample_count precede its first entry


@dataclass(frozen=True)
class CbcsKey:
    """The key a fragment is encrypted with: 16-byte key, 16-byte key id (KID) and the constant IV."""

    key: bytes
    kid: bytes
    iv: bytes

    def __post_init__(self) -> None:
        if (len(self.key), len(self.kid), len(self.iv)) != (BLOCK, BLOCK, BLOCK):
            raise ValueError("cbcs key, key id and IV are 16 bytes each")


def check_track(track: Track) -> None:
    """SampleAesUnsupported unless cbcs here covers ``track`` (H.264 video, AAC audio)."""
    if track.kind == "video" and track.fourcc in ("avc1", "avc3") and track.video is not None:
        return
    if track.kind == "audio" and track.audio is not None and track.audio.codec == "aac":
        return
    codec = track.audio.codec if track.kind == "audio" and track.audio is not None else track.fourcc
    raise SampleAesUnsupported(f"SAMPLE-AES (cbcs) covers H.264 video and AAC audio only; this {track.kind} rendition is {codec}")


def pattern(track: Track) -> tuple[int, int]:
    return VIDEO_PATTERN if track.kind == "video" else AUDIO_PATTERN


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class EncryptedSamples:
    """A segment's sample data encrypted, with each sample's subsamples ((clear, protected) pairs; empty for
    whole-sample encryption)."""

    data: bytearray  # joined into the segment as it is: no second copy
    subsamples: list[list[tuple[int, int]]]


def encrypt_samples(track: Track, data, sizes: np.ndarray, key: CbcsKey) -> EncryptedSamples:
    """The samples of one fragment (``data`` split by ``sizes``) encrypted in place of a copy."""
    out = bytearray(data)
    view = memoryview(out)
    starts = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)[:-1])).tolist()
    sizes_list = np.asarray(sizes, dtype=np.int64).tolist()
    subsamples: list[list[tuple[int, int]]] = []
    crypt = _Crypt(key, out)
    if track.kind == "video":
        length_size = track.video.nal_length_size
        for start, size in zip(starts, sizes_list):
            subsamples.append(_encrypt_video_sample(view, start, size, length_size, crypt))
    else:
        for start, size in zip(starts, sizes_list):
            crypt.blocks(start, size // BLOCK, 1)
            subsamples.append([])
    view.release()
    return EncryptedSamples(out, subsamples)


class _Crypt:
    """CBC from the constant IV over the 16-byte blocks at ``start``, ``start + stride * 16``, ... of ``buffer``,
    in place. One Cipher per fragment; an encryptor per protected range (each starts from the IV)."""

    def __init__(self, key: CbcsKey, buffer: bytearray):
        self._cipher = Cipher(algorithms.AES(key.key), modes.CBC(key.iv))
        self._bytes = np.frombuffer(buffer, dtype=np.uint8)
        self._blocks = np.arange(BLOCK, dtype=np.int64)

    def blocks(self, start: int, count: int, stride: int) -> None:
        if count <= 0:
            return
        encryptor = self._cipher.encryptor()
        if stride == 1:
            end = start + count * BLOCK
            self._bytes[start:end] = np.frombuffer(encryptor.update(self._bytes[start:end]), dtype=np.uint8)
            return
        at = start + stride * BLOCK * np.arange(count, dtype=np.int64)
        index = (at[:, None] + self._blocks).ravel()
        self._bytes[index] = np.frombuffer(encryptor.update(self._bytes[index].tobytes()), dtype=np.uint8)


def _encrypt_video_sample(view: memoryview, start: int, size: int, length_size: int, crypt: _Crypt) -> list[tuple[int, int]]:
    """Encrypt one H.264 sample's slices; its subsamples, clear bytes (other NAL units) folded forward."""
    subsamples: list[tuple[int, int]] = []
    clear = 0
    pos, end = start, start + size
    while pos < end:
        if pos + length_size > end:
            raise MalformedMedia(f"a NAL unit length at sample byte {pos - start} runs past the sample's {size} bytes")
        length = int.from_bytes(view[pos : pos + length_size], "big")
        nal = pos + length_size
        if nal + length > end:
            raise MalformedMedia(f"a NAL unit of {length} bytes runs past the end of its {size}-byte sample")
        protected = _protected_bytes(view[nal] & 0x1F if length else 0, length)
        if protected:
            clear += length_size + length - protected
            subsamples += _clear_runs(clear)
            subsamples[-1] = (subsamples[-1][0], protected)
            crypt.blocks(nal + length - protected, -(-protected // (BLOCK * 10)), 10)
            clear = 0
        else:
            clear += length_size + length
        pos = nal + length
    if clear or not subsamples:
        subsamples += _clear_runs(clear)
    if len(subsamples) > MAX_SUBSAMPLES:  # never leave a slice clear to fit: refuse the segment
        raise CbcsTooManySubsamples(
            f"a frame of {len(subsamples)} encryption subsamples (one per slice, and one per 64 KiB of clear bytes "
            f"between them); cbcs here describes at most {MAX_SUBSAMPLES} per frame (its saiz size is one byte): "
            "encode with fewer slices per frame")
    return subsamples


def _protected_bytes(nal_type: int, length: int) -> int:
    """The protected tail of a NAL unit: whole blocks after at least the 32-byte leader; 0 = all clear."""
    if nal_type not in H264_SLICE_TYPES or length < NAL_MIN_ENCRYPTED:
        return 0
    return (length - NAL_LEADER) // BLOCK * BLOCK


def _clear_runs(clear: int) -> list[tuple[int, int]]:
    """Subsamples of ``clear`` bytes, none with more than BytesOfClearData holds (the last one is extended)."""
    runs = [(MAX_CLEAR, 0)] * (clear // MAX_CLEAR)
    return runs + [(clear % MAX_CLEAR, 0)] if clear % MAX_CLEAR or not runs else runs


# --------------------------------------------------------------------------- moof boxes


@dataclass(frozen=True)
class SampleEncryptionBox(FullBox):
    """senc: per sample, no IV (constant IV) and, for video, the subsamples."""

    FOURCC = b"senc"
    subsamples: tuple[tuple[tuple[int, int], ...], ...]
    use_subsamples: bool

    def flags(self) -> int:
        return 0x2 if self.use_subsamples else 0

    def payload(self):
        yield u32(len(self.subsamples))
        if self.use_subsamples:
            yield b"".join(_sample_info(sample) for sample in self.subsamples)


def _sample_info(sample: tuple[tuple[int, int], ...]) -> bytes:
    return struct.pack(">H", len(sample)) + b"".join(struct.pack(">HI", clear, protected) for clear, protected in sample)


@dataclass(frozen=True)
class SampleAuxiliaryInformationSizesBox(FullBox):
    """saiz: the size of each sample's senc entry."""

    FOURCC = b"saiz"
    sizes: tuple[int, ...]

    def payload(self):
        # default_sample_info_size 0 means "sizes follow", so a table of zeros is written as one
        uniform = len(set(self.sizes)) == 1 and self.sizes[0] > 0
        yield struct.pack(">BI", self.sizes[0] if uniform else 0, len(self.sizes))
        if not uniform:
            yield bytes(self.sizes)


@dataclass(frozen=True)
class SampleAuxiliaryInformationOffsetsBox(FullBox):
    """saio: where the first senc entry is, from the moof's first byte (tfhd default-base-is-moof)."""

    FOURCC = b"saio"
    offset: int

    def payload(self):
        yield struct.pack(">II", 1, self.offset)


@dataclass(frozen=True)
class SampleToGroupBox(FullBox):
    """sbgp: every sample of the fragment in its one 'seig' group."""

    FOURCC = b"sbgp"
    sample_count: int

    def payload(self):
        yield SEIG + struct.pack(">III", 1, self.sample_count, FRAGMENT_LOCAL_GROUP)


@dataclass(frozen=True)
class SampleGroupDescriptionBox(FullBox):
    """sgpd 'seig' (23001-7 6): the fragment's key id, pattern and constant IV."""

    FOURCC = b"sgpd"
    entry: bytes

    def version(self) -> int:
        return 1

    def payload(self):
        yield SEIG + struct.pack(">II", len(self.entry), 1) + self.entry


def encryption_entry(crypt_skip: tuple[int, int], key: CbcsKey) -> bytes:
    """The fields tenc and seig share: pattern, isProtected, Per_Sample_IV_Size 0, KID, the constant IV."""
    crypt, skip = crypt_skip
    return struct.pack(">BBBB", 0, crypt << 4 | skip, 1, 0) + key.kid + bytes((BLOCK,)) + key.iv


def fragment_boxes(track: Track, samples: EncryptedSamples, key: CbcsKey, at: int) -> tuple[Box, ...]:
    """sbgp, sgpd, saiz, saio and senc of a fragment (audio: sbgp, sgpd, senc), written at the end of its traf,
    ``at`` bytes from the moof's first byte (saio points into senc)."""
    video = track.kind == "video"
    infos = tuple(tuple(s) for s in samples.subsamples)
    groups = (SampleToGroupBox(len(infos)), SampleGroupDescriptionBox(encryption_entry(pattern(track), key)))
    if not video:  # no auxiliary information to point at: the senc only counts the samples
        return groups + (SampleEncryptionBox(infos, False),)
    before = groups + (SampleAuxiliaryInformationSizesBox(tuple(2 + 6 * len(s) for s in infos)),)
    senc_entries = at + sum(map(len, before)) + len(SampleAuxiliaryInformationOffsetsBox(0)) + SENC_ENTRIES_AT
    return before + (SampleAuxiliaryInformationOffsetsBox(senc_entries), SampleEncryptionBox(infos, video))


# --------------------------------------------------------------------------- init boxes


def protected_sample_entry(track: Track, key: CbcsKey) -> bytes:
    """The track's sample entry as 'encv'/'enca' + sinf (frma, schm, schi/tenc), its own boxes kept."""
    entry = bytes(track.sample_entry)
    size, original = struct.unpack_from(">I4s", entry)
    if size != len(entry):
        raise MalformedMedia(f"track {track.track_id}: sample entry {original!r} says {size} bytes, has {len(entry)}")
    fields = encryption_entry(pattern(track), key)
    tenc = struct.pack(">I4sI", 12 + len(fields), b"tenc", 1 << 24) + fields  # version 1: the pattern byte
    schm = struct.pack(">I4sI4sI", 20, b"schm", 0, SCHEME, SCHEME_VERSION)
    frma = struct.pack(">I4s4s", 12, b"frma", original)
    schi = struct.pack(">I4s", 8 + len(tenc), b"schi") + tenc
    sinf_body = frma + schm + schi
    sinf = struct.pack(">I4s", 8 + len(sinf_body), b"sinf") + sinf_body
    body = entry[8:] + sinf
    return struct.pack(">I4s", 8 + len(body), b"encv" if track.kind == "video" else b"enca") + body


@dataclass(frozen=True)
class ProtectionSystemHeaderBox(FullBox):
    """pssh version 1 of the W3C common system: the key ids, no system data."""

    FOURCC = b"pssh"
    kids: tuple[bytes, ...]

    def version(self) -> int:
        return 1

    def payload(self):
        yield COMMON_SYSTEM_ID + u32(len(self.kids)) + b"".join(self.kids) + u32(0)
