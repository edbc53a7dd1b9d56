"""What access control costs a segment request: warm (cached) segment requests, open vs protected.

Both apps serve the same library in-process, called as ASGI apps directly (no
client, no sockets: the figure is server-side work only); the protected one requires
a signed token and evaluates a five-rule profile on every request. Rounds
alternate between the two so machine noise hits both alike.

    python -m loadtests.bench_access [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from auth.tokens import sign_native
from config.settings import parse_settings
from edge.app import create_app
from origin.demo_media import make_demo_library

KEY = "00112233445566778899aabbccddeeff"
SEGMENT = "/p/demo/e/ladder/hls/mid/seg-2.ts"

PROTECTED = """
[server]
media_root = "{root}"
[partners.demo]
token_keys = {{ k1 = "{key}" }}
default_profile = "strict"
[partners.demo.profiles.strict]
rules = [
  {{ if = {{ ip = ["10.0.0.0/8", "192.168.0.0/16"] }}, then = [{{ block = "private_net" }}] }},
  {{ if = {{ user_agent = "(?i)bot|crawler" }}, then = [{{ block = "bot" }}] }},
  {{ if = {{ schedule = {{ time = "03:00-03:05", tz = "Europe/Paris" }} }}, then = [{{ block = "maintenance" }}] }},
  {{ if = {{ referrer = ["*.example.com", "player.example.org"] }}, then = ["continue"] }},
  {{ unless = {{ authenticated = true }}, then = ["block"] }},
]
"""


HEADERS = [(b"host", b"origin"), (b"user-agent", b"Mozilla/5.0 hls.js"), (b"referer", b"https://www.example.com/")]


async def _timed(app, path: str, query: str, count: int) -> float:
    """Server-side time per request: the ASGI app called directly, no client or socket in the loop."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": HEADERS, "client": ("203.0.113.5", 5000), "server": ("127.0.0.1", 8080),
    }
    status = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    start = time.perf_counter()
    for _ in range(count):
        await app(dict(scope), receive, send)
    elapsed = time.perf_counter() - start
    if set(status) != {200}:
        raise SystemExit(f"unexpected statuses {sorted(set(status))} for {path}?{query}")
    return elapsed / count


async def run(root: Path, requests: int, rounds: int) -> tuple[list[float], list[float]]:
    import tomllib

    open_app = create_app(parse_settings({"server": {"media_root": str(root)}}))
    protected_app = create_app(parse_settings(tomllib.loads(PROTECTED.format(root=root, key=KEY))))
    token = sign_native("k1", bytes.fromhex(KEY), "/p/demo/e/ladder", int(time.time()) + 3600)
    open_times, protected_times = [], []
    await _timed(open_app, SEGMENT, "", 20)  # warm both caches: we measure the hot path
    await _timed(protected_app, SEGMENT, f"token={token}", 20)
    for _ in range(rounds):
        open_times.append(await _timed(open_app, SEGMENT, "", requests))
        protected_times.append(await _timed(protected_app, SEGMENT, f"token={token}", requests))
    return open_times, protected_times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--library", type=Path, help="existing demo library (default: generate one in a temp dir)")
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = ns.library or make_demo_library(Path(tmp) / "lib", duration=12)
        open_times, protected_times = asyncio.run(run(Path(root), ns.requests, ns.rounds))
    o, p = statistics.median(open_times) * 1e6, statistics.median(protected_times) * 1e6
    print(f"warm segment request, open partner:      {o:8.1f} us (median of {ns.rounds} rounds x {ns.requests})")
    print(f"warm segment request, token + 5 rules:   {p:8.1f} us")
    print(f"access control adds {p - o:.1f} us per request: {100 * (p - o) / o:.1f}% of an open request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
