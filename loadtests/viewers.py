"""Real-time viewers against a vodgate of its own: many players, each fetching at the pace it would play.

    .venv/bin/python -m loadtests.viewers [--viewers 1000] [--seconds 60] [--clients 2] [--workers 2] [--media DIR]
        [--tokens] [--segment-seconds 6] [--cold] [--cache-mb MB] [--max-connections N] [--keep-alive S]
        [--json FILE]

What one run does:

1. Makes (or reuses) the demo ladder (``origin.demo_media.make_demo_library``) and starts ``vodgate serve
   --workers N`` on it (``access_log = "off"``, ``log_level = "warning"``, ``segment_duration`` from
   ``--segment-seconds``, default 6), then, unless ``--cold``, fetches every segment ``8 x workers`` times over
   new connections, so that each worker's cache holds it (the kernel spreads connections over the workers).
2. Starts ``--clients`` load processes; each runs its share of the viewers on one asyncio loop over raw
   keep-alive HTTP/1.1 connections (no HTTP library: a request is one write, a response one header read and
   one ``readexactly``), so one client core carries thousands of viewers.
3. A viewer: the master, one media playlist (a variant of that master picked at random), then the segments that
   playlist lists, one by one, each requested when the previous one would have finished playing (real time:
   the segment's EXTINF after the previous request was sent), looping over the entry until the run ends.
   Viewers start spread over the first ``--ramp`` seconds. URIs are taken from the playlists the viewer got,
   query included, as a player does.
4. Records, per request kind (playlist, segment): time to first byte (TTFB: request sent to the response's
   first line read; a new connection's opening is timed apart) and the whole response, errors (statuses other
   than 200, counted by status; a viewer whose master or media playlist fails stops), bytes, the ``X-Cache``
   values; how late segment requests were sent against the schedule (the previous request, connection
   included, took longer than its segment plays, or the load process fell behind); the CPU seconds of the
   server's processes and of each client (from /proc), hence CPU seconds per viewer-hour, and those of the rest
   of the machine (/proc/stat); the server's memory (summed VmRSS and Pss of the supervisor and its workers,
   from /proc, every second) next to the configured cache budgets; the 1-minute load average at start and end.
   Prints p50/p90/p99/max.

The variations:

- ``--tokens``: the partner's profile requires a token (``unless = { authenticated = true }, then =
  ["block"]``, a native key in ``token_keys``). Each viewer gets its own token (``auth.tokens.sign_native``:
  1 h, ACL the entry, bound to 127.0.0.1, a session id), minted in the load process, and asks for the master
  with ``?token=``; the playlists carry it into every URI. A partner with rules never takes the hot lane, so
  every request runs the whole ASGI path with the access decision.
- ``--segment-seconds S``: ``server.segment_duration = S`` (the demo's keyframes are 2 s apart): 2 gives three
  times the request rate of 6.
- ``--cold``: no warm-up, and ``cache.memory_mb`` defaults to 1 (objects over a quarter of it, 256 KiB, are
  never cached; the rest churn through 1 MiB per worker), so most segments are packaged per request. The
  share of ``X-Cache`` values other than HIT is the share the clients saw packaged (MISS) or waiting for
  another request's packaging (COALESCED).
- ``--cache-mb MB``: ``cache.memory_mb`` (any run); ``--max-connections N``: ``server.max_connections`` (a limit
  per worker process; the default, 1000, is about what each of 2 workers holds at 2,000 viewers whose
  keep-alive connections never idle out, as with 2 s segments); ``--keep-alive S``: ``server.keep_alive_timeout``
  (default 5 s: shorter than a 6 s segment, so each of those requests opens a new connection).

Client and server share the machine: the figures say what the server gave while the clients also ran, and
whatever else ran on the machine (``other_cpu_s``: its busy CPU seconds less the server's and the clients').
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import secrets
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urljoin

from auth.tokens import sign_native

from .bench_nginx import MASTER, Vodgate, cpu_seconds, fetch, save_json

DEFAULT_MEDIA = Path(__file__).resolve().parent.parent / ".fixtures" / "bench-nginx-lib"
KEY_ID = "k1"
ENTRY_ACL = MASTER.split("/hls/")[0]  # /p/demo/e/ladder: one token covers the entry's whole tree
SERVER_DEFAULTS = {"memory_mb": 256, "index_cache_mb": 256, "max_connections": 1000, "keep_alive_timeout": 5}  # config


class Answer(NamedTuple):
    status: int
    size: int
    ttfb: float
    total: float
    cache: str  # X-Cache, "" when absent
    body: bytes
    connect: float | None  # seconds to open a new connection first; None on a kept-alive one


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> Answer:
        """GET ``path`` (with its query)."""
        connect = None
        for attempt in (0, 1):
            if self.writer is None:
                opening = time.perf_counter()
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                connect = time.perf_counter() - opening
            started = time.perf_counter()
            try:
                self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
                head = await self.reader.readuntil(b"\r\n\r\n")  # type: ignore[union-attr]
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
                continue
            first = time.perf_counter()
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {name.lower(): value.strip() for name, _, value in (l.partition(":") for l in lines[1:] if l)}
            length = int(headers.get("content-length", 0))
            body = await self.reader.readexactly(length)  # type: ignore[union-attr]
            if headers.get("connection", "").lower() == "close":
                self.close()
            total = time.perf_counter() - started
            return Answer(status, length, first - started, total, headers.get("x-cache", ""), body, connect)
        raise ConnectionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def variants(master: str, body: bytes) -> list[str]:
    """The media playlists a master lists (its URI lines), as absolute paths with their query."""
    return [urljoin(master, line) for line in body.decode().splitlines() if line and not line.startswith("#")]


def segments(playlist: str, body: bytes) -> list[tuple[str, float]]:
    """(segment path with its query, EXTINF seconds) of a media playlist."""
    listed, seconds = [], 0.0
    for line in body.decode().splitlines():
        if line.startswith("#EXTINF:"):
            seconds = float(line[8:].split(",")[0])
        elif line and not line.startswith("#"):
            listed.append((urljoin(playlist, line), seconds))
    return listed


def mint(secret: str, viewer_id: str) -> str:
    """``?token=...`` for one viewer: 1 h, the entry's tree, bound to the loopback address the clients use."""
    token = sign_native(KEY_ID, bytes.fromhex(secret), ENTRY_ACL, int(time.time()) + 3600, ip="127.0.0.1",
                        session_id=viewer_id)
    return f"?token={token}"


