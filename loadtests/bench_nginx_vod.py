"""Cold packaging throughput of vodgate against nginx-vod-module (Kaltura) on the same MP4, TS and fMP4.

    .venv/bin/python -m loadtests.bench_nginx_vod --nginx-vod /path/to/sbin/nginx [--media FILE] [--workers 2]
        [--rounds 7] [--seconds 4] [--connections 16] [--formats ts,fmp4] [--vod-metadata-cache]
        [--no-reuseport] [--json out.json]

``--nginx-vod`` is an nginx binary built with nginx-vod-module (https://github.com/kaltura/nginx-vod-module,
``configure --add-module=<nginx-vod-module dir> ...; make``; ``auto/configure`` in a git checkout of nginx).
This script builds nothing and the repository holds no nginx-vod-module code nor a script that builds it: the
operator builds it beside the project (docs/PERFORMANCE.md, "Cold packaging vs nginx-vod-module", says how the
figures of record were built) and passes the binary here. Also needs ``wrk`` (installed with apt-get when missing
and we are root).

What one run does (wrk, its Lua script and the vodgate server come from loadtests/bench_nginx.py):

1. The media: ``--media FILE`` (default: the bench flavor ``.fixtures/bench/bench-1080p-5M-600s-*.mp4`` that
   ``vodgate bench`` generates, 10 minutes of 1080p H.264 at 5 Mbit/s + AAC) is hard-linked (copied when it
   cannot be) into a temporary library as ``bench/e1/hi.mp4``: partner ``bench``, entry ``e1``, flavor ``hi``.
2. Starts ``vodgate serve --workers N`` with ``[cache] enabled = false`` (no response cache, no hot lane:
   every segment request packages; the parsed index stays cached, as in bench_workers' cold scenario) and
   one nginx (``worker_processes N``, ``listen ... reuseport`` as vodgate's workers share their port with
   SO_REUSEPORT, so the kernel spreads the connections over the workers the same way for both;
   ``--no-reuseport``: one listening socket, the workers take turns accepting, and one worker may take most
   of wrk's connections for a whole measurement; ``sendfile on``, ``access_log off``, keep-alive) with two
   kinds of locations:

   - nginx-vod-module, ``vod_mode local``, ``vod hls``, no ``vod_metadata_cache`` and no
     ``vod_response_cache`` (so every request reads and parses the moov and packages the segment;
     ``--vod-metadata-cache`` configures a metadata cache, to see what the moov costs),
     ``vod_segment_duration`` = vodgate's segment duration (read from its media playlist's
     EXT-X-TARGETDURATION / EXTINF), ``vod_align_segments_to_key_frames on``,
     ``vod_segment_count_policy last_rounded`` (AAC runs a few ms past the video: with the default
     ``last_short`` nginx-vod gives the audio a 101st segment of those ms, vodgate folds them into the last
     one); ``/vod/ts/`` with ``vod_hls_container_format mpegts`` and ``/vod/fmp4/`` with ``fmp4``. The URLs
     are per rendition, as vodgate's: ``seg-N-v1.ts`` / ``seg-N-a1.ts`` (``.m4s`` for fMP4), video-only and
     audio-only segments;
   - static files (``root``): every TS and fMP4 segment vodgate answered, fetched once and written at
     the same paths: the ceiling, nginx sending the packaged bytes with sendfile.

3. Checks before timing: every segment URL (video and audio renditions) answers 200 on each server; the
   segment counts of vodgate's and nginx-vod's media playlists match; the total bytes of the two packagers
   are within ``--max-size-diff`` (default 5%; both totals are reported, per rendition); one segment of each
   packager (the middle video segment and an audio one; for fMP4 prefixed with its init segment) decodes with
   ffmpeg (``imageio_ffmpeg``; ``ffmpeg -v error -i seg -f null -``, exit 0, no message).
4. Per format, ``--rounds`` rounds of one wrk measurement per server (``--seconds`` each, ``--connections``,
   one wrk thread so that no URL is in flight twice: vodgate would share one packaging run between
   concurrent requests for a URL, which nginx-vod does not; a Lua script cycling through all the segment
   URLs of the format, video and audio, init segments left out); the order of the three servers rotates
   every round. Recorded per measurement: MB/s (bytes read by wrk, bodies and headers, 10^6), req/s,
   latency, the server's CPU seconds (master/supervisor and workers, from /proc) per MB sent, the
   busiest worker's share of the workers' CPU (how evenly the connections were spread) and the machine's
   busy share.
5. Reports per format the medians over rounds, and the ratio vodgate / nginx-vod (MB/s) per round and its
   median; ``--json`` writes every measurement.

Everything shares one machine: wrk, the server under test and the idle other servers run on the same cores
(2 vCPUs here), so absolute figures are a lower bound and CPU per MB is the steadier figure; the paired
ratio is what counts.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from .bench_nginx import Nginx, REPO, Vodgate, WRK_LUA, cpu_seconds, ensure_tools, fetch, free_port, save_json, wrk
from .bench_workers import machine_ticks

PARTNER, ENTRY, FLAVOR = "bench", "e1", "hi"
SERVERS = ("vodgate", "nginx-vod", "static")
FORMATS = {  # vodgate tree, nginx-vod location, segment extension
    "ts": ("hls", "ts", ".ts"),
    "fmp4": ("cmaf", "fmp4", ".m4s"),
}
COLD_CONFIG = "[cache]\nenabled = false\n"
THREADS = 1  # one wrk thread: its connections step through one sequence of URLs, none twice in flight
WARM_UP_SECONDS = 2


# --------------------------------------------------------------------------- media and nginx

def default_media() -> Path:
    found = sorted((REPO / ".fixtures" / "bench").glob("bench-1080p-5M-600s-*.mp4"))
    if not found:
        raise SystemExit("no bench flavor in .fixtures/bench/: run `.venv/bin/vodgate bench` once "
                         "(it generates it) or pass --media FILE")
    return found[-1]


def make_library(media: Path, tmp: Path) -> Path:
    root = tmp / "lib"
    entry = root / PARTNER / ENTRY
    entry.mkdir(parents=True)
    target = entry / f"{FLAVOR}.mp4"
    try:
        os.link(media, target)
    except OSError:
        shutil.copyfile(media, target)
    for d in (root, root / PARTNER, entry):
        d.chmod(0o755)
    return root


def nginx_vod(binary: Path, library: Path, docroot: Path, tmp: Path, workers: int, segment_ms: int,
              metadata_cache: bool, reuseport: bool = True) -> Nginx:
    """The built nginx: nginx-vod-module locations over the library (/vod/ts/, /vod/fmp4/), static files over
    ``docroot``."""
    media_dir = library / PARTNER / ENTRY
    cache = "vod_metadata_cache metadata_cache 256m;" if metadata_cache else ""
    vod_common = f"""vod hls;
            alias {media_dir}/;
            vod_mode local;
            vod_segment_duration {segment_ms};
            vod_align_segments_to_key_frames on;
            vod_segment_count_policy last_rounded;
            vod_manifest_segment_durations_mode accurate;
            {cache}"""
    locations = f"""        location /vod/ts/ {{
            {vod_common}
            vod_hls_container_format mpegts;
        }}
        location /vod/fmp4/ {{
            {vod_common}
            vod_hls_container_format fmp4;
        }}"""
    return Nginx(docroot, tmp, workers, binary=binary, locations=locations, reuseport=reuseport, as_root=True)


def nginx_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "-V"], capture_output=True, text=True, check=False)
    return (out.stderr + out.stdout).strip()


# --------------------------------------------------------------------------- URLs

def media_playlist(base: str, path: str) -> tuple[list[str], list[float], float, str | None]:
    """Segment paths, EXTINF durations and EXT-X-TARGETDURATION of a media playlist."""
    import m3u8

    status, _, text = fetch(base + path)
    if status != 200:
        raise SystemExit(f"{base}{path}: status {status}")
    pl = m3u8.loads(text.decode())
    paths = [urlsplit(urljoin(base + path, s.uri)).path for s in pl.segments]
    init = pl.segment_map[0].uri if pl.segment_map else None
    if not paths:
        raise SystemExit(f"{base}{path}: no segment")
    return paths, [s.duration for s in pl.segments], float(pl.target_duration or 0), (
        urlsplit(urljoin(base + path, init)).path if init else None)


def vodgate_renditions(base: str, fmt: str) -> dict[str, dict]:
    """``{"v1": {...}, "a1": {...}}``: vodgate's video and first audio rendition of the flavor."""
    tree = FORMATS[fmt][0]
    out = {}
    for rend, sub in (("v1", ""), ("a1", "a1/")):
        paths, durations, target, init = media_playlist(base, f"/p/{PARTNER}/e/{ENTRY}/{tree}/{FLAVOR}/{sub}index.m3u8")
        out[rend] = {"paths": paths, "durations": durations, "target": target, "init": init}
    return out


