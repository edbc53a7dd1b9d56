"""Deterministic MP4 test media for the vodgate test suite.

Every fixture is a named *recipe* (ffmpeg arguments over ``lavfi`` sources,
or a byte-level transformation of another fixture).  Files are generated on
demand by :func:`fixture_path` into a cache directory
(``$VODGATE_FIXTURE_DIR``, default ``<repo>/.fixtures/``) under a name that
contains a hash of the recipe and of the ffmpeg version, so reruns reuse
files and editing a recipe regenerates it.  Writes are atomic (temporary
file + rename), so concurrent generators (pytest-xdist workers) are safe.

The ffmpeg binary is the one shipped with ``imageio-ffmpeg``; there is no
ffprobe.  ffmpeg runs with ``-threads 1`` and the bitexact flags: the same
ffmpeg build produces byte-identical files.

Public API (names are stable, other test modules depend on them):

* :func:`fixture_path(name) <fixture_path>` -> ``Path`` (generate on demand).
* :data:`ALL_GOOD` / :data:`ALL_BAD` -- playable / broken fixture names.
* :data:`FIXTURES` -- ``name -> Fixture`` with the recipe and an
  :class:`Expect` record (frame counts, fps, GOP, audio streams...).
* :func:`ensure_fixtures` -- generate many fixtures in parallel.
* :func:`build_library(root) <build_library>` -- a catalog folder
  ``root/<partner>/<entry>/<flavor>.mp4``.
* A tiny ISO-BMFF box walker (:func:`top_level_boxes`, :func:`iter_boxes`,
  :func:`find_boxes`, :func:`tracks`) for byte-level checks.

Good fixtures (all AAC audio is LC, stereo, ffmpeg's native encoder, which
puts 1024 priming samples in front and an edit list that skips them):

=====================  ======================================================
``h264_high_bframes``  H.264 High, B-frames, 640x360 25 fps, GOP 2 s, 8 s,
                       AAC 48 kHz
``h264_baseline``      H.264 Baseline (no B-frames), 320x180 30 fps, GOP 2 s,
                       8 s, AAC 48 kHz
``h264_2997``          H.264 High, 30000/1001 fps, GOP 60 frames, 10 s,
                       AAC 44.1 kHz (timescales that do not divide 90000)
``irregular_gop``      H.264, keyframes forced at 0, 0.72, 2.92, 3.2, 7.52,
                       8.12 s and none after that (last GOP 7.88 s), 16 s
``moov_at_end``        H.264 + AAC, moov written after mdat (no faststart)
``edit_list``          H.264 B-frames + AAC; video delayed 0.6 s with
                       ``-itsoffset`` -> video ``elst`` = [empty edit 0.6 s,
                       normal edit starting at media_time 1024 (B-frame delay)]
``hevc``               HEVC Main (libx265, ``hvc1``) + AAC
``audio_only``         AAC only, 10 s
``video_only``         H.264 only, no audio track
``two_languages``      H.264 + two AAC tracks: 440 Hz ``eng``, 880 Hz ``fra``
``ladder_hi/mid/lo``   same source at 640x360/480x270/320x180, identical
                       keyframe times (every 2 s), identical AAC, 12 s
=====================  ======================================================

Audio codec fixtures (:data:`AUDIO_CODECS`; H.264 320x180 25 fps GOP 2 s, 4 s, 48 kHz):
``h264_ac3`` (AC-3 5.1), ``h264_eac3`` (E-AC-3 stereo), ``h264_opus`` (Opus
stereo), ``h264_mp3`` (MP3 stereo in mp4a, object type 0x6B) and
``aac_and_alac`` (ALAC ``fra`` as audio track 1, which vodgate leaves out,
then AAC ``eng``), ``aac_and_ac3`` (AAC stereo ``eng``, then AC-3 5.1 ``fra``) and
``opus_only`` (Opus, no video).

Bad fixtures:

* ``truncated`` -- faststart file cut in the middle of its ``moov`` box.
* ``corrupt`` -- full-size file whose video ``stsz`` and ``stco`` tables
  were overwritten with random bytes (box headers intact, seed fixed).
* ``text_as_mp4`` -- a text file named ``.mp4``.
* ``empty`` -- a zero-byte ``.mp4``.
* ``unsupported_codec`` -- a *valid* MP4 with MPEG-4 Part 2 video
  (``mp4v``, ``-c:v mpeg4``) + AAC.  ffmpeg plays it; vodgate only packages
  H.264/HEVC video, so it must be refused with a clear error, not packaged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the project is not necessarily pip-installed
    sys.path.insert(0, str(REPO_ROOT))

from origin.demo_media import (  # noqa: E402
    BITEXACT_ARGS,
    FfmpegError,
    FfmpegNotAvailable,
    LADDER_FLAVORS,
    atomic_output,
    atomic_write_bytes,
    ffmpeg_exe,
    ffmpeg_version,
    ladder_recipe,
    run_ffmpeg,
)

__all__ = [
    "ALL_BAD", "ALL_GOOD", "AUDIO_CODECS", "PRE_ROLL", "Box", "EditEntry", "Expect", "FIXTURES", "Fixture",
    "FfmpegError", "FfmpegNotAvailable", "ODD", "TrackInfo", "build_library", "cache_dir",
    "ensure_fixtures", "ffmpeg_exe", "find_boxes", "fixture_path", "iter_boxes",
    "make_demo_library", "movie_timescale", "top_level_boxes", "tracks",
]

#: Bump to force regeneration of every fixture (e.g. after changing a derive function).
RECIPES_VERSION = "1"


# --------------------------------------------------------------------------- recipes

@dataclasses.dataclass(frozen=True)
class Expect:
    """What a fixture is supposed to contain (checked by tests/test_fixtures.py)."""

    duration: float | None = None          # nominal seconds
    video_codec: str | None = None         # "h264" | "hevc" | "mpeg4" | None (no video)
    fps: Fraction | None = None
    width: int | None = None
    height: int | None = None
    video_frames: int | None = None        # decoded frames of v:0
    gop_seconds: float | None = None       # regular GOP length, None if irregular/none
    keyframe_times: tuple[float, ...] | None = None  # expected v:0 keyframe pts (s, ±1 frame)
    video_start: float = 0.0               # first video pts when the file starts at 0
    audio_streams: int = 0
    audio_rate: int | None = None
    languages: tuple[str, ...] = ()
    faststart: bool = True
    audio_codecs: tuple[str, ...] = ()      # ffmpeg codec names of the audio streams, when not all "aac"


@dataclasses.dataclass(frozen=True)
class Fixture:
    """A named recipe.

    ``kind`` is ``"ffmpeg"`` (``args`` = ffmpeg input/output args without the
    output path), ``"derived"`` (``derive(base_bytes) -> bytes`` applied to
    fixture ``base``) or ``"bytes"`` (``data`` written as is).
    """

    name: str
    description: str
    kind: str = "ffmpeg"
    args: tuple[str, ...] = ()
    base: str | None = None
    derive: Callable[[bytes], bytes] | None = None
    data: bytes = b""
    expect: Expect = Expect()

    def key(self) -> str:
        """Hash of everything that determines the bytes of the file."""
        payload: dict = {"v": RECIPES_VERSION, "name": self.name, "kind": self.kind}
        if self.kind == "ffmpeg":
            payload.update(args=list(self.args), ffmpeg=ffmpeg_version())
        elif self.kind == "derived":
            assert self.base and self.derive
            payload.update(base=FIXTURES[self.base].key(),
                           # not __module__: it is "__main__" when run as a script
                           derive=self.derive.__qualname__,
                           derive_version=getattr(self.derive, "version", "1"))
        else:
            payload.update(data=hashlib.sha256(self.data).hexdigest())
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _lavfi_video(size: str, rate: str, duration: float, src: str = "testsrc2") -> list[str]:
    if src == "mandelbrot":  # mandelbrot has no duration option
        return ["-f", "lavfi", "-t", str(duration), "-i", f"mandelbrot=size={size}:rate={rate}"]
    return ["-f", "lavfi", "-i", f"{src}=size={size}:rate={rate}:duration={duration}"]


def _lavfi_sine(freq: int, rate: int, duration: float) -> list[str]:
    # beep_factor: a short beep every second at freq*4 -- handy to eyeball A/V sync.
    return ["-f", "lavfi", "-i",
            f"sine=frequency={freq}:beep_factor=4:sample_rate={rate}:duration={duration}"]


def _x264(profile: str = "high", gop: int = 50, extra: Sequence[str] = ()) -> list[str]:
    return ["-c:v", "libx264", "-profile:v", profile, "-preset", "veryfast",
            "-pix_fmt", "yuv420p", "-g", str(gop), "-keyint_min", str(gop),
            "-sc_threshold", "0", *extra]


def _aac(rate: int = 48000, bitrate: str = "128k") -> list[str]:
    return ["-c:a", "aac", "-b:a", bitrate, "-ac", "2", "-ar", str(rate)]


_COMMON = ("-threads", "1", *BITEXACT_ARGS)
_FASTSTART = ("-movflags", "+faststart")


def _start_trimmed(data: bytes) -> bytes:
    """``ffmpeg -ss 3.32 -i base -c copy``: the common way to cut a file without re-encoding.

    The copy starts at the keyframe before 3.32 s (2.0 s) and writes edit lists that start the
    presentation 1.32 s later, so 33 frames of video (and the audio of the same span) are
    decoded but not presented.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.mp4", Path(tmp) / "out.mp4"
        src.write_bytes(data)
        run_ffmpeg(["-y", "-v", "error", "-ss", "3.32", "-i", str(src), "-map", "0", "-c", "copy",
                    *_COMMON, *_FASTSTART, str(out)], capture_stdout=False)
        return out.read_bytes()


