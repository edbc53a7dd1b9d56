"""HotPaths (edge/hot.py) on its own: what it remembers, for how long, and which requests it refuses."""

from __future__ import annotations

import pytest

from edge.cache import SegmentCache
from edge.hot import HotPaths, Shareable
from edge.request_info import MediaInfo

PATH = b"/p/demo/e/clip/hls/main/seg-1.ts"
KEY = "demo/clip/hls/main/seg-1|etag"
HEADERS = [(b"content-type", b"video/mp2t"), (b"content-length", b"376"), (b"x-cache", b"MISS")]
INFO = MediaInfo(partner="demo", entry="clip", format="hls", resource="segment", cache="MISS", package_seconds=0.01)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, restricted: set[str] | None = None, **kwargs) -> tuple[HotPaths, SegmentCache, bytes]:
    cache = SegmentCache(1 << 20)
    body = b"\x47" * 376
    cache.memory.put(KEY, body)
    hot = HotPaths(cache, lambda p: p in (restricted or set()), clock=clock, **kwargs)
    hot.remember(PATH, HEADERS, body, Shareable(KEY), INFO)
    return hot, cache, body


def test_answers_with_the_cached_body_and_marks_it_a_hit(clock):
    hot, cache, body = make(clock)
    answer, got = hot.answer(PATH, [(b"host", b"x"), (b"user-agent", b"hls.js")])
    assert got is body
    assert answer.header_lines == b"content-type: video/mp2t\r\ncontent-length: 376\r\nx-cache: HIT\r\n"
    assert answer.info.cache == "HIT" and answer.info.package_seconds is None
    assert cache.stats["HIT"] == 1 and hot.served == 1


def test_expires_after_ttl(clock):
    hot, _, _ = make(clock, ttl=1.0)
    clock.now += 0.99
    assert hot.answer(PATH, []) is not None
    clock.now += 0.02
    assert hot.answer(PATH, []) is None
    assert len(hot) == 0


@pytest.mark.parametrize("name", [b"range", b"if-none-match", b"if-modified-since", b"if-range", b"origin", b"cookie",
                                  b"authorization", b"content-length", b"transfer-encoding", b"expect"])
def test_requests_that_may_get_another_answer_are_refused(clock, name):
    hot, _, _ = make(clock)
    assert hot.answer(PATH, [(b"host", b"x"), (name, b"1")]) is None
    assert hot.answer(PATH, [(b"host", b"x")]) is not None  # still remembered for plain requests


def test_a_restricted_partner_is_never_answered(clock):
    restricted: set[str] = set()
    hot, _, _ = make(clock, restricted)
    restricted.add("demo")
    assert hot.answer(PATH, []) is None
    assert len(hot) == 0


def test_purged_or_evicted_bodies_end_the_answer(clock):
    hot, cache, _ = make(clock)
    cache.purge_prefix("demo/clip")
    assert hot.answer(PATH, []) is None


def test_only_bodies_the_cache_holds_are_remembered(clock):
    hot, cache, _ = make(clock)
    other = b"\x00" * 188
    hot.remember(b"/other", HEADERS, other, Shareable("not-cached"), INFO)
    hot.remember(b"/changed", HEADERS, other, Shareable(KEY), INFO)  # the cache holds different bytes under that key
    hot.remember(b"/no-info", HEADERS, cache.memory.get(KEY), Shareable(KEY), None)
    assert len(hot) == 1


def test_a_body_may_be_the_tail_of_the_cached_record(clock):
    cache = SegmentCache(1 << 20)
    record = b"META" + b"\x47" * 376  # the edge keeps its metadata in front of the body
    cache.memory.put(KEY, record)
    hot = HotPaths(cache, lambda p: False, clock=clock)
    hot.remember(PATH, HEADERS, memoryview(record)[4:], Shareable(KEY), INFO)
    _, body = hot.answer(PATH, [])
    assert bytes(body) == b"\x47" * 376


def test_a_replaced_cache_object_ends_the_answer_even_with_the_same_bytes(clock):
    hot, cache, body = make(clock)
    cache.memory.put(KEY, bytes(bytearray(body)))  # e.g. an edge revalidation stores a new record
    assert hot.answer(PATH, []) is None


def test_an_answer_lives_no_longer_than_its_freshness(clock):
    cache = SegmentCache(1 << 20)
    body = b"\x47" * 376
    cache.memory.put(KEY, body)
    hot = HotPaths(cache, lambda p: False, ttl=1.0, clock=clock)
    hot.remember(PATH, HEADERS, body, Shareable(KEY, fresh_for=0.25), INFO)
    clock.now += 0.3
    assert hot.answer(PATH, []) is None
    hot.remember(PATH, HEADERS, body, Shareable(KEY, fresh_for=0), INFO)  # already stale: not remembered
    assert len(hot) == 0


def test_bounded_in_paths(clock):
    hot, cache, body = make(clock, max_paths=3)
    for i in range(10):
        hot.remember(b"/p/%d" % i, HEADERS, body, Shareable(KEY), INFO)
    assert len(hot) == 3
    assert hot.answer(b"/p/9", []) is not None and hot.answer(PATH, []) is None


def test_evicted_bodies_are_let_go_at_once(clock):
    """Memory stays bounded by cache.memory_mb: a body the cache evicts (or purges) is not kept alive by the
    table of remembered answers (each holds its body) until they expire."""
    cache = SegmentCache(4 * 4096)
    hot = HotPaths(cache, lambda p: False, clock=clock)
    for i in range(16):  # four 4 kB bodies fit; each new one evicts the oldest
        key, path = f"demo/clip/seg-{i}|etag", b"/p/demo/e/clip/hls/main/seg-%d.ts" % i
        body = bytes([i]) * 4000
        cache.memory.put(key, body)
        hot.remember(path, HEADERS, body, Shareable(key), INFO)
        assert len(hot) == min(i + 1, 4)  # no answer outlives its body in the cache
    assert hot.answer(b"/p/demo/e/clip/hls/main/seg-0.ts", []) is None
    assert hot.answer(b"/p/demo/e/clip/hls/main/seg-15.ts", []) is not None
    cache.purge_prefix("demo/clip/seg-15")
    assert len(hot) == 3 and hot.answer(b"/p/demo/e/clip/hls/main/seg-15.ts", []) is None


def test_shield_secret_is_required(clock):
    hot, _, _ = make(clock, shield_header="X-Vodgate-Shield", shield_secrets=["s1", "s2"])
    assert hot.answer(PATH, []) is None
    assert hot.answer(PATH, [(b"x-vodgate-shield", b"wrong")]) is None
    assert hot.answer(PATH, [(b"x-vodgate-shield", b"s2")]) is not None


def test_local_storage_refuses_to_read_a_file_replaced_since_its_stat(tmp_path):
    from origin.storage import ByteRange, LocalStorage, StorageChanged

    (tmp_path / "a.mp4").write_bytes(b"old bytes, old layout")
    storage = LocalStorage(tmp_path)
    storage.stat_sync("a.mp4")
    assert storage.read_sync("a.mp4", [ByteRange(0, 3)]) == [b"old"]
    replacement = tmp_path / "a.new"
    replacement.write_bytes(b"new bytes with another layout")
    replacement.replace(tmp_path / "a.mp4")
    with pytest.raises(StorageChanged):
        storage.read_sync("a.mp4", [ByteRange(0, 3)])
    storage.stat_sync("a.mp4")  # what the next index is built from
    assert storage.read_sync("a.mp4", [ByteRange(0, 3)]) == [b"new"]