def nginx_vod_renditions(base: str, fmt: str) -> dict[str, dict]:
    loc = FORMATS[fmt][1]
    out = {}
    for rend in ("v1", "a1"):
        paths, durations, target, init = media_playlist(base, f"/vod/{loc}/{FLAVOR}.mp4/index-{rend}.m3u8")
        out[rend] = {"paths": paths, "durations": durations, "target": target, "init": init}
    return out


# --------------------------------------------------------------------------- checks

def fetch_all(name: str, base: str, paths: list[str]) -> dict[str, bytes]:
    bodies = {}
    for p in paths:
        status, _, body = fetch(base + p, timeout=60)
        if status != 200 or not body:
            raise SystemExit(f"{name} {p}: status {status}, {len(body)} bytes")
        if p.endswith(".ts") and (len(body) % 188 or body[0] != 0x47):
            raise SystemExit(f"{name} {p}: {len(body)} bytes, not MPEG-TS")
        bodies[p] = body
    return bodies


def decode_check(name: str, data: bytes, suffix: str, tmp: Path) -> None:
    import imageio_ffmpeg

    f = tmp / f"decode-{name}{suffix}"
    f.write_bytes(data)
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(f), "-f", "null", "-"],
                         capture_output=True, text=True, check=False, timeout=120)
    if out.returncode != 0 or out.stderr.strip():
        raise SystemExit(f"{name}: ffmpeg did not decode {f} cleanly (exit {out.returncode}):\n{out.stderr[-2000:]}")


