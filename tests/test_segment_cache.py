"""Segment cache: byte bounds, single flight, disk tier integrity, normalized keys over HTTP."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from edge.cache import COALESCED, HIT, MISS, DiskTier, MemoryLRU, SegmentCache


def test_memory_lru_is_bounded_in_bytes():
    lru = MemoryLRU(1000)
    for i in range(20):
        lru.put(f"k{i}", bytes(100))
    assert lru.size <= 1000 and len(lru) == 10
    assert lru.get("k0") is None and lru.get("k19") is not None
    lru.put("huge", bytes(600))  # over a quarter of the capacity: not cached at all
    assert lru.get("huge") is None


def test_single_flight_makes_once_for_100_concurrent_misses():
    cache = SegmentCache(10_000_000)
    calls = 0

    async def make() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"segment"

    async def run():
        return await asyncio.gather(*(cache.get_or_make("k", make) for _ in range(100)))

    results = asyncio.run(run())
    assert calls == 1
    statuses = [status for _, status in results]
    assert statuses.count(MISS) == 1 and statuses.count(COALESCED) == 99
    assert all(body == b"segment" for body, _ in results)


def test_a_failed_make_is_not_cached_and_reaches_every_waiter():
    cache = SegmentCache(10_000_000)
    attempts = 0

    async def make() -> bytes:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("origin down")

    async def run():
        return await asyncio.gather(*(cache.get_or_make("k", make) for _ in range(5)), return_exceptions=True)

    results = asyncio.run(run())
    assert all(isinstance(r, RuntimeError) for r in results)
    asyncio.run(run())
    assert attempts == 2  # one per burst: errors are not remembered


def test_disk_tier_survives_restart_and_drops_corruption(tmp_path):
    disk = DiskTier(tmp_path, 10_000_000)
    disk.put("/p/a/e/b/hls/hi/seg-1.ts|x", b"A" * 5000)
    disk.put("/p/a/e/b/hls/hi/seg-2.ts|x", b"B" * 5000)
    reopened = DiskTier(tmp_path, 10_000_000)
    assert reopened.get("/p/a/e/b/hls/hi/seg-1.ts|x") == b"A" * 5000
    # flip one byte of the body of seg-2: detected, dropped, never served
    victim = tmp_path / DiskTier._name("/p/a/e/b/hls/hi/seg-2.ts|x")
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert reopened.get("/p/a/e/b/hls/hi/seg-2.ts|x") is None
    assert not victim.exists() and reopened.dropped == 1
    # a torn write (file cut short) is dropped too
    torn = tmp_path / DiskTier._name("/p/a/e/b/hls/hi/seg-1.ts|x")
    torn.write_bytes(torn.read_bytes()[:100])
    assert reopened.get("/p/a/e/b/hls/hi/seg-1.ts|x") is None


def test_disk_tier_is_bounded_and_purges_by_prefix(tmp_path):
    disk = DiskTier(tmp_path, 40_000)
    for i in range(20):
        disk.put(f"/p/a/e/{i % 2}/seg-{i}", bytes(5000))
    assert disk.size <= 40_000
    assert sum(1 for _ in tmp_path.glob("*.seg")) == len(disk._index)
    removed = disk.discard_prefix("/p/a/e/1/")
    assert removed > 0 and all(not k.startswith("/p/a/e/1/") for _, k in disk._index.values())


def test_memory_miss_falls_back_to_disk(tmp_path):
    disk = DiskTier(tmp_path, 10_000_000)
    disk.put("k", b"from disk")
    cache = SegmentCache(10_000_000, disk)

    async def never() -> bytes:
        raise AssertionError("should come from disk")

    assert asyncio.run(cache.get_or_make("k", never)) == (b"from disk", HIT)


SEGMENT = "/p/demo/e/ladder/hls/mid/seg-2.ts"


@pytest.fixture(scope="module")
def cold_server(media_library, tmp_path_factory):
    """A server of its own, so no other test has warmed its cache."""
    from conftest import ServerProcess

    proc = ServerProcess(["--media", str(media_library), "--segment-duration", "4"], tmp_path_factory.mktemp("cold") / "server.log")
    yield proc
    proc.stop()


def test_http_coalescing_and_tokens_never_split_the_cache(cold_server):
    """100 concurrent cold requests with different per-viewer query strings: one packaging run.

    One AsyncClient on one event loop sends them all at once (up to 100 connections). An httpx.Client
    shared by a thread pool is not safe: its connection pool raced and a socket was closed under a
    request in flight (EBADF, seen in CI).
    """
    server = cold_server

    async def burst() -> tuple[list[httpx.Response], httpx.Response]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=server.base, timeout=30, limits=limits) as c:
            responses = await asyncio.gather(
                *(c.get(SEGMENT, params={"token": f"viewer-{i}", "playSessionId": str(i)}) for i in range(100))
            )
            again = await c.get(SEGMENT.replace("seg-2", "seg-02"))
        return list(responses), again

    responses, again = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    statuses = [r.headers["x-cache"] for r in responses]
    assert statuses.count("MISS") == 1, statuses
    assert len({r.content for r in responses}) == 1
    assert len({r.headers["etag"] for r in responses}) == 1
    assert again.headers["x-cache"] == "HIT"  # the canonical path is the key
