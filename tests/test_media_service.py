"""MediaService: indexes parsed once per file version, shared by concurrent requests, failures contained."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import pytest

from origin.catalog import Entry, Flavor, StaticCatalog
from origin.media import FlavorError, MediaService
from origin.storage import MemoryStorage
from packager.formats import TS
from packager.media_set import RenditionId


def service(objects: dict[str, bytes], flavors: list[str]) -> tuple[MediaService, MemoryStorage]:
    storage = MemoryStorage(objects)
    entry = Entry("p", "e", tuple(Flavor(f, f"{f}.mp4") for f in flavors))
    return MediaService(StaticCatalog([entry]), storage, Fraction(4), stat_ttl=0), storage


def test_second_request_never_reparses(media_fixture_paths):
    media, storage = service({"hi.mp4": media_fixture_paths["ladder_hi"].read_bytes()}, ["hi"])

    async def run():
        await media.entry_media("p", "e")
        reads_after_first = storage.reads
        await media.entry_media("p", "e")
        return reads_after_first, storage.reads

    first, second = asyncio.run(run())
    assert first >= 1
    assert second == first
    assert media.indexes.misses == 1 and media.indexes.hits >= 1


def test_concurrent_first_requests_share_one_parse(media_fixture_paths):
    media, storage = service({"hi.mp4": media_fixture_paths["ladder_hi"].read_bytes()}, ["hi"])

    async def run():
        results = await asyncio.gather(*(media.entry_media("p", "e") for _ in range(50)))
        return {id(r.media_set) for r in results}

    assert len(asyncio.run(run())) == 1
    assert media.indexes.misses == 1


def test_changed_file_is_reparsed(media_fixture_paths):
    media, storage = service({"hi.mp4": media_fixture_paths["ladder_hi"].read_bytes()}, ["hi"])

    async def run():
        before = await media.entry_media("p", "e")
        storage.objects["hi.mp4"] = media_fixture_paths["ladder_lo"].read_bytes()
        after = await media.entry_media("p", "e")
        return before, after

    before, after = asyncio.run(run())
    assert before.media_set.videos[0].track.video.width == 640
    assert after.media_set.videos[0].track.video.width == 320


def test_a_broken_flavor_does_not_take_its_siblings_down(media_fixture_paths):
    objects = {
        "good.mp4": media_fixture_paths["ladder_hi"].read_bytes(),
        "bad.mp4": media_fixture_paths["truncated"].read_bytes(),
    }
    media, storage = service(objects, ["bad", "good"])

    async def run():
        em = await media.entry_media("p", "e")
        reads = storage.reads
        await media.entry_media("p", "e")  # the failure is cached: no re-parse of the bad file either
        return em, reads

    em, reads = asyncio.run(run())
    assert [v.id.flavor for v in em.media_set.videos] == ["good"]
    assert storage.reads == reads
    with pytest.raises(FlavorError, match="bad.mp4: .*'moov'"):
        em.check_flavor("bad")


def test_segment_batch_reads_exactly_the_segment(media_fixture_paths):
    media, storage = service({"hi.mp4": media_fixture_paths["ladder_hi"].read_bytes()}, ["hi"])

    async def run():
        em = await media.entry_media("p", "e")
        rendition = em.media_set.rendition(RenditionId("hi"))
        segment = rendition.segments[1]
        batch = await media.batch(em.entry, rendition, segment)
        return rendition, segment, batch

    rendition, segment, batch = asyncio.run(run())
    assert batch.sample_count == segment.span.count
    assert len(batch.data) == int(rendition.track.sizes[segment.span.first : segment.span.stop].sum())
    assert len(TS.mux(batch)) == TS.segment_size(rendition.track, segment)
