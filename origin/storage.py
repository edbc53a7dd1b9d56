"""Where flavor bytes come from: a small byte-range interface.

The packager never reads files; origin/ does, through :class:`Storage`. Local
files now; remote HTTP/object storage implements the same three methods.
Reads are positional (``os.pread``) and batched per call so a segment's
reads cost one thread hop, not one per range.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import AsyncIterator, Protocol, Sequence

import aiofiles

from packager.media import ByteRange


STREAM_CHUNK = 256 * 1024


class StorageError(Exception):
    """The storage could not deliver bytes (missing file, I/O error, remote failure)."""


class StorageChanged(StorageError):
    """The object changed between its stat and a read: nothing read may be mixed with the old index (502)."""


@dataclass(frozen=True)
class ObjectStat:
    size: int
    mtime_ns: int

    @property
    def version(self) -> str:
        """Changes whenever the object does: part of cache keys and ETags."""
        return f"{self.size:x}-{self.mtime_ns:x}"


class Storage(Protocol):
    async def stat(self, key: str) -> ObjectStat: ...

    async def read(self, key: str, ranges: Sequence[ByteRange]) -> list[bytes]: ...

    def read_sync(self, key: str, ranges: Sequence[ByteRange]) -> list[bytes]: ...

    def stream(self, key: str, start: int, length: int) -> AsyncIterator[bytes]:
        """``length`` bytes from ``start`` in chunks of at most STREAM_CHUNK, never all in memory."""
        ...


class LocalStorage:
    """Files under a root folder; keys are paths relative to it (already validated by the catalog).

    ``follow_symlinks`` (``[server] follow_symlinks``, default true): a key
    whose folders or file are symbolic links is read through them, wherever
    they point (a library of links into a storage mount). A key itself can
    never climb out of the root (no "..", not absolute). When false, a key
    that resolves outside the root or through any link is refused: the
    catalog refuses those first, with the reason (origin/catalog.py).
    """

    def __init__(self, root: Path, follow_symlinks: bool = True) -> None:
        self.root = root.resolve()
        self.follow_symlinks = follow_symlinks
        self._paths: dict[str, Path] = {}
        self._stats: dict[str, ObjectStat] = {}  # the last stat of each key: what its index was built from

    def path(self, key: str) -> Path:
        """The file of ``key``: links followed or refused as configured.

        Resolving costs several lstat calls, and a segment can take hundreds of
        reads: remember the answer per key (bounded: keys are catalog flavors).
        """
        path = self._paths.get(key)
        if path is None:
            parts = PurePosixPath(key).parts
            if not parts or PurePosixPath(key).is_absolute() or any(p in ("..", ".") for p in parts) or "\\" in key or "\0" in key:
                raise StorageError(f"key {key!r} is not a path inside the media root")
            path = (self.root / key).resolve()
            if not self.follow_symlinks and (not path.is_relative_to(self.root) or path != self.root.joinpath(*parts)):
                raise StorageError(f"key {key!r} goes through a symbolic link and [server] follow_symlinks = false")
            if len(self._paths) > 100_000:
                self._paths.clear()
            self._paths[key] = path
        return path

    def stat_sync(self, key: str) -> ObjectStat:
        # resolved anew at each stat (MediaService asks once a second at most): a link pointed elsewhere, or a
        # moved target, shows up as a new file within that time, as a replaced regular file does
        self._paths.pop(key, None)
        try:
            info = os.stat(self.path(key))
        except OSError as exc:
            raise StorageError(f"{key}: {exc.strerror}") from None
        stat = self._stats[key] = ObjectStat(info.st_size, info.st_mtime_ns)
        return stat

    async def stat(self, key: str) -> ObjectStat:
        return self.stat_sync(key)  # a stat is a cached metadata lookup: not worth a thread hop

    def read_sync(self, key: str, ranges: Sequence[ByteRange]) -> list[bytes]:
        try:
            fd = os.open(self.path(key), os.O_RDONLY)
        except OSError as exc:
            raise StorageError(f"{key}: {exc.strerror}") from None
        try:
            self._check_unchanged(key, fd)
            chunks = []
            for r in ranges:
                try:
                    data = os.pread(fd, r.size, r.offset)
                except OSError as exc:  # a folder named like a flavor, an I/O error: this key's failure only
                    raise StorageError(f"{key}: {exc.strerror}") from None
                if len(data) != r.size:
                    raise StorageError(f"{key}: short read at offset {r.offset} ({len(data)} of {r.size} bytes)")
                chunks.append(data)
            return chunks
        finally:
            os.close(fd)

    async def read(self, key: str, ranges: Sequence[ByteRange]) -> list[bytes]:
        return await asyncio.to_thread(self.read_sync, key, ranges)

    def _check_unchanged(self, key: str, fd: int) -> None:
        """A file replaced since its last stat must not be read with the old index: its bytes are elsewhere."""
        expected = self._stats.get(key)
        if expected is None:
            return
        info = os.fstat(fd)
        if (info.st_size, info.st_mtime_ns) != (expected.size, expected.mtime_ns):
            raise StorageChanged(f"{key}: the file changed since it was indexed; a retry uses the new one")

    async def stream(self, key: str, start: int, length: int) -> AsyncIterator[bytes]:
        async with aiofiles.open(self.path(key), "rb") as fh:
            await fh.seek(start)
            remaining = length
            while remaining > 0:
                chunk = await fh.read(min(STREAM_CHUNK, remaining))
                if not chunk:
                    break  # the file shrank under us: the client sees a short body, not a hang
                remaining -= len(chunk)
                yield chunk


class MemoryStorage:
    """In-memory twin for tests: objects are byte strings."""

    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects = dict(objects or {})
        self.reads = 0

    async def stat(self, key: str) -> ObjectStat:
        if key not in self.objects:
            raise StorageError(f"{key}: no such object")
        return ObjectStat(len(self.objects[key]), 0)

    def read_sync(self, key: str, ranges: Sequence[ByteRange]) -> list[bytes]:
        data = self.objects.get(key)
        if data is None:
            raise StorageError(f"{key}: no such object")
        self.reads += 1
        out = [data[r.offset : r.offset + r.size] for r in ranges]
        if any(len(chunk) != r.size for chunk, r in zip(out, ranges)):
            raise StorageError(f"{key}: short read")
        return out

    async def read(self, key: str, ranges: Sequence[ByteRange]) -> list[bytes]:
        return self.read_sync(key, ranges)

    async def stream(self, key: str, start: int, length: int) -> AsyncIterator[bytes]:
        data = self.objects[key]
        for at in range(start, start + length, STREAM_CHUNK):
            yield data[at : min(at + STREAM_CHUNK, start + length)]
