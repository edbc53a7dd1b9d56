"""Scripted play sessions over real HTTP -> exact report numbers, from JSONL and from Redis; aggregator crashes.

The server is built in-process (``edge.app.create_app`` wrapped by ``analytics.wrap``, the same call
``vodgate serve`` makes once wired) and served by uvicorn on 127.0.0.1 in a thread; its events go to
a JSONL folder and, when redis-server is installed, to a Redis stream at the same time.

Redis: a real ``redis-server`` on a free port (``--save '' --appendonly no``). Without it these tests
skip, unless VODGATE_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import pytest

from redis_support import RedisServer, redis_available, redis_server, require_redis  # noqa: F401 (fixture)
from conftest import REPO, free_port

sys.path.insert(0, str(REPO))

from config.analytics import AnalyticsConfig, MetricsConfig  # noqa: E402
from analytics.middleware import wrap  # noqa: E402
from analytics.report import Query, read_jsonl, run as run_report, summarize  # noqa: E402
from analytics.sinks import JsonlSink, MultiSink  # noqa: E402

LADDER = "/p/demo/e/ladder"
ACCESS = """
[server]
media_root = "{library}"
segment_duration = 4

[partners.demo]
default_profile = "open"
token_keys = {{ k1 = "00112233445566778899aabbccddeeff" }}

[partners.demo.profiles.tokens]
rules = [ {{ unless = {{ authenticated = true }}, then = ["block"] }} ]

[partners.demo.profiles.referrer]
rules = [
  {{ if = {{ referrer = ["*.example.com"] }}, then = ["allow"] }},
  {{ then = [ {{ block = "referrer_blocked" }} ] }},
]

[partners.demo.entries.hevc]
profile = "tokens"

