"""Cold-packaging benchmark: ``vodgate bench`` (docs/PERFORMANCE.md).

What one run measures, on one flavor (by default a generated 1080p, ~5 Mbit/s,
10-minute H.264 High + AAC file with 2 s GOPs, cached under
``.fixtures/bench/``):

* **floor**: for every segment of every rendition (video and audio), the
  reads the server does -- ``byte_ranges`` + ``os.pread`` (``LocalStorage``)
  + ``make_batch`` -- and nothing else;
* **TS**: the same reads plus ``TS.mux``;
* **fMP4**: the same reads plus ``FMP4.mux``;
* **content protection**, each against its clear format: **TS AES-128** and
  **fMP4 AES-128** (the clear mux, then ``encrypt_segment`` over the whole
  segment), **TS SAMPLE-AES** (``ts.mux_segment`` with a ``SampleEncryptor``)
  and **fMP4 cbcs** (``fmp4.media_segment`` with a ``CbcsKey``).

All modes are run as interleaved passes (floor, TS, fMP4, ..., then the order
rotated) so that drift on the machine hits them all alike; each figure is
the median of the passes. "Cold" means every segment is packaged (the bench
calls the packager directly, never the server's segment cache in edge/cache.py);
the OS page cache *is* warm -- one untimed warm-up pass reads the whole
file first -- so the floor is memory bandwidth plus syscalls, not disk.

It also times the index (moov) parse, of this file and (unless --quick) of a
generated real 1-hour flavor; the
layout-only ``segment_size`` over all segments (what BANDWIDTH costs); and
building the master playlist (``build_media_set`` + ``build_master``).

Before timing anything it checks that muxing works and that ``segment_size``
agrees with the muxed length, and that the SAMPLE-AES and cbcs segments are
well-formed and encrypted; after timing, that the totals agree for every
segment. Any mismatch aborts the run (exit status 1).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from origin.storage import LocalStorage
from packager.encryption import encrypt_segment
from packager.errors import PackagerError
from packager.fmp4 import media_segment
from packager.fmp4.cbcs import CbcsKey
from packager.formats import FMP4, TS, SegmentFormat
from packager.hls.build import MasterUris, build_master
from packager.media import ByteRange, MediaIndex, SampleBatch, Segment, Track
from packager.media_set import Rendition, build_media_set
from packager.mp4.index import drive, index_reader
from packager.samples import byte_ranges, make_batch
from packager.segmenter import DEFAULT_TARGET
from packager.ts import mux_segment
from packager.ts.sample_aes import SampleEncryptor

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / ".fixtures" / "bench"

# Targets (docs/PERFORMANCE.md).
TARGET_FMP4_RATIO = 3.0
TARGET_TS_RATIO = 10.0
TARGET_INDEX_MS_PER_HOUR = 50.0

# The generated flavor.
WIDTH, HEIGHT, FPS, GOP_SECONDS = 1920, 1080, 25, 2
VIDEO_BITRATE = "5M"
ENCODE_SPEED_GUESS = 1.5  # seconds of media per wall second, 1080p ultrafast on 2 cores (measured 1.3-1.9x)
HOUR_SPEED_GUESS = 40  # the 160x90 1-hour index fixture (measured ~40x)

TARGET_AES_RATIO = 1.3  # AES-128 packaging against clear packaging of the same format (issue 11)
MODES = ("floor", "ts", "fmp4", "ts-aes", "fmp4-aes", "ts-sample-aes", "fmp4-cbcs")
MODE_LABEL = {"floor": "floor (read)", "ts": "TS", "fmp4": "fMP4", "ts-aes": "TS AES-128", "fmp4-aes": "fMP4 AES-128",
              "ts-sample-aes": "TS SAMPLE-AES", "fmp4-cbcs": "fMP4 cbcs"}
# Each encrypted mode and the clear mode it is reported against (same format, same passes). Only AES-128 has a
# target (TARGET_AES_RATIO); SAMPLE-AES and cbcs are reported as they are.
CLEAR_MODE = {"ts-aes": "ts", "fmp4-aes": "fmp4", "ts-sample-aes": "ts", "fmp4-cbcs": "fmp4"}
BENCH_KEY = bytes(range(16))  # any 16 bytes: the cipher's cost does not depend on the key
BENCH_KID = bytes(range(16, 32))  # cbcs key id: only written into the moof's sgpd, never used to encrypt
# SAMPLE-AES (TS and cbcs) IV: the sequence number of the first segment under the key, as edge/protection.py's
# explicit_iv gives it for the first key period; fixed for the whole run, as it is within one key period.
BENCH_IV = (1).to_bytes(16, "big")


# --------------------------------------------------------------------------- input


def recipe(duration: float, size: str = f"{WIDTH}x{HEIGHT}", video_bitrate: str = VIDEO_BITRATE,
           noise: bool = True, audio_bitrate: str = "128k") -> list[str]:
    """ffmpeg arguments (without output) for the benchmark flavor.

    testsrc2 plus temporal noise so the encoder really spends the 5 Mbit/s
    (a clean test pattern compresses to almost nothing). ultrafast for speed,
    with 2 B-frames (so the file has a ctts, as real H.264 High does) and the
    8x8 transform (so it is High profile, not Main) put back.
    """
    gop = FPS * GOP_SECONDS
    vf = "noise=alls=12:allf=t+u,format=yuv420p" if noise else "format=yuv420p"
    return [
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={FPS}:duration={duration}",
        "-f", "lavfi", "-i", f"sine=frequency=440:beep_factor=4:sample_rate=48000:duration={duration}",
        "-map", "0:v:0", "-map", "1:a:0",
        "-vf", vf,
        "-c:v", "libx264", "-profile:v", "high", "-preset", "ultrafast",
        "-x264-params", "bframes=2:b-adapt=0:8x8dct=1",
        "-b:v", video_bitrate, "-maxrate", video_bitrate, "-bufsize", "10M",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{GOP_SECONDS})",
        "-c:a", "aac", "-b:a", audio_bitrate, "-ac", "2", "-ar", "48000",
        "-movflags", "+faststart",
    ]


def hour_recipe() -> list[str]:
    """A 1-hour flavor with the bench flavor's sample layout (25 fps, 2 s GOP, B-frames,
    48 kHz AAC) but 160x90: its moov has the sample count of a real 1-hour flavor and it
    encodes in ~1.5 min. Only its index is timed."""
    return recipe(3600, size="160x90", video_bitrate="100k", noise=False, audio_bitrate="32k")


def fixture_path(cache_dir: Path, name: str, args: list[str]) -> Path:
    from origin.demo_media import ffmpeg_version

    key = hashlib.sha256(json.dumps([args, ffmpeg_version()]).encode()).hexdigest()[:12]
    return cache_dir / f"{name}-{key}.mp4"


def bench_fixture(cache_dir: Path, duration: float) -> tuple[Path, list[str]]:
    args = recipe(duration)
    return fixture_path(cache_dir, f"bench-{HEIGHT}p-{VIDEO_BITRATE}-{duration:g}s", args), args


def hour_fixture(cache_dir: Path) -> tuple[Path, list[str]]:
    args = hour_recipe()
    return fixture_path(cache_dir, "bench-index-1h-160x90", args), args


def generate(dest: Path, duration: float, ffmpeg_args: list[str], what: str, speed_guess: float) -> None:
    """Encode ``ffmpeg_args`` into ``dest`` (atomically), printing progress."""
    from origin.demo_media import FfmpegError, atomic_output, ffmpeg_exe

    guess = duration / speed_guess
    print(f"generating {dest.name}: {what}, {duration:g} s of media")
    print(f"  (one-off, cached in {dest.parent}; estimate ~{guess / 60:.1f} min on 2 idle cores, less on more)")
    started = time.monotonic()
    with atomic_output(dest) as tmp:
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-v", "error", "-nostats",
               "-progress", "pipe:1", *ffmpeg_args, str(tmp)]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            last_print = 0.0
            for line in proc.stdout:
                key, _, value = line.strip().partition("=")
                if key != "out_time_us" or not value.isdigit():
                    continue
                done = int(value) / 1e6
                now = time.monotonic()
                if now - last_print >= 5 and done > 0:
                    last_print = now
                    elapsed = now - started
                    eta = elapsed * (duration - done) / done
                    print(f"  {done:6.0f}/{duration:g} s encoded ({100 * done / duration:3.0f}%), "
                          f"{elapsed:4.0f} s elapsed, ~{eta:4.0f} s left", flush=True)
            stderr = proc.stderr.read() if proc.stderr else ""
            proc.wait()
        if proc.returncode != 0:
            raise FfmpegError(cmd, proc.returncode, stderr)
    print(f"  done in {time.monotonic() - started:.0f} s: {dest.stat().st_size / 1e6:.1f} MB")


# --------------------------------------------------------------------------- work items


@dataclass(frozen=True)
class Item:
    """One segment of one rendition, with its reads precomputed as the server does per request."""

    rendition: Rendition
    segment: Segment

    @property
    def track(self) -> Track:
        return self.rendition.track


class Bench:
    def __init__(self, path: Path, target: Fraction) -> None:
        self.path = path.resolve()
        self.storage = LocalStorage(self.path.parent)
        self.key = self.path.name
        self.size = self.path.stat().st_size
        self.target = target
        self.index = self.parse_index()
        self.media_set = build_media_set([("bench", self.index)], target)
        self.items = [Item(r, s) for r in self.media_set.videos + self.media_set.audios for s in r.segments]

    # the three things the server does per flavor / per segment

    def _read(self, offset: int, size: int) -> bytes:
        (data,) = self.storage.read_sync(self.key, [ByteRange(offset, size)])
        return data

    def parse_index(self) -> MediaIndex:
        """A fresh parse: drive the generator directly, no cache anywhere."""
        return drive(index_reader(self.size), self._read)

    def batch(self, item: Item) -> SampleBatch:
        track, span = item.track, item.segment.span
        chunks = self.storage.read_sync(self.key, byte_ranges(track, span))
        return make_batch(track, span, chunks, sequence_number=item.segment.number)

    def run_one(self, mode: str, item: Item) -> bytes:
        """One segment packaged in ``mode`` (not the floor), untimed: what verify() checks."""
        mux = muxer(mode)
        assert mux is not None
        return mux(self.batch(item))

    def run_pass(self, mode: str) -> "PassResult":
        """One timed pass over every segment in ``mode`` (one of MODES)."""
        mux = muxer(mode)
        out_bytes = 0
        per_kind = {"video": 0.0, "audio": 0.0}
        clock = time.perf_counter
        wall0, cpu0 = clock(), time.process_time()
        for item in self.items:
            t0 = clock()
            batch = self.batch(item)
            if mux is None:
                out_bytes += len(batch.data)
            else:
                out_bytes += len(mux(batch))
            per_kind[item.track.kind] += clock() - t0
        return PassResult(mode, clock() - wall0, time.process_time() - cpu0, out_bytes, per_kind)


def muxer(mode: str) -> Callable[[SampleBatch], bytes] | None:
    """What ``mode`` does to a segment's batch after the reads (None: nothing, the floor)."""
    return {
        "floor": None, "ts": TS.mux, "fmp4": FMP4.mux,
        # what an encrypting partner's segment costs: mux, then AES-128-CBC over the whole segment (edge/delivery.py)
        "ts-aes": lambda b: encrypt_segment(TS.mux(b), BENCH_KEY, b.sequence_number),
        "fmp4-aes": lambda b: encrypt_segment(FMP4.mux(b), BENCH_KEY, b.sequence_number),
        # SAMPLE-AES encrypts the samples inside the mux, so one call each; the key objects are built per segment,
        # as edge/protection.py's Keying.segment does
        "ts-sample-aes": lambda b: mux_segment(b, encryptor=SampleEncryptor(BENCH_KEY, BENCH_IV)),
        "fmp4-cbcs": lambda b: media_segment(b, CbcsKey(BENCH_KEY, BENCH_KID, BENCH_IV)),
    }[mode]


