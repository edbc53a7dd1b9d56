# ---------------------------------------------------------------------------
# Media fixtures (tests/media_fixtures.py, tests/oracle.py)
#
# Generated MP4 files are cached across runs in $VODGATE_FIXTURE_DIR or
# <repo>/.fixtures/; within a session everything is generated once.
# ---------------------------------------------------------------------------
from __future__ import annotations

from pathlib import Path

import pytest


def _require_ffmpeg() -> None:
    import media_fixtures  # puts the repo root on sys.path

    try:
        media_fixtures.ffmpeg_exe()
    except media_fixtures.FfmpegNotAvailable as exc:
        pytest.skip(str(exc))


def fixture_bytes(name: str) -> bytes:
    """The bytes of media fixture ``name`` (generated once); skips the test when ffmpeg is missing."""
    import media_fixtures

    try:
        return media_fixtures.fixture_path(name).read_bytes()
    except media_fixtures.FfmpegNotAvailable as exc:  # pragma: no cover - environment
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def media_fixture_paths() -> dict[str, Path]:
    """``name -> Path`` of every fixture in media_fixtures.FIXTURES (generated once)."""
    import media_fixtures

    _require_ffmpeg()
    return media_fixtures.ensure_fixtures()


@pytest.fixture(scope="session")
def media_library(tmp_path_factory, media_fixture_paths) -> Path:
    """Catalog root: ``demo/<fixture>/main.mp4``, ``demo/ladder/{hi,mid,lo}.mp4``,
    ``bad/<fixture>/main.mp4`` (copies; tests may modify them)."""
    import media_fixtures

    return media_fixtures.build_library(tmp_path_factory.mktemp("library"))


# ---------------------------------------------------------------------------
# A real vodgate server on 127.0.0.1 (a subprocess running `vodgate serve`)
# ---------------------------------------------------------------------------
import re
import socket
import subprocess
import sys
import time

import httpx

REPO = Path(__file__).resolve().parent.parent


def hot_answers_in(metrics: str, required: bool = True) -> int:
    """``vodgate_hot_lane_answers_total`` from a /metrics text: how many answers the hot lane gave (edge/hot.py).
    Absent (a server without the hot lane) fails unless not ``required``, then counts 0."""
    found = re.search(r"^vodgate_hot_lane_answers_total (\S+)$", metrics, re.MULTILINE)
    assert found or not required, "the hot lane counter is missing from /metrics"
    return int(float(found.group(1))) if found else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`vodgate serve` in a subprocess; its log is kept for failure messages.

    Waits for /healthz unless ``wait=False`` (start several, then :meth:`wait` on each)."""

    def __init__(self, args: list[str], log_path: Path, *, wait: bool = True, name: str = "server") -> None:
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        # one process unless a test asks for workers (the default is one per CPU): a test that counts cache
        # hits or reads one node's state must not depend on which worker the kernel gave its connection
        workers = [] if "--workers" in args else ["--workers", "1"]
        cmd = [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port", str(self.port), *workers, *args]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            try:
                self.wait()
            except RuntimeError:
                self.stop()
                raise

    def wait(self, timeout: float = 30) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def serving(args: list[str], log_path: Path):
    """A server for a fixture's lifetime: ``yield from serving(args, log_path)`` starts it, yields it, stops it."""
    proc = ServerProcess(args, log_path)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def server(media_library, tmp_path_factory):
    """A server over the fixture library with 4 s segments (short fixtures still get several)."""
    yield from serving(["--media", str(media_library), "--segment-duration", "4"], tmp_path_factory.mktemp("srv") / "server.log")


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server.base, timeout=30) as c:
        yield c
