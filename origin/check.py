"""`vodgate check DIR`: can every flavor in a library be played, and how well?

Runs the same packager steps as the server (index, media set, segment plan)
synchronously and reports, per file, failures (cannot be packaged) and
warnings (packaged, but something an operator should fix at the encoder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

from packager.errors import MediaError
from packager.media_set import build_media_set
from packager.segmenter import target_duration

from .catalog import valid_id
from .local import read_index_sync


@dataclass
class FileReport:
    path: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def status(self) -> str:
        return "FAIL" if self.errors else ("WARN" if self.warnings else "OK")


def library_files(root: Path) -> Iterator[Path]:
    """Every DIR/<partner>/<entry>/<flavor>.mp4, in name order."""
    for path in sorted(root.glob("*/*/*.mp4")):
        yield path


def symlinks(path: Path) -> list[str]:
    """What the server would have to follow to reach flavor ``path`` (ROOT/<partner>/<entry>/<flavor>.mp4)."""
    kinds = (("partner folder", path.parent.parent), ("entry folder", path.parent), ("flavor file", path))
    return [f"{kind} {p.name} is a symbolic link" for kind, p in kinds if p.is_symlink()]


def check_file(path: Path, target: Fraction, follow_symlinks: bool = True) -> FileReport:
    report = FileReport(path)
    partner, entry, flavor = path.parts[-3], path.parts[-2], path.stem
    for kind, value in (("partner", partner), ("entry", entry), ("flavor", flavor)):
        if not valid_id(value):
            report.errors.append(f"{kind} id {value!r} is not servable: use letters, digits, '-' and '_' (max 64)")
    if not follow_symlinks:
        for link in symlinks(path):
            report.errors.append(f"{link} and [server] follow_symlinks = false: the server answers 404 symlink_not_followed")
    try:
        index = read_index_sync(path)
        media_set = build_media_set([(flavor, index)], target)
    except MediaError as exc:
        report.errors.append(f"{exc.code}: {exc}")
        return report
    except OSError as exc:
        report.errors.append(f"cannot read: {exc.strerror}")
        return report
    parts = [f"{t.kind} {t.codec_string}" + (f" {t.video.width}x{t.video.height}" if t.video else f" {t.language}") for t in index.tracks]
    report.summary = f"{float(index.duration_seconds):.2f}s, " + ", ".join(parts)
    for skipped in index.skipped:
        report.warnings.append(f"{path.name}: {skipped.describe()}; the rest of the file plays")
    for rendition in media_set.videos:
        track = rendition.track
        if not bool(track.keyframes[0]):
            report.warnings.append("the first video frame is not a keyframe: the first segment will not decode cleanly")
        longest = max(rendition.segments, key=lambda s: s.duration)
        gop = longest_gop(track)
        # a GOP that rounds past the target forces a longer EXT-X-TARGETDURATION on its own
        if gop >= target + Fraction(1, 2) or longest.duration > target * Fraction(3, 2):
            report.warnings.append(
                f"GOP of {float(gop):.2f}s against a {float(target):g}s segment target: segment {longest.number} lasts "
                f"{float(longest.duration):.2f}s (EXT-X-TARGETDURATION {target_duration(rendition.segments)}); "
                f"encode with a keyframe at least every {float(target):g}s"
            )
    return report


def longest_gop(track) -> Fraction:
    """Longest time between keyframes (the last GOP runs to the end of the track), in seconds."""
    key_pts = sorted(int(p) for p in track.pts[track.keyframes])
    if not key_pts:
        return track.duration_seconds
    edges = key_pts + [max(track.end_time, key_pts[-1])]
    return Fraction(max(b - a for a, b in zip(edges, edges[1:])), track.timescale)


def check_library(root: Path, target: Fraction, follow_symlinks: bool = True) -> list[FileReport]:
    return [check_file(path, target, follow_symlinks) for path in library_files(root)]
