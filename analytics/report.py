"""Reports over play events: ``vodgate report`` and the ``/admin/reports`` routes.

    vodgate report [--from T] [--to T] [--partner P] [--entry E] [--format table|json|csv]
                   [--source jsonl:DIR | redis:URL] [--top N] [--plot out.png] [--output FILE]

Sources: the JSONL files of the embedded sink (``jsonl:DIR``, or a single
file), or the aggregates the Redis aggregator keeps (``redis:URL``; times are
whole UTC hours there). Both go through :func:`analytics.counts.contribution`
and :func:`summarize`, so they agree on the same events.

``T`` is an ISO 8601 date or time (``2025-01-31``, ``2025-01-31T12:00``,
``...Z``; without a zone it is UTC) or a time relative to now (``-24h``,
``-7d``, ``-30m``). ``--from`` is inclusive, ``--to`` exclusive.

A JSONL line that is not a well-formed event is skipped and counted; the
report names the first few (file:line). It is never fatal.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from .counts import Contribution, Malformed, comparable_time, contribution, reach_fields
from .mediatime import DeliveredTime

MALFORMED_SHOWN = 5
DEFAULT_PREFIX = "vodgate:agg"


# --------------------------------------------------------------------------- query

@dataclass(frozen=True)
class Query:
    start: datetime | None = None  # inclusive, UTC
    end: datetime | None = None  # exclusive, UTC
    partner: str | None = None
    entry: str | None = None
    top: int = 10

    def time_bounds(self) -> tuple[str | None, str | None]:
        """Bounds as event ``t`` strings: ISO strings of one format compare like the times."""
        return (_iso(self.start) if self.start else None, _iso(self.end) if self.end else None)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


_RELATIVE = re.compile(r"-(\d+)([smhd])")


def parse_when(text: str, now: datetime | None = None) -> datetime:
    text = text.strip()
    m = _RELATIVE.fullmatch(text)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return (now or datetime.now(timezone.utc)) - timedelta(**{unit: int(m.group(1))})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use 2025-01-31, 2025-01-31T12:00[Z] or -24h / -7d") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


# --------------------------------------------------------------------------- tally: what a source read

@dataclass
class Tally:
    source: str
    fields: Counter = field(default_factory=Counter)  # counter name -> value (analytics/counts.py)
    plays_by_hour: Counter = field(default_factory=Counter)  # "YYYYMMDDHH" -> plays
    session_deciles: dict[str, int] | None = None  # JSONL: "p|e|s" -> deciles reached
    sessions: set[str] | None = None  # Redis: "p|e|s" (reach|... counters already in fields)
    events: int = 0
    lines: int = 0
    malformed: int = 0
    malformed_at: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def bad(self, where: str) -> None:
        self.malformed += 1
        if len(self.malformed_at) < MALFORMED_SHOWN:
            self.malformed_at.append(where)


def _selected(pe_partner: str, pe_entry: str, q: Query) -> bool:
    return (q.partner is None or pe_partner == q.partner) and (q.entry is None or pe_entry == q.entry)


def jsonl_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a JSONL file nor a folder of them")
    return sorted(path.glob("*.jsonl"))


def read_jsonl(path: Path | str, q: Query = Query()) -> Tally:
    """Count the events of every JSONL file under ``path`` (the files of all nodes: one folder).

    Sessions are counted across files, so a session whose requests reached several nodes is one
    play, and the media time it was delivered by several nodes counts once:

    * a play is a session's **first** ``play_requested`` of all the files read (the earliest ``t``;
      nodes emit one each), counted in the window and the hour of that event, with its country,
      referrer and player. A session whose first play_requested is before ``--from`` is not a play
      of the window, even if another node emitted a later one inside it: consecutive windows add up
      to the plays of the whole, and the Redis aggregates count the same way;
    * minutes of segments: what each segment window in range adds to its session's union
      (``mediatime.DeliveredTime``), whichever node served it.
    """
    path = Path(path)
    tally = Tally(source=f"jsonl:{path}", session_deciles={})
    lo, hi = q.time_bounds()
    deciles = tally.session_deciles
    assert deciles is not None
    first_plays: dict[str, tuple[str, Contribution]] = {}  # "p|e|s" -> its earliest play_requested, in range or not
    delivered: dict[str, DeliveredTime] = {}  # "p|e|s" -> segment media time delivered in range
    for file in jsonl_files(path):
        with open(file, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                tally.lines += 1
                if not raw.strip():
                    continue
                try:
                    event = json.loads(raw)
                    c = contribution(event)
                except (ValueError, Malformed, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                    tally.bad(f"{file.name}:{number}")
                    continue
                if c is None:
                    continue
                if (q.partner is not None and event.get("partner") != q.partner) or (q.entry is not None and event.get("entry") != q.entry):
                    continue
                t = comparable_time(event["t"])
                if c.play and c.session is not None:
                    # Before the time filter: a play belongs to the time of its session's first play_requested.
                    known = first_plays.get(c.session)
                    if known is None or t < known[0]:
                        first_plays[c.session] = (t, c)
                if (lo is not None and t < lo) or (hi is not None and t >= hi):
                    continue
                tally.events += 1
                if not c.play:  # plays are counted below, once per session
                    for name, value in c.fields:
                        tally.fields[name] += value
                    if event["kind"] == "play_requested":
                        tally.plays_by_hour[c.hour] += 1  # no session id: each counts
                if c.session is not None:
                    if deciles.get(c.session, -1) < c.decile:
                        deciles[c.session] = c.decile
                    if c.window is not None:
                        union = delivered.get(c.session)
                        if union is None:
                            union = delivered[c.session] = DeliveredTime()
                        tally.fields[f"ms|{c.pe}"] += union.add(*c.window)
    for t, c in first_plays.values():
        if (lo is not None and t < lo) or (hi is not None and t >= hi):
            continue
        for name, value in c.fields:
            tally.fields[name] += value
        tally.plays_by_hour[c.hour] += 1
    return tally


# --------------------------------------------------------------------------- Redis aggregates

def hour_start(hour: str) -> datetime:
    return datetime(int(hour[:4]), int(hour[4:6]), int(hour[6:8]), int(hour[8:10]), tzinfo=timezone.utc)


def read_redis(url: str, q: Query = Query(), prefix: str = DEFAULT_PREFIX, client: Any = None) -> Tally:
    """Sum the aggregator's hourly hashes overlapping [start, end) (whole UTC hours)."""
    import redis

    r = client or redis.Redis.from_url(url, socket_timeout=10)
    tally = Tally(source=f"redis:{_redact(url)}", sessions=set())
    lo = (q.start.replace(minute=0, second=0, microsecond=0).timestamp()) if q.start else "-inf"
    hi = f"({q.end.timestamp()}" if q.end else "+inf"
    hours = [h.decode() for h in r.zrangebyscore(f"{prefix}:hours", lo, hi)]
    if any(t is not None and t != t.replace(minute=0, second=0, microsecond=0) for t in (q.start, q.end)):
        tally.notes.append("Redis aggregates are hourly: the range was widened to whole UTC hours")
    pipe = r.pipeline(transaction=False)
    for hour in hours:
        pipe.hgetall(f"{prefix}:h:{hour}")
        pipe.smembers(f"{prefix}:s:{hour}")
    replies = pipe.execute()
    sessions = tally.sessions
    assert sessions is not None
    for i, hour in enumerate(hours):
        counters, members = replies[2 * i], replies[2 * i + 1]
        for raw_name, raw_value in counters.items():
            name = raw_name.decode()
            parts = name.split("|")
            if len(parts) < 3 or not _selected(parts[1], parts[2], q):
                continue
            value = int(raw_value)
            if parts[0] == "n":
                tally.events += value
                continue
            tally.fields[name] += value
            if parts[0] == "plays":
                tally.plays_by_hour[hour] += value
        for raw in members:
            member = raw.decode()
            partner, entry, _ = member.split("|", 2)
            if _selected(partner, entry, q):
                sessions.add(member)
    tally.malformed = int(r.hget(f"{prefix}:malformed", "count") or 0)
    tally.malformed_at = [f"stream id {x.decode()}" for x in r.lrange(f"{prefix}:malformed:ids", 0, MALFORMED_SHOWN - 1)]
    return tally


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)  # never print a password


