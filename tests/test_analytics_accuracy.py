"""Analytics against real clients: ffmpeg and scripted HTTP through a real `vodgate serve`, exact numbers.

One server for the module (`python -m cli.main serve --config`, the production wiring: analytics
middleware, hot lane, uvicorn) with events going to a JSONL folder. The ``played`` fixture runs every
client, each on its own entry (so no two share a play session), stops the server (SIGTERM: the lifespan
shutdown flushes every queued event) and reads the events; each test checks the numbers of its entry.

What is checked (issue 10, "Analytics accuracy"):
- ffmpeg asks for every segment with ``Range: bytes=0-``; those 206s carry the whole segment and count
  as delivered, so an ffmpeg play to the end is one play, the entry's duration and 100 % completion;
- a session that fetches its master playlist twice is one play (explicit ``playSessionId`` or hashed);
- progressive minutes are the media time of the bytes sent, counted once per session however the
  player splits, repeats or re-reads its range requests (ffmpeg on a moov-at-end file reads it twice).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import REPO, ServerProcess

sys.path.insert(0, str(REPO))

from analytics.report import Query, Tally, read_jsonl, summarize  # noqa: E402

CONFIG = """
[server]
media_root = "{library}"
segment_duration = 4

[analytics]
enabled = true
path = "{events}"
flush_interval = 0.05
session_salt = "accuracy"
node_id = "accuracy"
"""
HLS_PLAYS = [("h264_baseline", "hls", 8), ("h264_high_bframes", "cmaf", 8)]  # entry, format, its duration (s)
MASTER_TWICE = "h264_2997"  # the entry of the repeated-master sessions
APPLE = "AppleCoreMedia/1.0.0.21E230 (iPhone; U; CPU OS 17_4 like Mac OS X)"
CHROME = "Mozilla/5.0 Chrome/124.0 Safari/537.36"


def ffmpeg_play(url: str) -> None:
    """ffmpeg reads ``url`` to the end and decodes it (as a player would), discarding the frames."""
    import media_fixtures

    cmd = [media_fixtures.ffmpeg_exe(), "-nostdin", "-v", "error", "-i", url, "-f", "null", "-"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def video_track(media_library: Path, entry: str, flavor: str):
    """The flavor's video Track as the server indexes it (sample offsets, sizes, times)."""
    from origin.catalog import FileCatalog
    from origin.media import MediaService
    from origin.storage import LocalStorage

    async def find():
        service = MediaService(FileCatalog(media_library), LocalStorage(media_library), Fraction(4))
        found = await service.catalog.entry("demo", entry)
        return (await service.index(found.flavor(flavor))).video

    return asyncio.run(find())


def offset_presented_at(track, seconds: int) -> int:
    """File offset of the video keyframe presented at ``seconds`` (the ladder has one every 2 s)."""
    (hit,) = np.nonzero(track.pts == seconds * track.timescale)[0]
    assert track.keyframes[hit]
    return int(track.offsets[hit])


@dataclass
class Played:
    """What the server wrote for the module's clients."""

    events: list[dict] = field(repr=False)
    tally: Tally = field(repr=False)
    ladder_cuts: dict[str, int] = field(default_factory=dict)  # the byte offsets the progressive ranges were cut at

    def kinds(self, kind: str, entry: str) -> list[dict]:
        return [e for e in self.events if e["kind"] == kind and e["entry"] == entry]

    def ms(self, entry: str) -> int:
        """Media milliseconds the report counts for ``entry`` (the exact sum behind "minutes delivered")."""
        return self.tally.fields.get(f"ms|demo|{entry}", 0)

    def report(self, entry: str) -> dict:
        return summarize(self.tally, Query(entry=entry))

    def entry_row(self, entry: str) -> dict:
        (row,) = self.report(entry)["top_entries"]
        return row


def play_progressive_ranges(base: str, media_library: Path) -> dict[str, int]:
    """An ExoPlayer-like client reading ladder/mid.mp4 in ranges that split a sample, repeat and skip."""
    track = video_track(media_library, "ladder", "mid")
    at2, at6, at8 = (offset_presented_at(track, s) for s in (2, 6, 8))
    split = at2 + 10  # inside the keyframe at 2 s: neither request alone holds it, the two together do
    url = f"{base}/p/demo/e/ladder/mp4/mid.mp4"
    with httpx.Client(headers={"User-Agent": "ExoPlayerLib/2.19.1"}, timeout=30) as client:
        for first, last in ((0, split), (split + 1, at6 - 1), (0, at6 - 1), (at8, None)):
            r = client.get(url, headers={"Range": f"bytes={first}-{'' if last is None else last}"})
            assert r.status_code == 206
    return {"split": split, "at8": at8}


