"""Packaged-object cache: memory LRU bounded in bytes, optional disk tier, single flight.

Keys are built by the caller from the *parsed* request and the media
version (never from the raw URL), so tokens and other per-viewer query
parameters cannot split the cache or leak between viewers.

    get_or_make(key, make) -> (body, status)
        status is HIT (memory or disk), MISS (we made it) or COALESCED
        (another request was already making it; we waited for that one).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import struct
import time
from collections import OrderedDict
from pathlib import Path
from typing import Awaitable, Callable

log = logging.getLogger("vodgate.cache")

HIT, MISS, COALESCED = "HIT", "MISS", "COALESCED"


class MemoryLRU:
    """Byte-bounded LRU of immutable bodies.

    ``on_drop`` is told the key of every body that leaves (evicted, replaced, purged), so that whoever holds a
    body beside the cache (edge/hot.py) lets go of it too: the bound is then what the process holds."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self.size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self.on_drop: Callable[[str], None] | None = None

    def get(self, key: str) -> bytes | None:
        body = self._items.get(key)
        if body is not None:
            self._items.move_to_end(key)
        return body

    def put(self, key: str, body: bytes) -> None:
        if self.capacity <= 0 or len(body) > self.capacity // 4:  # off; or one huge object must not flush the rest
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old)
            self._dropped(key)
        self._items[key] = body
        self.size += len(body)
        while self.size > self.capacity:
            evicted_key, evicted = self._items.popitem(last=False)
            self.size -= len(evicted)
            self._dropped(evicted_key)

    def discard_prefix(self, prefix: str) -> int:
        doomed = [k for k in self._items if k.startswith(prefix)]
        for key in doomed:
            self.size -= len(self._items.pop(key))
            self._dropped(key)
        return len(doomed)

    def _dropped(self, key: str) -> None:
        if self.on_drop is not None:
            self.on_drop(key)

    def __len__(self) -> int:
        return len(self._items)


TMP_ABANDONED_AFTER = 600.0  # seconds: a temporary file this old was left by a crash, not a write in progress


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


class DiskTier:
    """Bodies in files, bounded in bytes, surviving restarts; torn or corrupt files are dropped.

    File layout: MAGIC, key length (u32), key, body length (u64), blake2b-256
    of the body, body. Written to a temporary name and renamed into place, so
    a crash leaves either the old state or a complete file; anything else that
    fails verification is deleted, never served.

    The workers of one node (edge/workers.py) share ``root``: worker i of N owns
    ``root/w<i>`` (N = 1: ``root`` itself), indexes, evicts and purges only
    there, within ``capacity / N``, so together they stay within
    ``cache.disk_mb`` and every file is in exactly one index. On a miss a
    worker also reads its siblings' folders (a segment one worker packaged is
    not packaged again); :meth:`sweep_prefix` purges every folder, so files of
    a worker that is down are not left behind. At start a worker takes over
    the files of folders no worker owns any more (the node ran with more
    workers, or with one).
    """

    MAGIC = b"VGSEG001"
    SUFFIX = ".seg"

    def __init__(self, root: Path, capacity_bytes: int, shard: tuple[int, int] = (0, 1)) -> None:
        index, count = shard
        self.root = root
        self.folder = root if count == 1 else root / f"w{index}"  # the files this process owns
        self.siblings = [root / f"w{j}" for j in range(count) if j != index] if count > 1 else []
        self.capacity = capacity_bytes
        self.shard = shard
        self.size = 0
        self.dropped = 0
        self._index: OrderedDict[str, tuple[int, str]] = OrderedDict()  # file name -> (size, key), oldest first
        self.folder.mkdir(parents=True, exist_ok=True)
        self._adopt_orphans()
        self._load()

    def _adopt_orphans(self) -> None:
        """Move in the files of folders no worker of this node owns now (worker 0 takes ``root``'s loose files
        when the node now has workers; worker i takes ``w<j>`` for j >= N with j % N == i)."""
        index, count = self.shard
        orphans: list[Path] = []
        if count > 1 and index == 0:
            orphans.append(self.root)
        for folder in self.root.glob("w*"):
            if not (folder.name[1:].isdigit() and folder.is_dir()):
                continue
            number = int(folder.name[1:])
            owned_now = count > 1 and number < count
            if not owned_now and number % count == index:
                orphans.append(folder)
        for folder in orphans:
            for path in folder.glob(f"*{self.SUFFIX}"):
                try:
                    os.replace(path, self.folder / path.name)
                except OSError:
                    continue  # another worker took it, or it went: nothing to adopt
            if folder != self.root:
                for stale in folder.glob("*.tmp"):
                    stale.unlink(missing_ok=True)
                try:
                    folder.rmdir()
                except OSError:
                    pass

    def _load(self) -> None:
        for stale in self.folder.glob("*.tmp"):
            if _age(stale) > TMP_ABANDONED_AFTER:  # a younger one may be a write in progress of a previous life
                stale.unlink(missing_ok=True)
        found = []
        for path in self.folder.glob(f"*{self.SUFFIX}"):
            try:
                stat = path.stat()
            except OSError:  # gone meanwhile (a purge sweep of a sibling)
                continue
            found.append((stat.st_mtime, stat.st_size, path))
        for _, size, path in sorted(found, key=lambda item: item[0]):
            key = self._stored_key(path)
            if key is None:
                path.unlink(missing_ok=True)
                self.dropped += 1
                continue
            self._index[path.name] = (size, key)
            self.size += size
        self._evict()

    def _stored_key(self, path: Path) -> str | None:
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(self.MAGIC) + 4)
                if len(head) < len(self.MAGIC) + 4 or not head.startswith(self.MAGIC):
                    return None
                (key_len,) = struct.unpack_from(">I", head, len(self.MAGIC))
                raw = fh.read(key_len)
            return raw.decode() if len(raw) == key_len else None
        except (OSError, UnicodeDecodeError):
            return None

    @staticmethod
    def _name(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:40] + DiskTier.SUFFIX

    def get(self, key: str) -> bytes | None:
        name = self._name(key)
        if name not in self._index:
            return self._sibling_copy(name, key)
        try:
            data = (self.folder / name).read_bytes()
        except OSError:
            self._forget(name)
            return None
        body = self._verify(data, key)
        if body is None:
            log.warning("disk cache: dropping corrupt entry %s", name)
            self.dropped += 1
            self._remove(name)
            return None
        self._index.move_to_end(name)
        return body

    def _sibling_copy(self, name: str, key: str) -> bytes | None:
        """A sibling worker's file of ``key``, read but left to the sibling (its index, its eviction)."""
        for folder in self.siblings:
            try:
                data = (folder / name).read_bytes()
            except OSError:
                continue
            body = self._verify(data, key)
            if body is not None:
                return body
        return None

    def _verify(self, data: bytes, key: str) -> bytes | None:
        encoded = key.encode()
        head = len(self.MAGIC) + 4
        if len(data) < head or not data.startswith(self.MAGIC):
            return None
        (key_len,) = struct.unpack_from(">I", data, len(self.MAGIC))
        if data[head : head + key_len] != encoded:
            return None
        at = head + key_len
        if len(data) < at + 8 + 32:
            return None
        (body_len,) = struct.unpack_from(">Q", data, at)
        digest = data[at + 8 : at + 40]
        body = data[at + 40 :]
        if len(body) != body_len or hashlib.blake2b(body, digest_size=32).digest() != digest:
            return None
        return body

    def put(self, key: str, body: bytes) -> None:
        if len(body) > self.capacity // 4:
            return
        encoded = key.encode()
        name = self._name(key)
        header = self.MAGIC + struct.pack(">I", len(encoded)) + encoded
        header += struct.pack(">Q", len(body)) + hashlib.blake2b(body, digest_size=32).digest()
        tmp = self.folder / f"{name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(header)
                fh.write(body)
            os.replace(tmp, self.folder / name)
        except OSError as exc:
            log.warning("disk cache: cannot write %s: %s", name, exc)
            tmp.unlink(missing_ok=True)
            return
        self._forget(name)
        self._index[name] = (len(header) + len(body), key)
        self.size += len(header) + len(body)
        self._evict()

    def _evict(self) -> None:
        while self.size > self.capacity and self._index:
            name = next(iter(self._index))
            self._remove(name)

    def _forget(self, name: str) -> None:
        entry = self._index.pop(name, None)
        if entry is not None:
            self.size -= entry[0]

    def _remove(self, name: str) -> None:
        self._forget(name)
        (self.folder / name).unlink(missing_ok=True)

    def discard_prefix(self, prefix: str) -> int:
        doomed = [name for name, (_, key) in self._index.items() if key.startswith(prefix)]
        for name in doomed:
            self._remove(name)
        return len(doomed)

    def sweep_prefix(self, prefix: str) -> int:
        """Delete the files of ``prefix`` in the siblings' folders, read from their headers: what a worker that
        is down (or being replaced) could not purge itself. Slow (a header read per file): off the event loop."""
        removed = 0
        for folder in self.siblings:
            for path in folder.glob(f"*{self.SUFFIX}"):
                key = self._stored_key(path)
                if key is not None and key.startswith(prefix):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed


