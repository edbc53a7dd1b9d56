"""Redis aggregator: consumes the event stream with a consumer group into hourly aggregates.

    vodgate aggregate --redis redis://127.0.0.1:6379/0 [--stream vodgate:events] [--group vodgate-agg]
                      [--consumer NAME] [--prefix vodgate:agg] [--batch-size 500] [--exit-when-idle S]

Delivery is at least once, counting is exactly once:

1. ``XREADGROUP`` a batch (first this consumer's pending entries, left by a
   crash, then new ones).
2. In one ``WATCH``/``MULTI``/``EXEC`` transaction: add the batch's counts to
   the aggregates **and** store the id of its last entry as this consumer's
   committed watermark. Entries with an id at or below the watermark are
   skipped: they were counted by a transaction that committed before a crash.
   What a count depends on (a session's progress, whether its play was counted,
   the media time it was delivered) is read from watched keys, so another
   consumer changing them makes the transaction start over.
3. ``XACK`` the batch.

A crash before 2 leaves the batch pending and uncounted (it is read again on
restart); a crash between 2 and 3 leaves it pending and counted (skipped on
restart, then acknowledged). Each consumer's new entries arrive in id order,
which is what makes the watermark valid; run each consumer under a stable
``--consumer`` name and do not XCLAIM entries between consumers.

Keys (``P`` = ``--prefix``, hours are UTC ``YYYYMMDDHH``):

====================================  =========================================================
P:h:<hour>                            hash of counters (analytics/counts.py) + ``n|p|e`` events
P:s:<hour>                            set of ``partner|entry|session`` play sessions
P:hours                               sorted set of hours with data (score: epoch of the hour)
P:progress:<YYYYMMDD>                 hash ``partner|entry|session`` -> deciles reached (expires
                                      after 3 days; the previous day is read too, so sessions
                                      across midnight are not counted twice)
P:played:<YYYYMMDD>                   hash ``partner|entry|session`` -> the play_requested its play
                                      was counted from, ``["<t>", "<hour>", [counters]]`` (expires
                                      after 3 days; the days before and after are read too): one
                                      play per session, whichever nodes emitted play_requested.
                                      An earlier one consumed later moves the play to its hour
P:media:<YYYYMMDD>                    hash ``partner|entry|session`` -> segment media time delivered,
                                      ``"0-8000,12000-16000"`` ms (expires after 3 days; the
                                      previous day is read too): minutes count what a segment adds
P:committed:<group>:<consumer>        watermark: last stream id counted
P:malformed (hash: count), P:malformed:ids (list, first 5)  entries that could not be counted
====================================  =========================================================
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from .counts import Contribution, Malformed, contribution
from .mediatime import DeliveredTime
from .report import DEFAULT_PREFIX, MALFORMED_SHOWN, hour_start

log = logging.getLogger("vodgate.aggregator")

PROGRESS_TTL = 3 * 86400


def stream_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def previous_day(day: str) -> str:
    d = datetime(int(day[:4]), int(day[4:6]), int(day[6:8]), tzinfo=timezone.utc) - timedelta(days=1)
    return d.strftime("%Y%m%d")


def next_day(day: str) -> str:
    d = datetime(int(day[:4]), int(day[4:6]), int(day[6:8]), tzinfo=timezone.utc) + timedelta(days=1)
    return d.strftime("%Y%m%d")


def _sessions_by_day(contributions: Iterable[Contribution]) -> dict[str, set[str]]:
    by_day: dict[str, set[str]] = defaultdict(set)
    for c in contributions:
        if c.session is not None:
            by_day[c.hour[:8]].add(c.session)
    return by_day


def _around(by_day: dict[str, set[str]], before: int, after: int) -> dict[str, set[str]]:
    """The same sessions listed under up to ``before`` days before and ``after`` days after their own
    (where their state may be stored)."""
    spread: dict[str, set[str]] = defaultdict(set)
    for day, sessions in by_day.items():
        spread[day] |= sessions
        if before:
            spread[previous_day(day)] |= sessions
        if after:
            spread[next_day(day)] |= sessions
    return spread


def _stored(pipe: Any, keys: dict[str, set[str]]) -> Iterable[tuple[str, Any]]:
    """(session, stored value) for each session listed under a per-day hash ``key`` that holds one (watched reads)."""
    for key, sessions in keys.items():
        unique = sorted(sessions)
        for session, raw in zip(unique, pipe.hmget(key, unique)):
            if raw:
                yield session, raw


@dataclass(frozen=True)
class CountedPlay:
    """The play_requested a session's play was counted from: when, in which hour, which counters (each +1)."""

    at: str
    hour: str
    fields: list[str]

    def to_text(self) -> str:
        return json.dumps([self.at, self.hour, self.fields], separators=(",", ":"))

    @classmethod
    def from_text(cls, raw: bytes | str) -> "CountedPlay":
        at, hour, fields = json.loads(raw)
        return cls(at, hour, fields)