# ---- derive functions for bad fixtures (set .version when changing behaviour)

def _truncate_in_moov(data: bytes) -> bytes:
    moov = next(b for b in iter_boxes(data) if b.type == "moov")
    return data[: moov.offset + moov.size // 2]


_truncate_in_moov.version = "1"  # type: ignore[attr-defined]


def _corrupt_sample_tables(data: bytes) -> bytes:
    """Overwrite the entry tables (not the headers) of video stsz/stco with noise."""
    out = bytearray(data)
    rng = random.Random(0x5EED)
    video = next(t for t in tracks(data) if t.handler == "vide")
    for box in video.sample_table_boxes:
        if box.type not in ("stsz", "stco", "co64"):
            continue
        # stsz: version/flags(4) sample_size(4) count(4); stco: version/flags(4) count(4)
        table_start = box.payload_offset + (12 if box.type == "stsz" else 8)
        table_end = box.offset + box.size
        for i in range(table_start, table_end):
            out[i] = rng.randrange(256)
    assert len(out) == len(data)
    return bytes(out)


_corrupt_sample_tables.version = "1"  # type: ignore[attr-defined]


def _recipes() -> dict[str, Fixture]:
    f: list[Fixture] = []
    fps25 = Fraction(25)

    f.append(Fixture(
        "h264_high_bframes", "H.264 High with B-frames, 640x360 25 fps, GOP 2 s, AAC 48 kHz, 8 s",
        args=(*_lavfi_video("640x360", "25", 8), *_lavfi_sine(440, 48000, 8),
              "-map", "0:v", "-map", "1:a", *_x264("high", 50, ["-bf", "3"]), *_aac(48000),
              *_COMMON, *_FASTSTART),
        expect=Expect(duration=8, video_codec="h264", fps=fps25, width=640, height=360,
                      video_frames=200, gop_seconds=2, audio_streams=1, audio_rate=48000)))

    f.append(Fixture(
        "h264_baseline", "H.264 Baseline (no B-frames), 320x180 30 fps, GOP 2 s, AAC 48 kHz, 8 s",
        args=(*_lavfi_video("320x180", "30", 8), *_lavfi_sine(440, 48000, 8),
              "-map", "0:v", "-map", "1:a", *_x264("baseline", 60), *_aac(48000),
              *_COMMON, *_FASTSTART),
        expect=Expect(duration=8, video_codec="h264", fps=Fraction(30), width=320, height=180,
                      video_frames=240, gop_seconds=2, audio_streams=1, audio_rate=48000)))

    f.append(Fixture(
        "h264_2997", "H.264 High 30000/1001 fps, GOP 60 frames, AAC 44.1 kHz, 10 s",
        args=(*_lavfi_video("320x180", "30000/1001", 10), *_lavfi_sine(440, 44100, 10),
              "-map", "0:v", "-map", "1:a", *_x264("high", 60), *_aac(44100),
              *_COMMON, *_FASTSTART),
        expect=Expect(duration=10, video_codec="h264", fps=Fraction(30000, 1001), width=320,
                      height=180, video_frames=300, gop_seconds=60 * 1001 / 30000,
                      audio_streams=1, audio_rate=44100)))

    f.append(Fixture(
        "irregular_gop",
        "H.264, keyframes only at 0, .72, 2.92, 3.2, 7.52, 8.12 s (last GOP 7.88 s), 16 s, AAC",
        args=(*_lavfi_video("320x180", "25", 16, src="mandelbrot"), *_lavfi_sine(440, 48000, 16),
              "-map", "0:v", "-map", "1:a",
              "-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast", "-pix_fmt", "yuv420p",
              "-g", "1000", "-keyint_min", "1", "-sc_threshold", "0", "-forced-idr", "1",
              "-force_key_frames", "0,0.7,2.9,3.2,7.5,8.1",
              *_aac(48000), *_COMMON, *_FASTSTART),
        expect=Expect(duration=16, video_codec="h264", fps=fps25, width=320, height=180,
                      video_frames=400, keyframe_times=(0, 0.72, 2.92, 3.2, 7.52, 8.12),
                      audio_streams=1, audio_rate=48000)))

    f.append(Fixture(
        "moov_at_end", "H.264 + AAC, 6 s, moov after mdat (no faststart)",
        args=(*_lavfi_video("320x180", "25", 6), *_lavfi_sine(440, 48000, 6),
              "-map", "0:v", "-map", "1:a", *_x264("high", 50), *_aac(48000), *_COMMON),
        expect=Expect(duration=6, video_codec="h264", fps=fps25, width=320, height=180,
                      video_frames=150, gop_seconds=2, audio_streams=1, audio_rate=48000,
                      faststart=False)))

    f.append(Fixture(
        "edit_list", "H.264 B-frames starting 0.6 s after AAC audio (empty edit in video elst), 6 s",
        # 0.6 s = 15 frames: a non frame-aligned offset (0.5 s) gets rounded to 0.52 s.
        args=("-itsoffset", "0.6", *_lavfi_video("320x180", "25", 6),
              *_lavfi_sine(440, 48000, 6.6),
              "-map", "0:v", "-map", "1:a", *_x264("high", 50, ["-bf", "2"]), *_aac(48000),
              *_COMMON, *_FASTSTART),
        expect=Expect(duration=6.6, video_codec="h264", fps=fps25, width=320, height=180,
                      video_frames=150, gop_seconds=2, video_start=0.6, audio_streams=1, audio_rate=48000)))

    f.append(Fixture(
        "hevc", "HEVC Main (libx265, hvc1) 320x180 25 fps GOP 2 s + AAC, 6 s",
        args=(*_lavfi_video("320x180", "25", 6), *_lavfi_sine(440, 48000, 6),
              "-map", "0:v", "-map", "1:a",
              "-c:v", "libx265", "-tag:v", "hvc1", "-preset", "veryfast", "-pix_fmt", "yuv420p",
              "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
              "-x265-params", "log-level=error:pools=none:frame-threads=1:info=0:open-gop=0",
              *_aac(48000), *_COMMON, *_FASTSTART),
        expect=Expect(duration=6, video_codec="hevc", fps=fps25, width=320, height=180,
                      video_frames=150, gop_seconds=2, audio_streams=1, audio_rate=48000)))

    f.append(Fixture(
        "audio_only", "AAC 48 kHz stereo only, 10 s",
        args=(*_lavfi_sine(440, 48000, 10), "-map", "0:a", *_aac(48000), *_COMMON, *_FASTSTART),
        expect=Expect(duration=10, audio_streams=1, audio_rate=48000)))

    f.append(Fixture(
        "video_only", "H.264 High 320x180 25 fps GOP 2 s, no audio, 6 s",
        args=(*_lavfi_video("320x180", "25", 6), "-map", "0:v", *_x264("high", 50),
              *_COMMON, *_FASTSTART),
        expect=Expect(duration=6, video_codec="h264", fps=fps25, width=320, height=180,
                      video_frames=150, gop_seconds=2)))

    f.append(Fixture(
        "two_languages", "H.264 + AAC 440 Hz (eng) + AAC 880 Hz (fra), 8 s",
        args=(*_lavfi_video("320x180", "25", 8), *_lavfi_sine(440, 48000, 8),
              *_lavfi_sine(880, 48000, 8),
              "-map", "0:v", "-map", "1:a", "-map", "2:a", *_x264("high", 50), *_aac(48000),
              "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
              *_COMMON, *_FASTSTART),
        expect=Expect(duration=8, video_codec="h264", fps=fps25, width=320, height=180,
                      video_frames=200, gop_seconds=2, audio_streams=2, audio_rate=48000,
                      languages=("eng", "fra"))))

    f.append(Fixture(
        "start_trimmed", "ladder_mid cut by `ffmpeg -ss 3.32 -c copy`: edits start 1.32 s after the kept "
        "keyframe (33 frames of pre-roll), 8.68 s presented", kind="derived", base="ladder_mid",
        derive=_start_trimmed,
        expect=Expect(duration=8.68, video_codec="h264", fps=fps25, width=LADDER_FLAVORS["mid"][0],
                      height=LADDER_FLAVORS["mid"][1], video_frames=217, audio_streams=1, audio_rate=48000)))

    for flavor in ("hi", "mid", "lo"):
        w, h, _ = LADDER_FLAVORS[flavor]
        f.append(Fixture(
            f"ladder_{flavor}", f"ladder flavor {flavor}: {w}x{h}, keyframes every 2 s, AAC, 12 s",
            args=tuple(ladder_recipe(flavor, 12)),
            expect=Expect(duration=12, video_codec="h264", fps=fps25, width=w, height=h,
                          video_frames=300, gop_seconds=2, audio_streams=1, audio_rate=48000)))

    # ---- bad inputs
    f.append(Fixture("truncated", "h264_baseline cut in the middle of its moov box",
                     kind="derived", base="h264_baseline", derive=_truncate_in_moov))
    f.append(Fixture("corrupt", "h264_baseline with random bytes in the video stsz/stco tables",
                     kind="derived", base="h264_baseline", derive=_corrupt_sample_tables))
    f.append(Fixture("text_as_mp4", "a text file with an .mp4 name", kind="bytes",
                     data=b"This is not an MP4 file.\nIt is plain text pretending to be one.\n" * 8))
    f.append(Fixture("empty", "a zero-byte .mp4", kind="bytes", data=b""))
    f.append(Fixture(
        "unsupported_codec", "valid MP4 with MPEG-4 Part 2 video (mp4v) + AAC: not packageable",
        args=(*_lavfi_video("320x180", "25", 4), *_lavfi_sine(440, 48000, 4),
              "-map", "0:v", "-map", "1:a", "-c:v", "mpeg4", "-q:v", "5", "-g", "50",
              *_aac(48000), *_COMMON, *_FASTSTART),
        expect=Expect(duration=4, video_codec="mpeg4", fps=fps25, width=320, height=180,
                      video_frames=100, gop_seconds=2, audio_streams=1, audio_rate=48000)))

    # ---- audio codecs other than AAC (tests/test_audio_codecs.py): short, small, one GOP every 2 s
    def with_audio(name: str, description: str, codec_args: Sequence[str], channels: int, codec: str) -> Fixture:
        return Fixture(
            name, f"H.264 320x180 25 fps GOP 2 s + {description}, 4 s",
            args=(*_lavfi_video("320x180", "25", 4), *_lavfi_sine(440, 48000, 4),
                  "-map", "0:v", "-map", "1:a", *_x264("high", 50), *codec_args,
                  "-ac", str(channels), "-ar", "48000", *_COMMON, *_FASTSTART),
            expect=Expect(duration=4, video_codec="h264", fps=fps25, width=320, height=180,
                          video_frames=100, gop_seconds=2, audio_streams=1, audio_rate=48000,
                          audio_codecs=(codec,)))

    f.append(with_audio("h264_ac3", "AC-3 5.1 (ac-3 + dac3)", ("-c:a", "ac3", "-b:a", "256k"), 6, "ac3"))
    f.append(with_audio("h264_eac3", "E-AC-3 stereo (ec-3 + dec3)", ("-c:a", "eac3", "-b:a", "96k"), 2, "eac3"))
    f.append(with_audio("h264_opus", "Opus stereo (Opus + dOps)", ("-c:a", "libopus", "-b:a", "64k"), 2, "opus"))
    f.append(with_audio("h264_mp3", "MP3 stereo (mp4a, esds object type 0x6B)",
                        ("-c:a", "libmp3lame", "-b:a", "128k"), 2, "mp3"))
    f.append(Fixture(
        "aac_and_alac", "H.264 + ALAC 880 Hz (fra, audio track 1: not packageable) + AAC 440 Hz (eng), 4 s",
        args=(*_lavfi_video("320x180", "25", 4), *_lavfi_sine(880, 48000, 4), *_lavfi_sine(440, 48000, 4),
              "-map", "0:v", "-map", "1:a", "-map", "2:a", *_x264("high", 50),
              "-c:a:0", "alac", "-c:a:1", "aac", "-b:a:1", "128k", "-ac", "2", "-ar", "48000",
              "-metadata:s:a:0", "language=fra", "-metadata:s:a:1", "language=eng",
              *_COMMON, *_FASTSTART),
        expect=Expect(duration=4, video_codec="h264", fps=fps25, width=320, height=180,
                      video_frames=100, gop_seconds=2, audio_streams=2, audio_rate=48000,
                      languages=("fra", "eng"), audio_codecs=("alac", "aac"))))
    f.append(Fixture(
        "opus_only", "Opus stereo 48 kHz only (no video), 4 s",
        args=(*_lavfi_sine(440, 48000, 4), "-map", "0:a", "-c:a", "libopus", "-b:a", "64k", "-ac", "2",
              *_COMMON, *_FASTSTART),
        expect=Expect(duration=4, audio_streams=1, audio_rate=48000, audio_codecs=("opus",))))
    f.append(Fixture(
        "aac_and_ac3", "H.264 + AAC stereo 440 Hz (eng) + AC-3 5.1 880 Hz (fra), 4 s",
        args=(*_lavfi_video("320x180", "25", 4), *_lavfi_sine(440, 48000, 4), *_lavfi_sine(880, 48000, 4),
              "-map", "0:v", "-map", "1:a", "-map", "2:a", *_x264("high", 50),
              "-c:a:0", "aac", "-b:a:0", "128k", "-ac:a:0", "2", "-c:a:1", "ac3", "-b:a:1", "256k", "-ac:a:1", "6",
              "-ar", "48000", "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
              *_COMMON, *_FASTSTART),
        expect=Expect(duration=4, video_codec="h264", fps=fps25, width=320, height=180,
                      video_frames=100, gop_seconds=2, audio_streams=2, audio_rate=48000,
                      languages=("eng", "fra"), audio_codecs=("aac", "ac3"))))
    f.append(Fixture(
        "open_gop", "H.264 High, x264 open GOPs (leading B-frames decode after their keyframe, present before it), "
        "320x180 25 fps, GOP 2 s, 8 s, no audio",
        args=(*_lavfi_video("320x180", "25", 8), "-map", "0:v", *_x264("high", 50, ["-bf", "3", "-x264-params", "open-gop=1"]),
              *_COMMON, *_FASTSTART),
        expect=Expect(duration=8, video_codec="h264", fps=fps25, width=320, height=180, video_frames=200)))
    return {x.name: x for x in f}


FIXTURES: dict[str, Fixture] = _recipes()

ALL_GOOD: tuple[str, ...] = (
    "h264_high_bframes", "h264_baseline", "h264_2997", "irregular_gop", "moov_at_end",
    "edit_list", "hevc", "audio_only", "video_only", "two_languages",
    "ladder_hi", "ladder_mid", "ladder_lo",
)
ALL_BAD: tuple[str, ...] = ("truncated", "corrupt", "text_as_mp4", "empty", "unsupported_codec")
#: Playable, with audio other than AAC (or an audio track left out); not in build_library's catalog.
AUDIO_CODECS: tuple[str, ...] = ("h264_ac3", "h264_eac3", "h264_opus", "h264_mp3", "aac_and_alac", "aac_and_ac3",
                                 "opus_only")
#: Playable files whose decoded frames are not all presented (tests/test_edit_lists.py): in build_library's
#: catalog, but not in ALL_GOOD, whose tests expect every decoded frame to be presented.
PRE_ROLL: tuple[str, ...] = ("start_trimmed",)
#: Playable files of an unusual structure (tests/test_attack_packager.py); not in build_library's catalog.
ODD: tuple[str, ...] = ("open_gop",)
LADDER: dict[str, str] = {"hi": "ladder_hi", "mid": "ladder_mid", "lo": "ladder_lo"}

assert set(ALL_GOOD) | set(ALL_BAD) | set(AUDIO_CODECS) | set(PRE_ROLL) | set(ODD) == set(FIXTURES)


# --------------------------------------------------------------------------- generation

def cache_dir() -> Path:
    """``$VODGATE_FIXTURE_DIR`` or ``<repo>/.fixtures``."""
    d = Path(os.environ.get("VODGATE_FIXTURE_DIR") or REPO_ROOT / ".fixtures")
    d.mkdir(parents=True, exist_ok=True)
    return d


_locks: dict[str, threading.Lock] = {name: threading.Lock() for name in FIXTURES}
#: name -> seconds spent generating it in this process (0 entries = cache hits)
GENERATION_TIMES: dict[str, float] = {}


def fixture_path(name: str) -> Path:
    """Path of fixture ``name``, generating it (and its base) if not cached."""
    try:
        fx = FIXTURES[name]
    except KeyError:
        raise KeyError(f"unknown fixture {name!r}; known: {sorted(FIXTURES)}") from None
    key = fx.key()
    dest = cache_dir() / f"{name}-{key}.mp4"
    if dest.exists():
        return dest
    with _locks[name]:
        if dest.exists():
            return dest
        t0 = time.monotonic()
        if fx.kind == "ffmpeg":
            with atomic_output(dest) as tmp:
                run_ffmpeg(["-y", "-v", "error", *fx.args, str(tmp)], capture_stdout=False)
        elif fx.kind == "derived":
            base = fixture_path(fx.base)  # type: ignore[arg-type]
            atomic_write_bytes(dest, fx.derive(base.read_bytes()))  # type: ignore[misc]
        else:
            atomic_write_bytes(dest, fx.data)
        GENERATION_TIMES[name] = time.monotonic() - t0
        _remove_stale(name, dest)
    return dest


def _remove_stale(name: str, keep: Path) -> None:
    pattern = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{12}}\.mp4$")
    for p in keep.parent.iterdir():
        if p != keep and pattern.match(p.name):
            try:
                p.unlink()
            except OSError:
                pass


