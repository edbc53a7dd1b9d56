"""What a player decodes from our HLS equals what it would decode from the source MP4.

For every good fixture and both segment formats (``hls`` = MPEG-TS,
``cmaf`` = fMP4), ffmpeg reads the stream over HTTP from the running server
(conftest's ``server``, 4 s target segments) and hashes every decoded frame;
the hashes must equal the source file's, frame for frame, in order.

* Video is read through the MASTER playlist for the ``ladder`` entry (all
  three variants) and for a few single-flavor entries (MASTER_READ), and
  through the flavor's media playlist ``.../{flavor}/index.m3u8`` for the
  others.
* Audio is read through the audio rendition playlists
  ``.../{flavor}/a{k}/index.m3u8`` named by the master's EXT-X-MEDIA tags
  (the audio-only entry through its master, whose variants are the audio
  playlists).

Also shared with tests/test_playlists.py: :func:`source_frames` (a
per-fixture cache of the source's framemd5) and :class:`Memo` (a thread
pool + future cache, so independent ffmpeg runs go in parallel and each is
run once per session).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import m3u8
import pytest

import media_fixtures as mf
import oracle
from media_fixtures import ALL_GOOD, FIXTURES, LADDER

FORMATS = ("hls", "cmaf")
PARTNER = "demo"
LADDER_ENTRY = "ladder"
# Single-flavor entries whose video we read through the master playlist (besides the ladder).
MASTER_READ = frozenset({"h264_high_bframes", "two_languages", "hevc"})

VIDEO_FIXTURES = tuple(n for n in ALL_GOOD if FIXTURES[n].expect.video_codec)
AUDIO_FIXTURES = tuple(n for n in ALL_GOOD if FIXTURES[n].expect.audio_streams)


# --------------------------------------------------------------------------- shared helpers


class Memo:
    """Run callables on a small thread pool, at most once per key; ``get`` waits for the result.

    Jobs must be leaves (an ffmpeg run, an HTTP fetch): a job that waits on
    another job of the same pool could deadlock it.
    """

    def __init__(self, workers: int = 3) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="memo")
        self._futures: dict[Hashable, Future] = {}
        self._lock = threading.Lock()

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> Future:
        with self._lock:
            future = self._futures.get(key)
            if future is None or future.cancelled():
                future = self._futures[key] = self._pool.submit(fn, *args)
            return future

    def get(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> Any:
        return self.submit(key, fn, *args).result()

    def cancel_pending(self) -> None:
        """Drop prefetches that have not started (e.g. after ``-x``); later ``get`` calls redo them."""
        with self._lock:
            for key, future in list(self._futures.items()):
                if future.cancel():
                    del self._futures[key]


MEMO = Memo()


def source_path(fixture: str) -> Path:
    return mf.fixture_path(fixture)


def source_frames(fixture: str, stream: str = "v:0") -> list[oracle.FrameHash]:
    """framemd5 of a source fixture's stream (cached for the session)."""
    return MEMO.get(("source", fixture, stream), lambda: oracle.framemd5(source_path(fixture), stream))


def prefetch_sources(fixtures) -> None:
    for fixture in fixtures:
        exp = FIXTURES[fixture].expect
        streams = (["v:0"] if exp.video_codec else []) + [f"a:{i}" for i in range(exp.audio_streams)]
        for stream in streams:
            MEMO.submit(("source", fixture, stream), lambda f=fixture, s=stream: oracle.framemd5(source_path(f), s))


def entry_flavors(entry: str) -> dict[str, str]:
    """flavor id -> source fixture of an entry of the ``demo`` partner."""
    return dict(LADDER) if entry == LADDER_ENTRY else {"main": entry}


ENTRIES = (*ALL_GOOD, LADDER_ENTRY)


def entry_url(base: str, entry: str, fmt: str) -> str:
    return f"{base}/p/{PARTNER}/e/{entry}/{fmt}"


# One client for the decode pool's threads: httpx.get() builds a client per call and reads os.environ for
# proxies, which pytest rewrites (PYTEST_CURRENT_TEST) on the main thread meanwhile: a KeyError race.
_HTTP = httpx.Client(timeout=30, trust_env=False)


def get_master(base: str, entry: str, fmt: str) -> m3u8.M3U8:
    response = _HTTP.get(f"{entry_url(base, entry, fmt)}/master.m3u8")
    assert response.status_code == 200, response.text
    return m3u8.loads(response.text)


