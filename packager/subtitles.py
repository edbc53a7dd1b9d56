"""Subtitles: sidecar WebVTT or SRT files read into cues, written out again as segmented WebVTT for HLS.

Reading is lenient where players are (a BOM, CRLF, cue identifiers, NOTE/STYLE/REGION blocks, SRT's comma
before milliseconds) and strict where a mistake would show (a timing line that does not parse, an end before
its start): :class:`MalformedSubtitles` names the line. Times are exact (Fraction seconds, milliseconds as
written).

A segment (RFC 8216 3.5) holds every cue that overlaps its time, with the cue's own times (a cue across a
boundary is in both segments: players drop the repeat), behind an ``X-TIMESTAMP-MAP`` header that ties
WebVTT time 0 to the media's timestamp of presentation time 0 (``mpegts``: 90 kHz), so players place cues
against the audio and video they play. Pure and synchronous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from .errors import MediaError

MAX_BYTES = 4 * 2**20  # a two-hour film's subtitles are ~100 KB; more is not a subtitle file
_TIME = r"(?:(\d{1,3}):)?(\d{2}):(\d{2})[.,](\d{3})"
_ARROW = re.compile(r"-{2,}>")
_TIMING = re.compile(rf"\s*{_TIME}\s+-->\s+{_TIME}(?P<settings>(?:\s+\S+)*)\s*")


class MalformedSubtitles(MediaError):
    code = "malformed_subtitles"


@dataclass(frozen=True)
class Cue:
    start: Fraction  # seconds
    end: Fraction
    text: str  # the payload lines, "\n"-joined (WebVTT markup kept as written)
    settings: str = ""  # WebVTT cue settings ("line:90% align:start"), "" for SRT


def parse_subtitles(data: bytes, fmt: str) -> tuple[Cue, ...]:
    """The cues of a ``"vtt"`` or ``"srt"`` file, in file order."""
    if len(data) > MAX_BYTES:
        raise MalformedSubtitles(f"{len(data)} bytes: a subtitle file of over {MAX_BYTES} bytes is not read")
    try:
        text = data.decode("utf-8-sig").replace("\x00", "\ufffd")  # WebVTT reads NUL as U+FFFD; a NUL would cut cues
    except UnicodeDecodeError as exc:
        raise MalformedSubtitles(f"not UTF-8 (byte {exc.start})") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if fmt == "vtt":
        if not re.fullmatch(r"WEBVTT(?:[ \t].*)?", lines[0]):
            raise MalformedSubtitles('a WebVTT file starts with "WEBVTT" on its first line')
        lines = lines[1:]
    blocks = _blocks(lines)
    return tuple(cue for number, block in blocks if (cue := _cue(block, number, fmt)) is not None)


def _blocks(lines: list[str]) -> list[tuple[int, list[str]]]:
    """Blank-line separated blocks, each with its first line's number (1-based, for messages)."""
    blocks, current, start = [], [], 0
    for i, line in enumerate(lines, start=2):
        if line.strip():
            if not current:
                start = i
            current.append(line)
        elif current:
            blocks.append((start, current))
            current = []
    if current:
        blocks.append((start, current))
    return blocks


def _cue(block: list[str], number: int, fmt: str) -> Cue | None:
    if fmt == "vtt" and re.match(r"(NOTE|STYLE|REGION)(?:\s|$)", block[0]):
        return None  # comments and style blocks: not cues
    if fmt == "srt" and len(block) == 1 and block[0].strip().isdigit():
        return None  # an index with no cue after it (a file cut after "N"): nothing to show, nothing wrong
    at = 0 if "-->" in block[0] else 1  # a cue identifier (WebVTT) or index (SRT) before the timing line
    if at >= len(block):
        raise MalformedSubtitles(f"line {number}: a block without a timing line ({block[0][:40]!r})")
    timing = _TIMING.fullmatch(block[at])
    if timing is None:
        raise MalformedSubtitles(f"line {number + at}: not a cue timing line ({block[at][:60]!r})")
    groups = timing.groups()
    start, end = _seconds(groups[0:4]), _seconds(groups[4:8])
    if end <= start:
        raise MalformedSubtitles(f"line {number + at}: the cue ends at or before it starts")
    settings = (timing["settings"] or "").strip() if fmt == "vtt" else ""
    return Cue(start, end, "\n".join(block[at + 1 :]), settings)


def _seconds(parts: Sequence[str | None]) -> Fraction:
    hours, minutes, seconds, ms = (int(p) if p else 0 for p in parts)
    if minutes > 59 or seconds > 59:
        raise MalformedSubtitles(f"{minutes:02d}:{seconds:02d}: minutes and seconds run to 59")
    return Fraction(((hours * 60 + minutes) * 60 + seconds) * 1000 + ms, 1000)


def webvtt_segment(cues: Sequence[Cue], start: Fraction, end: Fraction, mpegts: int | None, limit: Fraction | None = None) -> str:
    """The WebVTT segment of [start, end): the cues overlapping it (a cue past ``limit``, a preview's end, cut
    there or left out), behind an X-TIMESTAMP-MAP of WebVTT time 0 to ``mpegts`` (None: no map, a whole file
    whose times are the presentation's, as DASH reads it)."""
    lines = ["WEBVTT"] + ([f"X-TIMESTAMP-MAP=MPEGTS:{mpegts},LOCAL:00:00:00.000"] if mpegts is not None else []) + [""]
    for cue in cues:
        cue_end = cue.end if limit is None else min(cue.end, limit)
        if cue.start < end and cue_end > start and cue.start < cue_end:
            timing = f"{_timestamp(cue.start)} --> {_timestamp(cue_end)}" + (f" {cue.settings}" if cue.settings else "")
            lines += [timing, *_payload(cue.text), ""]
    return "\n".join(lines)


def _payload(text: str) -> list[str]:
    # a payload line may not hold "-->" (any run of dashes before ">" would still hold one) nor be blank (it would end
    # the cue): keep the cue, drop what cannot stand
    return [_ARROW.sub("->", line) for line in text.split("\n") if line.strip()] or [" "]


def _timestamp(seconds: Fraction) -> str:
    ms = int(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"
