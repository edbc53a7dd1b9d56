"""Warm-cache segment throughput of vodgate against nginx serving the same bytes as static files.

    .venv/bin/python -m loadtests.bench_nginx [--seconds 3] [--connections 16] [--threads 2] [--rounds 15]
        [--media DIR] [--locust-seconds 20] [--locust-users 40] [--no-locust] [--json out.json]
        [--playlists plain|session|token] [--vodgate-workers N]

What one run does:

1. Makes (or reuses) the demo library (``origin.demo_media.make_demo_library``: ``demo/ladder/{hi,mid,lo}.mp4``)
   under ``--media`` (default ``.fixtures/bench-nginx-lib``).
2. Starts ``vodgate serve --workers 1`` (``python -m cli.main serve``, one uvicorn process, log level ``warning`` and
   ``access_log = "off"``, so no access log) and warms its segment cache: every TS segment of every media playlist of the HLS master
   (video variants and audio renditions) is fetched once. The same bytes are written as static files
   under a temporary docroot, at the same paths.
3. Starts nginx (Debian package; ``apt-get install -y nginx wrk`` is run when ``/usr/sbin/nginx`` or
   ``wrk`` is missing and we are root) with a minimal config: 2 workers, ``sendfile on``,
   ``access_log off``, keep-alive, on 127.0.0.1.
4. Checks: every segment answers ``X-Cache: HIT`` from vodgate, and both servers return identical
   bytes for every segment URL. Any failure stops the run.
5. ``--rounds`` rounds of one wrk measurement per server (``--seconds`` each, same ``--connections``
   and ``--threads``, a Lua script cycling through all segment URLs, each thread from another offset);
   the order alternates every round. Reported: MB/s (bytes read by wrk: bodies + headers) and
   requests/s per server, the median over rounds, and the ratio vodgate/nginx (median of the per-round
   ratios and ratio of medians).
6. Origin requests saved by the cache: a fresh vodgate server (empty cache), locust with
   ``--locust-users`` users (Viewer + CdnPull, ``--entries demo/ladder``) for ``--locust-seconds``;
   segment requests served vs cache misses (packaging runs), from the locustfile's ``X-Cache`` counts.

``--playlists plain|session|token`` measures playlists instead of segments, the same way: the HLS and CMAF
masters and every media playlist they list (video and audio), as nginx serves them from static copies:
``plain`` asks without a query (the hot lane's case: a partner without rules), ``session`` with a
``?playSessionId=`` (the full path, the cached template filled per response), ``token`` with a valid
``?token=`` for a partner whose profile refuses viewers without one (the full path: token check, access
decision, template fill). nginx is given the very bytes vodgate answers (the token's in its URIs), so
both send the same bodies. ``--vodgate-workers`` sets ``vodgate serve --workers`` (default 1; nginx runs
``--nginx-workers``, default 2). ``--edge`` measures a vodgate edge (``--role edge``) in front of a vodgate
origin instead of a single server: warm, it answers from its own store.

Everything shares one machine: the load generator (wrk), the server under test and the idle other
server run on the same cores, so the absolute figures are a lower bound; the ratio is what counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlsplit

REPO = Path(__file__).resolve().parent.parent
MASTER = "/p/demo/e/ladder/hls/master.m3u8"
NGINX = "/usr/sbin/nginx"

WRK_LUA = r"""
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do
  if #line > 0 then paths[#paths + 1] = line end
end
local counter = 0
local threads = {}

function setup(thread)
  thread:set("offset", counter * 7)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  i = offset or 0
end