# --------------------------------------------------------------------------- summary

DECILES = list(range(0, 101, 10))


def summarize(tally: Tally, q: Query = Query()) -> dict[str, Any]:
    fields = Counter()
    for name, value in tally.fields.items():
        parts = name.split("|")
        if len(parts) >= 3 and _selected(parts[1], parts[2], q):
            fields[name] += value
    if tally.session_deciles is not None:
        sessions = [s for s in tally.session_deciles if _selected(*s.split("|", 2)[:2], q)]
        for s in sessions:
            for name, value in reach_fields(s, tally.session_deciles[s]):
                fields[name] += value
    else:
        sessions = sorted(tally.sessions or ())

    plays: Counter = Counter()
    minutes_ms: Counter = Counter()
    switches = 0
    country: Counter = Counter()
    referrer: Counter = Counter()
    players: Counter = Counter()
    flavor_bytes: Counter = Counter()
    denials: Counter = Counter()
    errors: Counter = Counter()
    reach: dict[str, list[int]] = {}
    for name, value in fields.items():
        kind, partner, entry, *rest = name.split("|")
        pe = f"{partner}/{entry}"
        if kind == "plays":
            plays[pe] += value
        elif kind == "ms":
            minutes_ms[pe] += value
        elif kind == "sw":
            switches += value
        elif kind == "country":
            country[rest[0]] += value
        elif kind == "ref":
            referrer[rest[0]] += value
        elif kind == "ua":
            players[rest[0]] += value
        elif kind == "bytes":
            flavor_bytes[rest[0]] += value
        elif kind == "denied":
            denials[rest[0]] += value
        elif kind == "error":
            errors[f"{rest[0]} {rest[1]}"] += value
        elif kind == "reach":
            counts = reach.setdefault(pe, [0] * 11)
            counts[int(rest[0])] += value
    sessions_by_entry: Counter = Counter(f"{s.split('|')[0]}/{s.split('|')[1]}" for s in sessions)

    entries = set(plays) | set(minutes_ms) | set(sessions_by_entry)
    top = sorted(entries, key=lambda pe: (-plays[pe], -minutes_ms[pe], pe))[: q.top]
    dropoff = {}
    for pe in sorted(reach, key=lambda pe: (-reach[pe][0], pe)):
        counts = reach[pe]
        if counts[0]:
            dropoff[pe] = {"sessions": counts[0], "reached": {f"{d}%": round(counts[d // 10] / counts[0], 4) for d in DECILES}}
    hours = sorted(tally.plays_by_hour)
    return {
        "source": tally.source,
        "from": _iso(q.start) if q.start else None,
        "to": _iso(q.end) if q.end else None,
        "partner": q.partner,
        "entry": q.entry,
        "plays": sum(plays.values()),
        "unique_sessions": len(sessions),
        "minutes_delivered": round(sum(minutes_ms.values()) / 60000, 3),
        "bytes_delivered": sum(flavor_bytes.values()),
        "flavor_switches": switches,
        "top_entries": [
            {"entry": pe, "plays": plays[pe], "sessions": sessions_by_entry[pe], "minutes": round(minutes_ms[pe] / 60000, 3),
             "completion": round(reach[pe][10] / reach[pe][0], 4) if pe in reach and reach[pe][0] else None}
            for pe in top
        ],
        "dropoff": dropoff,
        "plays_by_country": _sorted(country),
        "plays_by_referrer": _sorted(referrer),
        "plays_by_player": _sorted(players),
        "bytes_by_flavor": _sorted(flavor_bytes),
        "denials_by_reason": _sorted(denials),
        "errors_by_code": _sorted(errors),
        "plays_over_time": [[f"{h[:4]}-{h[4:6]}-{h[6:8]}T{h[8:10]}:00Z", tally.plays_by_hour[h]] for h in hours if tally.plays_by_hour[h]],
        "events_counted": tally.events,
        "malformed": {"count": tally.malformed, "first": list(tally.malformed_at)},
        "notes": list(tally.notes),
    }


def _sorted(counter: Counter) -> dict[str, int]:
    return {k: v for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])) if v}


# --------------------------------------------------------------------------- output

def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2) + "\n"


