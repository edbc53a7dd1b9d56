"""The parsed-index cache is bounded in bytes, not entries: a file of many tiny samples costs what it holds.

The files here are real MP4s (ftyp + moov + mdat, parsed by packager.mp4.index) of 200,000 one-byte AAC
frames each: 200 KB on disk, about 8.2 MB once indexed (41 bytes a sample). With a 20 MB budget two of
them fit; six entries requested round-robin must evict, stay within the budget (by the cache's own
tally and by what tracemalloc sees the service hold), and still answer every request.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import struct
import tracemalloc
from fractions import Fraction

import httpx
import numpy as np
import pytest

from analytics.metrics import Metrics
from origin.catalog import Entry, Flavor, StaticCatalog
from origin.media import CLIP_TABLE_BYTES_PER_SAMPLE, MB, MediaService, track_weight
from origin.storage import MemoryStorage
from packager.media import AudioInfo, MediaIndex, Track
from packager.mp4.writer import clipped_mp4

SAMPLES = 200_000
FILES = 6
BUDGET = 20 * MB  # two indexes of SAMPLES samples, not three
AAC_LC_48K_STEREO = bytes([0x11, 0x90])  # AudioSpecificConfig: object type 2, 48 kHz, 2 channels


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _descriptor(tag: int, body: bytes) -> bytes:
    return bytes([tag, len(body)]) + body  # one-byte length: every body here is under 128 bytes


def _mp4a_sample_entry() -> bytes:
    """An AudioSampleEntry (ISO 14496-12 12.2.3) with an esds carrying AAC-LC (ISO 14496-1 7.2.6.5)."""
    decoder_config = bytes([0x40, 0x15]) + bytes(11) + _descriptor(0x05, AAC_LC_48K_STEREO)  # MPEG-4 audio, audio stream
    esds = _box(b"esds", bytes(4) + _descriptor(0x03, b"\x00\x01\x00" + _descriptor(0x04, decoder_config)))
    fields = bytes(6) + struct.pack(">H", 1) + bytes(8) + struct.pack(">HHI", 2, 16, 0) + struct.pack(">I", 48000 << 16)
    return _box(b"mp4a", fields + esds)


def tiny_sample_mp4(samples: int = SAMPLES) -> bytes:
    """A faststart MP4 of one AAC track of ``samples`` one-byte frames, written by vodgate's own MP4 writer."""
    entry = _mp4a_sample_entry()
    track = Track(
        track_id=1, kind="audio", fourcc="mp4a", codec_string="mp4a.40.2", timescale=48000, language="und",
        sample_entry=entry, video=None, audio=AudioInfo(48000, 2, AAC_LC_48K_STEREO, 2),
        dts=np.arange(samples, dtype=np.int64) * 1024, cts_offsets=np.zeros(samples, np.int64),
        durations=np.full(samples, 1024, np.int64), sizes=np.ones(samples, np.int64),
        offsets=np.arange(samples, dtype=np.int64), keyframes=np.ones(samples, bool), presentation_shift=0,
    )
    virtual = clipped_mp4(MediaIndex((track,), 1000), Fraction(10**9))  # a "preview" that keeps every sample
    return virtual.materialise(lambda offset, size: bytes(size))


@pytest.fixture(scope="module")
def tiny_file() -> bytes:
    return tiny_sample_mp4()


def library(data: bytes, files: int = FILES) -> tuple[StaticCatalog, MemoryStorage]:
    """``files`` entries p/e0.. of one flavor ``a`` each, every one its own object (same bytes, other key)."""
    entries = [Entry("p", f"e{i}", (Flavor("a", f"p/e{i}/a.mp4"),)) for i in range(files)]
    return StaticCatalog(entries), MemoryStorage({f"p/e{i}/a.mp4": data for i in range(files)})


def service(data: bytes, budget: int = BUDGET, files: int = FILES) -> MediaService:
    catalog, storage = library(data, files)
    return MediaService(catalog, storage, Fraction(4), stat_ttl=0, index_cache_bytes=budget)


def held_by(run):
    """``run()``'s result and the bytes it left allocated (tracemalloc, after a collection)."""
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        result = run()
        gc.collect()
        return result, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_tiny_sample_file_weighs_41_bytes_a_sample(tiny_file):
    media = service(tiny_file, files=1)

    async def index():
        entry = await media.catalog.entry("p", "e0")
        return await media.index(entry.flavor("a"))

    parsed, held = held_by(lambda: asyncio.run(index()))
    assert len(tiny_file) < 2 * SAMPLES  # one byte of mdat a sample, a constant-size stsz
    (track,) = parsed.tracks
    assert track.sample_count == SAMPLES
    assert 41 * SAMPLES <= track_weight(track) < 41 * SAMPLES + 4096
    assert media.indexes.bytes == media._index_weight(parsed)
    assert abs(held - media.indexes.bytes) < media.indexes.bytes / 100  # the weight is what tracemalloc sees it hold


