"""What the access log costs on the hot lane: warm-segment throughput with ``access_log = "json"`` against ``"off"``.

    .venv/bin/python -m loadtests.bench_access_log [--seconds 3] [--rounds 9] [--connections 16] [--threads 2]
        [--media DIR] [--formats json,text]

Two ``vodgate serve`` processes over the same demo library (``.fixtures/bench-nginx-lib``, as
loadtests/bench_nginx.py makes it), alike but for ``server.access_log``; the access lines go to a file,
as they would to journald or a log shipper's pipe. Every TS segment of the master's renditions is
fetched once from each (warm: the rest are hot-lane answers, checked by ``X-Cache: HIT``; ``--sink
devnull`` sends the lines to /dev/null instead), then wrk
(the Lua script of bench_nginx.py, cycling through every segment URL) runs ``--rounds`` rounds of
``--seconds`` against each server, the order alternating every round. Reported per server: median
requests/s and server CPU microseconds per request; and the ratio logged/off (median of the per-round
ratios). Everything shares the machine, so the ratio is the figure to read.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .bench_nginx import REPO, WRK_LUA, children, cpu_seconds, fetch, free_port, segment_paths, stop, wait_http, wrk


class Server:
    def __init__(self, media: Path, tmp: Path, access_log: str, sink: str = "file") -> None:
        self.port = free_port()
        self.name = access_log
        self.base = f"http://127.0.0.1:{self.port}"
        config = tmp / f"{access_log}.toml"
        config.write_text(f'[server]\nmedia_root = "{media}"\nlog_level = "warning"\naccess_log = "{access_log}"\n')
        self.log = tmp / f"{access_log}.log"
        self._fh = open(self.log if sink == "file" or access_log == "off" else "/dev/null", "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "cli.main", "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._fh, stderr=subprocess.STDOUT)
        wait_http(f"{self.base}/healthz", self.proc, f"vodgate ({access_log})", self.log)

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self) -> None:
        stop(self.proc)
        self._fh.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_access_log", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--media", type=Path, default=REPO / ".fixtures" / "bench-nginx-lib")
    parser.add_argument("--formats", default="json", help="comma-separated access_log values to compare with off")
    parser.add_argument("--sink", choices=("file", "devnull"), default="file",
                        help="where the logged servers' standard output goes: a file (default) or /dev/null "
                             "(the cost of making lines without the cost of storing them)")
    ns = parser.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    from origin.demo_media import make_demo_library

    media = make_demo_library(ns.media)
    formats = ["off", *[f for f in ns.formats.split(",") if f and f != "off"]]
    with tempfile.TemporaryDirectory(prefix="bench-access-log-") as tmp_name:
        tmp = Path(tmp_name)
        servers = [Server(media, tmp, f, ns.sink) for f in formats]
        try:
            paths = segment_paths(servers[0].base)
            for server in servers:
                for path in paths:
                    fetch(server.base + path)
                for path in paths:
                    status, headers, _ = fetch(server.base + path)
                    if status != 200 or headers.get("x-cache") != "HIT":
                        raise SystemExit(f"{server.name}: {path} answered {status} {headers.get('x-cache')}, not a warm HIT")
            lua, paths_file = tmp / "paths.lua", tmp / "paths.txt"
            lua.write_text(WRK_LUA)
            paths_file.write_text("\n".join(paths) + "\n")
            for server in servers:  # untimed warm-up
                wrk(server.base, lua, paths_file, 2, ns.connections, ns.threads)
            rates: dict[str, list[float]] = {s.name: [] for s in servers}
            cpu: dict[str, list[float]] = {s.name: [] for s in servers}
            for round_number in range(ns.rounds):
                order = servers if round_number % 2 == 0 else servers[::-1]
                for server in order:
                    before = cpu_seconds(server.pids())
                    result = wrk(server.base, lua, paths_file, ns.seconds, ns.connections, ns.threads)
                    used = cpu_seconds(server.pids()) - before
                    rates[server.name].append(result["requests"] / (result["duration_us"] / 1e6))
                    cpu[server.name].append(used / max(1, result["requests"]) * 1e6)
                print(f"round {round_number + 1}: " + ", ".join(f"{n} {rates[n][-1]:.0f} req/s" for n in rates), flush=True)
            lines = {s.name: sum(1 for _ in open(s.log, "rb")) if s.log.exists() else 0 for s in servers}
        finally:
            for server in servers:
                server.stop()
    print(f"{len(paths)} segment URLs, {ns.rounds} rounds x {ns.seconds:g} s, {ns.connections} connections, {ns.threads} wrk threads")
    for name in rates:
        ratio = "" if name == "off" else (
            f", ratio to off {statistics.median(a / b for a, b in zip(rates[name], rates['off'])):.3f} (median of rounds;"
            f" rounds {min(a / b for a, b in zip(rates[name], rates['off'])):.2f}-{max(a / b for a, b in zip(rates[name], rates['off'])):.2f})")
        print(f"access_log = {name!r}: {statistics.median(rates[name]):.0f} req/s, "
              f"{statistics.median(cpu[name]):.1f} us CPU/req, {lines[name]} log lines{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