def render_csv(report: dict[str, Any]) -> str:
    """Long format: ``section,key,value`` rows, one table for every part of the report."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["section", "key", "value"])
    for key in ("source", "from", "to", "partner", "entry", "plays", "unique_sessions", "minutes_delivered",
                "bytes_delivered", "flavor_switches", "events_counted"):
        w.writerow(["summary", key, "" if report[key] is None else report[key]])
    for row in report["top_entries"]:
        for key in ("plays", "sessions", "minutes", "completion"):
            w.writerow(["top_entries", f"{row['entry']}:{key}", "" if row[key] is None else row[key]])
    for pe, curve in report["dropoff"].items():
        w.writerow(["dropoff", f"{pe}:sessions", curve["sessions"]])
        for pct, share in curve["reached"].items():
            w.writerow(["dropoff", f"{pe}@{pct}", share])
    for section in ("plays_by_country", "plays_by_referrer", "plays_by_player", "bytes_by_flavor", "denials_by_reason", "errors_by_code"):
        for key, value in report[section].items():
            w.writerow([section, key, value])
    for hour, value in report["plays_over_time"]:
        w.writerow(["plays_over_time", hour, value])
    w.writerow(["malformed", "count", report["malformed"]["count"]])
    for where in report["malformed"]["first"]:
        w.writerow(["malformed", "at", where])
    return out.getvalue()


def render_table(report: dict[str, Any]) -> str:
    lines: list[str] = []
    span = f"{report['from'] or 'beginning'} .. {report['to'] or 'now'}"
    scope = "/".join(x for x in (report["partner"], report["entry"]) if x) or "all partners"
    lines.append(f"vodgate report: {scope}, {span}  ({report['source']})")
    lines.append("")
    lines.append(f"  plays              {report['plays']}")
    lines.append(f"  unique sessions    {report['unique_sessions']}")
    lines.append(f"  minutes delivered  {report['minutes_delivered']:.2f}")
    lines.append(f"  bytes delivered    {_human_bytes(report['bytes_delivered'])}")
    lines.append(f"  flavor switches    {report['flavor_switches']}")

    def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
        lines.append("")
        lines.append(title)
        if not rows:
            lines.append("  (none)")
            return
        cells = [header] + [[str(c) for c in row] for row in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
        for n, row in enumerate(cells):
            lines.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
            if n == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))

    table("Top entries", ["entry", "plays", "sessions", "minutes", "completed"],
          [[r["entry"], r["plays"], r["sessions"], f"{r['minutes']:.2f}", _pct(r["completion"])] for r in report["top_entries"]])
    table("Drop-off (share of sessions that reached each point of the entry)",
          ["entry", "sessions"] + [p for p in (f"{d}%" for d in DECILES)],
          [[pe, c["sessions"]] + [f"{round(s * 100)}" for s in c["reached"].values()] for pe, c in report["dropoff"].items()])
    for key, title, unit in (("plays_by_country", "Plays by country", "plays"), ("plays_by_referrer", "Plays by referrer", "plays"),
                             ("plays_by_player", "Plays by player", "plays"), ("bytes_by_flavor", "Bytes by flavor", "bytes"),
                             ("denials_by_reason", "Denials by reason", "denials"), ("errors_by_code", "Errors by code", "errors")):
        rows = [[k, _human_bytes(v) if unit == "bytes" else v] for k, v in report[key].items()]
        table(title, [key.split("_by_")[1], unit], rows)
    table("Plays over time (UTC hours)", ["hour", "plays"], [[h, v] for h, v in report["plays_over_time"]])
    malformed = report["malformed"]
    if malformed["count"]:
        lines.append("")
        lines.append(f"Skipped {malformed['count']} malformed line(s); first at: {', '.join(malformed['first'])}")
    for note in report["notes"]:
        lines.append(f"Note: {note}")
    return "\n".join(lines) + "\n"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def _human_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {"table": render_table, "json": render_json, "csv": render_csv}


# --------------------------------------------------------------------------- picture

def plot(report: dict[str, Any], out: Path | str | io.BytesIO, max_curves: int = 6) -> None:
    """PNG: the drop-off curves of the top entries, and plays per hour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 10), gridspec_kw={"height_ratios": [3, 2]})
    scope = "/".join(x for x in (report["partner"], report["entry"]) if x) or "all partners"
    span = f"{(report['from'] or 'beginning')[:16]} to {(report['to'] or 'now')[:16]}"
    fig.suptitle(f"vodgate: {scope}, {span}\n{report['plays']} plays, {report['unique_sessions']} sessions, "
                 f"{report['minutes_delivered']:.1f} minutes delivered", fontsize=13)

    curves = list(report["dropoff"].items())[:max_curves]
    for pe, curve in curves:
        ys = [share * 100 for share in curve["reached"].values()]
        ax1.plot(DECILES, ys, marker="o", linewidth=2, label=f"{pe} ({curve['sessions']} sessions)")
    ax1.set_title("Drop-off: share of play sessions that reached each point of the video", fontsize=12)
    ax1.set_xlabel("position in the video")
    ax1.set_ylabel("sessions still watching")
    ax1.set_xlim(-2, 102)
    ax1.set_ylim(-3, 105)
    ax1.set_xticks(DECILES)
    ax1.xaxis.set_major_formatter(PercentFormatter())
    ax1.yaxis.set_major_formatter(PercentFormatter())
    ax1.grid(True, alpha=0.3)
    if curves:
        ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(3, len(curves)), fontsize=10, frameon=False)
    else:
        ax1.text(50, 50, "no play sessions in range", ha="center", va="center", fontsize=12, color="gray")

    points = report["plays_over_time"]
    if points:
        first = datetime.fromisoformat(points[0][0].replace("Z", "+00:00"))
        last = datetime.fromisoformat(points[-1][0].replace("Z", "+00:00"))
        n = int((last - first).total_seconds() // 3600) + 1
        values = dict((datetime.fromisoformat(h.replace("Z", "+00:00")), v) for h, v in points)
        xs = [first + timedelta(hours=i) for i in range(n)]
        ys = [values.get(x, 0) for x in xs]
        bars = ax2.bar([x + timedelta(minutes=30) for x in xs], ys, width=timedelta(minutes=50), color="tab:blue")
        if n <= 48:
            ax2.bar_label(bars, labels=[str(y) if y else "" for y in ys], fontsize=9, padding=2)
        ax2.set_xlim(xs[0] - timedelta(minutes=30), xs[-1] + timedelta(minutes=90))
        ax2.set_ylim(0, max(ys) * 1.15 + 1)
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator(minticks=3, maxticks=10)
        ax2.xaxis.set_major_locator(locator)
        ax2.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    else:
        ax2.text(0.5, 0.5, "no plays in range", ha="center", va="center", fontsize=12, color="gray", transform=ax2.transAxes)
    ax2.set_title("Plays per hour (UTC)", fontsize=12)
    ax2.set_ylabel("plays")
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- sources, CLI, HTTP

def run(source: str, q: Query = Query(), prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The report dict for ``jsonl:PATH`` or ``redis:URL`` (a bare path means jsonl)."""
    if source.startswith(("redis://", "rediss://", "unix://")):
        return summarize(read_redis(source, q, prefix), q)
    if source.startswith("redis:"):
        return summarize(read_redis(source[len("redis:"):], q, prefix), q)
    if source.startswith("jsonl:"):
        source = source[len("jsonl:"):]
    return summarize(read_jsonl(Path(source), q), q)


def source_from_config(path: Path) -> str:
    """The report source an ``[analytics]`` section implies: its JSONL folder, else its Redis aggregates."""
    from config.settings import load_settings

    from config.analytics import AnalyticsConfig

    cfg = load_settings(path).analytics or AnalyticsConfig()
    return f"jsonl:{cfg.path}" if "jsonl" in cfg.sinks else f"redis:{cfg.redis_url}"


def main(argv: list[str] | None = None, default_source: str = "jsonl:analytics") -> int:
    p = argparse.ArgumentParser(prog="vodgate report", description="Play-event report over JSONL files or Redis aggregates.")
    p.add_argument("--from", dest="start", help="inclusive: 2025-01-31, 2025-01-31T12:00Z, -24h, -7d")
    p.add_argument("--to", dest="end", help="exclusive, same forms")
    p.add_argument("--partner")
    p.add_argument("--entry")
    p.add_argument("--format", choices=sorted(RENDERERS), default="table")
    p.add_argument("--source", help=f"jsonl:DIR (or FILE) | redis:URL (default: from --config, else {default_source})")
    p.add_argument("--config", type=Path, help="vodgate TOML: the source is its [analytics] JSONL folder (or Redis)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="Redis key prefix of the aggregates")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--plot", type=Path, help="also draw the drop-off curves and plays over time to this PNG")
    p.add_argument("--output", type=Path, help="write the report here instead of stdout")
    ns = p.parse_args(argv)
    if ns.source is None:
        from config.settings import ConfigError

        try:
            ns.source = source_from_config(ns.config) if ns.config else default_source
        except ConfigError as exc:
            print(f"vodgate report: configuration error: {exc}", file=sys.stderr)
            return 2
    try:
        q = Query(parse_when(ns.start) if ns.start else None, parse_when(ns.end) if ns.end else None, ns.partner, ns.entry, ns.top)
    except ValueError as exc:
        p.error(str(exc))
    try:
        report = run(ns.source, q, ns.prefix)
    except FileNotFoundError as exc:
        print(f"vodgate report: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - e.g. Redis unreachable: one clear line, not a traceback
        if type(exc).__module__.startswith("redis"):
            print(f"vodgate report: cannot read {ns.source.split('@')[-1]}: {exc}", file=sys.stderr)
            return 2
        raise
    text = RENDERERS[ns.format](report)
    if ns.output:
        ns.output.write_text(text)
    else:
        sys.stdout.write(text)
    malformed = report["malformed"]
    if malformed["count"]:
        print(f"vodgate report: skipped {malformed['count']} malformed line(s), first at {', '.join(malformed['first'])}", file=sys.stderr)
    if ns.plot:
        plot(report, ns.plot)
        print(f"vodgate report: wrote {ns.plot}", file=sys.stderr)
    return 0


def report_routes(source: str | Callable[[], str], prefix: str = DEFAULT_PREFIX) -> list:
    """Starlette routes for ``/admin/reports`` (authentication is the caller's):

        GET /summary?from=&to=&partner=&entry=&top=&format=json|csv|table
        GET /plot.png?from=&to=&partner=&entry=

        Mount("/admin/reports", routes=report_routes("jsonl:/var/lib/vodgate/analytics"))
    """
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def query_of(request: Request) -> Query:
        params = request.query_params
        top = params.get("top", "10")
        if not top.isdigit() or not 0 < int(top) <= 1000:
            raise ValueError("top must be an integer between 1 and 1000")
        return Query(parse_when(params["from"]) if params.get("from") else None,
                     parse_when(params["to"]) if params.get("to") else None,
                     params.get("partner") or None, params.get("entry") or None, int(top))

    def bad(detail: str) -> JSONResponse:
        return JSONResponse({"error": "bad_request", "detail": detail}, status_code=400, headers={"Cache-Control": "no-store"})

    async def compute(request: Request) -> dict[str, Any]:
        src = source() if callable(source) else source
        return await run_in_threadpool(run, src, query_of(request), prefix)

    async def summary(request: Request) -> Response:
        fmt = request.query_params.get("format", "json")
        if fmt not in RENDERERS:
            return bad(f"format must be one of {', '.join(sorted(RENDERERS))}")
        try:
            report = await compute(request)
        except ValueError as exc:
            return bad(str(exc))
        media = {"json": "application/json", "csv": "text/csv; charset=utf-8", "table": "text/plain; charset=utf-8"}[fmt]
        return Response(RENDERERS[fmt](report), media_type=media, headers={"Cache-Control": "no-store"})

    async def picture(request: Request) -> Response:
        try:
            report = await compute(request)
        except ValueError as exc:
            return bad(str(exc))
        buf = io.BytesIO()
        await run_in_threadpool(plot, report, buf)
        return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "no-store"})

    return [Route("/summary", summary, methods=["GET"]), Route("/plot.png", picture, methods=["GET"])]


if __name__ == "__main__":
    sys.exit(main())
