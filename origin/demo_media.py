"""Synthetic demo media for ``vodgate serve`` and shared ffmpeg helpers.

This module has no test-framework dependency: the server CLI imports it to
lay out a small demo catalog when it is started without any media, and the
test suite (``tests/media_fixtures.py``) reuses its helpers.

The ffmpeg binary comes from the ``imageio-ffmpeg`` package (part of the
``test`` extra: ``pip install -e '.[test]'``).  There is deliberately no
dependency on ``ffprobe``: that package does not ship one.

Catalog layout produced by :func:`make_demo_library`::

    <root>/demo/ladder/hi.mp4    640x360  H.264 High + AAC stereo 48 kHz
    <root>/demo/ladder/mid.mp4   480x270
    <root>/demo/ladder/lo.mp4    320x180

All three flavors are cut from the same synthetic source (``testsrc2``
scaled), 25 fps, 2 s closed GOPs at identical times, ~20 s long, with the
same AAC audio track, so they form a valid adaptive ladder.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "BITEXACT_ARGS",
    "FfmpegError",
    "FfmpegNotAvailable",
    "LADDER_FLAVORS",
    "atomic_output",
    "atomic_write_bytes",
    "ffmpeg_exe",
    "ffmpeg_version",
    "ladder_recipe",
    "make_demo_library",
    "run_ffmpeg",
    "stderr_tail",
]

#: Flags that make ffmpeg's output reproducible byte for byte (no encoder
#: version strings, no wall-clock metadata).  Combine with ``-threads 1``.
BITEXACT_ARGS: tuple[str, ...] = (
    "-fflags", "+bitexact",
    "-flags:v", "+bitexact",
    "-flags:a", "+bitexact",
)

#: flavor id -> (width, height, video bitrate)
LADDER_FLAVORS: dict[str, tuple[int, int, str]] = {
    "hi": (640, 360, "800k"),
    "mid": (480, 270, "450k"),
    "lo": (320, 180, "250k"),
}


class FfmpegNotAvailable(RuntimeError):
    """The ffmpeg binary (via imageio-ffmpeg) is not installed."""


class FfmpegError(RuntimeError):
    """ffmpeg exited with an error; the message carries the stderr tail."""

    def __init__(self, args: Sequence[str], returncode: int | None, stderr: str,
                 note: str = "") -> None:
        self.args_list = list(args)
        self.returncode = returncode
        self.stderr = stderr
        head = note or f"ffmpeg failed (exit status {returncode})"
        super().__init__(
            f"{head}\n  command: {_format_cmd(self.args_list)}\n"
            f"  stderr (tail):\n{_indent(stderr_tail(stderr))}"
        )


def _format_cmd(args: Sequence[str]) -> str:
    import shlex
    return " ".join(shlex.quote(str(a)) for a in args)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines()) or prefix + "(empty)"


def stderr_tail(stderr: str | bytes, lines: int = 25) -> str:
    """Last ``lines`` lines of an ffmpeg stderr (the useful part)."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    return "\n".join(stderr.strip().splitlines()[-lines:])


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg.

    ``VODGATE_FFMPEG`` overrides it (useful for trying another build).
    """
    override = os.environ.get("VODGATE_FFMPEG")
    if override:
        return override
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise FfmpegNotAvailable(
            "ffmpeg is needed to generate media but the 'imageio-ffmpeg' package "
            "is not installed. Install the test extra: pip install -e '.[test]' "
            "(or pip install imageio-ffmpeg), or set VODGATE_FFMPEG to an ffmpeg binary."
        ) from exc
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:  # pragma: no cover
        raise FfmpegNotAvailable(f"imageio-ffmpeg could not find ffmpeg: {exc}") from exc


@functools.lru_cache(maxsize=1)
def ffmpeg_version() -> str:
    """First line of ``ffmpeg -version`` (part of fixture cache keys)."""
    out = _run_retrying_spawn([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, text=True, timeout=30)
    return (out.stdout.splitlines() or ["unknown"])[0].strip()


# exec() of a healthy binary can fail transiently when many processes start at
# once on a loaded sandbox (EFAULT was seen in CI, EAGAIN/ENOMEM/ETXTBSY are the
# classic ones).  Nothing ran yet when these are raised, so a retry is safe.
_TRANSIENT_SPAWN_ERRORS = {errno.EFAULT, errno.EAGAIN, errno.ENOMEM, errno.ETXTBSY}


def _run_retrying_spawn(cmd: list[str], attempts: int = 4, **kwargs) -> subprocess.CompletedProcess:
    for attempt in range(attempts):
        try:
            return subprocess.run(cmd, **kwargs)
        except OSError as exc:
            if exc.errno not in _TRANSIENT_SPAWN_ERRORS or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def run_ffmpeg(args: Sequence[str], *, timeout: float = 300, check: bool = True,
               capture_stdout: bool = True, text: bool = True,
               ) -> subprocess.CompletedProcess:
    """Run ``ffmpeg -hide_banner -nostdin <args>``.

    Raises :class:`FfmpegError` (with the stderr tail) on a non-zero exit
    status when ``check`` is true, or on timeout.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", *map(str, args)]
    try:
        proc = _run_retrying_spawn(
            cmd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE, timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr or b""
        raise FfmpegError(cmd, None, err.decode("utf-8", "replace"),
                          note=f"ffmpeg timed out after {timeout} s") from None
    stderr = proc.stderr.decode("utf-8", "replace")
    stdout = proc.stdout
    if text and stdout is not None:
        stdout = stdout.decode("utf-8", "replace")
    result = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise FfmpegError(cmd, proc.returncode, stderr)
    return result


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` on success.

    The temporary file keeps ``dest``'s extension (ffmpeg picks the muxer from
    it).  On any exception the temporary file is removed and ``dest`` is left
    untouched, so readers never see a half-written file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=suffix or dest.suffix,
                               dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; media must be world-readable
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically (tmp file + rename)."""
    with atomic_output(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def ladder_recipe(flavor: str, duration: float, *, fps: int = 25, gop_seconds: int = 2,
                  audio_rate: int = 48000) -> list[str]:
    """ffmpeg input+output arguments (without the output path) for one ladder flavor.

    Every flavor renders the same 640x360 ``testsrc2`` source, scaled to the
    flavor size, with a fixed GOP (``-g``/``-keyint_min`` = fps*gop, no
    scene-cut keyframes, forced keyframes every ``gop_seconds``) so all
    flavors have identical keyframe times.  Audio is identical in all flavors.
    """
    width, height, vbitrate = LADDER_FLAVORS[flavor]
    gop = fps * gop_seconds
    return [
        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={fps}:duration={duration}",
        "-f", "lavfi", "-i",
        f"sine=frequency=440:beep_factor=4:sample_rate={audio_rate}:duration={duration}",
        "-map", "0:v:0", "-map", "1:a:0",
        "-vf", f"scale={width}:{height}:flags=bicubic",
        "-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast",
        "-b:v", vbitrate, "-maxrate", vbitrate, "-bufsize", vbitrate,
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{gop_seconds})",
        "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-ar", str(audio_rate),
        "-threads", "1", *BITEXACT_ARGS,
        "-movflags", "+faststart",
    ]


def make_demo_library(root: str | os.PathLike, *, duration: float = 20,
                      force: bool = False) -> Path:
    """Create (or reuse) a tiny demo catalog under ``root`` and return ``root``.

    Layout: ``root/demo/ladder/{hi,mid,lo}.mp4`` (see module docstring).
    Existing files are reused unless ``force`` is true.  Takes a few seconds.
    """
    root = Path(root)
    entry_dir = root / "demo" / "ladder"
    entry_dir.mkdir(parents=True, exist_ok=True)
    for flavor in LADDER_FLAVORS:
        dest = entry_dir / f"{flavor}.mp4"
        if dest.exists() and not force:
            continue
        with atomic_output(dest) as tmp:
            run_ffmpeg(["-y", "-v", "error", *ladder_recipe(flavor, duration), str(tmp)],
                       capture_stdout=False)
    return root


def _main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - manual use
    import argparse
    parser = argparse.ArgumentParser(description="Generate the vodgate demo media library.")
    parser.add_argument("root", nargs="?", default="demo-media")
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--force", action="store_true")
    ns = parser.parse_args(argv)
    try:
        out = make_demo_library(ns.root, duration=ns.duration, force=ns.force)
    except (FfmpegNotAvailable, FfmpegError) as exc:
        print(f"error: {exc}")
        return 1
    print(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())