def test_the_index_cache_stays_within_its_byte_budget_and_every_request_succeeds(tiny_file):
    media = service(tiny_file)
    seen_bytes: list[int] = []

    async def play(rounds: int = 3) -> int:
        served = 0
        for _ in range(rounds):
            for i in range(FILES):
                em = await media.entry_media("p", f"e{i}")
                rendition = em.media_set.audios[0]
                batch = await media.batch(em.entry, rendition, rendition.segments[-1])
                assert batch.sample_count == rendition.segments[-1].span.count and len(batch.data) == batch.sample_count
                served += 1
                seen_bytes.append(media.indexes.bytes)
                assert media.indexes.bytes <= BUDGET
                assert len(media.media_sets) <= len(media.indexes)  # a media set leaves with its index
        return served

    served, held = held_by(lambda: asyncio.run(play()))
    assert served == 3 * FILES
    assert max(seen_bytes) <= BUDGET and len(media.indexes) == 2
    assert media.indexes.evictions >= 3 * FILES - 2 and media.indexes.misses == 3 * FILES  # round-robin: LRU's worst case
    assert held <= BUDGET + media.media_sets.max_bytes  # what really stays in memory: under the budget, not 6 x 8.2 MB


def test_an_index_over_the_whole_budget_is_served_not_kept_and_logged_once(tiny_file, caplog):
    media = service(tiny_file, budget=4 * MB, files=1)

    async def twice():
        for _ in range(2):
            em = await media.entry_media("p", "e0")
            assert em.media_set.audios[0].track.sample_count == SAMPLES

    with caplog.at_level(logging.WARNING, logger="vodgate.origin"):
        asyncio.run(twice())
    assert (len(media.indexes), media.indexes.bytes, media.indexes.misses) == (0, 0, 2)  # parsed per request
    assert len(media.media_sets) == 0  # built from an index that was not kept: not kept either
    warnings = [r.getMessage() for r in caplog.records if "more than the whole" in r.getMessage()]
    assert len(warnings) == 1 and "p/e0/a.mp4" in warnings[0] and "server.index_cache_mb" in warnings[0]


def test_a_preview_charges_its_clip_table_to_the_index_and_leaves_with_it(tiny_file):
    media = service(tiny_file, budget=2 * 8_300_000 + 1_000_000, files=3)

    async def scenario():
        em = await media.entry_media("p", "e0")
        before = media.indexes.bytes
        preview = await media.preview_set(em, Fraction(60))
        assert preview.duration <= 60 and len(media.previews) == 1
        assert media.indexes.bytes - before == CLIP_TABLE_BYTES_PER_SAMPLE * (SAMPLES + 1)
        assert media.indexes.bytes <= media.indexes.max_bytes
        await media.entry_media("p", "e1")  # e0 (8.2 + 4.8 MB) and e1 do not fit together: e0 goes ...
        assert len(media.indexes) == 1 and len(media.previews) == 0  # ... and takes its preview along
        await media.entry_media("p", "e2")
        assert media.indexes.bytes <= media.indexes.max_bytes and len(media.indexes) == 2

    asyncio.run(scenario())


def _gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def test_metrics_show_the_index_cache_bytes_and_entries(tiny_file):
    media = service(tiny_file)

    async def play():
        for i in range(3):
            await media.entry_media("p", f"e{i}")

    asyncio.run(play())
    text = Metrics().bind(media=media).render()[0].decode()
    assert _gauge(text, "vodgate_index_cache_bytes") == media.indexes.bytes
    assert 0 < media.indexes.bytes <= BUDGET
    assert _gauge(text, "vodgate_index_cache_entries") == 2.0
    assert _gauge(text, "vodgate_index_cache_evictions_total") == 1.0
    assert _gauge(text, "vodgate_media_set_cache_entries") == 2.0
    # docs/PERFORMANCE.md: "(and the same for `media_set_cache` and `preview_cache`)"; no preview asked yet
    for suffix in ("bytes", "entries", "evictions_total"):
        assert _gauge(text, f"vodgate_media_set_cache_{suffix}") >= 0
        assert _gauge(text, f"vodgate_preview_cache_{suffix}") == 0.0


def test_server_index_cache_mb_bounds_a_served_app(tiny_file):
    """[server] index_cache_mb reaches the app's MediaService; /metrics reports the cache as requests go."""
    from analytics.middleware import wrap
    from config.settings import Settings, parse_settings
    from edge.app import create_app

    assert Settings().index_cache_mb == 256
    settings = parse_settings({"server": {"index_cache_mb": 20}})
    assert settings.index_cache_mb == 20
    catalog, storage = library(tiny_file)
    app = wrap(create_app(settings, catalog=catalog, storage=storage))

    async def scenario() -> list[tuple[float, float]]:
        seen = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://origin", timeout=60) as client:
            for i in range(FILES):
                r = await client.get(f"/p/p/e/e{i}/hls/a/seg-1.ts")
                assert r.status_code == 200, r.text
                text = (await client.get("/metrics")).text
                seen.append((_gauge(text, "vodgate_index_cache_bytes"), _gauge(text, "vodgate_index_cache_entries")))
        return seen

    seen = asyncio.run(scenario())
    assert all(0 < size <= 20 * MB and 1 <= entries <= 2 for size, entries in seen)
    assert seen[-1][1] == 2


def test_healthz_lists_at_most_100_left_out_tracks_in_all_files_together(tiny_file):
    """docs/DEPLOYMENT.md: "at most 100 tracks listed in all, while `count` stays exact" (across files)."""
    from packager.media import SkippedTrack

    media = service(tiny_file, files=1)
    for number in range(3):  # three files of 60 left-out tracks each
        media._note_skipped(f"p/e{number}/a.mp4", tuple(SkippedTrack(2 + i, "audio", "alac", "no packager for alac") for i in range(60)))
    report = media.skipped_report()
    assert report["count"] == 180
    assert len(report["tracks"]) == 100
    assert [t["file"] for t in report["tracks"]] == ["p/e0/a.mp4"] * 60 + ["p/e1/a.mp4"] * 40