async def viewer(conn: Connection, master: str, until: float, delay: float, out: dict) -> None:
    await asyncio.sleep(delay)
    answer = await conn.get(master)
    _record(out, "playlist", answer)
    if answer.status != 200:
        return conn.close()
    playlist = random.choice(variants(master, answer.body))
    answer = await conn.get(playlist)
    _record(out, "playlist", answer)
    if answer.status != 200:
        return conn.close()
    listed = segments(playlist, answer.body)
    n = random.randrange(len(listed))  # joins somewhere in the entry
    due = time.monotonic()
    while (sent := time.monotonic()) < until:
        out.setdefault("late", []).append(sent - due)  # > 0: the loop sent it after its time
        path, seconds = listed[n % len(listed)]
        _record(out, "segment", await conn.get(path))
        n += 1
        due = sent + seconds
        await asyncio.sleep(max(0.0, due - time.monotonic()))
    conn.close()


def _record(out: dict, kind: str, answer: Answer) -> None:
    stats = out.setdefault(kind, {"ttfb": [], "total": [], "errors": 0, "bytes": 0, "status": {}, "cache": {}})
    stats["ttfb"].append(answer.ttfb)
    stats["total"].append(answer.total)
    stats["bytes"] += answer.size
    stats["cache"][answer.cache] = stats["cache"].get(answer.cache, 0) + 1
    if answer.connect is not None:
        out.setdefault("connect", []).append(answer.connect)
    if answer.status != 200:
        stats["errors"] += 1
        stats["status"][str(answer.status)] = stats["status"].get(str(answer.status), 0) + 1


def client(port: int, viewers: int, first_id: int, secret: str | None, seconds: float, ramp: float,
           result_path: str) -> None:
    """One load process: ``viewers`` viewers on one loop (with a token each when ``secret``); writes its samples,
    its CPU time and its wall time as JSON."""
    out: dict = {}
    masters = [MASTER + (mint(secret, f"viewer-{first_id + i}") if secret else "") for i in range(viewers)]

    async def run() -> None:
        until = time.monotonic() + seconds
        tasks = [viewer(Connection("127.0.0.1", port), m, until, random.uniform(0, ramp), out) for m in masters]
        await asyncio.gather(*tasks, return_exceptions=False)

    started = time.monotonic()
    asyncio.run(run())
    usage = os.times()
    out["cpu"] = usage.user + usage.system
    out["wall"] = time.monotonic() - started
    Path(result_path).write_text(json.dumps(out))


