"""ffmpeg as the oracle: decode a source (file or URL) and hash every frame.

The idea: vodgate repackages without re-encoding, so decoding the packaged
output (an HLS playlist served over HTTP, a single segment, ...) with ffmpeg
must give *exactly* the same decoded frames as decoding the source MP4.

* :func:`framemd5` runs ``ffmpeg -i SRC -map 0:<stream> -fps_mode passthrough
  -f framemd5 -`` and parses every line into a :class:`FrameHash`.
  ``-fps_mode passthrough`` guarantees one output line per decoded frame (no
  frame duplication or dropping to fit a frame rate).  Timestamps are in the
  output time base (``FrameHash.tb``: 1/90000 for video, ``1/sample_rate``
  for audio) and shifted so the input starts at 0 (no ``-copyts``).  Compare
  md5s across containers; compare timestamps only between streams decoded
  in the same run (e.g. ``stream=["v:0", "a:0"]``): ffmpeg's start-time
  shift depends on which streams are mapped and on the container (an MPEG-TS
  from ffmpeg's muxer starts at 1.4 s, the HLS demuxer then rebases).
* :func:`video_hashes` / :func:`audio_hashes` -- just the md5 lists.
* :func:`decode_ok` -- full decode to ``-f null`` with ``-v error``;
  ok means exit status 0 and nothing on stderr.
* :func:`decoded_frame_count`, :func:`keyframe_times` (``-skip_frame nokey``),
  :func:`probe_streams` (parses ``ffmpeg -i``; there is no ffprobe).
* :func:`audio_hashes_match` -- compare source vs HLS audio, allowing for AAC
  priming (see below).

AAC priming, MP4 vs HLS/TS (measured with ffmpeg 9.0.2, native AAC encoder)
---------------------------------------------------------------------------
ffmpeg's AAC encoder emits 1024 priming samples ("encoder delay") before the
real signal and pads the last frame; the MP4 muxer records both in the audio
track's edit list (``elst`` media_time = 1024, segment_duration = the real
number of samples).  When *decoding an MP4*, ffmpeg's mov demuxer applies
that edit list: the first packet is decoded (the AAC decoder needs it: every
output frame is an overlap-add of two consecutive packets' IMDCTs) but its
1024 output samples are discarded, so the first frame is missing from the
framemd5, and the last frame is cut to the edit's end (e.g. 680 samples
instead of 1024 for 10 s at 44.1 kHz), so its size and hash differ.

An MPEG-TS segment carries raw ADTS frames and has no edit list, so decoding
HLS-over-TS (and even ffmpeg's own fMP4 HLS output) yields *every* packet's
1024 samples::

    MP4 : ------------  A1   A2  ...  A(n-1)  An'   (An' = An truncated)
    HLS :  A0 (prime)   A1   A2  ...  A(n-1)  An

Frames A1..A(n-1) are byte-identical (same packets, same decoder state), so
the rule implemented by :func:`audio_hashes_match` is: the HLS list may have
up to ``max_leading`` (default 1) extra frames in front, then must equal the
source list; the source's last frame may differ only if it is *shorter* than
the HLS one (end trimming); the HLS list may have up to ``max_trailing``
extra frames at the end (padding frames an encoder may add beyond the edit).
If a packager drops the priming packet instead, the first HLS frame decodes
differently (no overlap partner) and the match fails -- deliberately.

ffmpeg HLS demuxer notes: the segment extension must be one ffmpeg accepts
(``.ts``, ``.m4s``, ``.mp4``, ``.aac``...) and match the probed format
(``-extension_picky``); pass extra input options via ``extra_input_args``.
For a master playlist ffmpeg exposes each variant as a program and every
rendition as a stream; pick one with a stream spec such as ``"v:0"``,
``"a:1"`` or ``"p:1:v"`` (program ids are the variant indexes).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:  # the project is not necessarily pip-installed
    sys.path.insert(0, str(_REPO_ROOT))

from origin.demo_media import FfmpegError, ffmpeg_exe, run_ffmpeg  # noqa: E402,F401

__all__ = [
    "AudioMatch", "FfmpegError", "FrameHash", "StreamInfo", "audio_hashes",
    "audio_hashes_match", "decode_ok", "decoded_frame_count", "framemd5",
    "keyframe_times", "probe_streams", "video_hashes",
]

Source = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class FrameHash:
    stream: int       # output stream index (0 when a single stream is mapped)
    dts: int
    pts: int
    duration: int
    size: int         # bytes of the decoded frame (rawvideo / pcm_s16le)
    md5: str
    tb: Fraction      # time base of dts/pts/duration

    @property
    def pts_time(self) -> float:
        return float(self.pts * self.tb)

    @property
    def duration_time(self) -> float:
        return float(self.duration * self.tb)


_TB_RE = re.compile(r"^#tb (\d+): (\d+)/(\d+)")


def parse_framemd5(text: str) -> list[FrameHash]:
    """Parse the output of ``-f framemd5`` (format version 2)."""
    tbs: dict[int, Fraction] = {}
    frames = []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            m = _TB_RE.match(line)
            if m:
                tbs[int(m[1])] = Fraction(int(m[2]), int(m[3]))
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 6:
            raise ValueError(f"unexpected framemd5 line: {line!r}")
        idx = int(parts[0])
        frames.append(FrameHash(idx, int(parts[1]), int(parts[2]), int(parts[3]),
                                int(parts[4]), parts[5], tbs.get(idx, Fraction(1))))
    return frames


def _input_args(source: Source, extra_input_args: Sequence[str]) -> list[str]:
    return [*map(str, extra_input_args), "-i", str(source)]


def framemd5(source: Source, stream: str | Sequence[str] = "v:0",
             extra_input_args: Sequence[str] = (), timeout: float = 120,
             extra_output_args: Sequence[str] = (),
             video_time_base: str | None = "1:90000") -> list[FrameHash]:
    """Decode ``stream`` of ``source`` and return one :class:`FrameHash` per frame.

    ``stream`` is an ffmpeg stream specifier relative to input 0 (``"v:0"``,
    ``"a:1"``, ``"p:2:v"``...; a trailing ``?`` is allowed), or a list of them
    to decode several streams in one run (``FrameHash.stream`` is then the
    position in that list; use this to measure A/V offsets, since a
    single-stream run shifts timestamps by a start time that depends on the
    container).  Video timestamps use ``video_time_base`` (default 1/90000,
    exact for 25 and 30000/1001 fps; ``None`` = ffmpeg's default 1/fps).
    Raises :class:`FfmpegError` (with stderr tail) if ffmpeg fails.
    """
    specs = [stream] if isinstance(stream, str) else list(stream)
    maps = [a for spec in specs for a in ("-map", f"0:{spec}")]
    tb = ["-enc_time_base:v", video_time_base] if video_time_base else []
    res = run_ffmpeg(["-v", "error", *_input_args(source, extra_input_args), *maps,
                      "-fps_mode", "passthrough", *tb,
                      *map(str, extra_output_args), "-f", "framemd5", "-"],
                     timeout=timeout)
    return parse_framemd5(res.stdout)


def video_hashes(source: Source, stream: str = "v:0", **kw) -> list[str]:
    return [f.md5 for f in framemd5(source, stream, **kw)]


def audio_hashes(source: Source, stream: str = "a:0", **kw) -> list[str]:
    return [f.md5 for f in framemd5(source, stream, **kw)]


def decoded_frame_count(source: Source, stream: str = "v:0", **kw) -> int:
    return len(framemd5(source, stream, **kw))


def keyframe_times(source: Source, stream: str = "v:0", extra_input_args: Sequence[str] = (),
                   timeout: float = 120) -> list[float]:
    """Presentation times (s) of the frames the decoder treats as keyframes.

    Uses the decoder option ``-skip_frame nokey`` (H.264: IDR or recovery
    point; HEVC: IRAP), so only keyframes come out of the decoder.
    """
    frames = framemd5(source, stream, extra_input_args=["-skip_frame", "nokey",
                                                        *extra_input_args], timeout=timeout)
    return [f.pts_time for f in frames]


def decode_ok(source: Source, extra_input_args: Sequence[str] = (), *, xerror: bool = False,
              maps: Sequence[str] = ("0:v?", "0:a?"), timeout: float = 120) -> tuple[bool, str]:
    """Decode every video and audio stream to ``-f null``.

    Returns ``(ok, stderr)``; ok = exit status 0 and empty stderr at
    ``-v error``.  ``xerror=True`` makes ffmpeg stop at the first error.
    """
    args = ["-v", "error", *(["-xerror"] if xerror else []),
            *_input_args(source, extra_input_args)]
    for m in maps:
        args += ["-map", m]
    try:
        res = run_ffmpeg([*args, "-f", "null", "-"], timeout=timeout, check=False)
    except FfmpegError as exc:  # timeout
        return False, str(exc)
    stderr = res.stderr.strip()
    return res.returncode == 0 and not stderr, stderr


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    index: int
    kind: str           # "Video" | "Audio" | "Data" | "Subtitle"
    codec: str          # "h264", "aac", "hevc", "mpeg4"...
    language: str | None
    line: str           # the full "Stream #0:1..." line


_STREAM_RE = re.compile(
    r"Stream #0:(\d+)(?:\[[^\]]*\])?(?:\(([a-z]{3})\))?: (Video|Audio|Data|Subtitle|Attachment):"
    r" ([\w-]+)")


def probe_streams(source: Source, extra_input_args: Sequence[str] = (),
                  timeout: float = 60) -> list[StreamInfo]:
    """Streams of input 0 as printed by ``ffmpeg -i`` (ffprobe substitute).

    Raises :class:`FfmpegError` if ffmpeg could not open the input.
    """
    res = run_ffmpeg([*_input_args(source, extra_input_args)], timeout=timeout, check=False)
    streams = [StreamInfo(int(m[1]), m[3], m[4], m[2], m[0])
               for m in _STREAM_RE.finditer(res.stderr)]
    if not streams and "Input #0" not in res.stderr:
        raise FfmpegError(res.args, res.returncode, res.stderr,
                          note=f"ffmpeg could not open {source}")
    return streams


# --------------------------------------------------------------------------- audio matching

@dataclasses.dataclass(frozen=True)
class AudioMatch:
    ok: bool
    leading: int = 0       # extra frames at the start of the HLS list (AAC priming)
    trailing: int = 0      # extra frames at the end of the HLS list
    compared: int = 0      # frames whose hashes were compared
    tail_trimmed: bool = False  # source's last frame was shorter (edit list end) and skipped
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def _norm(frames: Sequence[FrameHash | str]) -> list[tuple[str, int | None]]:
    return [(f, None) if isinstance(f, str) else (f.md5, f.size) for f in frames]


def audio_hashes_match(source_hashes: Sequence[FrameHash | str],
                       hls_hashes: Sequence[FrameHash | str], *, max_leading: int = 1,
                       max_trailing: int = 1) -> AudioMatch:
    """Do decoded HLS audio frames equal the source's, modulo AAC priming?

    Accepts :class:`FrameHash` lists (preferred: sizes make the end-trim
    check exact) or md5 lists (then a differing last source frame is assumed
    to be end-trimmed).  See the module docstring for the rule.
    """
    src, hls = _norm(source_hashes), _norm(hls_hashes)
    if not src:
        return AudioMatch(False, reason="source has no audio frames")
    first_failure = ""
    for lead in range(0, max_leading + 1):
        cand = hls[lead:]
        body = len(src) - 1
        if len(cand) < len(src):
            first_failure = first_failure or (
                f"HLS has {len(hls)} frames, source {len(src)} (lead {lead})")
            continue
        mismatch = next((i for i in range(body) if src[i][0] != cand[i][0]), None)
        if mismatch is not None:
            first_failure = first_failure or (
                f"with {lead} leading frame(s): first mismatch at source frame {mismatch}")
            continue
        (s_md5, s_size), (h_md5, h_size) = src[-1], cand[body]
        trimmed = False
        if s_md5 != h_md5:
            if s_size is not None and h_size is not None and s_size >= h_size:
                first_failure = first_failure or (
                    f"with {lead} leading frame(s): last frame differs and is not shorter")
                continue
            trimmed = True
        trailing = len(cand) - len(src)
        if trailing > max_trailing:
            first_failure = first_failure or (
                f"with {lead} leading frame(s): {trailing} extra trailing frames")
            continue
        return AudioMatch(True, lead, trailing, body + (0 if trimmed else 1), trimmed)
    return AudioMatch(False, reason=first_failure)


def _selftest() -> None:  # pragma: no cover - manual use
    for f in framemd5(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "v:0")[:5]:
        print(f)


if __name__ == "__main__":  # pragma: no cover
    _selftest()