@dataclass(frozen=True)
class PassResult:
    mode: str
    wall: float
    cpu: float
    out_bytes: int
    per_kind: dict[str, float]


class BenchError(Exception):
    """The packager's output is not what it should be: the figures would be meaningless."""


# --------------------------------------------------------------------------- checks


def verify(bench: Bench) -> list[str]:
    """Mux a few segments of each rendition in both formats, clear and SAMPLE-AES/cbcs, and check them; raise
    BenchError if wrong."""
    notes = []
    for rendition in bench.media_set.videos + bench.media_set.audios:
        segs = rendition.segments
        picks = sorted({0, 1, len(segs) // 2, len(segs) - 1} & set(range(len(segs))))
        for fmt in (TS, FMP4):
            for i in picks:
                item = Item(rendition, segs[i])
                out = fmt.mux(bench.batch(item))
                where = f"{fmt.name} {rendition.kind} segment {segs[i].number}"
                if not out:
                    raise BenchError(f"{where}: mux produced no bytes")
                expected = fmt.segment_size(rendition.track, segs[i])
                if expected != len(out):
                    raise BenchError(f"{where}: segment_size says {expected} bytes but mux produced {len(out)}")
                if fmt is TS and (len(out) % 188 or out[0] != 0x47 or out[188] != 0x47):
                    raise BenchError(f"{where}: not a sequence of 188-byte TS packets")
                if fmt is FMP4 and out[4:8] != b"styp":
                    raise BenchError(f"{where}: does not start with a styp box")
                if fmt is TS:
                    check_sample_aes(f"SAMPLE-AES {where}", rendition.kind, out, bench.run_one("ts-sample-aes", item))
                else:
                    check_cbcs(f"cbcs {where}", out, bench.run_one("fmp4-cbcs", item), len(bench.batch(item).data))
        notes.append(f"{rendition.kind} ({len(segs)} segments: checked #{', #'.join(str(segs[i].number) for i in picks)})")
    return notes


def check_sample_aes(where: str, kind: str, clear: bytes, out: bytes) -> None:
    """A SAMPLE-AES TS segment: whole packets, the size the clear one has (audio) or a little more (video: emulation
    prevention of the ciphertext only adds bytes), a different PMT (stream type, descriptors) and different samples."""
    packets = np.frombuffer(out, dtype=np.uint8)
    if not out or len(out) % 188 or (packets[::188] != 0x47).any():
        raise BenchError(f"{where}: not a sequence of 188-byte TS packets")
    if len(out) < len(clear) or (kind == "audio" and len(out) != len(clear)):
        raise BenchError(f"{where}: {len(out)} bytes against {len(clear)} clear")
    if out[188:376] == clear[188:376]:
        raise BenchError(f"{where}: the PMT does not signal SAMPLE-AES")
    if out[376:] == clear[376:]:
        raise BenchError(f"{where}: the samples are not encrypted")


def check_cbcs(where: str, clear: bytes, out: bytes, sample_bytes: int) -> None:
    """A cbcs fMP4 segment is the clear one with the samples encrypted in place (same mdat size) and the moof's traf
    grown by exactly its protection boxes (sbgp, sgpd, senc; saiz and saio for video)."""
    if out[4:8] != b"styp":
        raise BenchError(f"{where}: does not start with a styp box")
    if out[-sample_bytes - 4 : -sample_bytes] != b"mdat" or out[-sample_bytes:] == clear[-sample_bytes:]:
        raise BenchError(f"{where}: the mdat does not end the segment with {sample_bytes} encrypted sample bytes")
    clear_boxes = _traf_boxes(clear)
    added = {name: size for name, size in _traf_boxes(out).items() if name not in clear_boxes}
    if not {"sbgp", "sgpd", "senc"} <= added.keys() or len(out) != len(clear) + sum(added.values()):
        raise BenchError(f"{where}: {len(out)} bytes against {len(clear)} clear + protection boxes {added}")


def _boxes(data: bytes, start: int, end: int) -> dict[str, tuple[int, int]]:
    """The boxes in data[start:end] by type: (offset, size). No 64-bit sizes: segments are far smaller."""
    found = {}
    while start < end:
        size, name = int.from_bytes(data[start : start + 4], "big"), data[start + 4 : start + 8].decode("latin-1")
        if size < 8:
            raise BenchError(f"a box of {size} bytes at {start}")
        found[name] = (start, size)
        start += size
    return found


def _traf_boxes(segment: bytes) -> dict[str, int]:
    """Size of each box in the segment's traf (one track per fragment)."""
    moof_at, moof_size = _boxes(segment, 0, len(segment))["moof"]
    traf_at, traf_size = _boxes(segment, moof_at + 8, moof_at + moof_size)["traf"]
    return {name: size for name, (_, size) in _boxes(segment, traf_at + 8, traf_at + traf_size).items()}


# --------------------------------------------------------------------------- measurements


def measure_packaging(bench: Bench, reps: int) -> dict[str, list[PassResult]]:
    print("warm-up pass (fills the OS page cache; not timed) ...", flush=True)
    for mode in MODES:
        bench.run_pass(mode)
    results: dict[str, list[PassResult]] = {m: [] for m in MODES}
    for rep in range(reps):
        shift = rep % len(MODES)
        order = MODES[shift:] + MODES[:shift]  # rotate so no mode always runs first
        for mode in order:
            results[mode].append(bench.run_pass(mode))
        done = "  ".join(f"{MODE_LABEL[m]} {results[m][-1].wall * 1e3:.0f} ms" for m in MODES)
        print(f"  rep {rep + 1}/{reps}: {done}", flush=True)
    return results


def measure_index(bench: Bench, reps: int) -> list[float]:
    bench.parse_index()  # first call imports/warms lazily-built things
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        bench.parse_index()
        times.append(time.perf_counter() - t0)
    return times


def measure_segment_size(bench: Bench, fmt: SegmentFormat, reps: int) -> tuple[float, list[float], int]:
    """(first pass, later passes, total bytes) of fmt.segment_size over every segment."""
    def one() -> tuple[float, int]:
        t0 = time.perf_counter()
        total = sum(fmt.segment_size(item.track, item.segment) for item in bench.items)
        return time.perf_counter() - t0, total

    first, total = one()
    later = [one()[0] for _ in range(reps)]
    return first, later, total


def measure_master(bench: Bench, fmt: SegmentFormat, reps: int) -> tuple[list[float], list[float], str]:
    """Times of build_media_set and of build_master (fresh each time), and the playlist."""
    uris = MasterUris(media=lambda rid: f"{rid.flavor}/index.m3u8", iframes=lambda rid: f"{rid.flavor}/iframes.m3u8")
    sets, masters, text = [], [], ""
    for _ in range(reps):
        t0 = time.perf_counter()
        media_set = build_media_set([("bench", bench.index)], bench.target)
        t1 = time.perf_counter()
        text = build_master(media_set, fmt, uris)
        t2 = time.perf_counter()
        sets.append(t1 - t0)
        masters.append(t2 - t1)
    return sets, masters, text


def profile_pass(bench: Bench, what: str, limit: int = 25) -> str:
    """cProfile one pass of ``what`` (one of MODES, or index) and return the top of the report."""
    profiler = cProfile.Profile()
    if what == "index":
        profiler.enable()
        for _ in range(10):
            bench.parse_index()
        profiler.disable()
    else:
        profiler.enable()
        bench.run_pass(what)
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    out.write("\n--- by cumulative time ---\n")
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


# --------------------------------------------------------------------------- report


def median(values: list[float]) -> float:
    return statistics.median(values)


def build_report(bench: Bench, args: argparse.Namespace, packaging: dict[str, list[PassResult]],
                 index_times: list[float], hour: dict | None, sizes: dict, masters: dict, load: tuple) -> dict:
    index = bench.index
    duration = float(index.duration_seconds)
    n_segments = len(bench.items)
    floor_wall = median([r.wall for r in packaging["floor"]])
    floor_cpu = median([r.cpu for r in packaging["floor"]])
    modes = {}
    for mode in MODES:
        passes = packaging[mode]
        wall = median([r.wall for r in passes])
        cpu = median([r.cpu for r in passes])
        out_bytes = passes[0].out_bytes
        modes[mode] = {
            "passes_wall_s": [round(r.wall, 6) for r in passes],
            "passes_cpu_s": [round(r.cpu, 6) for r in passes],
            "wall_s": wall,
            "cpu_s": cpu,
            "min_wall_s": min(r.wall for r in passes),
            "segments_per_s": n_segments / wall,
            "ms_per_segment": wall / n_segments * 1e3,
            "output_bytes": out_bytes,
            "mb_per_s": out_bytes / wall / 1e6,
            "ratio_to_floor": wall / floor_wall,
            "cpu_ratio_to_floor": cpu / floor_cpu,
            "video_s": median([r.per_kind["video"] for r in passes]),
            "audio_s": median([r.per_kind["audio"] for r in passes]),
            "media_seconds_per_s": duration / wall,
        }
    for mode in CLEAR_MODE:
        modes[mode]["vs_clear"] = protection_ratio(mode, modes)
    index_ms = median(index_times) * 1e3
    scaled_ms = index_ms * 3600 / duration
    hour_ms = hour["parse_ms_median"] if hour else None
    video = index.video
    report = {
        "file": str(bench.path),
        "file_bytes": bench.size,
        "duration_s": duration,
        "video": None if video is None else {
            "codec": video.codec_string, "width": video.video.width if video.video else None,
            "height": video.video.height if video.video else None, "bitrate": video.bitrate,
            "samples": video.sample_count,
        },
        "audio": [{"codec": a.codec_string, "bitrate": a.bitrate, "samples": a.sample_count} for a in index.audios],
        "segment_target_s": float(bench.target),
        "segments": {"total": n_segments, "video": sum(len(r.segments) for r in bench.media_set.videos),
                     "audio": sum(len(r.segments) for r in bench.media_set.audios)},
        "reps": args.reps,
        "packaging": modes,
        "index": {
            "moov_bytes": index.moov_size,
            "samples": sum(t.sample_count for t in index.tracks),
            "reps": len(index_times),
            "parse_ms_median": index_ms,
            "parse_ms_min": min(index_times) * 1e3,
            "parse_ms_per_hour_scaled": scaled_ms,
            "parse_ms_per_hour": hour_ms if hour_ms is not None else scaled_ms,
            "per_hour_from": "measured on a real 1-hour flavor" if hour_ms is not None else "scaled linearly",
        },
        "index_1h": hour,
        "segment_size": sizes,
        "content_protection": {mode: modes[mode]["vs_clear"] for mode in CLEAR_MODE},
        "master": masters,
        "targets": {
            "fmp4_ratio": {"target": TARGET_FMP4_RATIO, "value": modes["fmp4"]["ratio_to_floor"],
                           "met": modes["fmp4"]["ratio_to_floor"] <= TARGET_FMP4_RATIO},
            "ts_ratio": {"target": TARGET_TS_RATIO, "value": modes["ts"]["ratio_to_floor"],
                         "met": modes["ts"]["ratio_to_floor"] <= TARGET_TS_RATIO},
            **{f"{fmt}_aes_ratio": {"target": TARGET_AES_RATIO, "value": modes[f"{fmt}-aes"]["wall_s"] / modes[fmt]["wall_s"],
                                    "met": modes[f"{fmt}-aes"]["wall_s"] / modes[fmt]["wall_s"] <= TARGET_AES_RATIO}
               for fmt in ("ts", "fmp4")},
            "index_ms_per_hour": {"target": TARGET_INDEX_MS_PER_HOUR, "value": hour_ms if hour_ms is not None else scaled_ms,
                                  "met": (hour_ms if hour_ms is not None else scaled_ms) < TARGET_INDEX_MS_PER_HOUR,
                                  "measured": hour_ms is not None},
        },
        "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "platform": platform.platform(), "processor": _cpu_model(),
            "loadavg_1m_start": load[0], "loadavg_1m_end": load[1],
        },
        "code": _code_state(),
    }
    return report


def protection_ratio(mode: str, modes: dict) -> dict:
    """An encrypted mode against its clear format, from the same interleaved passes (medians of wall and CPU)."""
    clear = CLEAR_MODE[mode]
    ratio = modes[mode]["wall_s"] / modes[clear]["wall_s"]
    return {
        "label": f"{MODE_LABEL[mode]} vs {MODE_LABEL[clear]}", "clear_mode": clear,
        "clear_ms": modes[clear]["wall_s"] * 1e3, "encrypted_ms": modes[mode]["wall_s"] * 1e3,
        "ratio": ratio, "cpu_ratio": modes[mode]["cpu_s"] / modes[clear]["cpu_s"],
        # the 1.3x target is AES-128's (issue 11); SAMPLE-AES and cbcs have none
        "target": TARGET_AES_RATIO if mode in ("ts-aes", "fmp4-aes") else None,
    }


def _code_state() -> dict:
    """Which code was measured: the commit and any uncommitted changes under packager/ and origin/."""
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout if out.returncode == 0 else ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "packager", "origin").splitlines() if line[3:]]
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or "unknown", "uncommitted": dirty}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_report(r: dict) -> None:
    p, ix, segs = r["packaging"], r["index"], r["segments"]
    v = r["video"]
    print()
    print(f"file      {Path(r['file']).name}: {r['file_bytes'] / 1e6:.1f} MB, {r['duration_s']:.1f} s"
          + (f", {v['width']}x{v['height']} {v['codec']} {v['bitrate'] / 1e6:.2f} Mbit/s" if v else "")
          + "".join(f", {a['codec']} {a['bitrate'] / 1e3:.0f} kbit/s" for a in r["audio"]))
    print(f"segments  {segs['total']} ({segs['video']} video + {segs['audio']} audio), target {r['segment_target_s']:g} s")
    print(f"machine   {r['machine']['cpus']} CPUs ({r['machine']['processor']}), Python {r['machine']['python']}, "
          f"numpy {r['machine']['numpy']}; load average {r['machine']['loadavg_1m_start']:.2f} -> "
          f"{r['machine']['loadavg_1m_end']:.2f}")
    code = r["code"]
    print(f"code      commit {code['commit']}" + (f" + uncommitted changes in {', '.join(code['uncommitted'])}"
                                                  if code["uncommitted"] else ""))
    print()
    print(f"Packaging every segment, cold (each one muxed, no cache; OS page cache warm), median of {r['reps']} interleaved passes")
    print(f"  {'':13} {'pass ms':>8} {'seg/s':>8} {'ms/seg':>7} {'out MB/s':>9} {'x realtime':>10} "
          f"{'vs floor':>9} {'(cpu)':>6}   {'video ms':>8} {'audio ms':>8}")
    for mode in MODES:
        m = p[mode]
        print(f"  {MODE_LABEL[mode]:13} {m['wall_s'] * 1e3:8.1f} {m['segments_per_s']:8.0f} {m['ms_per_segment']:7.2f} "
              f"{m['mb_per_s']:9.0f} {m['media_seconds_per_s']:10.0f} {m['ratio_to_floor']:8.1f}x "
              f"{m['cpu_ratio_to_floor']:5.1f}x   {m['video_s'] * 1e3:8.1f} {m['audio_s'] * 1e3:8.1f}")
    print(f"  (floor = byte_ranges + pread + make_batch; 'out MB/s' of the floor is sample bytes read)")
    print(f"  TS is {p['ts']['ratio_to_floor']:.1f}x the floor, fMP4 is {p['fmp4']['ratio_to_floor']:.1f}x the floor")
    print()
    print("Content protection, each against its clear format (same passes)")
    for c in r["content_protection"].values():
        target = f"target {c['target']:g}x" if c["target"] is not None else "no target"
        print(f"  {c['label']:22} {c['clear_ms']:8.1f} ms clear {c['encrypted_ms']:8.1f} ms encrypted "
              f"{c['ratio']:6.2f}x (cpu {c['cpu_ratio']:.2f}x)  {target}")
    print()
    print(f"Index (moov) parse, fresh each time (index_reader + pread, no cache), median of {ix['reps']}:")
    print(f"  this file   {ix['parse_ms_median']:7.2f} ms (min {ix['parse_ms_min']:.2f}) for {r['duration_s']:.0f} s: "
          f"moov {ix['moov_bytes'] / 1e3:.0f} kB, {ix['samples']} samples -> {ix['parse_ms_per_hour_scaled']:.1f} ms "
          f"per hour if scaled linearly (fixed costs scale too)")
    h = r["index_1h"]
    if not h and r["duration_s"] < 1800:
        print("  (no 1-hour fixture: the per-hour figure is scaled from a short file and is mostly its fixed cost; "
              "run with --hour-index for a measured one)")
    if h:
        print(f"  1-hour file {h['parse_ms_median']:7.2f} ms (min {h['parse_ms_min']:.2f}) for {h['duration_s']:.0f} s: "
              f"moov {h['moov_bytes'] / 1e3:.0f} kB, {h['samples']} samples (measured, not scaled)")
    print()
    for name, s in r["segment_size"].items():
        print(f"segment_size ({name}, layout only) for all {segs['total']} segments: first pass {s['first_ms']:.2f} ms, "
              f"then {s['median_ms']:.2f} ms ({s['us_per_segment']:.1f} us/segment); matches muxed bytes: {s['matches_mux']}")
    masters = [("this file", r["master"])] + ([("1-hour file", h["master"])] if h else [])
    for label, by_format in masters:
        for name, m in by_format.items():
            print(f"master playlist, {label} ({name}): build_media_set {m['media_set_ms']:.2f} ms + "
                  f"build_master {m['build_master_ms']:.2f} ms = {m['total_ms']:.2f} ms")
    print()
    print("Targets")
    for key, label in (("fmp4_ratio", "fMP4 within 3x of the floor"), ("ts_ratio", "TS within 10x of the floor"),
                       ("ts_aes_ratio", "TS AES-128 within 1.3x of clear TS"),
                       ("fmp4_aes_ratio", "fMP4 AES-128 within 1.3x of clear fMP4"),
                       ("index_ms_per_hour", f"index parse of 1 h under 50 ms ({'measured' if h else 'scaled'})")):
        t = r["targets"][key]
        unit = " ms" if key == "index_ms_per_hour" else "x"
        verdict = "met" if t["met"] else "MISSED"
        if t.get("measured") is False:
            verdict += " (scaled from a short file: indicative only; run without --quick to measure)"
        print(f"  {label:45} {t['value']:7.1f}{unit:3} {verdict}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vodgate bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, help="benchmark this MP4 instead of the generated flavor")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"where generated flavors are kept "
                        f"(default {DEFAULT_CACHE.relative_to(REPO_ROOT)}/ in the repository)")
    parser.add_argument("--duration", type=float, help="seconds of media to generate (default 600, --quick 60)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 60 s of media, fewer repetitions, no 1-hour index fixture")
    parser.add_argument("--reps", type=int, help="interleaved timed passes per mode (default 5, --quick 3)")
    parser.add_argument("--index-reps", type=int, help="moov parses per file (default 30, --quick 10)")
    parser.add_argument("--hour-index", action=argparse.BooleanOptionalAction, default=None,
                        help="also time the index of a generated real 1-hour flavor (160x90, same sample layout; "
                             "~1.5 min to generate once). Default: on, off with --quick")
    parser.add_argument("--segment-duration", type=Fraction, default=DEFAULT_TARGET,
                        help="target segment seconds (default 6)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--profile", choices=(*MODES, "index"), action="append", default=[],
                        help="cProfile one pass of this and print where the time goes (repeatable)")
    parser.add_argument("--prepare", action="store_true", help="generate the fixtures, then exit")
    parser.add_argument("--no-generate", action="store_true", help="fail instead of generating a missing fixture")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 60.0 if args.quick else 600.0
    if args.hour_index is None:
        args.hour_index = not args.quick
    args.reps = args.reps or (3 if args.quick else 5)
    args.index_reps = args.index_reps or (10 if args.quick else 30)
    if args.reps < 1 or args.index_reps < 1 or args.duration <= 0:
        parser.error("--reps, --index-reps and --duration must be positive")
    return args


