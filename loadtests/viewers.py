"""Real-time viewers against a vodgate of its own: many players, each fetching at the pace it would play.

    .venv/bin/python -m loadtests.viewers [--viewers 1000] [--seconds 60] [--clients 2] [--workers 2] [--media DIR]

What one run does:

1. Makes (or reuses) the demo ladder (``origin.demo_media.make_demo_library``) and starts ``vodgate serve
   --workers N`` on it (``access_log = "off"``, ``log_level = "warning"``).
2. Starts ``--clients`` load processes; each runs its share of the viewers on one asyncio loop over raw
   keep-alive HTTP/1.1 connections (no HTTP library: a request is one write, a response one header read and
   one ``readexactly``), so one client core carries thousands of viewers.
3. A viewer: the master, one media playlist (a variant picked at random), then its segments one by one, each
   requested when the previous one would have finished playing (real time: the segment's EXTINF after the
   previous request was sent), looping over the entry until the run ends. Viewers start spread over the
   first ``--ramp`` seconds.
4. Records, per request kind (playlist, segment): time to first byte (TTFB: request sent to the response's
   first line read) and the whole response, errors, bytes; the CPU seconds of the server's processes and of
   the clients (from /proc), hence CPU seconds per viewer-hour. Prints p50/p90/p99/max.

Client and server share the machine: the figures say what the server gave while the clients also ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from .bench_nginx import MASTER, Vodgate, cpu_seconds, fetch

DEFAULT_MEDIA = Path(__file__).resolve().parent.parent / ".fixtures" / "bench-nginx-lib"


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, int, float, float]:
        """(status, body bytes, TTFB s, total s) of GET ``path``."""
        for attempt in (0, 1):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
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
            length = next((int(l.split(":", 1)[1]) for l in lines[1:] if l.lower().startswith("content-length:")), 0)
            await self.reader.readexactly(length)  # type: ignore[union-attr]
            if any(l.lower() == "connection: close" for l in lines[1:]):
                self.close()
            return status, length, first - started, time.perf_counter() - started
        raise ConnectionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def media_plan(base: str) -> list[tuple[str, list[tuple[str, float]]]]:
    """Per variant of the master: (playlist path, [(segment path, seconds)])."""
    _, _, body = fetch(base + MASTER)
    plans = []
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            playlist = urljoin(base + MASTER, line)
            _, _, text = fetch(playlist)
            segments, seconds = [], 0.0
            for entry in text.decode().splitlines():
                if entry.startswith("#EXTINF:"):
                    seconds = float(entry[8:].split(",")[0])
                elif entry and not entry.startswith("#"):
                    segments.append((urlsplit(urljoin(playlist, entry)).path, seconds))
            plans.append((urlsplit(playlist).path, segments))
    return plans


async def viewer(conn: Connection, plans, until: float, delay: float, out: dict) -> None:
    await asyncio.sleep(delay)
    playlist, segments = random.choice(plans)
    for path, kind in ((MASTER, "playlist"), (playlist, "playlist")):
        _record(out, kind, await conn.get(path))
    n = random.randrange(len(segments))  # joins somewhere in the entry
    while time.monotonic() < until:
        path, seconds = segments[n % len(segments)]
        sent = time.monotonic()
        _record(out, "segment", await conn.get(path))
        n += 1
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - sent)))
    conn.close()


def _record(out: dict, kind: str, result: tuple[int, int, float, float]) -> None:
    status, size, ttfb, total = result
    stats = out.setdefault(kind, {"ttfb": [], "total": [], "errors": 0, "bytes": 0})
    stats["ttfb"].append(ttfb)
    stats["total"].append(total)
    stats["bytes"] += size
    stats["errors"] += status != 200


def client(port: int, plans, viewers: int, seconds: float, ramp: float, result_path: str) -> None:
    """One load process: ``viewers`` viewers on one loop; writes its samples and its CPU time as JSON."""
    out: dict = {}

    async def run() -> None:
        until = time.monotonic() + seconds
        tasks = [viewer(Connection("127.0.0.1", port), plans, until, random.uniform(0, ramp), out) for _ in range(viewers)]
        await asyncio.gather(*tasks, return_exceptions=False)

    asyncio.run(run())
    usage = os.times()
    out["cpu"] = usage.user + usage.system
    Path(result_path).write_text(json.dumps(out))


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"n": len(values), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1] * 1000}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--ramp", type=float, default=10, help="seconds over which viewers start")
    parser.add_argument("--clients", type=int, default=2, help="load processes")
    parser.add_argument("--workers", type=int, default=2, help="vodgate serve --workers")
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA)
    parser.add_argument("--json", type=Path)
    ns = parser.parse_args(argv)
    from origin.demo_media import make_demo_library

    media = make_demo_library(ns.media).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        server = Vodgate(media, Path(tmp), "viewers", workers=ns.workers, extra_config="")
        try:
            plans = media_plan(server.base)
            for _, segments in plans:  # warm: every segment packaged and cached once, as a CDN-less origin serves
                for path, _ in segments:
                    fetch(server.base + path)
            server_cpu = cpu_seconds(server.pids())
            started = time.monotonic()
            shares = [ns.viewers // ns.clients + (i < ns.viewers % ns.clients) for i in range(ns.clients)]
            paths = [str(Path(tmp) / f"client-{i}.json") for i in range(ns.clients)]
            context = multiprocessing.get_context("spawn")
            procs = [context.Process(target=client, args=(server.port, plans, share, ns.seconds, ns.ramp, path))
                     for share, path in zip(shares, paths)]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
            elapsed = time.monotonic() - started
            server_cpu = cpu_seconds(server.pids()) - server_cpu
        finally:
            server.stop()
        results = [json.loads(Path(p).read_text()) for p in paths]
    report = {"viewers": ns.viewers, "seconds": ns.seconds, "workers": ns.workers, "clients": ns.clients,
              "elapsed_s": elapsed, "server_cpu_s": server_cpu, "client_cpu_s": sum(r["cpu"] for r in results),
              "server_cpu_s_per_viewer_hour": server_cpu / (ns.viewers * ns.seconds / 3600)}
    for kind in ("playlist", "segment"):
        samples = [r[kind] for r in results if kind in r]
        report[kind] = {
            "ttfb_ms": percentiles([v for s in samples for v in s["ttfb"]]),
            "total_ms": percentiles([v for s in samples for v in s["total"]]),
            "errors": sum(s["errors"] for s in samples),
            "mbit_per_s": sum(s["bytes"] for s in samples) * 8 / elapsed / 1e6,
        }
    print(json.dumps(_rounded(report), indent=1))
    if ns.json:
        ns.json.write_text(json.dumps(report, indent=1))


def _rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


if __name__ == "__main__":
    main()