def server_config(ns: argparse.Namespace, secret: str | None) -> str:
    """TOML after the ``[server]`` lines ``bench_nginx.Vodgate`` writes."""
    lines = [f"segment_duration = {ns.segment_seconds}"]
    if ns.max_connections:
        lines.append(f"max_connections = {ns.max_connections}")
    if ns.keep_alive:
        lines.append(f"keep_alive_timeout = {ns.keep_alive:g}")
    if ns.cache_mb:
        lines += ["[cache]", f"memory_mb = {ns.cache_mb}"]
    if secret:
        lines += ["[partners.demo]", f'token_keys = {{ {KEY_ID} = "{secret}" }}', 'default_profile = "tokens"',
                  "[partners.demo.profiles.tokens]",
                  'rules = [{ name = "token", unless = { authenticated = true }, then = ["block"] }]']
    return "\n".join(lines) + "\n"


def fetched(url: str) -> bytes:
    """The body of a 200 answer to GET ``url``; anything else stops the run, saying what the server said."""
    status, _, body = fetch(url)
    if status != 200:
        raise SystemExit(f"{url}: status {status}: {body[:300]!r}")
    return body


def warm(base: str, query: str, workers: int) -> int:
    """Fetch every segment of every variant ``8 * workers`` times, each over a new connection, so that each
    worker (the kernel spreads connections over them) has cached each segment with a probability of at least
    1 - e^-8: a CDN-less origin's warm cache. Returns the number of distinct segments."""
    master = MASTER + query
    listed = [path for playlist in variants(master, fetched(base + master))
              for path, _ in segments(playlist, fetched(base + playlist))]
    for _ in range(8 * workers):
        for path in listed:
            fetched(base + path)
    return len(listed)


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """(summed VmRSS, summed Pss) in MB of ``pids``; Pss shares the pages the workers share among them."""
    rss = pss = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                rss += next((int(l.split()[1]) for l in fh if l.startswith("VmRSS:")), 0) / 1024
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                pss += next((int(l.split()[1]) for l in fh if l.startswith("Pss:")), 0) / 1024
        except OSError:
            continue
    return rss, pss


class MemorySampler(threading.Thread):
    """Samples ``memory_mb`` of the server's processes every second until ``stop``."""

    def __init__(self, server: Vodgate) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.samples: list[tuple[float, float, float]] = []  # (t, rss, pss)
        self._done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self._done.is_set():
            self.samples.append((time.monotonic() - start, *memory_mb(self.server.pids())))
            self._done.wait(1.0)

    def stop(self) -> dict:
        self._done.set()
        self.join()
        rss = [s[1] for s in self.samples]
        pss = [s[2] for s in self.samples]
        return {"samples": len(rss), "rss_start_mb": rss[0], "rss_peak_mb": max(rss), "rss_final_mb": rss[-1],
                "pss_start_mb": pss[0], "pss_peak_mb": max(pss), "pss_final_mb": pss[-1],
                "rss_every_10s_mb": [round(r, 1) for r in rss[::10]]}