class Aggregator:
    def __init__(self, client: Any, stream: str = "vodgate:events", group: str = "vodgate-agg", consumer: str = "agg-1",
                 prefix: str = DEFAULT_PREFIX, batch_size: int = 500, block_ms: int = 1000, pause: float = 0.0) -> None:
        self.r = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.prefix = prefix
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.pause = pause
        self.watermark_key = f"{prefix}:committed:{group}:{consumer}"
        self.counted = 0
        self.skipped = 0
        self.malformed = 0
        self.batches = 0

    # -- stream

    def ensure_group(self) -> None:
        import redis

        try:
            self.r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, last: str, block: int | None = None) -> list[tuple[bytes, dict | None]]:
        reply = self.r.xreadgroup(self.group, self.consumer, {self.stream: last}, count=self.batch_size, block=block)
        if not reply:
            return []
        return list(reply[0][1])

    # -- one batch

    def process(self, entries: list[tuple[bytes, dict | None]]) -> int:
        counted = self.commit(entries)
        self.ack(entries)
        self.batches += 1
        return counted

    def ack(self, entries: list[tuple[bytes, dict | None]]) -> None:
        if entries:
            self.r.xack(self.stream, self.group, *[entry_id for entry_id, _ in entries])

    def commit(self, entries: list[tuple[bytes, dict | None]]) -> int:
        """Count the entries above the watermark and move it, atomically. Returns how many were counted."""
        import redis

        while True:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    return self._commit(pipe, entries)
                except redis.WatchError:
                    continue  # another consumer touched the same session keys: read again

    def _commit(self, pipe: Any, entries: list[tuple[bytes, dict | None]]) -> int:
        p = self.prefix
        pipe.watch(self.watermark_key)
        raw_mark = pipe.get(self.watermark_key)
        mark = stream_id(raw_mark) if raw_mark else (-1, -1)
        fresh = [(i, f) for i, f in entries if stream_id(i) > mark]
        self.skipped += len(entries) - len(fresh)
        if not fresh:
            pipe.unwatch()
            return 0
        contributions = []
        bad: list[str] = []
        for entry_id, fields in fresh:
            raw = (fields or {}).get(b"e")
            try:
                if raw is None:
                    raise Malformed("entry has no 'e' field (trimmed or foreign)")
                c = contribution(json.loads(raw))
            except (ValueError, Malformed, RecursionError):
                bad.append(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
                continue
            if c is not None:
                contributions.append(c)

        # Sessions' state so far (progress, play counted, media time delivered): per-day hashes, watched
        # until EXEC, so checking a session and counting it are one transaction with the watermark.
        # One HMGET per hash: a day's hash is read once, whether its sessions are that day's or the next's.
        active = _sessions_by_day(contributions)
        progress_keys = {f"{p}:progress:{d}": listed for d, listed in _around(active, before=1, after=0).items()}
        playing = _sessions_by_day(c for c in contributions if c.play)
        watching = _sessions_by_day(c for c in contributions if c.window is not None)
        play_keys = {f"{p}:played:{d}": sessions for d, sessions in _around(playing, before=1, after=1).items()}
        media_keys = {f"{p}:media:{d}": sessions for d, sessions in _around(watching, before=1, after=0).items()}
        if progress_keys or play_keys or media_keys:
            pipe.watch(*progress_keys, *play_keys, *media_keys)
        plays = self._first_plays(pipe, play_keys)
        unions = self._delivered(pipe, media_keys)
        state: dict[str, int] = {}  # session -> the most tenths it reached, as stored (today or the day before)
        for session, raw in _stored(pipe, progress_keys):
            state[session] = max(state.get(session, -1), int(raw))

        deltas: Counter = Counter()
        members: dict[str, set[str]] = defaultdict(set)
        updates: dict[str, dict[str, int]] = defaultdict(dict)
        played: dict[str, set[str]] = defaultdict(set)  # session -> days whose played hash gets its play
        delivered: dict[str, set[str]] = defaultdict(set)  # day -> sessions whose union grew
        hours: set[str] = set()
        for c in contributions:
            h = f"{p}:h:{c.hour}"
            hours.add(c.hour)
            deltas[(h, f"n|{c.pe}")] += 1
            if c.play and c.session is not None:
                counted = plays.get(c.session)
                if counted is None or c.at < counted.at:
                    # The session's first play_requested so far counts: the play, its country, referrer and
                    # player. An earlier one from another node, consumed later, moves the play to its hour.
                    if counted is not None:
                        for name in counted.fields:
                            deltas[(f"{p}:h:{counted.hour}", name)] -= 1
                        # Overwrite the old record too: a later batch reading only that day must see the move.
                        played[c.session].add(counted.hour[:8])
                    plays[c.session] = CountedPlay(c.at, c.hour, [name for name, _ in c.fields])
                    for name, value in c.fields:
                        deltas[(h, name)] += value
                    played[c.session].add(c.hour[:8])
            else:
                for name, value in c.fields:
                    deltas[(h, name)] += value
            if c.window is not None and c.session is not None:
                union = unions.get(c.session)
                if union is None:
                    union = unions[c.session] = DeliveredTime()
                deltas[(h, f"ms|{c.pe}")] += union.add(*c.window)
                delivered[c.hour[:8]].add(c.session)
            if c.session is not None:
                members[f"{p}:s:{c.hour}"].add(c.session)
                old = state.get(c.session, -1)
                if c.decile > old:
                    for d in range(old + 1, c.decile + 1):
                        deltas[(h, f"reach|{c.pe}|{d}")] += 1
                    state[c.session] = c.decile
                    updates[c.hour[:8]][c.session] = c.decile

        pipe.multi()
        for (key, name), value in deltas.items():
            pipe.hincrby(key, name, value)
        for key, group in members.items():
            pipe.sadd(key, *sorted(group))
        for day, mapping in updates.items():
            pipe.hset(f"{p}:progress:{day}", mapping=mapping)
            pipe.expire(f"{p}:progress:{day}", PROGRESS_TTL)
        by_day: dict[str, dict[str, str]] = defaultdict(dict)
        for session, play_days in played.items():
            for day in play_days:
                by_day[day][session] = plays[session].to_text()
        for day, mapping in by_day.items():
            pipe.hset(f"{p}:played:{day}", mapping=mapping)
            pipe.expire(f"{p}:played:{day}", PROGRESS_TTL)
        for day, sessions in delivered.items():
            pipe.hset(f"{p}:media:{day}", mapping={s: unions[s].to_text() for s in sorted(sessions)})
            pipe.expire(f"{p}:media:{day}", PROGRESS_TTL)
        if hours:
            pipe.zadd(f"{p}:hours", {h: hour_start(h).timestamp() for h in hours})
        if bad:
            pipe.hincrby(f"{p}:malformed", "count", len(bad))
            pipe.rpush(f"{p}:malformed:ids", *bad)
            pipe.ltrim(f"{p}:malformed:ids", 0, MALFORMED_SHOWN - 1)
        last = fresh[-1][0]
        pipe.set(self.watermark_key, last)
        pipe.execute()
        self.counted += len(fresh) - len(bad)
        self.malformed += len(bad)
        if bad:
            log.warning("skipped %d malformed stream entries (first: %s)", len(bad), bad[0])
        return len(fresh) - len(bad)

    def _first_plays(self, pipe: Any, keys: dict[str, set[str]]) -> dict[str, CountedPlay]:
        """Sessions whose play is counted already: the earliest play stored in any of ``keys``."""
        plays: dict[str, CountedPlay] = {}
        for session, raw in _stored(pipe, keys):
            stored = CountedPlay.from_text(raw)
            known = plays.get(session)
            if known is None or stored.at < known.at:
                plays[session] = stored
        return plays

    def _delivered(self, pipe: Any, keys: dict[str, set[str]]) -> dict[str, DeliveredTime]:
        """Sessions' segment media time delivered so far: the union of what ``keys`` (their days) hold."""
        unions: dict[str, DeliveredTime] = {}
        for session, raw in _stored(pipe, keys):
            stored = DeliveredTime.from_text(raw)
            if session in unions:
                unions[session].merge(stored)
            else:
                unions[session] = stored
        return unions

    # -- loop

    def run(self, exit_when_idle: float | None = None, stop: Callable[[], bool] = lambda: False) -> None:
        self.ensure_group()
        last = "0"  # this consumer's pending entries first: what a crash left unacknowledged
        while not stop():
            entries = self.read(last)
            if not entries:
                break
            self.process(entries)
            last = entries[-1][0].decode() if isinstance(entries[-1][0], bytes) else entries[-1][0]
        idle_since = time.monotonic()
        block = self.block_ms if exit_when_idle is None else max(1, min(self.block_ms, int(exit_when_idle * 1000)))
        while not stop():
            entries = self.read(">", block=block)
            if entries:
                self.process(entries)
                idle_since = time.monotonic()
                if self.pause:
                    time.sleep(self.pause)
            elif exit_when_idle is not None and time.monotonic() - idle_since >= exit_when_idle:
                break


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vodgate aggregate", description="Count the play-event stream into Redis aggregates.")
    ap.add_argument("--redis", help="redis://host:port/db (default: [analytics] redis_url of --config)")
    ap.add_argument("--config", help="vodgate TOML whose [analytics] section gives redis_url and stream")
    ap.add_argument("--stream", help="stream key (default: from --config, else vodgate:events)")
    ap.add_argument("--group", default="vodgate-agg")
    ap.add_argument("--consumer", default=socket.gethostname(), help="stable name of this aggregator (default: host name)")
    ap.add_argument("--prefix", default=DEFAULT_PREFIX)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--block-ms", type=int, default=1000)
    ap.add_argument("--pause", type=float, default=0.0, help="seconds to sleep after each batch (throttle)")
    ap.add_argument("--exit-when-idle", type=float, help="exit after this many seconds without new events (catch-up runs)")
    ap.add_argument("--log-level", default="info")
    ns = ap.parse_args(argv)
    if ns.config:
        from pathlib import Path

        from config.settings import load_settings

        from config.analytics import AnalyticsConfig

        cfg = load_settings(Path(ns.config)).analytics or AnalyticsConfig()
        ns.redis = ns.redis or cfg.redis_url
        ns.stream = ns.stream or cfg.stream
    if not ns.redis:
        ap.error("--redis URL (or --config FILE) is required")
    ns.stream = ns.stream or "vodgate:events"
    logging.basicConfig(level=ns.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import redis

    client = redis.Redis.from_url(ns.redis, socket_timeout=max(10, ns.block_ms / 1000 + 5))
    agg = Aggregator(client, ns.stream, ns.group, ns.consumer, ns.prefix, ns.batch_size, ns.block_ms, ns.pause)
    stopping = False

    def stop_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop_signal)
    signal.signal(signal.SIGINT, stop_signal)
    log.info("aggregating %s (group %s, consumer %s) into %s:*", ns.stream, ns.group, ns.consumer, ns.prefix)
    try:
        agg.run(ns.exit_when_idle, lambda: stopping)
    except redis.ConnectionError as exc:
        print(f"vodgate aggregate: cannot reach Redis: {exc}", file=sys.stderr)
        return 2
    log.info("stopped: %d events processed, %d already counted before (skipped), %d malformed, %d batches",
             agg.counted, agg.skipped, agg.malformed, agg.batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
