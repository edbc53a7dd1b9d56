"""Throughput of ``vodgate serve --workers 1`` against ``--workers 2``: same config, same run, alternated.

    .venv/bin/python -m loadtests.bench_workers [--seconds 3] [--rounds 7] [--connections 16] [--threads 2]
        [--media DIR] [--json out.json]

What one run does (the servers, wrk and its Lua script come from loadtests/bench_nginx.py):

1. Makes (or reuses) the demo ladder (``demo/ladder/{hi,mid,lo}.mp4``) under ``--media`` (default
   ``.fixtures/bench-nginx-lib``, shared with bench_nginx); installs ``wrk`` with apt-get when it is
   missing and we are root.
2. Starts two servers from the same config (``log_level = "warning"``, ``access_log = "off"``):
   ``--workers 1`` (one uvicorn process) and ``--workers 2`` (a supervisor and two workers on one
   SO_REUSEPORT port, edge/workers.py), and measures two scenarios on them:

   - **segments**: every TS segment of every media playlist of the HLS master (warm: the segment cache and
     the hot lane answer);
   - **playlists**: the master and the media playlists (cached, through the full ASGI path).

   Each scenario starts with an untimed wrk pass per server (``--connections`` fresh connections, which the
   kernel spreads over the workers, so every worker packages and caches every URL); then every URL is
   fetched on 8 new connections from each server: status 200, the same bytes from both, and for segments
   ``X-Cache: HIT``.
3. Stops them and starts two more with ``[cache] enabled = false`` (no response cache, no hot lane):
   **cold**, every TS segment packaged on every request, checked byte-equal to the warm bodies. The ladder
   is served as ``COLD_ENTRIES`` entries (hard links to the same files) so that the URLs (16 per entry)
   far outnumber the requests in flight, and wrk runs one thread (``COLD_THREADS``): its connections step
   through one sequence of URLs, where two threads, 7 URLs apart in the Lua script, keep overlapping
   windows. Concurrent requests for one URL would share one packaging run (single flight,
   ``X-Cache: COALESCED``); the cache lookups from /metrics show how many did.
4. Per scenario, ``--rounds`` rounds of one wrk measurement per server (``--seconds`` each, a Lua script
   cycling through the scenario's URLs), the order alternating every round. Recorded per measurement:
   req/s and MB/s (bytes read by wrk), latency, the CPU time of the server's processes (supervisor and
   workers, from /proc), of wrk (rusage of the finished child) and the whole machine's busy share
   (/proc/stat), so one sees which side ran out of CPU; for the 2-worker server, each worker's share of
   the server CPU (how evenly the kernel spread the connections); the segment cache's HIT/MISS/COALESCED
   counts from /metrics. After the warm scenarios, the resident set size of each server process.
5. Reports per scenario the median req/s and MB/s of each server and the median of the per-round ratios
   2w/1w; ``--json`` writes every measurement.

wrk and the servers share the machine's cores: on 2 cores, 2 workers compete with wrk for the second core,
so the ratio here is a lower bound on what a second core gives a real origin (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from .bench_nginx import MASTER, REPO, Vodgate, WRK_LUA, children, cpu_seconds, ensure_tools, fetch, save_json, segment_paths, wrk
from .memory_under_load import rss_mb

SERVERS = ("1w", "2w")
FRESH_CONNECTIONS = 8  # per URL and server after the warm-up pass: each a new connection, so a new pick of worker
WARM_UP_SECONDS = 2
COLD_CONFIG = "[cache]\nenabled = false\n"
COLD_ENTRIES = 8  # ladder-0 .. ladder-7: 128 segment URLs for 16 connections
COLD_THREADS = 1  # one wrk thread steps all connections through one sequence: no URL twice in flight


# --------------------------------------------------------------------------- what is measured

def playlist_paths(base: str) -> list[str]:
    """The master and every media playlist it names (video variants, audio renditions)."""
    import m3u8

    _, _, text = fetch(base + MASTER)
    master = m3u8.loads(text.decode())
    uris = [v.uri for v in master.playlists] + [m.uri for m in master.media if m.uri]
    return [MASTER, *dict.fromkeys(urlsplit(urljoin(base + MASTER, uri)).path for uri in uris)]


def check(servers: dict[str, Vodgate], paths: list[str], *, cache: str | None, times: int = FRESH_CONNECTIONS,
          expected: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Fetch every path ``times`` times from every server; all must agree (and match ``expected``)."""
    bodies = dict(expected or {})
    for name, server in servers.items():
        for p in paths:
            for _ in range(times):
                status, headers, body = fetch(server.base + p)
                if status != 200 or not body:
                    raise SystemExit(f"{name} {p}: status {status}, {len(body)} bytes")
                if cache is not None and headers.get("x-cache") != cache:
                    raise SystemExit(f"{name} {p}: X-Cache {headers.get('x-cache')!r}, expected {cache}")
                if p.endswith(".ts") and (len(body) % 188 or body[0] != 0x47):
                    raise SystemExit(f"{name} {p}: {len(body)} bytes, not MPEG-TS")
                if bodies.setdefault(p, body) != body:
                    raise SystemExit(f"{name} {p}: not the bytes the other server (or an earlier fetch) returned")
    return bodies