def prepare_format(fmt: str, vod: Vodgate, ngx: NginxVod, docroot: Path, tmp: Path, max_diff: float) -> dict:
    """Check both packagers' URLs for ``fmt``, write vodgate's bytes under the docroot; the URL lists."""
    ext = FORMATS[fmt][2]
    vg = vodgate_renditions(vod.base, fmt)
    nv = nginx_vod_renditions(ngx.base, fmt)
    info: dict = {"renditions": {}}
    urls = {"vodgate": [], "nginx-vod": []}
    bodies_all = {}
    for rend in ("v1", "a1"):
        a, b = vg[rend], nv[rend]
        if len(a["paths"]) != len(b["paths"]):
            raise SystemExit(f"{fmt} {rend}: vodgate lists {len(a['paths'])} segments, nginx-vod {len(b['paths'])}")
        bad = [p for p in a["paths"] + b["paths"] if not p.endswith(ext)]
        if bad:
            raise SystemExit(f"{fmt} {rend}: segment URLs not ending in {ext}: {bad[:3]}")
        va = fetch_all("vodgate", vod.base, a["paths"])
        nb = fetch_all("nginx-vod", ngx.base, b["paths"])
        for p, body in va.items():  # the static copy of vodgate's bytes, at vodgate's paths
            target = docroot / p.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
        bodies_all[rend] = (va, nb)
        urls["vodgate"] += a["paths"]
        urls["nginx-vod"] += b["paths"]
        # decode one segment of each packager: the middle one (with its init segment for fMP4)
        k = len(a["paths"]) // 2
        for name, base, r, bodies in (("vodgate", vod.base, a, va), ("nginx-vod", ngx.base, b, nb)):
            data = bodies[r["paths"][k]]
            if r["init"]:
                status, _, init = fetch(base + r["init"])
                if status != 200:
                    raise SystemExit(f"{name} {r['init']}: status {status}")
                data = init + data
            decode_check(f"{name}-{fmt}-{rend}", data, ".ts" if fmt == "ts" else ".mp4", tmp)
        info["renditions"][rend] = {
            "segments": len(a["paths"]), "vodgate_bytes": sum(map(len, va.values())),
            "nginx_vod_bytes": sum(map(len, nb.values())),
            "vodgate_target_duration": a["target"], "nginx_vod_target_duration": b["target"],
            "vodgate_extinf_sum": sum(a["durations"]), "nginx_vod_extinf_sum": sum(b["durations"]),
        }
    # static: the same bytes from nginx's docroot
    static = fetch_all("static", ngx.base, urls["vodgate"])
    for rend in ("v1", "a1"):
        for p, body in bodies_all[rend][0].items():
            if static[p] != body:
                raise SystemExit(f"static {p}: not vodgate's bytes")
    urls["static"] = list(urls["vodgate"])
    total_v = sum(r["vodgate_bytes"] for r in info["renditions"].values())
    total_n = sum(r["nginx_vod_bytes"] for r in info["renditions"].values())
    diff = total_v / total_n - 1
    info.update(vodgate_bytes=total_v, nginx_vod_bytes=total_n, size_diff=diff, urls=len(urls["vodgate"]))
    lines = ", ".join(f"{rend} {r['segments']} segments vodgate {r['vodgate_bytes'] / 1e6:.1f} MB / nginx-vod "
                      f"{r['nginx_vod_bytes'] / 1e6:.1f} MB" for rend, r in info["renditions"].items())
    print(f"{fmt}: {lines}; total vodgate {total_v / 1e6:.1f} MB, nginx-vod {total_n / 1e6:.1f} MB ({100 * diff:+.1f}%); "
          f"all 200 on vodgate, nginx-vod and static (static = vodgate's bytes); one video and one audio segment "
          f"of each packager decode with ffmpeg", flush=True)
    if abs(diff) > max_diff:
        raise SystemExit(f"{fmt}: packaged sizes differ by {100 * diff:+.1f}% (> {100 * max_diff:.0f}%)")
    info["url_lists"] = urls
    return info