def _ensure(path: Path, args: argparse.Namespace, duration: float, ffmpeg_args: list[str], what: str,
            speed_guess: float) -> bool:
    if path.exists():
        return True
    if args.no_generate:
        print(f"vodgate bench: {path} is missing (--no-generate)", file=sys.stderr)
        return False
    try:
        generate(path, duration, ffmpeg_args, what, speed_guess)
    except Exception as exc:  # FfmpegNotAvailable, FfmpegError, OSError
        print(f"vodgate bench: cannot generate {path.name}: {exc}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `vodgate bench -- --quick`: the CLI passes the separator through
        argv = argv[1:]
    args = parse_args(argv)
    if args.input is not None:
        path = args.input
        if not path.is_file():
            print(f"vodgate bench: {path} is not a file", file=sys.stderr)
            return 2
    else:
        path, ffmpeg_args = bench_fixture(args.cache_dir, args.duration)
        what = f"{WIDTH}x{HEIGHT} {FPS} fps {VIDEO_BITRATE}bit/s H.264 High + AAC, {GOP_SECONDS} s GOP"
        if not _ensure(path, args, args.duration, ffmpeg_args, what, ENCODE_SPEED_GUESS):
            return 2
    hour_path = None
    if args.hour_index:
        hour_path, hour_args = hour_fixture(args.cache_dir)
        what = f"160x90 {FPS} fps H.264 + AAC 48 kHz, {GOP_SECONDS} s GOP (index timing only)"
        if not _ensure(hour_path, args, 3600, hour_args, what, HOUR_SPEED_GUESS):
            return 2
    if args.prepare:
        print("fixtures ready")
        return 0
    load_start = os.getloadavg()[0]

    try:
        bench = Bench(path, args.segment_duration)
    except PackagerError as exc:
        print(f"vodgate bench: {path} cannot be packaged: {exc}", file=sys.stderr)
        return 2
    print(f"benchmarking {path} ({bench.size / 1e6:.1f} MB, {float(bench.index.duration_seconds):.0f} s, "
          f"{len(bench.items)} segments)")
    try:
        for note in verify(bench):
            print(f"  verified TS and fMP4 output (segment_size == len(mux)), SAMPLE-AES and cbcs: {note}")
    except (BenchError, PackagerError) as exc:
        print(f"vodgate bench: VERIFICATION FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

    packaging = measure_packaging(bench, args.reps)
    # Every segment of every pass was muxed: its total must equal the layout-only sizes.
    sizes = {}
    for name, fmt, mode in (("TS", TS, "ts"), ("fMP4", FMP4, "fmp4")):
        first, later, total = measure_segment_size(bench, fmt, max(3, args.reps))
        muxed = {r.out_bytes for r in packaging[mode]}
        if muxed != {total}:
            print(f"vodgate bench: VERIFICATION FAILED: {name} segment_size adds up to {total} bytes, "
                  f"the muxed passes to {sorted(muxed)}", file=sys.stderr)
            return 1
        sizes[name] = {"first_ms": first * 1e3, "median_ms": median(later) * 1e3,
                       "us_per_segment": median(later) / len(bench.items) * 1e6, "total_bytes": total,
                       "matches_mux": True}
    # Every pass of a mode packaged the same segments: one byte count per mode, encrypted never below clear.
    for mode in MODES:
        muxed = {r.out_bytes for r in packaging[mode]}
        clear = packaging[CLEAR_MODE[mode]][0].out_bytes if mode in CLEAR_MODE else 0
        if len(muxed) != 1 or min(muxed) < clear:
            print(f"vodgate bench: VERIFICATION FAILED: {MODE_LABEL[mode]} passes produced {sorted(muxed)} bytes"
                  + (f" ({CLEAR_MODE[mode]}: {clear})" if clear else ""), file=sys.stderr)
            return 1
    index_times = measure_index(bench, args.index_reps)
    masters = {name: master_figures(bench, fmt, max(5, args.reps)) for name, fmt in (("TS", TS), ("fMP4", FMP4))}
    hour = None
    if hour_path is not None:
        hour_bench = Bench(hour_path, args.segment_duration)
        hour_times = measure_index(hour_bench, args.index_reps)
        hour = {
            "file": str(hour_path),
            "duration_s": float(hour_bench.index.duration_seconds),
            "moov_bytes": hour_bench.index.moov_size,
            "samples": sum(t.sample_count for t in hour_bench.index.tracks),
            "reps": len(hour_times),
            "parse_ms_median": median(hour_times) * 1e3,
            "parse_ms_min": min(hour_times) * 1e3,
            "master": {name: master_figures(hour_bench, fmt, max(5, args.reps)) for name, fmt in (("TS", TS), ("fMP4", FMP4))},
        }
    report = build_report(bench, args, packaging, index_times, hour, sizes, masters, (load_start, os.getloadavg()[0]))
    print_report(report)

    for what in args.profile:
        print(f"\n=== cProfile: {'10 parses of the moov' if what == 'index' else f'one {what} pass'} ===")
        print(profile_pass(hour_bench if what == "index" and hour_path is not None else bench, what))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


def master_figures(bench: Bench, fmt: SegmentFormat, reps: int) -> dict:
    sets, builds, text = measure_master(bench, fmt, reps)
    return {"media_set_ms": median(sets) * 1e3, "build_master_ms": median(builds) * 1e3,
            "total_ms": (median(sets) + median(builds)) * 1e3, "playlist": text}


if __name__ == "__main__":
    raise SystemExit(main())
