"""Does the server's memory stay flat under load? Resident set size sampled during a locust run.

Starts `vodgate serve` on a free loopback port over a library (default: the
generated demo), runs locust headless against it for a bounded time with the
Viewer and CdnPull users, and samples the server's RSS (from /proc) every
second. Prints the samples and the growth from the first quarter of the run
to its end; a bounded cache (cache.memory_mb) should make the curve flatten.

    python -m loadtests.memory_under_load [--seconds 60] [--users 30] [--cache-mb 64] [--media DIR]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--cache-mb", type=int, default=64)
    parser.add_argument("--media", type=Path)
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        media = ns.media
        if media is None:
            from origin.demo_media import make_demo_library

            media = make_demo_library(Path(tmp) / "lib", duration=60)
        config = Path(tmp) / "vodgate.toml"
        config.write_text(f'[server]\nmedia_root = "{media}"\nlog_level = "warning"\naccess_log = "off"\n[cache]\nmemory_mb = {ns.cache_mb}\n')
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--config", str(config), "--port", str(port),
                                   "--workers", "1"], cwd=REPO,  # one process: its RSS is what is measured
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            entries = ",".join(f"{p.parent.name}/{p.name}" for p in sorted(Path(media).glob("*/*")) if p.is_dir())
            samples: list[tuple[float, float]] = []
            stop = threading.Event()

            def sample() -> None:
                start = time.monotonic()
                while not stop.is_set():
                    samples.append((time.monotonic() - start, rss_mb(server.pid)))
                    stop.wait(1.0)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            locust = [sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"), "--headless",
                      "-u", str(ns.users), "-r", str(max(1, ns.users // 5)), "-t", f"{ns.seconds}s",
                      "--host", f"http://127.0.0.1:{port}", "--entries", entries, "--only-summary"]
            result = subprocess.run(locust, cwd=REPO, capture_output=True, text=True, timeout=ns.seconds + 120)
            stop.set()
            sampler.join()
        finally:
            server.terminate()
            server.wait(10)
    print(result.stdout[-2500:] or result.stderr[-2500:])
    print("t (s)   RSS (MB)")
    for t, mb in samples[:: max(1, len(samples) // 20)]:
        print(f"{t:6.0f}   {mb:8.1f}")
    quarter = samples[len(samples) // 4][1]
    print(f"RSS at 1/4 of the run {quarter:.1f} MB, at the end {samples[-1][1]:.1f} MB, peak {max(m for _, m in samples):.1f} MB "
          f"(cache bound {ns.cache_mb} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