function request()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "bytes": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def save_json(path: Path | None, result: object) -> None:
    """A run's figures as JSON (``--json``), the folder made if need be."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def wait_http(url: str, proc: subprocess.Popen, name: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}; log {log}:\n{log.read_text()[-2000:]}")
        try:
            fetch(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{name} did not answer {url} within 30 s; log {log}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


# --------------------------------------------------------------------------- tools

def ensure_tools(packages: tuple[str, ...] = ("nginx", "wrk")) -> None:
    def present(pkg: str) -> bool:
        path = NGINX if pkg == "nginx" else shutil.which(pkg)
        return bool(path) and Path(path).exists()

    missing = [pkg for pkg in packages if not present(pkg)]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(f"missing {', '.join(missing)}: install the Debian packages (apt-get install -y {' '.join(missing)})")
    print(f"installing {', '.join(missing)} with apt-get ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    r = subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=False, env=env)
    if r.returncode != 0 or not all(present(pkg) for pkg in missing):
        raise SystemExit(f"could not install {', '.join(missing)} (apt-get install -y {' '.join(missing)})")


# --------------------------------------------------------------------------- servers

class Vodgate:
    def __init__(self, media: Path, tmp: Path, name: str, workers: int | None = None, extra_config: str = "",
                 args: tuple[str, ...] = ()) -> None:
        """``workers``: ``--workers`` (None: the server's default); ``extra_config``: TOML after ``[server]``;
        ``args``: more ``vodgate serve`` arguments (``--role edge --upstream URL``)."""
        self.port = free_port()
        self.name = name
        config = tmp / f"{name}.toml"
        config.write_text(f'[server]\nmedia_root = "{media}"\nhost = "127.0.0.1"\nport = {self.port}\n'
                          f'log_level = "warning"\naccess_log = "off"\n{extra_config}')
        self.log = tmp / f"{name}.log"
        self._fh = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "cli.main", "serve", "--config", str(config), "--media", str(media),
               "--host", "127.0.0.1", "--port", str(self.port)]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        cmd += list(args)
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._fh, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        wait_http(self.base + MASTER, self.proc, name, self.log)

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]  # with --workers N > 1: the supervisor and its workers

    def stop(self) -> None:
        stop(self.proc)
        self._fh.close()


class Nginx:
    """nginx serving ``docroot`` as static files; ``locations``: more ``location`` blocks for its server (the
    nginx-vod-module ones of loadtests/bench_nginx_vod.py, with that build's ``binary``)."""

    def __init__(self, docroot: Path, tmp: Path, workers: int | str, *, binary: str | Path = NGINX, locations: str = "",
                 reuseport: bool = False, as_root: bool = False) -> None:
        self.port = free_port()
        d = tmp / "nginx"
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.log = d / "error.log"
        user = "user root root;" if as_root and os.geteuid() == 0 else ""
        self.conf = d / "nginx.conf"
        self.conf.write_text(f"""daemon off;
master_process on;
{user}
worker_processes {workers};
pid {d}/nginx.pid;
error_log {self.log} warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    types {{ video/mp2t ts; video/iso.segment m4s; video/mp4 mp4; application/vnd.apple.mpegurl m3u8; }}
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{self.port}{" reuseport" if reuseport else ""};
        root {docroot};
{locations}
    }}
}}
""")
        self._fh = open(d / "stdout.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(binary), "-c", str(self.conf), "-p", f"{d}/", "-e", str(self.log)],
                                     stdout=self._fh, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        self.name = "nginx"
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"nginx exited with {self.proc.returncode}:\n{self.log.read_text()[-2000:] if self.log.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("nginx did not start")

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self) -> None:
        stop(self.proc, signal.SIGQUIT)  # graceful shutdown of master + workers
        self._fh.close()


# --------------------------------------------------------------------------- segments

def segment_paths(base: str) -> list[str]:
    import m3u8

    _, _, text = fetch(base + MASTER)
    master = m3u8.loads(text.decode())
    playlists = [v.uri for v in master.playlists] + [m.uri for m in master.media if m.uri]
    paths: list[str] = []
    for uri in dict.fromkeys(playlists):
        url = urljoin(base + MASTER, uri)
        _, _, text = fetch(url)
        for seg in m3u8.loads(text.decode()).segments:
            p = urlsplit(urljoin(url, seg.uri)).path
            if p not in paths:
                paths.append(p)
    if not paths:
        raise SystemExit("no segment in the media playlists")
    bad = [p for p in paths if not p.endswith(".ts")]
    if bad:
        raise SystemExit(f"non-TS segment URLs: {bad[:3]}")
    return paths


# --------------------------------------------------------------------------- playlists

TOKEN_KEY = "00112233445566778899aabbccddeeff"
PLAYLIST_MASTERS = ("/p/demo/e/ladder/hls/master.m3u8", "/p/demo/e/ladder/cmaf/master.m3u8")


def token_partner_config() -> str:
    """The demo partner with a profile that refuses viewers without a token (``--playlists token``)."""
    return (f'\n[partners.demo]\ntoken_keys = {{ k1 = "{TOKEN_KEY}" }}\ndefault_profile = "paid"\n\n'
            '[partners.demo.profiles.paid]\n'
            'rules = [{ name = "paid", unless = { authenticated = true }, then = [{ block = "token_required" }] }]\n')


def playlist_query(kind: str) -> str:
    if kind == "plain":
        return ""
    if kind == "session":
        return "?playSessionId=6f1c2a90-3b1e-4d7e-9a51-0c2b8e4f7d13"
    from auth.tokens import sign_native

    return "?token=" + sign_native("k1", bytes.fromhex(TOKEN_KEY), "/p/demo/e/ladder", int(time.time()) + 86400)


def playlist_paths(base: str, query: str) -> list[str]:
    """The masters and every media playlist they list, each with ``query`` (as a player asks, it would carry it)."""
    paths: list[str] = []
    for master in PLAYLIST_MASTERS:
        status, _, text = fetch(base + master + query)
        if status != 200:
            raise SystemExit(f"vodgate {master}{query}: status {status}")
        paths.append(master + query)
        for line in text.decode().splitlines():
            uri = line.split('URI="', 1)[1].split('"', 1)[0] if 'URI="' in line else line if line and not line.startswith("#") else ""
            if uri:
                parts = urlsplit(urljoin(base + master, uri))
                if parts.path.endswith(".m3u8"):
                    paths.append(parts.path + query)  # the query the master wrote is the viewer's own
    return list(dict.fromkeys(paths))


# --------------------------------------------------------------------------- checks

def warm_and_copy(vod: Vodgate, paths: list[str], docroot: Path, playlists: bool = False, repeat: int = 1) -> dict[str, bytes]:
    """Fetch each path (``repeat`` times: with several workers each has its own cache) and store its bytes
    under ``docroot`` at the path (without the query, which nginx ignores for static files)."""
    bodies = {}
    for p in paths:
        for _ in range(repeat):
            status, _, body = fetch(vod.base + p)
        kind_ok = body.startswith(b"#EXTM3U") if playlists else (body and len(body) % 188 == 0 and body[0] == 0x47)
        if status != 200 or not kind_ok:
            raise SystemExit(f"vodgate {p}: status {status}, {len(body)} bytes, not {'a playlist' if playlists else 'MPEG-TS'}")
        target = docroot / urlsplit(p).path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        bodies[p] = body
    return bodies


def verify(vod: Vodgate, ngx: Nginx, bodies: dict[str, bytes]) -> None:
    for p, expected in bodies.items():
        status, headers, body = fetch(vod.base + p)
        if status != 200 or headers.get("x-cache") != "HIT":
            raise SystemExit(f"vodgate {p}: status {status}, X-Cache {headers.get('x-cache')!r}: expected a warm HIT")
        if body != expected:
            raise SystemExit(f"vodgate {p}: bytes changed between two fetches")
        status, headers, body = fetch(ngx.base + p)
        if status != 200 or body != expected:
            raise SystemExit(f"nginx {p}: status {status}, {len(body)} bytes: not the bytes vodgate serves ({len(expected)})")


# --------------------------------------------------------------------------- load

def wrk(base: str, lua: Path, paths_file: Path, seconds: float, connections: int, threads: int) -> dict:
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--timeout", "10s",
           "-s", str(lua), base + "/"]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=seconds + 60,
                         env=dict(os.environ, BENCH_PATHS=str(paths_file)))
    m = re.search(r"^BENCH_JSON (.*)$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not m:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = json.loads(m.group(1))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    if errors or not r["requests"]:
        raise SystemExit(f"wrk against {base}: {errors} errors / {r['requests']} requests: {r}")
    secs = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / secs
    r["mbps"] = r["bytes"] / secs / 1e6
    return r


def throughput(vod: Vodgate, ngx: Nginx, paths: list[str], tmp: Path, ns: argparse.Namespace) -> dict:
    lua = tmp / "cycle.lua"
    lua.write_text(WRK_LUA)
    paths_file = tmp / "paths.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    servers = {"nginx": ngx, "vodgate": vod}
    # untimed warm-up of both (connections, nginx open-file paths, page cache)
    for s in servers.values():
        wrk(s.base, lua, paths_file, 2, ns.connections, ns.threads)
    rounds = []
    for i in range(ns.rounds):
        order = ["nginx", "vodgate"] if i % 2 == 0 else ["vodgate", "nginx"]
        row = {}
        for name in order:
            s = servers[name]
            cpu0 = cpu_seconds(s.pids())
            r = wrk(s.base, lua, paths_file, ns.seconds, ns.connections, ns.threads)
            r["server_cpu_s"] = cpu_seconds(s.pids()) - cpu0
            r["server_cpu_us_per_req"] = r["server_cpu_s"] / r["requests"] * 1e6
            row[name] = r
        row["ratio_mbps"] = row["vodgate"]["mbps"] / row["nginx"]["mbps"]
        row["ratio_rps"] = row["vodgate"]["rps"] / row["nginx"]["rps"]
        rounds.append(row)
        print(f"round {i + 1}/{ns.rounds}: nginx {row['nginx']['mbps']:8.1f} MB/s {row['nginx']['rps']:8.0f} req/s | "
              f"vodgate {row['vodgate']['mbps']:8.1f} MB/s {row['vodgate']['rps']:8.0f} req/s | "
              f"ratio {row['ratio_mbps']:.3f}", flush=True)
    return {"rounds": rounds}


# --------------------------------------------------------------------------- locust

def locust_savings(media: Path, tmp: Path, ns: argparse.Namespace) -> dict:
    vod = Vodgate(media, tmp, "vodgate-locust", workers=1)  # one cache: one MISS per distinct segment
    try:
        csv = tmp / "locust"
        cmd = [str(Path(sys.executable).parent / "locust"), "-f", str(REPO / "loadtests" / "locustfile.py"),
               "--headless", "-u", str(ns.locust_users), "-r", "10", "-t", f"{ns.locust_seconds}s",
               "--host", vod.base, "--entries", "demo/ladder", "--csv", str(csv), "--only-summary"]
        out = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=ns.locust_seconds + 120)
        text = out.stdout + out.stderr
        section = text.split("X-Cache by request name:", 1)
        if len(section) != 2:
            raise SystemExit(f"locust printed no X-Cache counts (exit {out.returncode}):\n{text[-3000:]}")
        counts: dict[str, dict[str, int]] = {}
        for line in section[1].splitlines():
            m = re.match(r"\s+(\w+ \w+)\s+(.*)$", line)
            if not m:
                if counts:
                    break
                continue
            counts[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\S+) (\d+) \(\d+%\)", m.group(2))}
        failures = 0
        stats = csv.with_name("locust_stats.csv")
        if stats.exists():
            import csv as csvmod

            with open(stats) as fh:
                for row in csvmod.DictReader(fh):
                    if row["Name"] == "Aggregated":
                        failures = int(row["Failure Count"])
        seg = {k: v for k, v in counts.items() if k.endswith("segment")}
        total = sum(sum(v.values()) for v in seg.values())
        miss = sum(v.get("MISS", 0) for v in seg.values())
        coalesced = sum(v.get("COALESCED", 0) for v in seg.values())
        hit = sum(v.get("HIT", 0) for v in seg.values())
        all_total = sum(sum(v.values()) for v in counts.values())
        all_miss = sum(v.get("MISS", 0) for v in counts.values())
        return {"by_name": counts, "segment_requests": total, "segment_hit": hit, "segment_miss": miss,
                "segment_coalesced": coalesced, "segment_saved_share": 1 - miss / total if total else None,
                "all_requests": all_total, "all_miss": all_miss, "failures": failures,
                "users": ns.locust_users, "seconds": ns.locust_seconds}
    finally:
        vod.stop()


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_nginx", description=__doc__.split("\n\n")[0])
    p.add_argument("--media", type=Path, default=REPO / ".fixtures" / "bench-nginx-lib")
    p.add_argument("--seconds", type=float, default=3, help="per measurement (default 3: short rounds pair the two servers closely in time)")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--nginx-workers", default="2", help="nginx worker_processes (default 2)")
    p.add_argument("--locust-users", type=int, default=40)
    p.add_argument("--locust-seconds", type=int, default=20)
    p.add_argument("--no-locust", action="store_true")
    p.add_argument("--keep", action="store_true", help="leave the servers running until Enter (for profiling)")
    p.add_argument("--json", type=Path)
    p.add_argument("--playlists", choices=("plain", "session", "token"),
                   help="measure playlists instead of segments: without a query, with a playSessionId, with a token")
    p.add_argument("--vodgate-workers", type=int, default=1, help="vodgate serve --workers (default 1)")
    p.add_argument("--edge", action="store_true", help="measure a vodgate edge (in front of a vodgate origin) against nginx")
    ns = p.parse_args(argv)
    if ns.playlists or ns.edge:
        ns.no_locust = True  # the locust part is about an origin's segments

    ensure_tools()
    from origin.demo_media import make_demo_library

    media = make_demo_library(ns.media).resolve()
    print(f"{platform.node()}: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"wrk, nginx and vodgate share these cores", flush=True)
    result: dict = {"cpus": os.cpu_count(), "load_start": os.getloadavg(), "seconds": ns.seconds,
                    "connections": ns.connections, "threads": ns.threads, "rounds_n": ns.rounds}
    with tempfile.TemporaryDirectory(prefix="vodgate-bench-nginx-") as t:
        tmp = Path(t)
        tmp.chmod(0o755)  # nginx workers run as another user (www-data) when started as root
        docroot = tmp / "docroot"
        extra = token_partner_config() if ns.playlists == "token" else ""
        origin = None
        if ns.edge:  # the server under test is an edge; its origin is another vodgate (one process)
            origin = Vodgate(media, tmp, "vodgate-origin", workers=1, extra_config=extra)
        # by default one process: one cache, warmed by one fetch per URL
        vod = Vodgate(media, tmp, "vodgate", workers=ns.vodgate_workers, extra_config=extra,
                      args=("--role", "edge", "--upstream", origin.base) if origin else ())
        ngx = None
        what = f"{ns.playlists} playlists" if ns.playlists else "TS segments"
        try:
            paths = playlist_paths(vod.base, playlist_query(ns.playlists)) if ns.playlists else segment_paths(vod.base)
            bodies = warm_and_copy(vod, paths, docroot, bool(ns.playlists), repeat=2 * ns.vodgate_workers)
            sizes = [len(b) for b in bodies.values()]
            print(f"{len(paths)} {what}, {sum(sizes) / 1e6:.2f} MB, {min(sizes) / 1e3:.1f}-{max(sizes) / 1e3:.1f} kB "
                  f"(mean {statistics.mean(sizes) / 1e3:.1f} kB)", flush=True)
            ngx = Nginx(docroot, tmp, ns.nginx_workers)
            verify(vod, ngx, bodies)
            print(f"verified: {len(paths)} {what} X-Cache HIT on vodgate, identical bytes on nginx", flush=True)
            result.update(kind=what, vodgate_workers=ns.vodgate_workers, role="edge" if ns.edge else "all", urls=len(paths),
                          url_bytes=sum(sizes))
            result.update(throughput(vod, ngx, paths, tmp, ns))
            if ns.keep:
                input(f"vodgate pid {vod.proc.pid} on {vod.base}, nginx on {ngx.base}; Enter to stop ")
        finally:
            if ngx:
                ngx.stop()
            vod.stop()
            if origin:
                origin.stop()
        rounds = result["rounds"]
        summary = {}
        for name in ("nginx", "vodgate"):
            summary[name] = {k: statistics.median(r[name][k] for r in rounds)
                             for k in ("mbps", "rps", "p50_us", "p99_us", "server_cpu_us_per_req")}
        summary["ratio_mbps_median_of_rounds"] = statistics.median(r["ratio_mbps"] for r in rounds)
        summary["ratio_rps_median_of_rounds"] = statistics.median(r["ratio_rps"] for r in rounds)
        summary["ratio_of_medians_mbps"] = summary["vodgate"]["mbps"] / summary["nginx"]["mbps"]
        result["summary"] = summary
        print(f"\n{'server':8} {'MB/s':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11}   "
              f"({ns.rounds} rounds x {ns.seconds:g} s, {ns.connections} connections, {ns.threads} wrk threads)")
        for name in ("nginx", "vodgate"):
            s = summary[name]
            print(f"{name:8} {s['mbps']:9.1f} {s['rps']:9.0f} {s['p50_us'] / 1e3:8.2f} {s['p99_us'] / 1e3:8.2f} "
                  f"{s['server_cpu_us_per_req']:11.0f}")
        if ns.playlists:  # the same bodies from both, so requests/s is the figure; issue 13's target is half of nginx
            ratio = summary["ratio_rps_median_of_rounds"]
            print(f"vodgate/nginx req/s ({what}): {ratio:.3f} (median of rounds; ratio of medians "
                  f"{summary['vodgate']['rps'] / summary['nginx']['rps']:.3f}); target 0.5: {'met' if ratio >= 0.5 else 'NOT met'}")
        else:
            ratio = summary["ratio_mbps_median_of_rounds"]
            print(f"vodgate/nginx MB/s: {ratio:.3f} (median of rounds; ratio of medians "
                  f"{summary['ratio_of_medians_mbps']:.3f}); target 0.8: {'met' if ratio >= 0.8 else 'NOT met'}")

        if not ns.no_locust:
            print(f"\nlocust: {ns.locust_users} users for {ns.locust_seconds} s on a fresh server ...", flush=True)
            lc = locust_savings(media, tmp, ns)
            result["locust"] = lc
            for name, counts in lc["by_name"].items():
                print(f"  {name:16} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
            print(f"segment requests served {lc['segment_requests']}, packaging runs (MISS) {lc['segment_miss']}, "
                  f"COALESCED {lc['segment_coalesced']}, HIT {lc['segment_hit']}: "
                  f"{100 * lc['segment_saved_share']:.2f}% of segment requests needed no origin work "
                  f"(all requests: {lc['all_requests']}, MISS {lc['all_miss']}; locust failures {lc['failures']})")
        result["load_end"] = os.getloadavg()
    save_json(ns.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