def cold_library(media: Path, tmp: Path, segments: list[str], bodies: dict[str, bytes]) -> tuple[Path, list[str], dict[str, bytes]]:
    """``COLD_ENTRIES`` copies of demo/ladder (hard links where possible): the root, their segment paths, bodies."""
    root = tmp / "cold-lib"
    paths, expected = [], {}
    for k in range(COLD_ENTRIES):
        entry = root / "demo" / f"ladder-{k}"
        entry.mkdir(parents=True)
        for source in sorted((media / "demo" / "ladder").glob("*.mp4")):
            try:
                os.link(source, entry / source.name)
            except OSError:
                shutil.copyfile(source, entry / source.name)
        for p in segments:
            q = p.replace("/e/ladder/", f"/e/ladder-{k}/", 1)
            paths.append(q)
            expected[q] = bodies[p]
    if len(set(paths)) != len(segments) * COLD_ENTRIES:
        raise SystemExit(f"segment paths do not name the entry as /e/ladder/: {segments[:2]}")
    return root, paths, expected


def cache_lookups(server: Vodgate) -> dict[str, float]:
    """The node's segment cache lookups by result, from /metrics (merged over workers)."""
    status, _, body = fetch(server.base + "/metrics")
    if status != 200:
        return {}
    counts: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("vodgate_segment_cache_lookups_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = counts.get(result, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wrk_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished children: the wrk runs
    return usage.ru_utime + usage.ru_stime


def workers(server: Vodgate) -> list[int]:
    """The worker processes of a ``--workers N > 1`` server (its supervisor's children but the resource tracker)."""
    pids = []
    for pid in children(server.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            pids.append(pid)
    return pids


def measure(server: Vodgate, lua: Path, paths_file: Path, seconds: float, connections: int, threads: int) -> dict:
    pids = server.pids()
    per_pid = {pid: cpu_seconds([pid]) for pid in pids}
    lookups = cache_lookups(server)
    wrk0, (busy0, total0) = wrk_cpu(), machine_ticks()
    r = wrk(server.base, lua, paths_file, seconds, connections, threads)
    wrk1, (busy1, total1) = wrk_cpu(), machine_ticks()
    secs = r["duration_us"] / 1e6
    used = {pid: cpu_seconds([pid]) - before for pid, before in per_pid.items()}
    r["server_cpu_s"] = sum(used.values())
    r["server_cpu_us_per_req"] = r["server_cpu_s"] / r["requests"] * 1e6
    r["server_cores"] = r["server_cpu_s"] / secs
    r["worker_cpu_s"] = [used[pid] for pid in workers(server) if pid in used]
    r["wrk_cores"] = (wrk1 - wrk0) / secs
    r["machine_busy"] = (busy1 - busy0) / max(1, total1 - total0)
    after = cache_lookups(server)
    r["cache_lookups"] = {k: after.get(k, 0) - lookups.get(k, 0) for k in after}
    return r


def scenario(name: str, servers: dict[str, Vodgate], paths: list[str], tmp: Path, ns: argparse.Namespace,
             threads: int) -> dict:
    lua = tmp / "cycle.lua"
    lua.write_text(WRK_LUA)
    paths_file = tmp / f"{name}-paths.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    rounds = []
    for i in range(ns.rounds):
        order = SERVERS if i % 2 == 0 else SERVERS[::-1]
        row = {s: measure(servers[s], lua, paths_file, ns.seconds, ns.connections, threads) for s in order}
        row["ratio_rps"] = row["2w"]["rps"] / row["1w"]["rps"]
        row["ratio_mbps"] = row["2w"]["mbps"] / row["1w"]["mbps"]
        rounds.append(row)
        print(f"  {name} round {i + 1}/{ns.rounds} ({order[0]} first): "
              + " | ".join(f"{s} {row[s]['rps']:7.0f} req/s {row[s]['mbps']:7.1f} MB/s" for s in SERVERS)
              + f" | 2w/1w {row['ratio_rps']:.2f}", flush=True)
    return {"paths": len(paths), "threads": threads, "rounds": rounds, "summary": summarize(rounds)}


def warm_up(servers: dict[str, Vodgate], paths: list[str], tmp: Path, ns: argparse.Namespace, threads: int) -> None:
    """An untimed wrk pass per server: warms every worker's caches (and the connections' paths in the kernel)."""
    lua = tmp / "cycle.lua"
    lua.write_text(WRK_LUA)
    paths_file = tmp / "warm-paths.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    for server in servers.values():
        wrk(server.base, lua, paths_file, WARM_UP_SECONDS, ns.connections, threads)


def summarize(rounds: list[dict]) -> dict:
    summary: dict = {}
    for s in SERVERS:
        summary[s] = {k: statistics.median(r[s][k] for r in rounds)
                      for k in ("rps", "mbps", "p50_us", "p99_us", "server_cpu_us_per_req", "server_cores",
                                "wrk_cores", "machine_busy")}
        cpu = [sum(r[s]["worker_cpu_s"]) for r in rounds]
        if s == "2w" and all(cpu):
            summary[s]["busiest_worker_share"] = statistics.median(max(r[s]["worker_cpu_s"]) / c for r, c in zip(rounds, cpu))
        lookups: dict[str, float] = {}
        for r in rounds:
            for k, v in r[s]["cache_lookups"].items():
                lookups[k] = lookups.get(k, 0) + v
        summary[s]["cache_lookups"] = lookups
        summary[s]["requests"] = sum(r[s]["requests"] for r in rounds)
    ratios = [r["ratio_rps"] for r in rounds]
    summary["ratio_rps_median_of_rounds"] = statistics.median(ratios)
    summary["ratio_mbps_median_of_rounds"] = statistics.median(r["ratio_mbps"] for r in rounds)
    summary["ratio_rps_range"] = [min(ratios), max(ratios)]
    summary["ratio_of_medians_rps"] = summary["2w"]["rps"] / summary["1w"]["rps"]
    return summary


def print_table(result: dict, ns: argparse.Namespace) -> None:
    print(f"\n{ns.rounds} rounds x {ns.seconds:g} s per server and scenario, {ns.connections} connections, "
          f"{ns.threads} wrk threads (cold: {COLD_THREADS}); {result['cpus']} CPUs shared by wrk and the server under test")
    print(f"{'scenario':10} {'server':6} {'req/s':>8} {'MB/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10} "
          f"{'server cores':>12} {'wrk cores':>9} {'busy':>5}   2w/1w req/s (median of rounds, range)")
    for name, sc in result["scenarios"].items():
        sm = sc["summary"]
        for s in SERVERS:
            x = sm[s]
            tail = ""
            if s == "2w":
                lo, hi = sm["ratio_rps_range"]
                tail = f"   {sm['ratio_rps_median_of_rounds']:.2f} ({lo:.2f}-{hi:.2f}); MB/s {sm['ratio_mbps_median_of_rounds']:.2f}"
            print(f"{name if s == '1w' else '':10} {s:6} {x['rps']:8.0f} {x['mbps']:8.1f} {x['p50_us'] / 1e3:7.2f} "
                  f"{x['p99_us'] / 1e3:7.2f} {x['server_cpu_us_per_req']:10.0f} {x['server_cores']:12.2f} "
                  f"{x['wrk_cores']:9.2f} {100 * x['machine_busy']:4.0f}%{tail}")
    print("server cores / wrk cores: CPU seconds per wall second (supervisor + workers; wrk); busy: whole machine")
    rss = result["rss_mb"]
    print(f"RSS after the warm scenarios: 1w {rss['1w']['server']:.0f} MB; 2w supervisor {rss['2w']['server']:.0f} MB "
          f"+ workers {' + '.join(f'{w:.0f}' for w in rss['2w']['workers'])} MB")
    for name, sc in result["scenarios"].items():
        share = sc["summary"]["2w"].get("busiest_worker_share")
        line = [f"2w busiest worker {100 * share:.0f}% of the workers' CPU"] if share else []
        for s in SERVERS:
            x = sc["summary"][s]
            lookups = ", ".join(f"{k} {int(v)}" for k, v in sorted(x["cache_lookups"].items()))
            line.append(f"{s} {x['requests']} requests, cache lookups {lookups or 'none'}")
        print(f"{name}: " + "; ".join(line))


# --------------------------------------------------------------------------- main

def start_pair(media: Path, tmp: Path, prefix: str, extra_config: str = "") -> dict[str, Vodgate]:
    servers: dict[str, Vodgate] = {}
    try:
        for s, workers in (("1w", 1), ("2w", 2)):
            servers[s] = Vodgate(media, tmp, f"{prefix}-{s}", workers=workers, extra_config=extra_config)
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: dict[str, Vodgate]) -> None:
    for server in servers.values():
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_workers", description=__doc__.split("\n\n")[0])
    p.add_argument("--media", type=Path, default=REPO / ".fixtures" / "bench-nginx-lib")
    p.add_argument("--seconds", type=float, default=3, help="per measurement (default 3)")
    p.add_argument("--rounds", type=int, default=7, help="per scenario (default 7: about 4 minutes in all)")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2; the cold scenario always runs 1)")
    p.add_argument("--json", type=Path)
    ns = p.parse_args(argv)

    ensure_tools(("wrk",))
    from origin.demo_media import make_demo_library

    media = make_demo_library(ns.media).resolve()
    print(f"{platform.node()}: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"wrk and the servers share these cores", flush=True)
    result: dict = {"cpus": os.cpu_count(), "load_start": os.getloadavg(), "seconds": ns.seconds,
                    "connections": ns.connections, "threads": ns.threads, "rounds_n": ns.rounds, "scenarios": {}}
    with tempfile.TemporaryDirectory(prefix="vodgate-bench-workers-") as t:
        tmp = Path(t)
        servers = start_pair(media, tmp, "warm")
        try:
            segments = segment_paths(servers["1w"].base)
            playlists = playlist_paths(servers["1w"].base)
            warm_up(servers, segments, tmp, ns, ns.threads)
            bodies = check(servers, segments, cache="HIT")
            sizes = [len(b) for b in bodies.values()]
            print(f"{len(segments)} TS segments ({sum(sizes) / 1e6:.2f} MB, mean {statistics.mean(sizes) / 1e3:.0f} kB), "
                  f"X-Cache HIT on {FRESH_CONNECTIONS} fresh connections each, same bytes from both servers", flush=True)
            result["scenarios"]["segments"] = scenario("segments", servers, segments, tmp, ns, ns.threads)
            warm_up(servers, playlists, tmp, ns, ns.threads)
            check(servers, playlists, cache=None)
            print(f"{len(playlists)} playlists (master + media), same bytes from both servers", flush=True)
            result["scenarios"]["playlists"] = scenario("playlists", servers, playlists, tmp, ns, ns.threads)
            result["rss_mb"] = {s: {"server": rss_mb(server.proc.pid), "workers": [rss_mb(pid) for pid in workers(server)]}
                                for s, server in servers.items()}
        finally:
            stop_all(servers)
        cold_root, cold_paths, expected = cold_library(media, tmp, segments, bodies)
        servers = start_pair(cold_root, tmp, "cold", COLD_CONFIG)
        try:
            warm_up(servers, cold_paths, tmp, ns, COLD_THREADS)  # indexes and media sets are still cached: cold means packaging
            check(servers, cold_paths, cache=None, times=1, expected=expected)
            print(f"cold ([cache] enabled = false): {COLD_ENTRIES} entries, {len(cold_paths)} TS segments, "
                  f"the same bytes as warm; {COLD_THREADS} wrk thread", flush=True)
            result["scenarios"]["cold"] = scenario("cold", servers, cold_paths, tmp, ns, COLD_THREADS)
        finally:
            stop_all(servers)
    result["load_end"] = os.getloadavg()
    print_table(result, ns)
    save_json(ns.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
