"""Sample tables (stbl children) expanded into per-sample numpy arrays.

One small function per table, each vectorised: a 6-hour track is a few
hundred thousand rows, so no Python loop may run per sample.

    stts  DecodingTimeToSample   -> durations, dts
    ctts  CompositionOffset      -> cts_offsets (v0 unsigned, v1 signed)
    stss  SyncSample             -> keyframes
    stsz  SampleSize (and stz2)  -> sizes
    stsc  SampleToChunk  + stco/co64 ChunkOffset -> offsets
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import MalformedMedia, TruncatedMedia

# Chunk offsets at or above this are refused: no file is 4 EiB, and below it offset + size stays in int64.
MAX_FILE_OFFSET = 1 << 62


def _table(body: memoryview, name: str, entry_fields: int, dtype: str, header: int = 8) -> np.ndarray:
    """Full box ``version/flags + entry_count`` then ``entry_count`` rows of ``entry_fields``."""
    if len(body) < header:
        raise TruncatedMedia(f"'{name}' box is cut short")
    (count,) = struct.unpack_from(">I", body, header - 4)
    width = np.dtype(dtype).itemsize * entry_fields
    if header + count * width > len(body):
        raise TruncatedMedia(f"'{name}' box holds {count} entries but has room for {(len(body) - header) // width}")
    rows = np.frombuffer(body, dtype=dtype, count=count * entry_fields, offset=header)
    return rows.reshape(count, entry_fields)


def repeat_runs(values: np.ndarray, counts: np.ndarray, limit: int) -> np.ndarray:
    """``np.repeat(values, counts)`` cut at ``limit`` rows.

    Run lengths come from the file: a corrupt count of 4 billion must not make
    us allocate 32 GB before noticing it disagrees with the sample count.
    """
    counts = counts.astype(np.int64)
    ends = np.cumsum(counts)
    if ends.size and ends[-1] > limit:
        keep = int(np.searchsorted(ends, limit, side="left")) + 1
        counts = counts[:keep].copy()
        counts[-1] -= int(ends[keep - 1]) - limit
    return np.repeat(values[: counts.size].astype(np.int64), counts)


def decode_durations(stts: memoryview, sample_count: int) -> np.ndarray:
    rows = _table(stts, "stts", 2, ">u4")
    return _fit(repeat_runs(rows[:, 1], rows[:, 0], sample_count), sample_count, "stts")


def decode_times(durations: np.ndarray) -> np.ndarray:
    dts = np.zeros(durations.shape[0], dtype=np.int64)
    np.cumsum(durations[:-1], out=dts[1:])
    return dts


def composition_offsets(ctts: memoryview | None, sample_count: int) -> np.ndarray:
    if ctts is None:
        return np.zeros(sample_count, dtype=np.int64)
    # Version 0 is nominally unsigned, but writers put negative offsets there
    # too; reading both as signed is what every demuxer does.
    rows = _table(ctts, "ctts", 2, ">i4")
    counts = rows[:, 0].view(">u4")
    return _fit(repeat_runs(rows[:, 1], counts, sample_count), sample_count, "ctts")


def sync_samples(stss: memoryview | None, sample_count: int) -> np.ndarray:
    if stss is None:  # no stss: every sample is a sync sample (ISO 14496-12 8.6.2)
        return np.ones(sample_count, dtype=bool)
    numbers = _table(stss, "stss", 1, ">u4")[:, 0].astype(np.int64)
    if numbers.size and (numbers.min() < 1 or numbers.max() > sample_count):
        raise MalformedMedia(f"'stss' names sample {int(numbers.max())} of {sample_count}")
    keyframes = np.zeros(sample_count, dtype=bool)
    keyframes[numbers - 1] = True
    return keyframes


def sample_sizes(stsz: memoryview | None, stz2: memoryview | None, file_size: int) -> np.ndarray:
    if stsz is not None:
        if len(stsz) < 12:
            raise TruncatedMedia("'stsz' box is cut short")
        constant, count = struct.unpack_from(">II", stsz, 4)
        if constant:
            if constant * count > file_size:
                raise MalformedMedia(f"'stsz' lists {count} samples of {constant} bytes: more than the file holds")
            return np.full(count, constant, dtype=np.int64)
        return _table(stsz, "stsz", 1, ">u4", header=12)[:, 0].astype(np.int64)
    if stz2 is not None:
        if len(stz2) < 12:
            raise TruncatedMedia("'stz2' box is cut short")
        field_size = stz2[7]
        (count,) = struct.unpack_from(">I", stz2, 8)
        if field_size == 16:
            return _table(stz2, "stz2", 1, ">u2", header=12)[:, 0].astype(np.int64)
        if field_size == 8:
            return _table(stz2, "stz2", 1, "u1", header=12)[:, 0].astype(np.int64)
        if field_size == 4:
            packed = _table(stz2, "stz2", 1, "u1", header=12)[: (count + 1) // 2, 0]
            return np.stack([packed >> 4, packed & 0x0F], axis=1).reshape(-1)[:count].astype(np.int64)
        raise MalformedMedia(f"'stz2' field size {field_size} is not 4, 8 or 16")
    raise MalformedMedia("sample table has neither 'stsz' nor 'stz2'")


def sample_offsets(stsc: memoryview, chunk_offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Absolute file offset of each sample from the chunk map and chunk offsets."""
    rows = _table(stsc, "stsc", 3, ">u4").astype(np.int64)
    chunk_count = chunk_offsets.shape[0]
    sample_count = sizes.shape[0]
    if rows.shape[0] == 0:
        if sample_count:
            raise MalformedMedia("'stsc' is empty but the track has samples")
        return np.zeros(0, dtype=np.int64)
    first_chunks = rows[:, 0]
    if first_chunks[0] != 1 or np.any(np.diff(first_chunks) <= 0) or first_chunks[-1] > max(chunk_count, 1):
        raise MalformedMedia("'stsc' first_chunk numbers are not increasing within the chunk count")
    runs = np.diff(np.append(first_chunks, chunk_count + 1))
    per_chunk = np.repeat(rows[:, 1], runs)
    total = int(per_chunk.sum())
    if total < sample_count:
        raise MalformedMedia(f"'stsc'/'stco' map {total} samples but 'stsz' lists {sample_count}")
    chunk_of_sample = repeat_runs(np.arange(chunk_count), per_chunk, sample_count)
    size_before = np.zeros(sample_count, dtype=np.int64)
    np.cumsum(sizes[:-1], out=size_before[1:])
    chunk_first_sample = np.zeros(chunk_count, dtype=np.int64)
    np.cumsum(per_chunk[:-1], out=chunk_first_sample[1:])
    chunk_first_sample = np.minimum(chunk_first_sample, max(sample_count - 1, 0))
    within_chunk = size_before - size_before[chunk_first_sample][chunk_of_sample]
    return chunk_offsets[chunk_of_sample] + within_chunk


def chunk_offsets(stco: memoryview | None, co64: memoryview | None) -> np.ndarray:
    if stco is not None:
        return _table(stco, "stco", 1, ">u4")[:, 0].astype(np.int64)
    if co64 is not None:
        raw = _table(co64, "co64", 1, ">u8")[:, 0]
        if raw.size and int(raw.max()) >= MAX_FILE_OFFSET:
            # as int64 it would wrap negative (or wrap when a size is added) and slip past the end-of-file check
            raise MalformedMedia(f"'co64' holds chunk offset {int(raw.max())}, past the end of any file")
        return raw.astype(np.int64)
    raise MalformedMedia("sample table has neither 'stco' nor 'co64'")


def _fit(values: np.ndarray, sample_count: int, name: str) -> np.ndarray:
    if values.shape[0] == sample_count:
        return values
    if values.shape[0] > sample_count:
        return values[:sample_count]
    raise MalformedMedia(f"'{name}' covers {values.shape[0]} samples of {sample_count}")