def variant_index(master: m3u8.M3U8, flavor: str) -> int:
    uris = [p.uri for p in master.playlists]
    want = f"{flavor}/index.m3u8"
    assert want in uris, f"no variant {want} in {uris}"
    return uris.index(want)


def prefetch_cases(request, module_name: str, memo: Memo, base: str) -> None:
    """Submit the decode jobs of this module's collected (selected) test cases."""
    for item in request.session.items:
        if item.module.__name__ != module_name or not hasattr(item, "callspec"):
            continue
        case = item.callspec.params.get("case")
        if case is not None:
            memo.submit(case.key, case.decode, base)


# --------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class VideoCase:
    entry: str
    fmt: str
    flavor: str
    source: str
    via_master: bool

    @property
    def key(self):
        return ("decode-video", self.entry, self.fmt, self.flavor, self.via_master)

    @property
    def id(self) -> str:
        return f"{self.entry}-{self.flavor}-{self.fmt}-{'master' if self.via_master else 'media'}"

    def decode(self, base: str) -> list[oracle.FrameHash]:
        root = entry_url(base, self.entry, self.fmt)
        if not self.via_master:
            return oracle.framemd5(f"{root}/{self.flavor}/index.m3u8", "v:0")
        # With a master playlist ffmpeg's HLS demuxer exposes every variant as a
        # program whose id is the variant's position in the master (0-based, in
        # EXT-X-STREAM-INF order) and every audio rendition as a stream shared by
        # the programs. "p:<n>:v" picks the video of variant n: we find n from the
        # variant URI ("<flavor>/index.m3u8"); the test then also checks that the
        # decoded frame size is the source's (so the right variant was decoded).
        n = variant_index(get_master(base, self.entry, self.fmt), self.flavor)
        return oracle.framemd5(f"{root}/master.m3u8", f"p:{n}:v")


@dataclasses.dataclass(frozen=True)
class AudioCase:
    entry: str
    fmt: str
    flavor: str
    track: int  # 1-based audio track of the flavor (the a{k} of the URL)
    source: str
    via_master: bool = False  # audio-only entry: decode the master itself

    @property
    def key(self):
        return ("decode-audio", self.entry, self.fmt, self.flavor, self.track, self.via_master)

    @property
    def id(self) -> str:
        return f"{self.entry}-{self.flavor}-a{self.track}-{self.fmt}-{'master' if self.via_master else 'media'}"

    def decode(self, base: str) -> list[oracle.FrameHash]:
        root = entry_url(base, self.entry, self.fmt)
        if self.via_master:
            return oracle.framemd5(f"{root}/master.m3u8", "a:0")
        return oracle.framemd5(f"{root}/{self.flavor}/a{self.track}/index.m3u8", "a:0")


VIDEO_CASES = [
    VideoCase(fx, fmt, "main", fx, fx in MASTER_READ) for fx in VIDEO_FIXTURES for fmt in FORMATS
    if (fx, fmt) != ("hevc", "hls")  # HEVC is offered over fMP4 only (test_playlists.py: test_hevc_is_not_offered_over_ts)
] + [VideoCase(LADDER_ENTRY, fmt, flavor, fx, True) for flavor, fx in LADDER.items() for fmt in FORMATS]

AUDIO_CASES = [
    AudioCase(fx, fmt, "main", k, fx, via_master=fx == "audio_only")
    for fx in AUDIO_FIXTURES
    for k in range(1, FIXTURES[fx].expect.audio_streams + 1)
    for fmt in FORMATS
    if (fx, fmt) != ("hevc", "hls")  # no TS master for an HEVC-only entry
] + [AudioCase(LADDER_ENTRY, fmt, "hi", 1, LADDER["hi"]) for fmt in FORMATS]


@pytest.fixture(scope="module", autouse=True)
def _prefetch(request, server):
    """Start every selected case's ffmpeg run (and the source decodes) on the thread pool at once."""
    prefetch_sources(ALL_GOOD)
    prefetch_cases(request, __name__, MEMO, server.base)
    yield
    MEMO.cancel_pending()


# --------------------------------------------------------------------------- video


