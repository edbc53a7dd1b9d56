"""What play events and metrics cost: segment requests per second with analytics on vs off, same run.

    .venv/bin/python -m loadtests.bench_analytics [--rounds 8] [--seconds 4] [--connections 8] [--json out.json]

Two servers of the same build run side by side on 127.0.0.1 (``python -m analytics.devserver``):

* **off**: no events, no metrics (``--events off --metrics off``): the bare edge;
* **on**: events to the embedded JSONL sink + Prometheus metrics, the way an operator runs it.

Both have the uvicorn access log off (the stricter baseline: with it on, every request costs more and
the analytics share looks smaller). A load process (one core) keeps ``--connections`` keep-alive
HTTP/1.1 connections busy with GET requests for already-cached segments (the server's fast path, where
a per-request cost shows most), for ``--seconds`` per measurement. Measurements alternate off/on,
with the order flipped every round, so machine drift hits both alike. Reported: requests/s of each
(median over rounds) and the overhead ``1 - on/off``, as the ratio of medians and as the median of
the per-round ratios; and the server's CPU time per request (user + system, all threads, from
/proc), which other load on a shared machine disturbs much less than throughput: for a server that
is CPU-bound, requests/s is its inverse.

Workloads: ``video`` (the ladder's 9 TS video segments, 80-450 kB) and ``small`` (its 3 TS audio
segments, ~30 kB: per-request costs dominate). The media are the test suite's ladder fixture
(generated once with ffmpeg from imageio-ffmpeg into .fixtures/) unless ``--media`` names a
library with ``demo/ladder/{hi,mid,lo}.mp4``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LADDER = "/p/demo/e/ladder/hls"
WORKLOADS = {
    "video": [f"{LADDER}/{f}/seg-{n}.ts" for f in ("hi", "mid", "lo") for n in (1, 2, 3)],
    "small": [f"{LADDER}/hi/a1/seg-{n}.ts" for n in (1, 2, 3)],
}
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


# --------------------------------------------------------------------------- load client (its own process)

async def _connection(port: int, paths: list[str], stop_at: float, counts: list[int], index: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    requests = [
        (f"GET {p}?playSessionId=bench-{index} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n"
         f"Referer: https://player.example.com/watch\r\n\r\n").encode()
        for p in paths
    ]
    i = index
    try:
        while time.monotonic() < stop_at:
            writer.write(requests[i % len(requests)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"status {status}: {head[:200]!r}")
            counts[index] += 1
    finally:
        writer.close()


async def _load(port: int, paths: list[str], seconds: float, connections: int) -> dict:
    counts = [0] * connections
    start = time.monotonic()
    await asyncio.gather(*(_connection(port, paths, start + seconds, counts, i) for i in range(connections)))
    elapsed = time.monotonic() - start
    return {"requests": sum(counts), "seconds": elapsed, "rps": sum(counts) / elapsed}


def client_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--connections", type=int, required=True)
    ns = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_load(ns.port, WORKLOADS[ns.workload], ns.seconds, ns.connections))))
    return 0


# --------------------------------------------------------------------------- servers

class Server:
    def __init__(self, name: str, media: Path, extra: list[str], log: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.name = name
        self._log = open(log, "wb")
        cmd = [sys.executable, "-m", "analytics.devserver", "--media", str(media), "--port", str(self.port),
               "--segment-duration", "4", "--log-level", "warning", "--access-log", "off", *extra]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self) -> None:
        import urllib.request

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} server did not start")

    def warm(self, paths: list[str]) -> None:
        import urllib.request

        for path in paths:  # package every segment once: the measurement is the cached fast path
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
                r.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server: Server, workload: str, seconds: float, connections: int) -> tuple[float, float]:
    """(requests per second, server CPU microseconds per request)."""
    cpu = cpu_seconds(server.proc.pid)
    out = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_analytics", "--client", "--port", str(server.port), "--workload", workload,
         "--seconds", str(seconds), "--connections", str(connections)],
        cwd=REPO, capture_output=True, text=True, timeout=seconds + 60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load client failed: {out.stderr[-2000:]}")
    cpu = cpu_seconds(server.proc.pid) - cpu
    result = json.loads(out.stdout)
    return result["rps"], cpu / result["requests"] * 1e6


def ladder_library(root: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    import media_fixtures

    for flavor, name in media_fixtures.LADDER.items():
        target = root / "demo" / "ladder" / f"{flavor}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(media_fixtures.fixture_path(name), target)
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        return client_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_analytics", description=__doc__.split("\n\n")[0])
    p.add_argument("--media", type=Path, help="library with demo/ladder/{hi,mid,lo}.mp4 (default: the test fixture)")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--workload", choices=[*sorted(WORKLOADS), "both"], default="both")
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--control", action="store_true",
                   help="A/A control: both servers run with analytics off (shows the method's own noise and bias)")
    ns = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="vodgate-bench-analytics-") as tmp:
        tmp_path = Path(tmp)
        media = ns.media or ladder_library(tmp_path / "media")
        events_dir = tmp_path / "events"
        servers = {
            "off": Server("off", media, ["--events", "off", "--metrics", "off"], tmp_path / "off.log"),
            "on": Server("on", media, ["--events", "off", "--metrics", "off"] if ns.control else
                         ["--events", f"jsonl:{events_dir}", "--metrics", "on"], tmp_path / "on.log"),
        }
        results: dict = {"control": ns.control, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                     "load_before": os.getloadavg()}, "workloads": {}}
        try:
            workloads = sorted(WORKLOADS) if ns.workload == "both" else [ns.workload]
            for w in workloads:
                for server in servers.values():
                    server.warm(WORKLOADS[w])
                rps: dict[str, list[float]] = {"off": [], "on": []}
                cpu: dict[str, list[float]] = {"off": [], "on": []}
                for r in range(ns.rounds):
                    order = ("off", "on") if r % 2 == 0 else ("on", "off")
                    for name in order:
                        a, b = measure(servers[name], w, ns.seconds, ns.connections)
                        rps[name].append(a)
                        cpu[name].append(b)
                    print(f"{w:5} round {r + 1}/{ns.rounds}: off {rps['off'][-1]:7.0f} req/s {cpu['off'][-1]:6.1f} us CPU/req   "
                          f"on {rps['on'][-1]:7.0f} req/s {cpu['on'][-1]:6.1f} us CPU/req", file=sys.stderr)
                off, on = statistics.median(rps["off"]), statistics.median(rps["on"])
                cpu_off, cpu_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
                results["workloads"][w] = {
                    "rps_off": rps["off"], "rps_on": rps["on"], "median_off": off, "median_on": on,
                    "overhead_of_medians": 1 - on / off,
                    "median_paired_overhead": statistics.median(1 - a / b for a, b in zip(rps["on"], rps["off"])),
                    "cpu_us_off": cpu["off"], "cpu_us_on": cpu["on"], "median_cpu_us_off": cpu_off, "median_cpu_us_on": cpu_on,
                    "cpu_overhead": cpu_on / cpu_off - 1,
                    "median_paired_cpu_overhead": statistics.median(b / a - 1 for a, b in zip(cpu["off"], cpu["on"])),
                }
        finally:
            for server in servers.values():
                server.stop()
        events = sum(1 for f in events_dir.glob("*.jsonl") for _ in open(f)) if events_dir.exists() else 0
        results["events_written"] = events
        results["machine"]["load_after"] = os.getloadavg()

    print()
    print(f"{'workload':9} {'off req/s':>10} {'on req/s':>10} {'cost':>7} {'paired':>7}   "
          f"{'off CPU/req':>11} {'on CPU/req':>10} {'cost':>7} {'paired':>7}")
    for w, r in results["workloads"].items():
        print(f"{w:9} {r['median_off']:10.0f} {r['median_on']:10.0f} {r['overhead_of_medians'] * 100:6.1f}% "
              f"{r['median_paired_overhead'] * 100:6.1f}%   {r['median_cpu_us_off']:8.1f} us {r['median_cpu_us_on']:7.1f} us "
              f"{r['cpu_overhead'] * 100:6.1f}% {r['median_paired_cpu_overhead'] * 100:6.1f}%")
    print("cost = 1 - on/off for req/s, on/off - 1 for CPU per request; 'paired' = median of the per-round figures")
    print(f"events written by the 'on' server: {results['events_written']}; "
          f"load average before/after: {results['machine']['load_before'][0]:.1f}/{results['machine']['load_after'][0]:.1f}")
    if ns.json:
        ns.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