def fetch_masters_twice(base: str) -> None:
    entry = f"{base}/p/demo/e/{MASTER_TWICE}"
    with httpx.Client(headers={"User-Agent": APPLE}, timeout=30) as apple:
        for _ in range(2):  # explicit session id: AVPlayer re-reading the master after a stall
            assert apple.get(f"{entry}/hls/master.m3u8?playSessionId=S1").status_code == 200
        assert apple.get(f"{entry}/hls/main/seg-1.ts").status_code == 200
        assert apple.get(f"{entry}/cmaf/master.m3u8?playSessionId=S1").status_code == 200  # same session, other format
    with httpx.Client(headers={"User-Agent": CHROME}, timeout=30) as chrome:
        for _ in range(3):  # no session id: the hashed session (IP + UA + entry), the page reloaded twice
            assert chrome.get(f"{entry}/hls/master.m3u8").status_code == 200
        assert chrome.get(f"{entry}/hls/master.m3u8?playSessionId=S2").status_code == 200  # a new session: a play


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def played(request, media_library, tmp_path_factory) -> Played:
    """The same plays against one process and against two workers (ffmpeg and the range client open new
    connections, which the kernel spreads over the workers): every figure below must be the same."""
    workdir = tmp_path_factory.mktemp("accuracy")
    events_dir = workdir / "events"
    config = workdir / "vodgate.toml"
    config.write_text(CONFIG.format(library=media_library, events=events_dir))
    server = ServerProcess(["--config", str(config), "--workers", str(request.param)], workdir / "server.log")
    try:
        for entry, fmt, _ in HLS_PLAYS:
            ffmpeg_play(f"{server.base}/p/demo/e/{entry}/{fmt}/master.m3u8")
        ffmpeg_play(f"{server.base}/p/demo/e/moov_at_end/mp4/main.mp4")
        cuts = play_progressive_ranges(server.base, media_library)
        fetch_masters_twice(server.base)
    finally:
        server.stop()  # SIGTERM: uvicorn finishes, the lifespan shutdown flushes the queue
    events = [json.loads(line) for f in sorted(events_dir.glob("*.jsonl")) for line in f.read_text().splitlines()]
    return Played(events, read_jsonl(events_dir), cuts)


# --------------------------------------------------------------------------- ffmpeg over HLS

@pytest.mark.parametrize("entry, fmt, seconds", HLS_PLAYS)
def test_ffmpeg_playing_hls_to_the_end_is_one_play_its_duration_and_full_completion(played, entry, fmt, seconds):
    segments = played.kinds("segment_served", entry)
    # what ffmpeg asked for: every segment (video main rendition + audio a1) with Range: bytes=0-
    assert sorted((e["audio"] is None, e["segment"], e["status"], e["format"]) for e in segments) == [
        (False, 1, 206, fmt), (False, 2, 206, fmt), (True, 1, 206, fmt), (True, 2, 206, fmt)]
    assert played.ms(entry) == seconds * 1000  # exactly the entry's duration
    assert played.entry_row(entry) == {"entry": f"demo/{entry}", "plays": 1, "sessions": 1,
                                       "minutes": round(seconds / 60, 3), "completion": 1.0}
    assert played.report(entry)["dropoff"][f"demo/{entry}"]["reached"]["100%"] == 1.0
    assert {e["entry_duration"] for e in segments} == {float(seconds)}
    assert {e["delivered"] for e in segments} == {True}
    assert [e["pct"] for e in played.events if e["kind"].startswith("reached_") and e["entry"] == entry] == [25, 50, 75, 100]


# --------------------------------------------------------------------------- ffmpeg over progressive MP4

def test_ffmpeg_reading_a_moov_at_end_mp4_counts_the_file_duration_once(played):
    # ffmpeg reads from byte 0, finds the mdat first, jumps to the moov at the end, then reads the media
    # again: range requests whose bytes overlap. The session was sent the file's 6 s, once.
    ranges = played.kinds("progressive_range", "moov_at_end")
    assert len(ranges) >= 2 and {r["status"] for r in ranges} == {206}
    assert played.ms("moov_at_end") == 6000
    assert played.entry_row("moov_at_end") == {"entry": "demo/moov_at_end", "plays": 1, "sessions": 1,
                                               "minutes": 0.1, "completion": 1.0}
    assert sum(r["media_new"] for r in ranges) == 6.0


