"""Synchronous conveniences over a single local file, for the CLI, benchmarks and tests.

The server goes through origin.media (async, cached); these run the same
packager steps with blocking reads.
"""

from __future__ import annotations

import os
from pathlib import Path

from packager.media import MediaIndex, SampleBatch, SampleSpan, Track
from packager.mp4.index import drive, index_reader
from packager.samples import byte_ranges, make_batch


def _read_at(path: Path):
    def read(offset: int, size: int) -> bytes:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(size)

    return read


def read_index_sync(path: str | Path) -> MediaIndex:
    path = Path(path)
    return drive(index_reader(os.path.getsize(path)), _read_at(path))


def read_batch_sync(path: str | Path, track: Track, first: int, stop: int, sequence_number: int = 1) -> SampleBatch:
    span = SampleSpan(first, stop)
    read = _read_at(Path(path))
    chunks = [read(r.offset, r.size) for r in byte_ranges(track, span)]
    return make_batch(track, span, chunks, sequence_number)
