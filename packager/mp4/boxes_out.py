"""Boxes of a progressive (non-fragmented) MP4 moov, for :mod:`packager.mp4.writer`.

Built on :mod:`packager.fmp4.boxes` (one ``payload()`` per box gives both its
bytes and its size) and reusing its containers and the boxes that do not
differ (hdlr, vmhd, smhd, dinf, stsd). What differs from an fMP4 init segment:
headers carry real durations (version 1 when they pass 32 bits), tracks have
an edit list, and the sample tables are full, each packed from numpy columns
in one call (no Python loop per sample).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedMedia
from ..fmp4.boxes import (
    I32_MAX,
    I32_MIN,
    U32_MAX,
    ContainerBox,
    FullBox,
    u32,
)

U64_MAX = 2**64 - 1


def _fits_u32(*values: int) -> bool:
    return all(0 <= v <= U32_MAX for v in values)


def _check(name: str, values: np.ndarray, low: int, high: int) -> None:
    if values.size and (int(values.min()) < low or int(values.max()) > high):
        raise UnsupportedMedia(f"'{name}' value outside [{low}, {high}]: {int(values.min())}..{int(values.max())}")


def _pack(columns: list[np.ndarray], dtype: str) -> bytes:
    """Rows of the given columns, big-endian ``dtype`` each (int64 -> u4 keeps two's complement)."""
    if not columns or columns[0].size == 0:
        return b""
    return np.column_stack([np.asarray(c, dtype=np.int64) for c in columns]).astype(dtype).tobytes()


def runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-length encoding: (run lengths, run values)."""
    values = np.asarray(values, dtype=np.int64)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.concatenate(([0], np.flatnonzero(values[1:] != values[:-1]) + 1))
    lengths = np.diff(np.append(starts, values.size))
    return lengths, values[starts]


# --------------------------------------------------------------------------- file and movie level


# --------------------------------------------------------------------------- sample tables


@dataclass(frozen=True)
class _TableBox(FullBox):
    """A full box: entry_count then ``rows`` (already packed)."""

    count: int
    rows: bytes
    box_version: int = 0

    def version(self) -> int:
        return self.box_version

    def payload(self):
        yield u32(self.count)
        yield self.rows


@dataclass(frozen=True)
class TimeToSampleBox(_TableBox):
    FOURCC = b"stts"

    @classmethod
    def from_durations(cls, durations: np.ndarray) -> TimeToSampleBox:
        _check("stts", durations, 0, U32_MAX)
        lengths, values = runs(durations)
        return cls(int(lengths.size), _pack([lengths, values], ">u4"))


@dataclass(frozen=True)
class CompositionOffsetBox(_TableBox):
    """ctts: version 1 (signed offsets) only when an offset is negative."""

    FOURCC = b"ctts"

    @classmethod
    def from_offsets(cls, offsets: np.ndarray) -> CompositionOffsetBox:
        lengths, values = runs(offsets)
        signed = bool(values.size) and int(values.min()) < 0
        _check("ctts", values, I32_MIN if signed else 0, I32_MAX if signed else U32_MAX)
        return cls(int(lengths.size), _pack([lengths, values], ">u4"), 1 if signed else 0)


@dataclass(frozen=True)
class SyncSampleBox(_TableBox):
    FOURCC = b"stss"

    @classmethod
    def from_keyframes(cls, keyframes: np.ndarray) -> SyncSampleBox:
        numbers = np.flatnonzero(keyframes) + 1
        return cls(int(numbers.size), _pack([numbers], ">u4"))


@dataclass(frozen=True)
class SampleSizeBox(FullBox):
    FOURCC = b"stsz"
    sizes: np.ndarray

    def payload(self):
        sizes = self.sizes
        _check("stsz", sizes, 0, U32_MAX)
        if sizes.size and bool((sizes == sizes[0]).all()):
            yield struct.pack(">II", int(sizes[0]), int(sizes.size))  # one size for all
        else:
            yield struct.pack(">II", 0, int(sizes.size))
            yield _pack([sizes], ">u4")


@dataclass(frozen=True)
class SampleToChunkBox(_TableBox):
    FOURCC = b"stsc"

    @classmethod
    def from_chunk_counts(cls, samples_per_chunk: np.ndarray) -> SampleToChunkBox:
        """One row per run of chunks with the same sample count (first_chunk is 1-based)."""
        lengths, values = runs(samples_per_chunk)
        first_chunks = np.concatenate(([0], np.cumsum(lengths)[:-1])) + 1 if lengths.size else lengths
        description = np.ones_like(values)
        return cls(int(values.size), _pack([first_chunks, values, description], ">u4"))


@dataclass(frozen=True)
class ChunkOffsetBox(_TableBox):
    FOURCC = b"stco"

    @classmethod
    def from_offsets(cls, offsets: np.ndarray) -> ChunkOffsetBox:
        _check("stco", offsets, 0, U32_MAX)
        return cls(int(offsets.size), _pack([offsets], ">u4"))


@dataclass(frozen=True)
class ChunkLargeOffsetBox(_TableBox):
    FOURCC = b"co64"

    @classmethod
    def from_offsets(cls, offsets: np.ndarray) -> ChunkLargeOffsetBox:
        _check("co64", offsets, 0, 2**63 - 1)
        return cls(int(offsets.size), _pack([offsets], ">u8"))


#: Largest mdat whose size fits the 32-bit box header (a name, so tests can lower it).
MDAT_32BIT_LIMIT = U32_MAX


def mdat_header(payload_size: int) -> bytes:
    """The mdat box header for ``payload_size`` bytes: 64-bit largesize when it does not fit 32 bits."""
    if payload_size + 8 <= MDAT_32BIT_LIMIT:
        return struct.pack(">I4s", payload_size + 8, b"mdat")
    return struct.pack(">I4sQ", 1, b"mdat", payload_size + 16)