def test_progressive_ranges_count_the_media_time_of_exactly_the_bytes_sent(played):
    ranges = played.kinds("progressive_range", "ladder")
    cuts = played.ladder_cuts
    assert [r["range_start"] for r in ranges] == [0, cuts["split"] + 1, 0, cuts["at8"]]
    # the two halves hold [0, 6) s between them; the re-read adds nothing; from the keyframe at 8 s to the
    # end adds [8, 12) s; the hole [6, 8) s was never sent
    assert played.ms("ladder") == 10_000
    new = [r["media_new"] for r in ranges]
    assert round(new[0] + new[1], 6) == 6.0 and new[2] == 0.0 and new[3] == 4.0
    assert played.entry_row("ladder") == {"entry": "demo/ladder", "plays": 1, "sessions": 1,  # from byte 0: a play
                                          "minutes": round(10 / 60, 3), "completion": 1.0}  # its last range reached the end


# --------------------------------------------------------------------------- repeated master fetches

def test_a_session_fetching_its_master_twice_is_one_play(played):
    plays = played.kinds("play_requested", MASTER_TWICE)
    # sorted: with 2 workers the supervisor receives their batches in whichever order they flush
    assert sorted(("hashed" if e["session"].startswith("h") else e["session"], e["ua"]) for e in plays) == [
        ("S1", "applecoremedia"), ("S2", "chrome"), ("hashed", "chrome")]
    report = played.report(MASTER_TWICE)
    assert report["plays"] == 3 and report["unique_sessions"] == 3
    assert report["plays_by_player"] == {"applecoremedia": 1, "chrome": 2}


# --------------------------------------------------------------------------- the whole-body rule

def test_a_206_counts_as_delivered_only_when_its_range_is_the_whole_body():
    from analytics.events import whole_body

    assert whole_body(200, None)
    assert whole_body(206, b"bytes 0-451575/451576")  # ffmpeg's Range: bytes=0-
    assert not whole_body(206, b"bytes 0-1023/451576")  # the first KB
    assert not whole_body(206, b"bytes 1-451575/451576")
    assert not whole_body(206, b"bytes 0-451575/*")  # unknown length: cannot tell
    assert not whole_body(206, None)
    assert not whole_body(304, None)


# --------------------------------------------------------------------------- media time of the bytes sent

def test_delivered_bytes_count_each_sample_once_when_all_its_bytes_arrived():
    from analytics.mediatime import MAX_RANGES, DeliveredBytes, merge_byte_range
    from packager.media import MediaIndex, Track

    def arr(values):
        return np.array(values, dtype=np.int64)

    # decode order I P B B at bytes 0.., 100 bytes each; presentation I B B P (0, 100, 200, 300 ms after the
    # -100 shift), the edit list ends the track at 350 ms (the P frame shows for 50 ms)
    track = Track(
        track_id=1, kind="video", fourcc="avc1", codec_string="avc1.64001f", timescale=1000, language="und",
        sample_entry=b"", video=None, audio=None, dts=arr([0, 100, 200, 300]), cts_offsets=arr([100, 300, 0, 0]),
        durations=arr([100] * 4), sizes=arr([100] * 4), offsets=arr([0, 100, 200, 300]),
        keyframes=np.ones(4, dtype=bool), presentation_shift=-100, edit_end=350,
    )
    index = MediaIndex(tracks=(track,), movie_timescale=1000)
    assert merge_byte_range([(0, 9), (20, 29)], 10, 19) == [(0, 29)]  # touching ranges merge
    sent = DeliveredBytes()
    assert sent.add(index, 0, 149) == 0.1  # the I frame; the P frame is cut
    assert sent.add(index, 150, 199) == 0.05  # the P frame's other half: it shows [300, 350) ms
    assert sent.add(index, 0, 399) == 0.2  # only the two B frames are new
    assert sent.add(index, 0, 399) == 0.0
    assert sent.ticks == 350
    many = DeliveredBytes()
    for n in range(MAX_RANGES + 1):  # a client asking for one byte here and there: state stays bounded
        many.add(index, 1000 + 10 * n, 1000 + 10 * n)
    assert len(many.ranges) == MAX_RANGES
