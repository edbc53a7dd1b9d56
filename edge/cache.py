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
    """Byte-bounded LRU of immutable bodies."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self.size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

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
        self._items[key] = body
        self.size += len(body)
        while self.size > self.capacity:
            _, evicted = self._items.popitem(last=False)
            self.size -= len(evicted)

    def discard_prefix(self, prefix: str) -> int:
        doomed = [k for k in self._items if k.startswith(prefix)]
        for key in doomed:
            self.size -= len(self._items.pop(key))
        return len(doomed)

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

    The workers of one node share the folder (edge/workers.py): at start each
    indexes its shard of the files (by name), then the files it writes, and
    keeps its index within its share of the capacity, so together they stay
    within ``cache.disk_mb``. A file a sibling wrote is read on a miss but
    left in the sibling's index (its size and eviction counted once).
    """

    MAGIC = b"VGSEG001"
    SUFFIX = ".seg"

    def __init__(self, root: Path, capacity_bytes: int, shard: tuple[int, int] = (0, 1)) -> None:
        self.root = root
        self.capacity = capacity_bytes
        self.shard = shard  # (this worker's index, the node's workers): which files it indexes at start
        self.size = 0
        self.dropped = 0
        self._index: OrderedDict[str, tuple[int, str]] = OrderedDict()  # file name -> (size, key), oldest first
        root.mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        index, count = self.shard
        # each file in one worker's index at start, so the workers' shares add up to the whole capacity
        files = [p for p in self.root.glob(f"*{self.SUFFIX}") if count == 1 or int(p.name[:8], 16) % count == index]
        for stale in self.root.glob("*.tmp"):
            if _age(stale) > TMP_ABANDONED_AFTER:  # a younger one may be a sibling worker's write in progress
                stale.unlink(missing_ok=True)
        for path in sorted(files, key=lambda p: p.stat().st_mtime):
            key = self._stored_key(path)
            if key is None:
                path.unlink(missing_ok=True)
                self.dropped += 1
                continue
            size = path.stat().st_size
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
        known = name in self._index
        try:
            # a name this process does not know may have been written by a sibling worker sharing the folder
            data = (self.root / name).read_bytes()
        except OSError:
            self._forget(name)
            return None
        body = self._verify(data, key)
        if body is None:
            log.warning("disk cache: dropping corrupt entry %s", name)
            self.dropped += 1
            self._remove(name)
            return None
        if known:  # a sibling's file stays in the sibling's index only: each file counted once, by one worker
            self._index.move_to_end(name)
        return body

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
        tmp = self.root / f"{name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(header)
                fh.write(body)
            os.replace(tmp, self.root / name)
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
        (self.root / name).unlink(missing_ok=True)

    def discard_prefix(self, prefix: str) -> int:
        doomed = [name for name, (_, key) in self._index.items() if key.startswith(prefix)]
        for name in doomed:
            self._remove(name)
        return len(doomed)


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