@pytest.mark.parametrize("case", VIDEO_CASES, ids=[c.id for c in VIDEO_CASES])
def test_video_frames_equal_source(case: VideoCase, server):
    ours = MEMO.get(case.key, case.decode, server.base)
    src = source_frames(case.source, "v:0")
    assert len(ours) == len(src) == FIXTURES[case.source].expect.video_frames
    assert {f.size for f in ours} == {src[0].size}, "decoded frame size differs: wrong variant?"
    mismatch = next((i for i, (a, b) in enumerate(zip(src, ours)) if a.md5 != b.md5), None)
    assert mismatch is None, f"first differing frame: {mismatch} of {len(src)}"


# --------------------------------------------------------------------------- audio
#
# Tolerance (tests/oracle.py:audio_hashes_match): ffmpeg's AAC encoder puts
# 1024 priming samples first and the source MP4's edit list makes ffmpeg drop
# that first decoded frame and cut the last one; HLS (TS: ADTS has no edit
# list; our fMP4 carries the priming packet too) decodes every packet. So the
# HLS list may have ONE extra frame in front (the priming frame, which must be
# there as a packet: without it the next frame would decode differently and
# fail), the source's LAST frame may differ only by being shorter (end trim),
# and at most one extra frame may trail. Every other frame must be
# bit-identical, in order.


@pytest.mark.parametrize("case", AUDIO_CASES, ids=[c.id for c in AUDIO_CASES])
def test_audio_frames_equal_source(case: AudioCase, server):
    master = get_master(server.base, case.entry, case.fmt)
    uri = f"{case.flavor}/a{case.track}/index.m3u8"
    if case.via_master:  # audio-only: the variants are the audio playlists
        assert uri in [p.uri for p in master.playlists]
    else:
        assert uri in [m.uri for m in master.media if m.type == "AUDIO"]
    ours = MEMO.get(case.key, case.decode, server.base)
    src = source_frames(case.source, f"a:{case.track - 1}")
    match = oracle.audio_hashes_match(src, ours, max_leading=1, max_trailing=1)
    assert match, match.reason
    assert match.compared >= len(src) - 1


def test_two_languages_are_not_swapped(server):
    """eng (440 Hz) and fra (880 Hz) differ; each rendition's LANGUAGE names its own track."""
    for fmt in FORMATS:
        master = get_master(server.base, "two_languages", fmt)
        by_language = {m.language: m.uri for m in master.media if m.type == "AUDIO"}
        assert by_language == {"en": "main/a1/index.m3u8", "fr": "main/a2/index.m3u8"}
        case = AudioCase("two_languages", fmt, "main", 1, "two_languages")
        eng = MEMO.get(case.key, case.decode, server.base)
        src_fra = source_frames("two_languages", "a:1")
        assert not oracle.audio_hashes_match(src_fra, eng), "a1 (eng) decodes to the fra track"


# --------------------------------------------------------------------------- audio-only / video-only


@pytest.mark.parametrize("fmt", FORMATS)
def test_audio_only_master_lists_audio_playlists(fmt, server):
    master = get_master(server.base, "audio_only", fmt)
    assert [p.uri for p in master.playlists] == ["main/a1/index.m3u8"]
    info = master.playlists[0].stream_info
    assert info.codecs == "mp4a.40.2"
    assert info.resolution is None and not master.iframe_playlists
    streams = oracle.probe_streams(f"{entry_url(server.base, 'audio_only', fmt)}/master.m3u8")
    assert [s.kind for s in streams] == ["Audio"]
    # docs/URLS.md: an audio-only flavor's {flavor}/index.m3u8 is its audio playlist
    root = entry_url(server.base, "audio_only", fmt)
    assert httpx.get(f"{root}/main/index.m3u8").text == httpx.get(f"{root}/main/a1/index.m3u8").text


@pytest.mark.parametrize("fmt", FORMATS)
def test_video_only_master_has_no_audio_group(fmt, server):
    master = get_master(server.base, "video_only", fmt)
    assert not [m for m in master.media if m.type == "AUDIO"]
    assert [p.uri for p in master.playlists] == ["main/index.m3u8"]
    info = master.playlists[0].stream_info
    assert info.audio is None
    assert "mp4a" not in info.codecs
    streams = oracle.probe_streams(f"{entry_url(server.base, 'video_only', fmt)}/master.m3u8")
    assert [s.kind for s in streams] == ["Video"]
    response = httpx.get(f"{entry_url(server.base, 'video_only', fmt)}/main/a1/index.m3u8")
    assert response.status_code == 404 and response.json()["error"]