def load_average() -> float:
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every process, all cores: /proc/stat less idle and iowait)."""
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def log_tail(path: Path, lines: int = 12) -> list[str]:
    """The server log's last lines (warnings such as the connection limit's), for the report."""
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"n": len(values), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1] * 1000}


def run_clients(ns: argparse.Namespace, port: int, secret: str | None, tmp: str) -> list[dict]:
    shares = [ns.viewers // ns.clients + (i < ns.viewers % ns.clients) for i in range(ns.clients)]
    firsts = [sum(shares[:i]) for i in range(ns.clients)]
    paths = [str(Path(tmp) / f"client-{i}.json") for i in range(ns.clients)]
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=client, args=(port, share, first, secret, ns.seconds, ns.ramp, path))
             for share, first, path in zip(shares, firsts, paths)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return [json.loads(Path(p).read_text()) for p in paths]


def summary(kind: str, results: list[dict], elapsed: float) -> dict:
    samples = [r[kind] for r in results if kind in r]
    cache = Counter[str]()
    status = Counter[str]()
    for s in samples:
        cache.update(s["cache"])
        status.update(s["status"])
    count = sum(cache.values()) - cache.get("", 0)  # answers with an X-Cache (not the connection limit's 503)
    return {
        "ttfb_ms": percentiles([v for s in samples for v in s["ttfb"]]),
        "total_ms": percentiles([v for s in samples for v in s["total"]]),
        "errors": sum(s["errors"] for s in samples),
        "error_statuses": dict(status),
        "mbit_per_s": sum(s["bytes"] for s in samples) * 8 / elapsed / 1e6,
        "x_cache": dict(cache),
        "not_hit_share": (count - cache.get("HIT", 0)) / count if count else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--ramp", type=float, default=10, help="seconds over which viewers start")
    parser.add_argument("--clients", type=int, default=2, help="load processes")
    parser.add_argument("--workers", type=int, default=2, help="vodgate serve --workers")
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA)
    parser.add_argument("--tokens", action="store_true", help="the partner requires a token; one per viewer")
    parser.add_argument("--segment-seconds", type=float, default=6, help="server.segment_duration")
    parser.add_argument("--cold", action="store_true", help="no warm-up; cache.memory_mb 1 unless --cache-mb")
    parser.add_argument("--cache-mb", type=int, help="cache.memory_mb (per worker)")
    parser.add_argument("--max-connections", type=int, help="server.max_connections (per worker)")
    parser.add_argument("--keep-alive", type=float, help="server.keep_alive_timeout, seconds (default 5)")
    parser.add_argument("--json", type=Path)
    ns = parser.parse_args(argv)
    if ns.cold and ns.cache_mb is None:
        ns.cache_mb = 1
    from origin.demo_media import make_demo_library

    media = make_demo_library(ns.media).resolve()
    secret = secrets.token_hex(32) if ns.tokens else None
    with tempfile.TemporaryDirectory() as tmp:
        server = Vodgate(media, Path(tmp), "viewers", workers=ns.workers, extra_config=server_config(ns, secret))
        try:
            query = mint(secret, "warm-up") if secret else ""
            warmed = 0 if ns.cold else warm(server.base, query, ns.workers)
            master = MASTER + query
            plan = [len(segments(p, fetched(server.base + p))) for p in variants(master, fetched(server.base + master))]
            load_start = load_average()
            sampler = MemorySampler(server)
            sampler.start()
            server_cpu, busy = cpu_seconds(server.pids()), machine_busy_seconds()
            started = time.monotonic()
            results = run_clients(ns, server.port, secret, tmp)
            elapsed = time.monotonic() - started
            server_cpu, busy = cpu_seconds(server.pids()) - server_cpu, machine_busy_seconds() - busy
            memory = sampler.stop()
            load_end = load_average()
        finally:
            server.stop()
        server_log = log_tail(server.log)
    cores = os.cpu_count() or 1
    client_cpu = [r["cpu"] for r in results]
    report = {"viewers": ns.viewers, "seconds": ns.seconds, "workers": ns.workers, "clients": ns.clients,
              "tokens": ns.tokens, "segment_seconds": ns.segment_seconds, "cold": ns.cold,
              "segments_per_variant": plan, "warmed_segments": warmed,
              "cache_memory_mb_per_worker": ns.cache_mb or SERVER_DEFAULTS["memory_mb"],
              "index_cache_mb_per_worker": SERVER_DEFAULTS["index_cache_mb"],
              "max_connections_per_worker": ns.max_connections or SERVER_DEFAULTS["max_connections"],
              "keep_alive_timeout_s": ns.keep_alive or SERVER_DEFAULTS["keep_alive_timeout"],
              "elapsed_s": elapsed, "cores": cores, "load_average_1m": [load_start, load_end],
              "server_cpu_s": server_cpu, "server_cpu_share_of_cores": server_cpu / elapsed / cores,
              "server_cpu_s_per_viewer_hour": server_cpu / (ns.viewers * ns.seconds / 3600),
              "client_cpu_s": client_cpu, "client_cpu_share_of_a_core": [r["cpu"] / r["wall"] for r in results],
              "other_cpu_s": busy - server_cpu - sum(client_cpu),  # the machine's neighbours (and our parent)
              "segment_send_late_ms": percentiles([v for r in results for v in r.get("late", [])]),
              "connect_ms": percentiles([v for r in results for v in r.get("connect", [])]),
              "memory": memory, "server_log_tail": server_log}
    for kind in ("playlist", "segment"):
        report[kind] = summary(kind, results, elapsed)
    print(json.dumps(_rounded(report), indent=1))
    save_json(ns.json, report)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    main()
