"""Analytics building blocks without a server: classifiers, media time, events, queue, sinks, report, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.classify import referrer_domain, safe_session_id, ua_family  # noqa: E402
from config.analytics import AnalyticsConfig, parse_analytics, parse_metrics  # noqa: E402
from analytics.events import EventBuilder, Observation, decile, play_session_param, reached  # noqa: E402
from analytics.mediatime import byte_range_media_time  # noqa: E402
from analytics.metrics import Metrics  # noqa: E402
from analytics.middleware import AnalyticsMiddleware  # noqa: E402
from analytics.queue import EventQueue  # noqa: E402
from analytics.report import Query, main as report_main, parse_when, plot, read_jsonl, render_csv, render_table, summarize  # noqa: E402
from analytics.service import Analytics  # noqa: E402
from analytics.sinks import JsonlSink, MemorySink, MultiSink  # noqa: E402
from config.settings import ConfigError  # noqa: E402
from edge.request_info import MediaInfo, attach  # noqa: E402
from packager.media import MediaIndex, Track  # noqa: E402

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"


# --------------------------------------------------------------------------- classifiers

@pytest.mark.parametrize("ua, family", [
    (CHROME, "chrome"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36", "chrome"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0 Mobile/15E148 Safari/604.1", "chrome"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15", "safari"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", "safari"),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", "firefox"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 Safari/605.1.15", "firefox"),
    (CHROME + " Edg/124.0.2478.51", "edge"),
    ("Mozilla/5.0 (Linux; Android 10; HD1913) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36 EdgA/124.0", "edge"),
    (CHROME + " OPR/109.0.0.0", "other"),
    ("Lavf/60.16.100", "ffmpeg"),
    ("curl/8.5.0", "curl"),
    ("ExoPlayerLib/2.19.1", "exoplayer"),
    ("MyApp/3.1 (Linux;Android 13) ExoPlayerLib/2.18.7", "exoplayer"),
    ("AppleCoreMedia/1.0.0.21E230 (iPhone; U; CPU OS 17_4 like Mac OS X; en_us)", "applecoremedia"),
    ("python-httpx/0.28.1", "other"),
    ("", "other"),
    (None, "other"),
])
def test_ua_family(ua, family):
    assert ua_family(ua) == family


@pytest.mark.parametrize("referer, domain", [
    ("https://www.example.com/watch?v=1&token=SECRET", "www.example.com"),
    ("http://User:Pass@Example.COM:8443/a/b#frag", "example.com"),
    ("https://[2001:db8::1]:443/x", None),  # an address, not a domain: not kept
    ("android-app://com.example/", None),
    ("not a url", None),
    ("", None),
    (None, None),
    ("https://", None),
])
def test_referrer_domain_keeps_only_the_host(referer, domain):
    assert referrer_domain(referer) == domain


def test_safe_session_id_and_query_param():
    assert safe_session_id("abc-123_X.y:z~") == "abc-123_X.y:z~"
    odd = safe_session_id("a|b c")
    assert odd and odd.startswith("x") and "|" not in odd and odd == safe_session_id("a|b c")
    assert safe_session_id("x" * 65) != "x" * 65
    assert safe_session_id("") is None
    assert play_session_param(b"token=t0k3n&playSessionId=ps-1&x=2") == "ps-1"
    assert play_session_param(b"playSessionId=a%7Cb") == safe_session_id("a|b")
    assert play_session_param(b"token=abc") is None
    assert play_session_param(b"") is None


# --------------------------------------------------------------------------- progress rule, media time

def test_progress_rule_boundaries():
    assert decile(4.0, 12.0) == 3  # 33 %: reached 10, 20, 30 %
    assert decile(12.0, 12.0) == 10
    assert decile(11.95, 12.0) == 10  # within the tolerance of a frame
    assert decile(11.8, 12.0) == 9
    assert decile(0.0, 12.0) == 0
    assert decile(5.0, None) == 0
    assert reached(6.0, 12.0, 50) and not reached(5.8, 12.0, 50)


def _track(offsets, sizes, dts, durations, cts=None, shift=0, timescale=1000, kind="video", edit_end=None):
    n = len(offsets)
    arr = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return Track(
        track_id=1, kind=kind, fourcc="avc1", codec_string="avc1.64001f", timescale=timescale, language="und",
        sample_entry=b"", video=None, audio=None, dts=arr(dts), cts_offsets=arr(cts if cts is not None else [0] * n),
        durations=arr(durations), sizes=arr(sizes), offsets=arr(offsets), keyframes=np.ones(n, dtype=bool),
        presentation_shift=shift, edit_end=edit_end,
    )


def test_byte_range_media_time_counts_whole_samples_only():
    # 4 video samples of 100 bytes at 1000.., 0.5 s each; an audio track interleaved elsewhere is ignored
    video = _track([1000, 1100, 1300, 1400], [100] * 4, [0, 500, 1000, 1500], [500] * 4)
    audio = _track([1200], [100], [0], [2000], kind="audio")
    index = MediaIndex(tracks=(video, audio), movie_timescale=1000, file_size=1500)
    assert byte_range_media_time(index, 0, 1499).start == 0.0
    assert byte_range_media_time(index, 0, 1499).end == 2.0
    span = byte_range_media_time(index, 1050, 1399)  # sample 1 cut: samples 2 (1100) and 3 (1300) are whole
    assert (span.start, span.end) == (0.5, 1.5)
    assert byte_range_media_time(index, 0, 999) is None  # the moov only
    assert byte_range_media_time(index, 1000, 1098) is None  # less than a frame
    # B-frames + edit list: presentation order, shifted, clamped at the edit end
    # decode order I P B B -> presentation I B B P (pts 0, 300, 100, 200 after the shift)
    bframes = _track([0, 10, 20, 30], [10] * 4, [0, 100, 200, 300], [100] * 4, cts=[100, 300, 0, 0], shift=-100, edit_end=350)
    index = MediaIndex(tracks=(bframes,), movie_timescale=1000)
    span = byte_range_media_time(index, 0, 39)
    assert (span.start, span.end) == (0.0, 0.35)
    span = byte_range_media_time(index, 20, 39)  # the two B-frames
    assert (span.start, span.end) == (0.1, 0.3)
    audio_only = MediaIndex(tracks=(audio,), movie_timescale=1000)
    assert byte_range_media_time(audio_only, 1200, 1299).end == 2.0


# --------------------------------------------------------------------------- events

def _obs(info, path="/p/demo/e/ladder/hls/hi/seg-1.ts", query=b"", status=200, nbytes=1000, method="GET",
         ua=CHROME, referer="https://site.example/page?token=SECRET", wall=1_700_000_000.0, content_range=None,
         error_body=None, peer="198.51.100.7"):
    headers = [(b"host", b"x"), (b"user-agent", ua.encode())]
    if referer:
        headers.append((b"referer", referer.encode()))
    return Observation(wall, method, path, query, headers, peer, status, nbytes, 0.002, 0.003, content_range, error_body, info)


def _seg(flavor="hi", n=1, audio=None, fmt="hls", start=None, duration=4.0, total=12.0, **kw):
    start = (n - 1) * 4.0 if start is None else start
    return MediaInfo("demo", "ladder", fmt, "segment", flavor=flavor, audio=audio, segment=n, media_start=start,
                     media_duration=duration, entry_duration=total, cache="HIT", **kw)


def test_events_never_carry_tokens_queries_or_raw_ips():
    b = EventBuilder("node-a", salt=b"k")
    master = MediaInfo("demo", "ladder", "hls", "master", entry_duration=12.0, client_ip="198.51.100.7")
    events = b.build(_obs(master, "/p/demo/e/ladder/hls/master.m3u8", query=b"token=SECRET&playSessionId=p1"))
    assert [e["kind"] for e in events] == ["play_requested"]
    e = events[0]
    assert e["session"] == "p1" and e["referrer"] == "site.example" and e["ua"] == "chrome" and e["node"] == "node-a"
    text = json.dumps(events)
    assert "SECRET" not in text and "198.51.100.7" not in text and "token" not in text and "ip" not in e
    withip = EventBuilder("n", store_ip=True).build(_obs(master, "/p/demo/e/ladder/hls/master.m3u8"))
    assert withip[0]["ip"] == "198.51.100.7"


def test_session_precedence_param_token_hash():
    b = EventBuilder("n", salt=b"k", bucket_seconds=1800)
    t0 = 1_700_000_000.0
    # the master carries playSessionId; the player's segment requests do not: they join it (same IP+UA+entry)
    b.build(_obs(MediaInfo("demo", "ladder", "hls", "master"), query=b"playSessionId=P", wall=t0))
    assert b.build(_obs(_seg(), wall=t0 + 5))[0]["session"] == "P"
    # a token session: used as is, or mapped to the playSessionId seen with it
    assert b.build(_obs(_seg(session_id="tok-1"), ua="curl/8", wall=t0))[0]["session"] == "tok-1"
    b.build(_obs(MediaInfo("demo", "ladder", "hls", "master", session_id="tok-2"), query=b"playSessionId=Q", ua="x", wall=t0))
    assert b.build(_obs(_seg(session_id="tok-2"), ua="y", wall=t0))[0]["session"] == "Q"
    # no param, no token: a keyed hash of IP + UA + entry, stable while active, new after an idle bucket
    h1 = b.build(_obs(_seg(), ua="Lavf/60", wall=t0))[0]["session"]
    h2 = b.build(_obs(_seg(n=2), ua="Lavf/60", wall=t0 + 1700))[0]["session"]
    h3 = b.build(_obs(_seg(n=3), ua="Lavf/60", wall=t0 + 1700 + 1801))[0]["session"]
    other_ip = b.build(_obs(_seg(), ua="Lavf/60", wall=t0, peer="203.0.113.9"))[0]["session"]
    assert h1.startswith("h") and h1 == h2 and h3 != h1 and other_ip != h1
    # the same inputs give the same id on another node with the same salt (fleet), another id with another salt
    assert EventBuilder("m", salt=b"k").build(_obs(_seg(), ua="Lavf/60", wall=t0))[0]["session"] == h1
    assert EventBuilder("m", salt=b"other").build(_obs(_seg(), ua="Lavf/60", wall=t0))[0]["session"] != h1


def test_segments_switches_and_milestones():
    b = EventBuilder("n")
    kinds = []
    for flavor, n in (("lo", 1), ("mid", 2), ("mid", 2), ("hi", 3)):
        kinds.append([e["kind"] for e in b.build(_obs(_seg(flavor, n), query=b"playSessionId=S"))])
    assert kinds == [
        ["segment_served", "reached_25"],
        ["segment_served", "flavor_switch", "reached_50"],
        ["segment_served"],
        ["segment_served", "flavor_switch", "reached_75", "reached_100"],
    ]
    switch = b.build(_obs(_seg("lo", 1), query=b"playSessionId=S"))[1]
    assert (switch["kind"], switch["from_flavor"], switch["flavor"]) == ("flavor_switch", "hi", "lo")
    # audio renditions advance progress but never switch flavors; 206 (byte-range) segments advance nothing
    b2 = EventBuilder("n")
    assert [e["kind"] for e in b2.build(_obs(_seg("hi", 3, audio=1), query=b"playSessionId=T"))] == [
        "segment_served", "reached_25", "reached_50", "reached_75", "reached_100"]
    assert [e["kind"] for e in b2.build(_obs(_seg("lo", 2), query=b"playSessionId=U", status=206))] == ["segment_served"]


def test_nothing_for_head_304_playlists_and_init():
    b = EventBuilder("n")
    assert b.build(_obs(_seg(), method="HEAD")) == []
    assert b.build(_obs(_seg(), status=304)) == []
    for resource in ("index", "iframes", "init"):
        assert b.build(_obs(MediaInfo("demo", "ladder", "hls", resource, flavor="hi"))) == []
    assert b.build(_obs(None, path="/healthz")) == []
    assert b.build(_obs(None, path="/favicon.ico", status=404)) == []


def test_denied_and_error_events():
    b = EventBuilder("n")
    denied = b.build(_obs(MediaInfo("demo", "ladder", "hls", "master", denied="geo_blocked", country="FR"), status=403))
    assert [(e["kind"], e["reason"], e["status"], e["country"]) for e in denied] == [("denied", "geo_blocked", 403, "FR")]
    err = b.build(_obs(_seg(flavor="zz", error="unknown_flavor"), status=404))
    assert [(e["kind"], e["status"], e["code"], e["flavor"]) for e in err] == [("error", 404, "unknown_flavor", "zz")]
    unparsed = b.build(_obs(None, path="/p/x/e/../hls/master.m3u8", status=400, error_body=b'{"error":"bad_request","detail":"x"}'))
    assert [(e["kind"], e["code"], e["partner"]) for e in unparsed] == [("error", "bad_request", None)]


def test_progressive_play_once_and_media_time_off_the_request_path():
    video = _track([1000, 1100, 1200, 1300], [100] * 4, [0, 3000, 6000, 9000], [3000] * 4)
    index = MediaIndex(tracks=(video,), movie_timescale=1000, file_size=1400)
    b = EventBuilder("n")
    info = MediaInfo("demo", "ladder", "mp4", "progressive", flavor="mid")
    first = b.build(_obs(info, nbytes=1200, status=206, content_range=b"bytes 0-1199/1400"))
    assert [e["kind"] for e in first] == ["play_requested", "progressive_range"]
    rng = first[1]
    assert rng["media_start"] is None and "_resolve" in rng  # resolved later, by the flush task
    assert [e["kind"] for e in b.complete_progressive(rng, index)] == ["reached_25", "reached_50"]
    assert (rng["media_start"], rng["media_duration"], rng["entry_duration"], rng["range_end"]) == (0.0, 6.0, 12.0, 1199)
    again = b.build(_obs(info, nbytes=200, status=206, content_range=b"bytes 1200-1399/1400"))
    assert [e["kind"] for e in again] == ["progressive_range"]  # no second play for the same session
    assert [e["kind"] for e in b.complete_progressive(again[0], index)] == ["reached_75", "reached_100"]
    unknown = b.build(_obs(info, nbytes=10, status=206, content_range=b"bytes 5-14/1400", ua="other"))
    b.complete_progressive(unknown[-1], None)  # no index: media time stays unknown
    assert unknown[-1]["media_start"] is None and unknown[-1]["media_duration"] is None and "_resolve" not in unknown[-1]


# --------------------------------------------------------------------------- queue

class FailingSink(MemorySink):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def write(self, events):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("sink down")
        await super().write(events)


def test_queue_full_drops_and_counts_without_raising(caplog):
    async def scenario():
        sink = MemorySink()
        q = EventQueue(sink, maxsize=10, batch_size=100, flush_interval=60)
        with caplog.at_level(logging.WARNING, "vodgate.analytics"):
            accepted = [q.put({"n": i}) for i in range(25)]
            more = [q.put({"n": i}) for i in range(5)]
        assert accepted.count(True) == 10 and q.dropped == 20 and not any(more)
        warnings = [r for r in caplog.records if "queue full" in r.getMessage()]
        assert len(warnings) == 1  # logged at most once a minute
        await q.close()
        assert [e["n"] for e in sink.events] == list(range(10))
        assert q.written == 10 and q.size == 0 and sink.closed
        assert q.put({"late": 1}) is False  # after close: dropped, not raised

    asyncio.run(scenario())


def test_queue_retries_a_failing_sink_and_gives_up_only_at_shutdown():
    async def scenario():
        sink = FailingSink(failures=2)
        q = EventQueue(sink, maxsize=100, batch_size=3, flush_interval=0.01)
        await q.start()
        for i in range(7):
            q.put({"n": i})
        await q.close()
        assert [e["n"] for e in sink.events] == list(range(7)) and q.sink_errors == 2 and q.lost == 0

        dead = FailingSink(failures=10**9)
        q = EventQueue(dead, maxsize=100, batch_size=3, flush_interval=0.01, shutdown_timeout=0.3)
        for i in range(7):
            q.put({"n": i})
        await q.close()
        assert q.lost == 7 and q.written == 0

    asyncio.run(scenario())


def test_multisink_retries_only_the_failed_sink():
    async def scenario():
        good, flaky = MemorySink(), FailingSink(failures=1)
        multi = MultiSink([good, flaky])
        q = EventQueue(multi, batch_size=2, flush_interval=0.01)
        for i in range(4):
            q.put({"n": i})
        await q.close()
        assert [e["n"] for e in good.events] == [0, 1, 2, 3] == [e["n"] for e in flaky.events]

    asyncio.run(scenario())


# --------------------------------------------------------------------------- JSONL sink, report

def test_jsonl_rotation_by_size_and_time(tmp_path):
    now = [1000.0]
    sink = JsonlSink(tmp_path, node="n1", rotate_bytes=300, rotate_seconds=60, clock=lambda: now[0])
    for i in range(10):
        sink.write_sync([{"kind": "x", "i": i, "pad": "y" * 50}])
    by_size = len(sink.files)
    now[0] += 61
    sink.write_sync([{"kind": "x", "i": 10}])
    asyncio.run(sink.close())
    assert by_size >= 3 and len(sink.files) == by_size + 1
    lines = [json.loads(line) for f in sorted(tmp_path.glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert sorted(e["i"] for e in lines) == list(range(11))
    assert all(f.name.startswith("events-n1-") for f in sink.files)


def _event(kind, t="2025-03-01T10:15:00.000Z", partner="demo", entry="e1", session="s1", **kw):
    base = {"v": 1, "kind": kind, "t": t, "node": "n", "partner": partner, "entry": entry, "flavor": kw.pop("flavor", None),
            "session": session, "format": "hls", "country": kw.pop("country", None), "referrer": kw.pop("referrer", None),
            "ua": kw.pop("ua", "chrome")}
    base.update(kw)
    return base


def _segment(n, session="s1", flavor="hi", t="2025-03-01T10:15:00.000Z", entry="e1", **kw):
    return _event("segment_served", t=t, entry=entry, session=session, flavor=flavor, segment=n, audio=None,
                  media_start=(n - 1) * 10.0, media_duration=10.0, entry_duration=100.0, bytes=1000, status=200, **kw)


def test_malformed_jsonl_lines_are_skipped_and_reported(tmp_path, capsys):
    good = [_event("play_requested"), _segment(1), _segment(2)]
    lines = [json.dumps(good[0]), "{not json", json.dumps(good[1]), "", "[1, 2, 3]",
             json.dumps({**good[1], "bytes": "many"}), json.dumps({**good[1], "t": "yesterday"}), "\x00\xff garbage",
             json.dumps(good[2]), json.dumps(good[2])[:40]]  # the last one torn, like a crash mid-write
    (tmp_path / "events-a.jsonl").write_text("\n".join(lines))
    report = summarize(read_jsonl(tmp_path))
    assert report["malformed"]["count"] == 6
    assert report["malformed"]["first"] == ["events-a.jsonl:2", "events-a.jsonl:5", "events-a.jsonl:6", "events-a.jsonl:7", "events-a.jsonl:8"]
    assert report["plays"] == 1 and report["unique_sessions"] == 1 and report["minutes_delivered"] == round(20 / 60, 3)
    assert report_main(["--source", f"jsonl:{tmp_path}", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["malformed"]["count"] == 6 and "skipped 6 malformed line(s)" in err


def test_report_numbers_filters_and_formats(tmp_path):
    events = [
        _event("play_requested", country="FR", referrer="a.example"),
        _segment(1), _segment(2), _segment(3),  # s1 reaches 30 %
        _event("play_requested", session="s2", ua="safari"),
        *[_segment(n, session="s2", flavor="lo" if n < 5 else "hi") for n in range(1, 11)],  # s2 to the end
        _event("flavor_switch", session="s2", flavor="hi", from_flavor="lo"),
        _event("play_requested", t="2025-03-01T12:01:00.000Z", entry="e2", session="s3"),
        _event("denied", t="2025-03-01T12:02:00.000Z", entry="e2", session="s4", reason="geo_blocked", status=403),
        _event("error", t="2025-03-01T12:03:00.000Z", entry="e2", session="s4", status=404, code="segment_not_found"),
        _event("reached_100", session="s2", pct=100),  # milestones are not counted twice
    ]
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    r = summarize(read_jsonl(tmp_path))
    assert (r["plays"], r["unique_sessions"], r["minutes_delivered"], r["flavor_switches"]) == (3, 3, round(130 / 60, 3), 1)
    assert r["dropoff"]["demo/e1"]["sessions"] == 2
    assert list(r["dropoff"]["demo/e1"]["reached"].values()) == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert r["dropoff"]["demo/e2"] == {"sessions": 1, "reached": {f"{d}%": (1.0 if d == 0 else 0.0) for d in range(0, 101, 10)}}
    assert r["plays_by_country"] == {"unknown": 2, "FR": 1}
    assert r["plays_by_referrer"] == {"(none)": 2, "a.example": 1}
    assert r["bytes_by_flavor"] == {"hi": 9000, "lo": 4000}
    assert r["denials_by_reason"] == {"geo_blocked": 1} and r["errors_by_code"] == {"404 segment_not_found": 1}
    assert r["plays_over_time"] == [["2025-03-01T10:00Z", 2], ["2025-03-01T12:00Z", 1]]
    assert [t["entry"] for t in r["top_entries"]] == ["demo/e1", "demo/e2"]

    late = Query(start=parse_when("2025-03-01T12:00"), end=parse_when("2025-03-01T13:00Z"))
    r2 = summarize(read_jsonl(tmp_path, late), late)
    assert (r2["plays"], r2["unique_sessions"], r2["denials_by_reason"]) == (1, 1, {"geo_blocked": 1})
    only_e1 = Query(entry="e1")
    r3 = summarize(read_jsonl(tmp_path, only_e1), only_e1)
    assert (r3["plays"], r3["errors_by_code"], list(r3["dropoff"])) == (2, {}, ["demo/e1"])

    table = render_table(r)
    assert "demo/e1" in table and "Drop-off" in table and "geo_blocked" in table
    rows = render_csv(r).splitlines()
    assert rows[0] == "section,key,value" and "summary,plays,3" in rows and "dropoff,demo/e1@40%,0.5" in rows

    out = tmp_path / "report.png"
    plot(r, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_parse_when():
    assert parse_when("2025-03-01").isoformat() == "2025-03-01T00:00:00+00:00"
    assert parse_when("2025-03-01T12:30+02:00").isoformat() == "2025-03-01T10:30:00+00:00"
    now = parse_when("2025-03-02T00:00Z")
    assert parse_when("-1d", now) == parse_when("2025-03-01T00:00Z")
    with pytest.raises(ValueError):
        parse_when("yesterday-ish")


# --------------------------------------------------------------------------- config

def test_config_sections():
    assert parse_analytics(None) == AnalyticsConfig()
    cfg = parse_analytics({"enabled": True, "sinks": ["jsonl", "redis"], "path": "ev", "flush_interval": 2,
                           "node_id": "edge-1", "store_ip": True}, base_dir=Path("/etc/vodgate"))
    assert cfg.sinks == ("jsonl", "redis") and cfg.path == Path("/etc/vodgate/ev") and cfg.flush_interval == 2.0
    assert cfg.node == "edge-1" and "session_salt" not in repr(cfg)
    for bad, needle in (({"sinks": ["kafka"]}, "analytics.sinks"), ({"queue_size": 0}, "analytics.queue_size"),
                        ({"store_ip": "yes"}, "analytics.store_ip"), ({"bogus": 1}, "unknown key"),
                        ({"redis_url": "localhost"}, "analytics.redis_url"), ({"node_id": "a b"}, "analytics.node_id"),
                        ({"flush_interval": 0}, "analytics.flush_interval")):
        with pytest.raises(ConfigError, match=needle):
            parse_analytics(bad)
    assert parse_metrics({"path": "/m"}).path == "/m"
    with pytest.raises(ConfigError, match="metrics.path"):
        parse_metrics({"path": "/p/metrics"})


# --------------------------------------------------------------------------- metrics and the middleware

class _LRU:
    def __init__(self, hits, misses):
        self.hits, self.misses = hits, misses


class _Media:
    indexes = _LRU(7, 2)
    media_sets = _LRU(5, 1)


class _Memory:
    size = 12345

    def __len__(self):
        return 3


class _Cache:
    stats = {"HIT": 4, "MISS": 2, "COALESCED": 1}
    memory = _Memory()
    disk = None


def test_metrics_read_server_counters_per_app_registry():
    a, b = Metrics(), Metrics()  # two apps in one process: no duplicate-registration error
    a.bind(media=_Media(), cache=_Cache(), queue=EventQueue(MemorySink(), maxsize=1))
    a.state.queue.put({"x": 1})
    a.state.queue.put({"x": 2})  # dropped
    info = _seg()
    info.package_seconds = 0.012  # what the lead's delivery.py sets on a cache miss
    a.observe("segment", 200, 0.004, 0.003, 5000, info)
    a.observe("master", 403, 0.001, 0.001, 80, MediaInfo("demo", "e", "hls", "master", denied="token_expired"))
    text = a.render()[0].decode()
    for line in ('vodgate_index_cache_hits_total 7.0', 'vodgate_index_cache_misses_total 2.0',
                 'vodgate_segment_cache_lookups_total{result="COALESCED"} 1.0', 'vodgate_segment_cache_memory_bytes 12345.0',
                 'vodgate_analytics_events_dropped_total 1.0', 'vodgate_analytics_events_queued 1.0',
                 'vodgate_http_requests_total{route="segment",status="200"} 1.0', 'vodgate_http_response_bytes_total{class="segment"} 5000.0',
                 'vodgate_denials_total{reason="token_expired"} 1.0', 'vodgate_packaging_seconds_count{format="hls"} 1.0'):
        assert line in text, line
    assert "vodgate_index_cache_hits_total" not in b.render()[0].decode()


def _run_asgi(app, path="/p/demo/e/ladder/hls/hi/seg-1.ts"):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": [], "client": ("127.0.0.1", 5)}
    return scope, sent, receive, send


def test_middleware_never_fails_a_request_for_analytics():
    async def app(scope, receive, send):
        attach(scope, _seg())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 10})

    class Broken(Analytics):
        def capture(self, *args):
            raise RuntimeError("bug in analytics")

    metrics = Metrics()
    mw = AnalyticsMiddleware(app, Broken(MemorySink(), "n"), metrics)
    scope, sent, receive, send = _run_asgi(mw)
    asyncio.run(mw(scope, receive, send))
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"x" * 10
    assert mw.internal_errors == 1 and "vodgate_analytics_internal_errors_total 1.0" in metrics.render()[0].decode()


def test_middleware_observes_then_reraises_app_exceptions():
    async def app(scope, receive, send):
        attach(scope, _seg())
        raise RuntimeError("route bug")

    sink = MemorySink()
    analytics = Analytics(sink, "n")
    mw = AnalyticsMiddleware(app, analytics, Metrics())
    scope, sent, receive, send = _run_asgi(mw)

    async def go():
        with pytest.raises(RuntimeError, match="route bug"):
            await mw(scope, receive, send)
        await analytics.shutdown()

    asyncio.run(go())
    assert [(e["kind"], e["status"], e["code"]) for e in sink.events] == [("error", 500, "internal_error")]
    assert 'vodgate_http_requests_total{route="segment",status="500"} 1.0' in mw.metrics.render()[0].decode()


def test_session_state_stays_bounded_and_keeps_the_recent():
    from analytics.events import SessionIds, SessionTracker

    tracker = SessionTracker(capacity=10)
    for i in range(25):
        tracker.get(("p", "e", f"s{i}"))
        tracker.get(("p", "e", "always"))  # the session that stays active
    assert len(tracker) <= 10 and ("p", "e", "always") in tracker._sessions and ("p", "e", "s24") in tracker._sessions
    ids = SessionIds(capacity=10, salt=b"k")
    first = ids.resolve(None, None, "192.0.2.1", b"ua", "p", "e", 1000.0)
    for i in range(30):
        ids.resolve(None, None, f"192.0.2.{i + 2}", b"ua", "p", "e", 1000.0 + i)
        assert ids.resolve(None, None, "192.0.2.1", b"ua", "p", "e", 1000.0 + i) == first
    assert len(ids._affinity) <= 10


def test_admin_report_routes(tmp_path):
    import httpx
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from analytics.report import report_routes

    events = [_event("play_requested", country="FR"), _segment(1), _event("play_requested", entry="e2", session="s9")]
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + "{torn\n")
    app = Starlette(routes=[Mount("/admin/reports", routes=report_routes(f"jsonl:{tmp_path}"))])

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            r = await client.get("/admin/reports/summary")
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
            body = r.json()
            assert (body["plays"], body["unique_sessions"], body["malformed"]["count"]) == (2, 2, 1)
            assert (await client.get("/admin/reports/summary", params={"entry": "e2"})).json()["plays"] == 1
            assert (await client.get("/admin/reports/summary", params={"format": "csv"})).text.startswith("section,key,value")
            assert "Drop-off" in (await client.get("/admin/reports/summary", params={"format": "table"})).text
            bad = await client.get("/admin/reports/summary", params={"from": "soon"})
            assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
            assert (await client.get("/admin/reports/summary", params={"format": "xml"})).status_code == 400
            png = await client.get("/admin/reports/plot.png")
            assert png.status_code == 200 and png.content[:4] == b"\x89PNG"

    asyncio.run(scenario())


def test_report_finds_the_sink_from_the_server_config(tmp_path, capsys):
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "a.jsonl").write_text(json.dumps(_event("play_requested")) + "\n")
    (tmp_path / "vodgate.toml").write_text('[analytics]\nenabled = true\npath = "events"\n')
    assert report_main(["--config", str(tmp_path / "vodgate.toml"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["plays"] == 1
    assert report_main(["--config", str(tmp_path / "missing.toml")]) == 2


def test_repeated_answers_fold_into_the_same_series_as_single_records():
    one, bulk = Metrics(), Metrics()
    info = MediaInfo(partner="p", entry="e", format="hls", resource="segment", cache="HIT")
    for seconds in (0.0001, 0.0002, 0.003):
        one.record("/p/p/e/e/hls/f/seg-1.ts", 200, seconds, seconds, 1000, info)
        bulk.record_repeat(info, seconds, 1000)
    one.fold()
    bulk.fold()
    assert bulk.requests == one.requests == {("segment", 200): 3}
    assert bulk.bytes_out == one.bytes_out
    for cls in one.latency:
        assert bulk.latency[cls].counts == one.latency[cls].counts and bulk.latency[cls].sum == pytest.approx(one.latency[cls].sum)
        assert bulk.ttfb[cls].counts == one.ttfb[cls].counts
    assert bulk.repeats == {}
