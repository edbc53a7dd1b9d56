"""Thumbnails: one keyframe decoded by ffmpeg into a JPEG, a bounded number of ffmpeg processes at a time.

The keyframe (packager/thumbnail.keyframe_at) is muxed alone into an MPEG-TS segment (packager/ts), which
ffmpeg decodes from a pipe: no temporary file, no seek in the source. ffmpeg is the imageio-ffmpeg wheel's
(the ``demo`` extra `make serve` installs) or one on PATH; without either, thumbnails answer
``503 thumbnails_unavailable`` and everything else is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

log = logging.getLogger("vodgate.thumbnails")

JPEG_QUALITY = 3  # ffmpeg -q:v (2 best .. 31): small files that still look like the frame
DECODE_TIMEOUT = 15.0  # seconds; a keyframe decodes in tens of milliseconds
SLOT_POLL = 0.02  # seconds between looks for a free slot of the node (workers)


class ThumbnailUnavailable(Exception):
    """No ffmpeg to decode with, or it failed: 503."""

    code = "thumbnails_unavailable"


def find_ffmpeg() -> str | None:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - not installed, or its binary missing: look on PATH
        return shutil.which("ffmpeg")


def default_slots() -> int:
    """Half the CPUs this process may use: thumbnails must not take the CPU segments need."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


class Thumbnailer:
    """At most ``slots`` ffmpeg processes at once (default: half the CPUs); the rest wait their turn. With
    ``slots_dir`` (a node's run folder: edge/workers.py) the bound holds across the node's worker processes: a
    run takes one of ``slots`` lock files there (flock), so N workers share the slots instead of having N each."""

    def __init__(self, slots: int | None = None, ffmpeg: str | None = None, slots_dir: Path | None = None) -> None:
        self.ffmpeg = ffmpeg if ffmpeg is not None else find_ffmpeg()
        self.slots = slots or default_slots()
        self._local = asyncio.Semaphore(self.slots)
        self._files: list[int] = []
        if slots_dir is not None:
            slots_dir.mkdir(mode=0o700, exist_ok=True)
            self._files = [os.open(slots_dir / f"slot-{i}", os.O_RDWR | os.O_CREAT, 0o600) for i in range(self.slots)]

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        async with self._local:
            if not self._files:
                yield
                return
            while True:  # a slot of the node: the first lock file no other worker holds
                for fd in self._files:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    try:
                        yield
                    finally:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                    return
                await asyncio.sleep(SLOT_POLL)

    async def jpeg(self, segment: bytes, width: int | None) -> bytes:
        """The first picture of ``segment`` (MPEG-TS) as a JPEG, ``width`` pixels wide (height in proportion)."""
        return await self._run(segment, [f"scale={width}:-2"] if width else [])

    async def sprite(self, keyframes: bytes, width: int, columns: int, count: int) -> bytes:
        """The pictures of ``keyframes`` (MPEG-TS, one keyframe after another) ``width`` wide, tiled ``columns`` to a
        row in one JPEG (a last row short of tiles is black where tiles are missing)."""
        rows = -(-count // columns)
        return await self._run(keyframes, [f"scale={width}:-2", f"tile={columns}x{rows}"])

    async def _run(self, segment: bytes, filters: list[str]) -> bytes:
        if self.ffmpeg is None:
            raise ThumbnailUnavailable("thumbnails need ffmpeg: install the imageio-ffmpeg package (pip install 'vodgate[demo]')")
        args = [self.ffmpeg, "-v", "error", "-f", "mpegts", "-i", "pipe:0"]
        if filters:
            args += ["-vf", ",".join(filters)]
        args += ["-frames:v", "1", "-q:v", str(JPEG_QUALITY), "-f", "mjpeg", "pipe:1"]
        async with self._slot():
            try:
                process = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                               stderr=asyncio.subprocess.PIPE)
            except OSError as exc:  # the binary went away, or cannot run here
                log.warning("thumbnail: cannot run %s: %s", self.ffmpeg, exc)
                raise ThumbnailUnavailable(f"ffmpeg cannot run here ({type(exc).__name__})") from None
            try:
                out, err = await asyncio.wait_for(process.communicate(segment), DECODE_TIMEOUT)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
                raise ThumbnailUnavailable(f"ffmpeg took over {DECODE_TIMEOUT:g} s to decode one keyframe") from None
        if process.returncode != 0 or not out.startswith(b"\xff\xd8"):
            log.warning("thumbnail: ffmpeg exited %s: %s", process.returncode, err.decode(errors="replace")[-300:].strip())
            raise ThumbnailUnavailable(f"ffmpeg could not decode the keyframe (exit code {process.returncode})")
        return out
