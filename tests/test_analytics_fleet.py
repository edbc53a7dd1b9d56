"""Play analytics over a fleet: one play per session and media time counted once, across nodes and refetches.

Two real ``vodgate serve`` processes (``python -m cli.main serve --config``, the production wiring) play
the part of two nodes behind a CDN that spreads one viewer over both. They share one JSONL folder (each
writes its own files, as nodes sharing a volume do) and, when redis-server is installed, one Redis
stream that :class:`analytics.aggregator.Aggregator` counts. The report must say the same from both.

What is checked (issue 10, "Plays across nodes" and "Segment minutes inflated by refetching"):
- a session whose master playlists reach two nodes emits a play_requested on each, and is one play;
- a segment refetched (a retry, Range: bytes=0-), or the same media time loaded in another rendition,
  on the same node or on the other one, adds nothing to minutes: a session counts the media time
  newly delivered to it (``media_new`` on segment events; the reports keep each session's union);
- events written before this (segments without ``media_new``) still count their ``media_duration``.

Redis: a real ``redis-server`` on a free port; without it the Redis tests skip and say so, unless
VODGATE_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from conftest import REPO, ServerProcess
from redis_support import RedisServer, redis_available, redis_server, require_redis  # noqa: F401 (fixture)

sys.path.insert(0, str(REPO))

from analytics.report import Query, read_jsonl, run as run_report, summarize  # noqa: E402

CONFIG = """
[server]
media_root = "{library}"
segment_duration = 4