def ensure_fixtures(names: Iterable[str] | None = None, jobs: int | None = None) -> dict[str, Path]:
    """Generate ``names`` (default: all) in parallel; returns ``name -> path``."""
    names = list(FIXTURES if names is None else names)
    jobs = jobs or max(1, os.cpu_count() or 1)
    # slowest first so the pool stays busy
    order = sorted(names, key=lambda n: FIXTURES[n].kind != "ffmpeg")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        paths = dict(zip(order, pool.map(fixture_path, order)))
    return {n: paths[n] for n in names}


def _place(src: Path, dest: Path, mode: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    if mode == "symlink":
        dest.symlink_to(src)
        return
    if mode == "hardlink":
        try:
            os.link(src, dest)
            return
        except OSError:
            pass
    shutil.copyfile(src, dest)


def build_library(root: str | os.PathLike, mode: str = "copy") -> Path:
    """Lay out a catalog under ``root`` and return ``root``.

    ``root/demo/<fixture>/main.mp4`` for every good fixture (and PRE_ROLL's),
    ``root/demo/ladder/{hi,mid,lo}.mp4`` for the ladder, and
    ``root/bad/<fixture>/main.mp4`` for every bad fixture.

    ``mode`` is ``"copy"`` (default: tests may modify files freely and the
    server never sees a symlink leaving the root), ``"hardlink"`` (falls back
    to copy) or ``"symlink"`` (points into the fixture cache).
    """
    if mode not in ("copy", "hardlink", "symlink"):
        raise ValueError(f"bad mode {mode!r}")
    root = Path(root)
    paths = ensure_fixtures()
    for name in (*ALL_GOOD, *PRE_ROLL):
        _place(paths[name], root / "demo" / name / "main.mp4", mode)
    for flavor, name in LADDER.items():
        _place(paths[name], root / "demo" / "ladder" / f"{flavor}.mp4", mode)
    for name in ALL_BAD:
        _place(paths[name], root / "bad" / name / "main.mp4", mode)
    return root


def make_demo_library(root: str | os.PathLike, **kw) -> Path:
    """Re-export of :func:`origin.demo_media.make_demo_library`."""
    from origin.demo_media import make_demo_library as _make
    return _make(root, **kw)


# --------------------------------------------------------------------------- box walker

@dataclasses.dataclass(frozen=True)
class Box:
    type: str
    offset: int          # of the box header within the buffer/file
    size: int            # whole box, header included (resolved for size==0)
    header_size: int     # 8 or 16

    @property
    def payload_offset(self) -> int:
        return self.offset + self.header_size

    @property
    def end(self) -> int:
        return self.offset + self.size


CONTAINERS = frozenset({"moov", "trak", "mdia", "minf", "stbl", "edts", "dinf", "mvex",
                        "moof", "traf", "udta"})


def iter_boxes(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """Boxes laid end to end in ``data[start:end]``; stops at a truncated/invalid header."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, typ = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield Box(typ.decode("latin-1"), pos, size, header)
        pos += size


def top_level_boxes(path: str | os.PathLike) -> list[Box]:
    """Top-level boxes of a file, reading headers only (mdat is not loaded).

    A box whose declared size runs past the end of the file is still listed
    (with its declared size); walking stops after it.
    """
    boxes = []
    with open(path, "rb") as fh:
        file_size = os.fstat(fh.fileno()).st_size
        pos = 0
        while pos + 8 <= file_size:
            fh.seek(pos)
            head = fh.read(16)
            size, typ = struct.unpack_from(">I4s", head)
            header = 8
            if size == 1 and len(head) >= 16:
                size, header = struct.unpack_from(">Q", head, 8)[0], 16
            elif size == 0:
                size = file_size - pos
            if size < header:
                break
            boxes.append(Box(typ.decode("latin-1"), pos, size, header))
            pos += size
    return boxes


def find_boxes(data: bytes, path: str, start: int = 0, end: int | None = None) -> list[Box]:
    """All boxes matching a slash path such as ``"moov/trak/edts/elst"``."""
    first, _, rest = path.partition("/")
    found = []
    for box in iter_boxes(data, start, end):
        if box.type != first:
            continue
        if not rest:
            found.append(box)
        elif box.type in CONTAINERS:
            found.extend(find_boxes(data, rest, box.payload_offset, box.end))
    return found


@dataclasses.dataclass(frozen=True)
class EditEntry:
    segment_duration: int  # movie timescale
    media_time: int        # media timescale; -1 = empty edit
    media_rate: float


@dataclasses.dataclass
class TrackInfo:
    track_id: int
    handler: str                     # "vide", "soun", ...
    codec: str                       # sample entry fourcc: avc1, hvc1, mp4a, mp4v...
    timescale: int
    duration: int                    # media timescale (mdhd)
    language: str
    sample_count: int
    sync_samples: int | None         # entries in stss; None = no stss (all samples sync)
    edits: list[EditEntry]
    sample_table_boxes: list[Box]

    @property
    def nontrivial_edits(self) -> bool:
        """More than one edit, an empty edit, or a start offset that is not 0."""
        return len(self.edits) > 1 or any(e.media_time != 0 for e in self.edits)


def _full_box(data: bytes, box: Box) -> tuple[int, int]:
    v_flags = struct.unpack_from(">I", data, box.payload_offset)[0]
    return v_flags >> 24, box.payload_offset + 4


def _read_moov(src: bytes | str | os.PathLike) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        moov = next(b for b in iter_boxes(data) if b.type == "moov")
        return data[moov.offset:moov.end]
    moov = next(b for b in top_level_boxes(src) if b.type == "moov")
    with open(src, "rb") as fh:
        fh.seek(moov.offset)
        return fh.read(moov.size)


def movie_timescale(src: bytes | str | os.PathLike) -> int:
    """``mvhd`` timescale: the unit of edit-list segment durations."""
    data = _read_moov(src)
    mvhd = find_boxes(data, "moov/mvhd")[0]
    ver, p = _full_box(data, mvhd)
    return struct.unpack_from(">I", data, p + (16 if ver == 1 else 8))[0]


def tracks(src: bytes | str | os.PathLike) -> list[TrackInfo]:
    """Parse the tracks of a (complete, non-fragmented) MP4 file or its bytes.

    Box offsets in :attr:`TrackInfo.sample_table_boxes` are absolute (file)
    offsets when ``src`` is bytes of the whole file, relative to the start of
    ``moov`` when ``src`` is a path.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        moov = next(b for b in iter_boxes(data) if b.type == "moov")
        lo, hi = moov.payload_offset, moov.end
    else:
        data = _read_moov(src)
        lo, hi = 8, len(data)
    out = []
    for trak in (b for b in iter_boxes(data, lo, hi) if b.type == "trak"):
        def one(p: str) -> Box | None:
            r = find_boxes(data, p, trak.payload_offset, trak.end)
            return r[0] if r else None

        tkhd = one("tkhd")
        ver, p = _full_box(data, tkhd)
        track_id = struct.unpack_from(">I", data, p + (16 if ver == 1 else 8))[0]
        hdlr = one("mdia/hdlr")
        handler = data[hdlr.payload_offset + 8: hdlr.payload_offset + 12].decode("latin-1")
        mdhd = one("mdia/mdhd")
        ver, p = _full_box(data, mdhd)
        if ver == 1:
            timescale, duration = struct.unpack_from(">IQ", data, p + 16)
            lang_off = p + 28
        else:
            timescale, duration = struct.unpack_from(">II", data, p + 8)
            lang_off = p + 16
        lang_bits = struct.unpack_from(">H", data, lang_off)[0]
        language = "".join(chr(((lang_bits >> s) & 31) + 0x60) for s in (10, 5, 0))
        stsd = one("mdia/minf/stbl/stsd")
        codec = data[stsd.payload_offset + 12: stsd.payload_offset + 16].decode("latin-1")
        stsz = one("mdia/minf/stbl/stsz")
        sample_count = struct.unpack_from(">I", data, stsz.payload_offset + 8)[0] if stsz else 0
        stss = one("mdia/minf/stbl/stss")
        sync = struct.unpack_from(">I", data, stss.payload_offset + 4)[0] if stss else None
        edits = []
        elst = one("edts/elst")
        if elst:
            ver, p = _full_box(data, elst)
            (count,) = struct.unpack_from(">I", data, p)
            p += 4
            for _ in range(count):
                if ver == 1:
                    seg, mt = struct.unpack_from(">Qq", data, p)
                    p += 16
                else:
                    seg, mt = struct.unpack_from(">Ii", data, p)
                    p += 8
                ri, rf = struct.unpack_from(">hH", data, p)
                p += 4
                edits.append(EditEntry(seg, mt, ri + rf / 65536))
        stbl = one("mdia/minf/stbl")
        out.append(TrackInfo(track_id, handler, codec, timescale, duration, language,
                             sample_count, sync, edits,
                             list(iter_boxes(data, stbl.payload_offset, stbl.end))))
    return out


# --------------------------------------------------------------------------- derived bad files (tests/test_robustness.py)


def _shift_chunk_offsets(data: bytearray, delta: int) -> None:
    """Add ``delta`` to every stco/co64 entry of every track (``data`` is a whole file)."""
    for track in tracks(bytes(data)):
        for box in track.sample_table_boxes:
            if box.type not in ("stco", "co64"):
                continue
            fmt = ">I" if box.type == "stco" else ">Q"
            width = struct.calcsize(fmt)
            (count,) = struct.unpack_from(">I", data, box.payload_offset + 4)
            for i in range(count):
                at = box.payload_offset + 8 + i * width
                struct.pack_into(fmt, data, at, struct.unpack_from(fmt, data, at)[0] + delta)


def with_boxes_before_moov(data: bytes, count: int, box_type: bytes = b"free") -> bytes:
    """``data`` (a faststart file) with ``count`` empty 8-byte boxes between ftyp and moov; chunk offsets
    are moved along, so apart from its box count the file is as playable as before."""
    ftyp = next(b for b in iter_boxes(data) if b.type == "ftyp")
    out = bytearray(data)
    _shift_chunk_offsets(out, 8 * count)
    return bytes(out[: ftyp.end]) + struct.pack(">I4s", 8, box_type) * count + bytes(out[ftyp.end :])


def _parameter_set_lengths(config_type: str, body: bytes, start: int) -> list[int]:
    """Absolute offsets of the 16-bit length fields of the parameter sets in an avcC/hvcC body at ``start``."""
    at: list[int] = []
    if config_type == "avcC":
        pos = start + 5
        for _list in range(2):
            count = body[pos] & (0x1F if _list == 0 else 0xFF)
            pos += 1
            for _ in range(count):
                at.append(pos)
                pos += 2 + struct.unpack_from(">H", body, pos)[0]
        return at
    pos = start + 23
    for _ in range(body[start + 22]):
        (count,) = struct.unpack_from(">H", body, pos + 1)
        pos += 3
        for _ in range(count):
            at.append(pos)
            pos += 2 + struct.unpack_from(">H", body, pos)[0]
    return at


def with_empty_parameter_set(data: bytes, config_type: str = "avcC", number: int = 0) -> bytes:
    """``data`` with parameter set ``number`` (in record order: avcC SPS then PPS; hvcC VPS, SPS, PPS)
    of its ``config_type`` box made 0 bytes long. The bytes it held move to the record's end as zero
    padding (which parsers skip), so no box changes size."""
    moov = next(b for b in iter_boxes(data) if b.type == "moov")
    config_at = data.index(config_type.encode(), moov.offset, moov.end) - 4
    (config_size,) = struct.unpack_from(">I", data, config_at)
    start, end = config_at + 8, config_at + config_size
    length_at = _parameter_set_lengths(config_type, data, start)[number]
    (length,) = struct.unpack_from(">H", data, length_at)
    record = data[start:length_at] + b"\0\0" + data[length_at + 2 + length : end] + b"\0" * length
    assert len(record) == end - start
    return data[:start] + record + data[end:]


def _with_co64_box(data: bytes, box: Box) -> bytes:
    if box.type in ("moov", "trak", "mdia", "minf", "stbl"):  # containers without fields of their own
        body = b"".join(_with_co64_box(data, child) for child in iter_boxes(data, box.payload_offset, box.end))
        return struct.pack(">I4s", 8 + len(body), box.type.encode()) + body
    if box.type != "stco":
        return data[box.offset : box.end]
    (count,) = struct.unpack_from(">I", data, box.payload_offset + 4)
    offsets = struct.unpack_from(f">{count}I", data, box.payload_offset + 8)
    body = data[box.payload_offset : box.payload_offset + 8] + struct.pack(f">{count}Q", *offsets)
    return struct.pack(">I4s", 8 + len(body), b"co64") + body


def with_co64(data: bytes) -> bytes:
    """``data`` (moov last, so no chunk moves) with every 32-bit chunk offset table (stco) as a 64-bit one (co64)."""
    moov = next(b for b in iter_boxes(data) if b.type == "moov")
    assert moov.end == len(data), "with_co64 needs the moov at the end"
    return data[: moov.offset] + _with_co64_box(data, moov)


def with_boxes_in_moov(data: bytes, count: int, box_type: bytes = b"free") -> bytes:
    """``data`` (moov last) with ``count`` empty 8-byte boxes appended inside its moov."""
    moov = next(b for b in iter_boxes(data) if b.type == "moov")
    assert moov.end == len(data) and moov.header_size == 8, "with_boxes_in_moov needs an 8-byte-header moov at the end"
    return (data[: moov.offset] + struct.pack(">I4s", moov.size + 8 * count, b"moov")
            + data[moov.payload_offset :] + struct.pack(">I4s", 8, box_type) * count)


def _trak_of(data: bytes, handler: str) -> Box:
    """The first trak whose hdlr names ``handler`` ("vide", "soun")."""
    for trak in find_boxes(data, "moov/trak"):
        hdlr = find_boxes(data, "mdia/hdlr", trak.payload_offset, trak.end)[0]
        if data[hdlr.payload_offset + 8 : hdlr.payload_offset + 12] == handler.encode():
            return trak
    raise LookupError(f"no {handler} track")


def _resized_in_moov(data: bytes, trak: Box | None, start: int, end: int, new: bytes) -> bytes:
    """``data`` (moov before mdat) with bytes [start, end) inside ``trak`` (or directly in moov) replaced by
    ``new``: the moov (and trak) sizes and every chunk offset move along."""
    out = bytearray(data)
    delta = len(new) - (end - start)
    moov = next(b for b in iter_boxes(data) if b.type == "moov")
    assert moov.header_size == 8 and (trak is None or trak.header_size == 8)
    if moov.offset < next(b for b in iter_boxes(data) if b.type == "mdat").offset:
        _shift_chunk_offsets(out, delta)  # first: the tables keep their places and ``new`` is not parsed
    for box in (moov, trak) if trak is not None else (moov,):
        struct.pack_into(">I", out, box.offset, box.size + delta)
    out[start:end] = new
    return bytes(out)


def with_edit_list(data: bytes, handler: str, entries: Sequence[tuple[int, int]], version: int = 0) -> bytes:
    """``data`` (faststart) with the edit list of its first ``handler`` track replaced by (or, without one,
    given) ``entries``: (segment_duration in the movie timescale, media_time; -1 = empty edit), rate 1."""
    trak = _trak_of(data, handler)
    row = ">Qqhh" if version else ">Iihh"
    body = struct.pack(">I", len(entries)) + b"".join(struct.pack(row, d, t, 1, 0) for d, t in entries)
    elst = struct.pack(">I4sI", 12 + len(body), b"elst", version << 24) + body
    edts = struct.pack(">I4s", 8 + len(elst), b"edts") + elst
    old = find_boxes(data, "edts", trak.payload_offset, trak.end)
    if old:
        start, end = old[0].offset, old[0].end
    else:
        start = end = find_boxes(data, "tkhd", trak.payload_offset, trak.end)[0].end
    return _resized_in_moov(data, trak, start, end, edts)


def with_track_copies(data: bytes, handler: str, count: int) -> bytes:
    """``data`` (faststart) with ``count`` more copies of its first ``handler`` trak (same samples) in the moov."""
    trak = _trak_of(data, handler)
    return _resized_in_moov(data, None, trak.end, trak.end, data[trak.offset : trak.end] * count)


def _main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - manual use
    """``python tests/media_fixtures.py [--library DIR]``: generate and list fixtures."""
    import argparse
    ap = argparse.ArgumentParser(description=_main.__doc__)
    ap.add_argument("--library", help="also build a catalog folder here")
    ns = ap.parse_args(argv)
    t0 = time.monotonic()
    paths = ensure_fixtures()
    print(f"fixtures ready in {time.monotonic() - t0:.1f} s ({cache_dir()})")
    for name, p in paths.items():
        print(f"  {name:18s} {p.stat().st_size:>9d}  {GENERATION_TIMES.get(name, 0):5.2f}s  {p.name}")
    if ns.library:
        print(build_library(ns.library))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