# --------------------------------------------------------------------------- load

def measure(server, base: str, lua: Path, paths_file: Path, ns: argparse.Namespace) -> dict:
    pids = server.pids()
    per_pid = {pid: cpu_seconds([pid]) for pid in pids}
    busy0, total0 = machine_ticks()
    r = wrk(base, lua, paths_file, ns.seconds, ns.connections, THREADS)
    busy1, total1 = machine_ticks()
    used = {pid: cpu_seconds([pid]) - before for pid, before in per_pid.items()}
    r["server_cpu_s"] = sum(used.values())
    # the busiest worker's share of the workers' CPU (children of the master / supervisor): 1/N is an even spread
    work = [used[pid] for pid in pids[1:]]
    r["busiest_worker_share"] = max(work) / sum(work) if len(work) > 1 and sum(work) > 0 else 1.0
    r["server_cpu_ms_per_mb"] = r["server_cpu_s"] * 1e3 / (r["bytes"] / 1e6)
    r["server_cores"] = r["server_cpu_s"] / (r["duration_us"] / 1e6)
    r["machine_busy"] = (busy1 - busy0) / max(1, total1 - total0)
    return r


def run_format(fmt: str, servers: dict, urls: dict[str, list[str]], tmp: Path, ns: argparse.Namespace) -> dict:
    lua = tmp / "cycle.lua"
    lua.write_text(WRK_LUA)
    files = {}
    for name in SERVERS:
        files[name] = tmp / f"{fmt}-{name}-paths.txt"
        files[name].write_text("\n".join(urls[name]) + "\n")
    for name in SERVERS:  # untimed: connections, page cache, vodgate workers' parsed index
        server, base = servers[name]
        wrk(base, lua, files[name], WARM_UP_SECONDS, ns.connections, THREADS)
    rounds = []
    for i in range(ns.rounds):
        k = i % len(SERVERS)
        order = SERVERS[k:] + SERVERS[:k]
        row = {}
        for name in order:
            server, base = servers[name]
            row[name] = measure(server, base, lua, files[name], ns)
        row["order"] = list(order)
        row["load1"] = os.getloadavg()[0]
        row["ratio_mbps"] = row["vodgate"]["mbps"] / row["nginx-vod"]["mbps"]
        row["ratio_cpu_per_mb"] = row["vodgate"]["server_cpu_ms_per_mb"] / row["nginx-vod"]["server_cpu_ms_per_mb"]
        rounds.append(row)
        print(f"  {fmt} round {i + 1}/{ns.rounds} ({order[0]} first, load {row['load1']:.1f}): "
              + " | ".join(f"{s} {row[s]['mbps']:6.1f} MB/s {row[s]['rps']:5.0f} req/s "
                           f"{row[s]['server_cpu_ms_per_mb']:5.2f} CPU ms/MB"
                           + (f" busiest worker {100 * row[s]['busiest_worker_share']:.0f}%" if ns.workers > 1 else "")
                           for s in SERVERS)
              + f" | vodgate/nginx-vod MB/s {row['ratio_mbps']:.3f}", flush=True)
    summary: dict = {}
    for s in SERVERS:
        summary[s] = {k: statistics.median(r[s][k] for r in rounds)
                      for k in ("mbps", "rps", "p50_us", "p99_us", "server_cpu_ms_per_mb", "server_cores", "machine_busy",
                                "busiest_worker_share")}
    ratios = [r["ratio_mbps"] for r in rounds]
    summary["ratio_mbps_median_of_rounds"] = statistics.median(ratios)
    summary["ratio_mbps_range"] = [min(ratios), max(ratios)]
    summary["ratio_mbps_per_round"] = ratios
    summary["ratio_cpu_per_mb_median_of_rounds"] = statistics.median(r["ratio_cpu_per_mb"] for r in rounds)
    summary["static_over_nginx_vod_mbps"] = summary["static"]["mbps"] / summary["nginx-vod"]["mbps"]
    return {"rounds": rounds, "summary": summary}