[analytics]
enabled = true
sinks = {sinks}
path = "{events}"
redis_url = "{redis_url}"
stream = "fleet:events"
flush_interval = 0.05
session_salt = "fleet"
node_id = "{node}"
"""
LADDER = "/p/demo/e/ladder"  # hi, mid, lo; 12 s in three 4 s segments
TWICE = "/p/demo/e/h264_baseline"  # one flavor (main); 8 s in two 4 s segments
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
NUMBERS = ("plays", "unique_sessions", "minutes_delivered", "bytes_delivered", "top_entries", "plays_by_country",
           "plays_by_referrer", "plays_by_player", "bytes_by_flavor", "plays_over_time", "events_counted")


@dataclass
class Fleet:
    """What the two nodes wrote, and the bytes the clients received."""

    events_dir: Path
    events: list[dict] = field(repr=False)
    bytes_by_entry: dict[str, int]
    redis: RedisServer | None

    def kinds(self, kind: str, entry: str) -> list[dict]:
        return [e for e in self.events if e["kind"] == kind and e["entry"] == entry]


def play_across_two_nodes(a: str, b: str) -> int:
    """Session V on the ladder: the CDN sends its master to both nodes and its segments to either.

    Node A: seg 1 and 2 (hi). Node B: seg 2 again (hi: the CDN retried it there), seg 3 in mid, then seg 3
    in hi (an ABR switch that loads the same time in another rendition). 12 s of media were delivered.
    Returns the body bytes received.
    """
    received = 0
    with httpx.Client(headers={"User-Agent": CHROME, "Referer": "https://news.example.com/story"}, timeout=30) as client:
        for base, path in (
            (a, "hls/master.m3u8?playSessionId=V"), (a, "hls/hi/index.m3u8"), (a, "hls/hi/seg-1.ts"), (a, "hls/hi/seg-2.ts"),
            (b, "hls/master.m3u8?playSessionId=V"), (b, "hls/hi/index.m3u8"), (b, "hls/hi/seg-2.ts"),
            (b, "hls/mid/seg-3.ts"), (b, "hls/hi/seg-3.ts"),
        ):
            r = client.get(f"{base}{LADDER}/{path}")
            assert r.status_code == 200, (base, path, r.status_code)
            if "seg-" in path:
                received += len(r.content)
    return received


def fetch_every_segment_twice(a: str) -> int:
    """Session R on h264_baseline, node A only: each segment twice, the second time as ffmpeg asks (bytes=0-)."""
    received = 0
    with httpx.Client(headers={"User-Agent": CHROME}, timeout=30) as client:
        assert client.get(f"{a}{TWICE}/hls/master.m3u8?playSessionId=R").status_code == 200
        for n in (1, 2):
            first = client.get(f"{a}{TWICE}/hls/main/seg-{n}.ts")
            again = client.get(f"{a}{TWICE}/hls/main/seg-{n}.ts", headers={"Range": "bytes=0-"})
            assert (first.status_code, again.status_code) == (200, 206) and first.content == again.content
            received += len(first.content) + len(again.content)
    return received


@pytest.fixture(scope="module")
def fleet(media_library, redis_server, tmp_path_factory) -> Fleet:
    workdir = tmp_path_factory.mktemp("fleet")
    events_dir = workdir / "events"
    sinks = '["jsonl", "redis"]' if redis_server is not None else '["jsonl"]'
    redis_url = redis_server.url if redis_server is not None else "redis://127.0.0.1:1/0"
    nodes = []
    try:
        for node in ("node-a", "node-b"):
            config = workdir / f"{node}.toml"
            config.write_text(CONFIG.format(library=media_library, events=events_dir, node=node, sinks=sinks, redis_url=redis_url))
            # one worker process: one event builder per node (several workers of a node are their own question)
            nodes.append(ServerProcess(["--config", str(config), "--workers", "1"], workdir / f"{node}.log", wait=False, name=node))
        a, b = (node.wait().base for node in nodes)
        received = {"ladder": play_across_two_nodes(a, b), "h264_baseline": fetch_every_segment_twice(a)}
    finally:
        for node in nodes:
            node.stop()  # SIGTERM: the lifespan shutdown flushes each node's queue
    events = [json.loads(line) for f in sorted(events_dir.glob("*.jsonl")) for line in f.read_text().splitlines()]
    return Fleet(events_dir, events, received, redis_server)


def expected_ladder(fleet: Fleet) -> dict:
    return {"entry": "demo/ladder", "plays": 1, "sessions": 1, "minutes": 0.2, "completion": 1.0}  # 12 s


# --------------------------------------------------------------------------- plays across nodes

def test_each_node_emits_a_play_for_the_session_and_the_report_counts_one(fleet):
    plays = fleet.kinds("play_requested", "ladder")
    assert sorted((e["node"], e["session"]) for e in plays) == [("node-a", "V"), ("node-b", "V")]
    ladder = Query(entry="ladder")
    report = summarize(read_jsonl(fleet.events_dir, ladder), ladder)
    assert (report["plays"], report["unique_sessions"]) == (1, 1)
    assert report["top_entries"] == [expected_ladder(fleet)]
    assert report["plays_by_referrer"] == {"news.example.com": 1} and report["plays_by_player"] == {"chrome": 1}
    assert sum(n for _, n in report["plays_over_time"]) == 1


def test_the_redis_aggregates_count_the_same_one_play(fleet):
    require_redis()
    from analytics.aggregator import Aggregator

    server = fleet.redis
    Aggregator(server.client, "fleet:events", consumer="fleet", batch_size=3).run(exit_when_idle=0.3)
    from_redis = run_report(f"redis:{server.url}")
    from_jsonl = summarize(read_jsonl(fleet.events_dir))
    assert {k: from_redis[k] for k in NUMBERS} == {k: from_jsonl[k] for k in NUMBERS}
    ladder = run_report(f"redis:{server.url}", Query(entry="ladder"))
    assert (ladder["plays"], ladder["unique_sessions"], ladder["top_entries"]) == (1, 1, [expected_ladder(fleet)])
    # a restart with nothing new counts nothing twice
    Aggregator(server.client, "fleet:events", consumer="fleet").run(exit_when_idle=0.2)
    assert {k: run_report(f"redis:{server.url}")[k] for k in NUMBERS} == {k: from_jsonl[k] for k in NUMBERS}


# --------------------------------------------------------------------------- minutes: media time newly delivered

def test_each_node_marks_what_its_segments_added_to_the_session(fleet):
    segments = [(e["node"], e["flavor"], e["segment"], e["media_new"]) for e in fleet.kinds("segment_served", "ladder")]
    assert segments == [
        ("node-a", "hi", 1, 4.0), ("node-a", "hi", 2, 4.0),
        ("node-b", "hi", 2, 4.0),  # new to node B: only the report, which sees both nodes, knows A sent it
        ("node-b", "mid", 3, 4.0), ("node-b", "hi", 3, 0.0),  # the same 4 s in another rendition adds nothing
    ]


def test_a_session_spread_over_two_nodes_counts_the_entry_duration_once(fleet):
    tally = read_jsonl(fleet.events_dir)
    assert tally.fields["ms|demo|ladder"] == 12_000  # not 20 000 (every segment), nor 16 000 (each node's own)
    assert summarize(tally, Query(entry="ladder"))["bytes_delivered"] == fleet.bytes_by_entry["ladder"]


def test_a_session_fetching_every_segment_twice_counts_the_entry_duration_once(fleet):
    segments = fleet.kinds("segment_served", "h264_baseline")
    assert [(e["segment"], e["status"], e["delivered"], e["media_new"]) for e in segments] == [
        (1, 200, True, 4.0), (1, 206, True, 0.0), (2, 200, True, 4.0), (2, 206, True, 0.0)]
    tally = read_jsonl(fleet.events_dir)
    assert tally.fields["ms|demo|h264_baseline"] == 8_000
    report = summarize(tally, Query(entry="h264_baseline"))
    assert report["top_entries"] == [
        {"entry": "demo/h264_baseline", "plays": 1, "sessions": 1, "minutes": round(8 / 60, 3), "completion": 1.0}]
    assert report["bytes_delivered"] == fleet.bytes_by_entry["h264_baseline"]  # bytes are bytes: both copies


# --------------------------------------------------------------------------- scripted events (both readers)

def _event(kind: str, t: str, session: str = "S", node: str = "n1", **fields) -> dict:
    return {"v": 1, "kind": kind, "t": t, "node": node, "partner": "demo", "entry": "e", "flavor": fields.pop("flavor", "hi"),
            "session": session, "format": "hls", "country": None, "referrer": None, "ua": "chrome", **fields}


def _segment(t: str, n: int, session: str = "S", node: str = "n1", new: float | None = 4.0, **fields) -> dict:
    event = _event("segment_served", t, session, node, segment=n, audio=None, media_start=(n - 1) * 4.0, media_duration=4.0,
                   entry_duration=12.0, bytes=1000, ttfb_ms=0.5, cache="HIT", status=200, **fields)
    if new is not None:
        event["delivered"] = True
        event["media_new"] = new
    return event


def _both(tmp_path: Path, redis_server, events: list[dict], q: Query = Query()) -> list[dict]:
    """The report of ``events`` from a JSONL file, and (with redis-server) from the aggregates of the same stream.

    Without redis-server only the JSONL report is checked (the Redis tests above say so by skipping)."""
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    reports = [summarize(read_jsonl(path, q), q)]
    if redis_server is None and os.environ.get("VODGATE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"VODGATE_REQUIRE_SERVICES=1 but {redis_available()}")
    if redis_server is not None:
        from analytics.aggregator import Aggregator

        stream, prefix = f"{tmp_path.name}:events", f"{tmp_path.name}:agg"
        for e in events:
            redis_server.client.xadd(stream, {"e": json.dumps(e)})
        Aggregator(redis_server.client, stream, consumer="s", prefix=prefix, batch_size=1).run(exit_when_idle=0.2)
        reports.append(run_report(f"redis:{redis_server.url}", q, prefix=prefix))
    return reports


def test_old_segment_events_without_media_new_count_their_media_duration(tmp_path, redis_server):
    events = [_event("play_requested", "2025-03-01T10:00:00.000Z", session="OLD")]
    for n in (1, 2, 3, 3):  # written before media_new (and before delivered): a refetch counted twice, as it was
        events.append(_segment(f"2025-03-01T10:00:0{n}.000Z", n, session="OLD", new=None))
    events.append(_event("play_requested", "2025-03-01T10:01:00.000Z", session="NEW"))
    for n, new in ((1, 4.0), (2, 4.0), (2, 0.0)):  # written with media_new: the refetch counts once
        events.append(_segment("2025-03-01T10:01:01.000Z", n, session="NEW", new=new))
    for report in _both(tmp_path, redis_server, events):
        assert report["minutes_delivered"] == round((16 + 8) / 60, 3), report["source"]
        assert (report["plays"], report["unique_sessions"]) == (2, 2)


def test_a_play_belongs_to_the_hour_of_its_first_play_requested_whichever_node_reports_it_first(tmp_path, redis_server):
    # node 2's play_requested is earlier (10:59:59) but reaches the stream after node 1's (11:00:01): the
    # aggregator first counts the play at 11:00, then moves it to 10:00 when the earlier one arrives
    events = [
        _event("play_requested", "2025-03-01T11:00:01.000Z", node="n1", country="FR"),
        _segment("2025-03-01T11:00:02.000Z", 1, node="n1"),
        _event("play_requested", "2025-03-01T10:59:59.000Z", node="n2", country="US", ua="safari"),
        _segment("2025-03-01T10:59:59.500Z", 1, node="n2"),  # the same 4 s from the other node
        _segment("2025-03-01T11:00:06.000Z", 2, node="n2"),
    ]
    for report in _both(tmp_path, redis_server, events):
        assert report["plays"] == 1 and report["unique_sessions"] == 1, report["source"]
        assert report["plays_over_time"] == [["2025-03-01T10:00Z", 1]], report["source"]
        assert (report["plays_by_country"], report["plays_by_player"]) == ({"US": 1}, {"safari": 1}), report["source"]
        assert report["minutes_delivered"] == round(8 / 60, 3), report["source"]
    # A window that starts after the first play_requested: the play is not one of the window's (it was the
    # previous window's), though node 1's play_requested is inside it; the session's media there still counts.
    late = Query(start=datetime(2025, 3, 1, 11, tzinfo=timezone.utc))
    report = summarize(read_jsonl(tmp_path / "events.jsonl", late), late)
    assert (report["plays"], report["unique_sessions"], report["minutes_delivered"]) == (0, 1, round(8 / 60, 3))


def test_a_session_across_midnight_on_two_nodes_is_one_play(tmp_path, redis_server):
    require_redis()
    events = [_event("play_requested", "2025-03-01T23:59:00.000Z", node="n1"), _segment("2025-03-01T23:59:01.000Z", 1),
              _event("play_requested", "2025-03-02T00:00:30.000Z", node="n2"), _segment("2025-03-02T00:00:31.000Z", 1, node="n2"),
              _segment("2025-03-02T00:00:35.000Z", 2, node="n2")]
    jsonl, redis = _both(tmp_path, redis_server, events)
    for report in (jsonl, redis):
        assert (report["plays"], report["minutes_delivered"]) == (1, round(8 / 60, 3)), report["source"]
        assert report["plays_over_time"] == [["2025-03-01T23:00Z", 1]]


# --------------------------------------------------------------------------- the union itself

def test_delivered_time_counts_each_millisecond_once_and_stays_bounded():
    from analytics.mediatime import MAX_PIECES, DeliveredTime

    union = DeliveredTime()
    assert union.add(0, 4000) == 4000
    assert union.add(0, 4000) == 0  # a refetch
    assert union.add(4000, 8000) == 4000 and (union.starts, union.ends) == ([0], [8000])  # touching: one piece
    assert union.add(12000, 16000) == 4000 and union.add(6000, 14000) == 4000  # fills the hole between two pieces
    assert (union.starts, union.ends, union.total) == ([0], [16000], 16000)
    assert DeliveredTime.from_text(union.to_text()) == union and union.to_text() == "0-16000"
    seeker = DeliveredTime()
    for n in range(MAX_PIECES + 1):  # a client loading one second here and there: state stays bounded
        seeker.add(n * 10_000, n * 10_000 + 1000)
    assert len(seeker.starts) == MAX_PIECES


# --------------------------------------------------------------------------- one play per session on a node

def test_a_session_fetching_masters_in_both_formats_then_the_mp4_is_one_play():
    """docs/ANALYTICS.md, "One play per session": every master after the first, in either format, and the
    session's progressive responses join the play its first master started."""
    from analytics.events import EventBuilder, Observation
    from edge.request_info import MediaInfo

    builder = EventBuilder("n1")

    def kinds(fmt: str, resource: str, session: str = "V", flavor: str | None = None) -> list[str]:
        info = MediaInfo("demo", "e", fmt, resource, flavor=flavor, client_ip="192.0.2.1")
        obs = Observation(1_700_000_000.0, "GET", f"/p/demo/e/e/{fmt}/x", f"playSessionId={session}".encode(),
                          [(b"user-agent", b"Mozilla/5.0 Chrome/120.0")], "192.0.2.1", 200, 1000, 0.001, 0.002, info=info)
        return [e["kind"] for e in builder.build(obs)]

    assert kinds("hls", "master") == ["play_requested"]
    assert kinds("hls", "master") == [] and kinds("cmaf", "master") == []  # a retry, a reload, the other format
    assert kinds("mp4", "progressive", flavor="hi") == ["progressive_range"]  # from byte 0, yet no second play
    assert kinds("mp4", "progressive", session="W", flavor="hi") == ["play_requested", "progressive_range"]