[partners.demo.entries.video_only]
profile = "referrer"
"""
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
SAFARI = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
APPLE = "AppleCoreMedia/1.0.0.21E230 (iPhone; U; CPU OS 17_4 like Mac OS X; en_us)"
EXO = "MyPlayer/2.0 (Linux;Android 14) ExoPlayerLib/2.19.1"


# --------------------------------------------------------------------------- Redis

# --------------------------------------------------------------------------- an in-process server

class ThreadServer:
    """uvicorn serving an ASGI app on 127.0.0.1 in a background thread, with lifespan (flush at stop)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("in-process server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "server thread did not stop"


def video_offset_at(media_library: Path, flavor: str, seconds: int) -> int:
    """File offset of the video sample presented at ``seconds`` (a keyframe of the ladder)."""
    from origin.catalog import FileCatalog
    from origin.media import MediaService
    from origin.storage import LocalStorage

    async def find() -> int:
        service = MediaService(FileCatalog(media_library), LocalStorage(media_library), Fraction(4))
        entry = await service.catalog.entry("demo", "ladder")
        video = (await service.index(entry.flavor(flavor))).video
        (hit,) = np.nonzero(video.pts == seconds * video.timescale)[0]
        return int(video.offsets[hit])

    return asyncio.run(find())


# --------------------------------------------------------------------------- the script

class Script:
    """Plays the sessions and remembers what the report must say."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.bytes_by_flavor: dict[str, int] = {}
        self.statuses: list[int] = []

    def get(self, path: str, ua: str = "python-httpx", flavor: str | None = None, expect: int = 200, **headers) -> httpx.Response:
        r = httpx.get(self.base + path, headers={"User-Agent": ua, **headers}, timeout=30)
        assert r.status_code == expect, (path, r.status_code, r.text[:200])
        if flavor is not None and r.status_code in (200, 206):
            self.bytes_by_flavor[flavor] = self.bytes_by_flavor.get(flavor, 0) + len(r.content)
        self.statuses.append(r.status_code)
        return r

    def play(self, media_library: Path) -> None:
        # A: Chrome, watches everything (video hi + audio), playSessionId on the master only
        a = dict(ua=CHROME)
        self.get(f"{LADDER}/hls/master.m3u8?playSessionId=A&token=SECRET-TOKEN", Referer="https://news.example.com/story?id=7&token=SECRET-REF", **a)
        self.get(f"{LADDER}/hls/hi/index.m3u8", **a)
        self.get(f"{LADDER}/hls/hi/a1/index.m3u8", **a)
        for n in (1, 2, 3):
            seg = self.get(f"{LADDER}/hls/hi/seg-{n}.ts", flavor="hi", **a)
            self.get(f"{LADDER}/hls/hi/a1/seg-{n}.ts", flavor="hi", **a)
        self.get(f"{LADDER}/hls/hi/seg-3.ts", expect=304, **{"If-None-Match": seg.headers["ETag"]}, **a)  # revalidation: no event
        self.get(f"{LADDER}/hls/hi/seg-2.ts", flavor="hi", expect=206, Range="bytes=0-", **a)  # a retry: bytes, no new minutes
        r = httpx.head(f"{self.base}{LADDER}/hls/hi/seg-2.ts", headers={"User-Agent": CHROME})  # HEAD: no event
        assert r.status_code == 200
        # B: Safari, stops after the first segment (33 %: reached 30 %, not 40 %)
        self.get(f"{LADDER}/hls/master.m3u8?playSessionId=B", ua=SAFARI, Referer="https://blog.example.org/")
        self.get(f"{LADDER}/hls/mid/index.m3u8", ua=SAFARI)
        self.get(f"{LADDER}/hls/mid/seg-1.ts", ua=SAFARI, flavor="mid")
        self.get(f"{LADDER}/hls/hi/a1/seg-1.ts", ua=SAFARI, flavor="hi")
        # C: Firefox on CMAF, switches lo -> mid -> hi, to the end; repeats playSessionId on every request
        self.get(f"{LADDER}/cmaf/master.m3u8?playSessionId=C", ua=FIREFOX)
        for n, flavor in ((1, "lo"), (2, "mid"), (3, "hi")):
            self.get(f"{LADDER}/cmaf/{flavor}/init.mp4?playSessionId=C", ua=FIREFOX)  # init: no event, bytes not media
            self.get(f"{LADDER}/cmaf/{flavor}/seg-{n}.m4s?playSessionId=C", ua=FIREFOX, flavor=flavor)
        # D: native iOS player, no playSessionId, no token: hashed session; stops at 33 %
        self.get(f"{LADDER}/hls/master.m3u8", ua=APPLE)
        self.get(f"{LADDER}/hls/hi/seg-1.ts", ua=APPLE, flavor="hi")
        # E1: progressive download of the whole file (curl): 100 %
        self.get(f"{LADDER}/mp4/mid.mp4", ua="curl/8.5.0", flavor="mid")
        # E2: progressive, one range that ends right before the keyframe at 6 s: exactly 50 %
        cut = video_offset_at(media_library, "mid", 6)
        self.get(f"{LADDER}/mp4/mid.mp4", ua=EXO, flavor="mid", expect=206, Range=f"bytes=0-{cut - 1}")
        # F: failures (not play sessions): past the last segment, unknown flavor, malformed id
        self.get(f"{LADDER}/hls/hi/seg-9.ts?playSessionId=F", expect=404)
        self.get(f"{LADDER}/hls/zz/index.m3u8?playSessionId=F", expect=404)
        self.get("/p/demo/e/bad..id/hls/master.m3u8", expect=400)
        # G: denied by access control (not play sessions): a token-only entry without a token, and a
        # referrer-restricted entry from another site
        self.get("/p/demo/e/hevc/hls/master.m3u8?playSessionId=G", ua=CHROME, expect=403)
        self.get("/p/demo/e/video_only/hls/master.m3u8?playSessionId=G", ua=CHROME, expect=403,
                 Referer="https://elsewhere.example.org/")

    def expected(self) -> dict:
        return {
            "plays": 6,  # A, B, C, D + the two progressive sessions (their first range starts at byte 0)
            "unique_sessions": 6,
            "minutes_delivered": round((12 + 4 + 12 + 4 + 12 + 6) / 60, 3),  # main renditions only: audio plays alongside
            "bytes_delivered": sum(self.bytes_by_flavor.values()),
            "flavor_switches": 2,
            "top_entries": [{"entry": "demo/ladder", "plays": 6, "sessions": 6, "minutes": round(50 / 60, 3), "completion": 0.5}],
            "dropoff": {"demo/ladder": {"sessions": 6, "reached": {
                "0%": 1.0, "10%": 1.0, "20%": 1.0, "30%": 1.0,  # everyone got the first segment
                "40%": 0.6667, "50%": 0.6667,  # A, C, E1, E2 (E2 stops at exactly 50 %)
                "60%": 0.5, "70%": 0.5, "80%": 0.5, "90%": 0.5, "100%": 0.5}}},  # A, C, E1
            "plays_by_country": {"unknown": 6},  # no GeoIP database configured
            "plays_by_referrer": {"(none)": 4, "blog.example.org": 1, "news.example.com": 1},
            "plays_by_player": {"applecoremedia": 1, "chrome": 1, "curl": 1, "exoplayer": 1, "firefox": 1, "safari": 1},
            "bytes_by_flavor": dict(sorted(self.bytes_by_flavor.items(), key=lambda kv: (-kv[1], kv[0]))),
            "denials_by_reason": {"referrer_blocked": 1, "token_required": 1},
            "errors_by_code": {"400 bad_request": 1, "404 segment_not_found": 1, "404 unknown_flavor": 1},
        }


@pytest.fixture(scope="module")
def scripted(media_library, redis_server, tmp_path_factory):
    events_dir = tmp_path_factory.mktemp("events")
    cfg = AnalyticsConfig(enabled=True, node_id="test-node", batch_size=4, flush_interval=0.05, session_salt="k")
    sinks = [JsonlSink(events_dir, "test-node")]
    if redis_server is not None:
        from analytics.sinks import RedisStreamSink

        sinks.append(RedisStreamSink(redis_server.url, "vodgate:events", maxlen=100_000))
    from config.settings import parse_settings
    from edge.app import create_app

    settings = parse_settings(tomllib.loads(ACCESS.format(library=media_library)), "test")
    app = wrap(create_app(settings), cfg, MetricsConfig(), sink=MultiSink(sinks))
    server = ThreadServer(app)
    try:
        script = Script(server.base)
        script.play(media_library)
        metrics = httpx.get(server.base + "/metrics").text
    finally:
        server.stop()
    return {"dir": events_dir, "script": script, "metrics": metrics, "redis": redis_server, "app": app}


def _numbers(report: dict) -> dict:
    return {k: report[k] for k in NUMBERS}


NUMBERS = ("plays", "unique_sessions", "minutes_delivered", "bytes_delivered", "flavor_switches", "top_entries", "dropoff",
           "plays_by_country", "plays_by_referrer", "plays_by_player", "bytes_by_flavor", "denials_by_reason", "errors_by_code")


def test_jsonl_report_has_the_expected_numbers(scripted):
    report = summarize(read_jsonl(scripted["dir"]))
    assert _numbers(report) == scripted["script"].expected()
    assert sum(n for _, n in report["plays_over_time"]) == 6
    assert report["malformed"] == {"count": 0, "first": []}


def test_events_are_complete_and_carry_no_secrets(scripted):
    files = sorted(scripted["dir"].glob("*.jsonl"))
    text = "".join(f.read_text() for f in files)
    events = [json.loads(line) for line in text.splitlines()]
    assert "SECRET" not in text and "token=" not in text and "127.0.0.1" not in text and "story" not in text
    kinds: dict[str, int] = {}
    for e in events:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
        assert e["node"] == "test-node" and e["v"] == 1
    assert kinds == {
        "play_requested": 6, "segment_served": 13, "progressive_range": 2, "flavor_switch": 2, "error": 3, "denied": 2,
        # A, C, E1 reach all four; B, D reach 25 %; E2 reaches 25 and 50 %
        "reached_25": 6, "reached_50": 4, "reached_75": 3, "reached_100": 3,
    }
    by_session = {}
    for e in events:
        by_session.setdefault(e["session"], set()).add(e["kind"])
    assert {"A", "B", "C", "F"} <= set(by_session)  # A and B: segments joined the master's playSessionId
    segs = [e for e in events if e["kind"] == "segment_served"]
    assert {e["session"] for e in segs if e["ua"] == "chrome"} == {"A"}
    first = next(e for e in segs if e["session"] == "A")
    assert (first["segment"], first["media_start"], first["media_duration"], first["entry_duration"]) == (1, 0.0, 4.0, 12.0)
    assert first["cache"] in ("MISS", "HIT", "COALESCED") and first["ttfb_ms"] > 0 and first["bytes"] > 0
    ranges = sorted((e for e in events if e["kind"] == "progressive_range"), key=lambda e: e["bytes"])
    assert [(r["media_start"], r["media_duration"], r["entry_duration"]) for r in ranges] == [(0.0, 6.0, 12.0), (0.0, 12.0, 12.0)]
    switches = [(e["from_flavor"], e["flavor"]) for e in events if e["kind"] == "flavor_switch"]
    assert switches == [("lo", "mid"), ("mid", "hi")]


def test_metrics_endpoint_exports_server_counters(scripted):
    text = scripted["metrics"]
    segment_200 = 12 + 1  # the script's 200 segment responses and one HEAD (progressive and init are other routes)
    assert f'vodgate_http_requests_total{{route="segment",status="200"}} {segment_200}.0' in text
    assert 'vodgate_http_requests_total{route="segment",status="304"} 1.0' in text
    assert 'vodgate_http_requests_total{route="progressive",status="206"} 1.0' in text
    assert 'vodgate_media_errors_total{code="segment_not_found"} 1.0' in text
    assert 'vodgate_denials_total{reason="token_required"} 1.0' in text
    assert 'vodgate_index_cache_misses_total 3.0' in text  # hi, mid, lo parsed once each
    assert 'vodgate_segment_cache_lookups_total{result="MISS"}' in text
    assert 'vodgate_http_request_duration_seconds_count{class="segment"}' in text
    assert 'vodgate_analytics_events_accepted_total' in text and 'vodgate_analytics_events_dropped_total 0.0' in text


def test_redis_sink_and_aggregator_give_the_same_report(scripted):
    require_redis("Redis sink/aggregator tests")
    from analytics.aggregator import Aggregator

    server = scripted["redis"]
    agg = Aggregator(server.client, consumer="t1", batch_size=7)
    agg.run(exit_when_idle=0.3)
    from_redis = run_report(f"redis:{server.url}")
    assert _numbers(from_redis) == scripted["script"].expected()
    from_jsonl = summarize(read_jsonl(scripted["dir"]))
    assert from_redis["plays_over_time"] == from_jsonl["plays_over_time"]
    assert from_redis["events_counted"] == from_jsonl["events_counted"]
    # a second pass (restart, nothing new) counts nothing twice
    Aggregator(server.client, consumer="t1").run(exit_when_idle=0.2)
    assert _numbers(run_report(f"redis:{server.url}")) == scripted["script"].expected()
    # partner/entry filters apply to the aggregates too
    assert run_report(f"redis:{server.url}", Query(entry="nope"))["plays"] == 0


# --------------------------------------------------------------------------- aggregator crashes

def synthetic_events(n_sessions: int = 150) -> list[dict]:
    """A mixed stream: plays, segments (various progress), switches, errors, denials, milestones, 3 hours."""
    events = []
    for s in range(n_sessions):
        hour = 9 + s % 3
        t = f"2025-03-01T{hour:02d}:{s % 60:02d}:00.000Z"
        entry = f"e{s % 4}"
        base = {"v": 1, "t": t, "node": "n", "partner": "demo", "entry": entry, "session": f"s{s}", "format": "hls",
                "country": ["FR", "US", None][s % 3], "referrer": [None, "a.example"][s % 2], "ua": ["chrome", "safari"][s % 2]}
        events.append({**base, "kind": "play_requested", "flavor": None})
        for n in range(1, 1 + s % 11):
            flavor = "hi" if n % 4 else "lo"
            events.append({**base, "kind": "segment_served", "flavor": flavor, "segment": n, "audio": None,
                           "media_start": (n - 1) * 6.0, "media_duration": 6.0, "entry_duration": 60.0, "bytes": 1000 + n,
                           "status": 200, "cache": "HIT", "ttfb_ms": 0.5})
            if n % 4 == 0:
                events.append({**base, "kind": "flavor_switch", "flavor": "lo", "from_flavor": "hi"})
        if s % 7 == 0:
            events.append({**base, "kind": "error", "flavor": "hi", "status": 404, "code": "segment_not_found"})
        if s % 9 == 0:
            events.append({**base, "kind": "denied", "flavor": None, "reason": "geo_blocked", "status": 403})
        events.append({**base, "kind": "reached_25", "flavor": "hi", "pct": 25})
    return events


def _load_stream(server: RedisServer, stream: str, events: list[dict]) -> None:
    pipe = server.client.pipeline(transaction=False)
    for e in events:
        pipe.xadd(stream, {"e": json.dumps(e)})
    pipe.execute()


def _expected(tmp_path: Path, events: list[dict]) -> dict:
    path = tmp_path / "same-events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return _numbers(summarize(read_jsonl(path)))


def test_aggregator_killed_mid_stream_and_restarted_does_not_double_count(redis_server, tmp_path):
    require_redis("Redis sink/aggregator tests")
    events = synthetic_events()
    stream, prefix = "crash:events", "crash:agg"
    _load_stream(redis_server, stream, events)
    last_id = redis_server.client.xrevrange(stream, count=1)[0][0]
    cmd = [sys.executable, "-m", "analytics.aggregator", "--redis", redis_server.url, "--stream", stream, "--prefix", prefix,
           "--consumer", "agg-1", "--batch-size", "20", "--pause", "0.02", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=REPO)
    mark_key = f"{prefix}:committed:vodgate-agg:agg-1"
    deadline = time.monotonic() + 20
    while redis_server.client.get(mark_key) is None:  # wait until it has committed a few batches
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.15)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    mark = redis_server.client.get(mark_key)
    assert mark is not None and mark != last_id, "the aggregator finished before it was killed: nothing was tested"

    restarted = subprocess.run(cmd[:-4] + ["--exit-when-idle", "0.5", "--log-level", "warning"], cwd=REPO, timeout=60)
    assert restarted.returncode == 0
    assert redis_server.client.get(mark_key) == last_id
    assert redis_server.client.xpending(stream, "vodgate-agg")["pending"] == 0
    assert _numbers(run_report(f"redis:{redis_server.url}", prefix=prefix)) == _expected(tmp_path, events)


def test_batch_committed_but_not_acknowledged_is_skipped_on_replay(redis_server, tmp_path):
    """The crash window between EXEC and XACK, made deterministic."""
    require_redis("Redis sink/aggregator tests")
    from analytics.aggregator import Aggregator

    events = synthetic_events(40)
    stream, prefix = "window:events", "window:agg"
    _load_stream(redis_server, stream, events)
    first = Aggregator(redis_server.client, stream, consumer="w", prefix=prefix, batch_size=50)
    first.ensure_group()
    batch = first.read(">")
    assert first.commit(batch) == len(batch)  # counted and watermarked... and then the process dies: no XACK
    assert redis_server.client.xpending(stream, "vodgate-agg")["pending"] == len(batch)

    again = Aggregator(redis_server.client, stream, consumer="w", prefix=prefix, batch_size=50)
    again.run(exit_when_idle=0.2)
    assert again.skipped == len(batch) and redis_server.client.xpending(stream, "vodgate-agg")["pending"] == 0
    assert _numbers(run_report(f"redis:{redis_server.url}", prefix=prefix)) == _expected(tmp_path, events)


def test_aggregator_skips_and_reports_malformed_stream_entries(redis_server):
    require_redis("Redis sink/aggregator tests")
    from analytics.aggregator import Aggregator

    stream, prefix = "bad:events", "bad:agg"
    events = synthetic_events(3)
    play = events[0]
    segment = next(e for e in events if e["kind"] == "segment_served")
    c = redis_server.client
    c.xadd(stream, {"e": json.dumps(play)})
    bad_ids = [c.xadd(stream, {"e": "{torn"}).decode(), c.xadd(stream, {"other": "x"}).decode(),
               c.xadd(stream, {"e": json.dumps({**segment, "bytes": -5})}).decode()]
    c.xadd(stream, {"e": json.dumps(segment)})
    agg = Aggregator(c, stream, consumer="b", prefix=prefix)
    agg.run(exit_when_idle=0.2)
    report = run_report(f"redis:{redis_server.url}", prefix=prefix)
    assert agg.malformed == 3 and report["malformed"] == {"count": 3, "first": [f"stream id {i}" for i in bad_ids]}
    assert report["plays"] == 1 and c.xpending(stream, "vodgate-agg")["pending"] == 0