def print_table(result: dict, ns: argparse.Namespace) -> None:
    print(f"\n{ns.rounds} rounds x {ns.seconds:g} s per server and format, {ns.connections} connections, 1 wrk thread; "
          f"--workers {ns.workers} (nginx worker_processes {ns.workers}); {result['cpus']} CPUs shared by wrk and the servers; "
          f"load average {result['load_start'][0]:.1f} at start, {result['load_end'][0]:.1f} at end")
    print(f"{'format':6} {'server':10} {'MB/s':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/MB':>9} "
          f"{'srv cores':>9} {'busy':>5} {'busiest worker':>14}")
    for fmt, sc in result["formats"].items():
        sm = sc["summary"]
        for s in SERVERS:
            x = sm[s]
            print(f"{fmt if s == SERVERS[0] else '':6} {s:10} {x['mbps']:8.1f} {x['rps']:7.0f} {x['p50_us'] / 1e3:7.1f} "
                  f"{x['p99_us'] / 1e3:7.1f} {x['server_cpu_ms_per_mb']:9.2f} {x['server_cores']:9.2f} "
                  f"{100 * x['machine_busy']:4.0f}% {100 * x['busiest_worker_share']:13.0f}%")
        lo, hi = sm["ratio_mbps_range"]
        print(f"{'':6} vodgate/nginx-vod MB/s: median of rounds {sm['ratio_mbps_median_of_rounds']:.3f} "
              f"(range {lo:.3f}-{hi:.3f}; per round {', '.join(f'{r:.2f}' for r in sm['ratio_mbps_per_round'])}); "
              f"CPU per MB vodgate/nginx-vod {sm['ratio_cpu_per_mb_median_of_rounds']:.2f}; "
              f"static/nginx-vod {sm['static_over_nginx_vod_mbps']:.2f}")


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_nginx_vod", description=__doc__.split("\n\n")[0])
    p.add_argument("--nginx-vod", type=Path, required=True,
                   help="nginx binary built with nginx-vod-module (built by the operator, not by this script)")
    p.add_argument("--media", type=Path, help="an MP4 (H.264 + AAC); default: the bench flavor in .fixtures/bench/")
    p.add_argument("--workers", type=int, default=2, help="vodgate serve --workers and nginx worker_processes (default 2)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=4, help="per measurement (default 4)")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--formats", default="ts,fmp4", help="comma-separated: ts, fmp4 (default both)")
    p.add_argument("--max-size-diff", type=float, default=0.05, help="largest packaged size difference (default 0.05)")
    p.add_argument("--vod-metadata-cache", action="store_true",
                   help="give nginx-vod a vod_metadata_cache (off by default: the moov is read and parsed per request)")
    p.add_argument("--no-reuseport", action="store_true",
                   help="nginx listens without reuseport (one socket, its workers take turns accepting)")
    p.add_argument("--keep", action="store_true", help="leave the servers running until Enter")
    p.add_argument("--json", type=Path)
    ns = p.parse_args(argv)
    formats = [f.strip() for f in ns.formats.split(",") if f.strip()]
    if not formats or any(f not in FORMATS for f in formats):
        raise SystemExit(f"--formats: a comma-separated subset of {', '.join(FORMATS)}")
    binary = ns.nginx_vod.resolve()
    version = nginx_version(binary)
    if "--add-module=" not in version:  # without the module, its ``vod`` directive stops nginx at start
        raise SystemExit(f"{binary}: built with no added module, so not with nginx-vod-module (nginx -V):\n{version}")
    ensure_tools(("wrk",))
    media = (ns.media or default_media()).resolve()
    print(f"{platform.node()}: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"wrk and the servers share these cores", flush=True)
    print(f"media {media} ({media.stat().st_size / 1e6:.1f} MB); nginx: {version.splitlines()[0]}", flush=True)
    result: dict = {"cpus": os.cpu_count(), "load_start": os.getloadavg(), "seconds": ns.seconds,
                    "connections": ns.connections, "threads": THREADS, "rounds_n": ns.rounds, "workers": ns.workers,
                    "media": str(media), "media_bytes": media.stat().st_size, "nginx_version": version,
                    "vod_metadata_cache": ns.vod_metadata_cache, "reuseport": not ns.no_reuseport, "formats": {}}
    with tempfile.TemporaryDirectory(prefix="vodgate-bench-nginx-vod-") as t:
        tmp = Path(t)
        tmp.chmod(0o755)
        library = make_library(media, tmp)
        docroot = tmp / "docroot"
        docroot.mkdir()
        vod = Vodgate(library, tmp, "vodgate", workers=ns.workers, extra_config=COLD_CONFIG)
        ngx = None
        try:
            # vodgate's segment duration, from its video playlist, for nginx-vod's vod_segment_duration
            v1 = vodgate_renditions(vod.base, "ts")["v1"]
            seg = statistics.median(v1["durations"][:-1] or v1["durations"])
            segment_ms = int(round(seg * 1000))
            print(f"vodgate: {len(v1['paths'])} video segments, EXTINF median {seg:g} s, "
                  f"EXT-X-TARGETDURATION {v1['target']:g}: vod_segment_duration {segment_ms}", flush=True)
            result["segment_ms"] = segment_ms
            ngx = nginx_vod(binary, library, docroot, tmp, ns.workers, segment_ms, ns.vod_metadata_cache,
                           reuseport=not ns.no_reuseport)
            prepared = {fmt: prepare_format(fmt, vod, ngx, docroot, tmp, ns.max_size_diff) for fmt in formats}
            servers = {"vodgate": (vod, vod.base), "nginx-vod": (ngx, ngx.base), "static": (ngx, ngx.base)}
            for fmt in formats:
                urls = prepared[fmt].pop("url_lists")
                res = run_format(fmt, servers, urls, tmp, ns)
                res.update(prepared[fmt])
                result["formats"][fmt] = res
            if ns.keep:
                input(f"vodgate on {vod.base}, nginx on {ngx.base} (conf {ngx.conf}); Enter to stop ")
        finally:
            if ngx:
                ngx.stop()
            vod.stop()
    result["load_end"] = os.getloadavg()
    print_table(result, ns)
    save_json(ns.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
