"""A real server subprocess under uvicorn: SIGTERM loses no queued event; a full queue drops without failing requests.

The server is ``python -m analytics.devserver`` (create_app + analytics.wrap + uvicorn.run, the wiring
``vodgate serve`` gets); its sink is slowed on purpose (``--sink-delay``) so that events are still
queued when SIGTERM arrives.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import REPO, free_port


class DevServer:
    def __init__(self, media: Path, events: Path, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = open(log, "wb")
        cmd = [sys.executable, "-m", "analytics.devserver", "--media", str(media), "--port", str(self.port),
               "--segment-duration", "4", "--events", f"jsonl:{events}", "--access-log", "off", *extra]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log()
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.base}/metrics", timeout=5).text
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert m, f"{name} not exported"
        return float(m.group(1))

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM; the exit status. uvicorn re-raises the signal after a graceful shutdown: -15 is a clean stop."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _events(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_sigterm_flushes_every_queued_event(media_library, tmp_path):
    events = tmp_path / "events"
    server = DevServer(media_library, events, tmp_path / "server.log",
                       "--batch-size", "5", "--flush-interval", "0.05", "--sink-delay", "0.4", "--log-level", "info")
    try:
        with httpx.Client(base_url=server.base, timeout=10) as client:
            for i in range(40):
                r = client.get(f"/p/demo/e/ladder/hls/master.m3u8?playSessionId=s{i}")
                assert r.status_code == 200
        queued = server.metric("vodgate_analytics_events_queued")
        assert queued >= 20, "the slow sink should still hold most events: the drill tests nothing otherwise"
    finally:
        status = server.terminate()
    assert status in (0, -signal.SIGTERM), server.log()
    written = _events(events)
    assert sorted(e["session"] for e in written) == sorted(f"s{i}" for i in range(40))
    assert {e["kind"] for e in written} == {"play_requested"}
    m = re.search(r"flushed at shutdown \((\d+) queued then; (\d+) written in total, 0 dropped, 0 lost\)", server.log())
    assert m and int(m.group(1)) >= 20 and int(m.group(2)) == 40, server.log()


def test_full_queue_drops_counts_and_logs_once_while_requests_succeed(media_library, tmp_path):
    events = tmp_path / "events"
    server = DevServer(media_library, events, tmp_path / "server.log",
                       "--queue-size", "5", "--batch-size", "100", "--flush-interval", "30", "--sink-delay", "0.2",
                       "--log-level", "warning")
    try:
        with httpx.Client(base_url=server.base, timeout=10) as client:
            for i in range(30):
                assert client.get(f"/p/demo/e/ladder/hls/master.m3u8?playSessionId=q{i}").status_code == 200
        assert server.metric("vodgate_analytics_events_dropped_total") == 25
        assert server.metric("vodgate_analytics_events_accepted_total") == 5
    finally:
        status = server.terminate()
    assert status in (0, -signal.SIGTERM), server.log()
    assert sorted(e["session"] for e in _events(events)) == sorted(f"q{i}" for i in range(5))
    assert server.log().count("analytics queue full") == 1