class SegmentCache:
    def __init__(self, memory_bytes: int, disk: DiskTier | None = None) -> None:
        self.memory = MemoryLRU(memory_bytes)
        self.disk = disk
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self.stats = {HIT: 0, MISS: 0, COALESCED: 0}

    async def get_or_make(self, key: str, make: Callable[[], Awaitable[bytes]]) -> tuple[bytes, str]:
        body = self.memory.get(key)
        if body is not None:
            return self._count(body, HIT)
        pending = self._pending.get(key)
        if pending is not None:
            return self._count(await asyncio.shield(pending), COALESCED)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume_exception)
        self._pending[key] = future
        try:
            body, status = await self._fill(key, make)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(body)
        finally:
            del self._pending[key]
        return self._count(body, status)

    async def _fill(self, key: str, make: Callable[[], Awaitable[bytes]]) -> tuple[bytes, str]:
        if self.disk is not None:
            body = await asyncio.to_thread(self.disk.get, key)
            if body is not None:
                self.memory.put(key, body)
                return body, HIT
        body = await make()
        self.memory.put(key, body)
        if self.disk is not None:
            await asyncio.to_thread(self.disk.put, key, body)
        return body, MISS

    def derived(self, key: str, make: Callable[[], bytes]) -> bytes:
        """A cheap form of another cached object (a playlist's query-free bytes, from its template), kept in memory
        only and not counted: the lookup of the object it derives from was counted already."""
        body = self.memory.get(key)
        if body is None:
            body = make()
            self.memory.put(key, body)
        return body

    def _count(self, body: bytes, status: str) -> tuple[bytes, str]:
        self.stats[status] += 1
        return body, status

    def purge_prefix(self, prefix: str) -> int:
        """Drop memory entries whose key starts with ``prefix`` (keys start with partner/entry)."""
        removed = self.memory.discard_prefix(prefix)
        if self.disk is not None:
            removed += self.disk.discard_prefix(prefix)
        return removed


def _consume_exception(future: asyncio.Future) -> None:
    # waiters re-raise it; this keeps asyncio from logging "exception never retrieved"
    if not future.cancelled():
        future.exception()
