"""A real redis-server on a free port for the tests that need Redis (never a shared database).

    from redis_support import RedisServer, require_redis, redis_available

Where redis-server (or the redis package) is missing the tests skip with the reason; with
VODGATE_REQUIRE_SERVICES=1 (set by .ci/run) they fail instead, so CI always runs them.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port


class RedisServer:
    """``redis-server`` without persistence on 127.0.0.1 (``port``: reuse one, e.g. to restart it empty)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        import redis

        self.client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def redis_available() -> str | None:
    """Why Redis tests cannot run here, or None when they can."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis Python package is not installed (pip install redis)"
    return None


def require_redis(what: str = "Redis tests") -> None:
    """Skip (or, under VODGATE_REQUIRE_SERVICES=1, fail) the calling test when Redis cannot run here."""
    reason = redis_available()
    if reason is not None:
        if os.environ.get("VODGATE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"VODGATE_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(f"{what} skipped: {reason}")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """One Redis for a test module (None where Redis cannot run: the tests call require_redis first)."""
    if redis_available() is not None:
        yield None
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
