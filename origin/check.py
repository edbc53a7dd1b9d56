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
    duration: Fraction | None = None  # seconds, when the file parsed (ladder_warnings compares rungs)

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
    report.duration = Fraction(index.duration_seconds)
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
    reports = [check_file(path, target, follow_symlinks) for path in library_files(root)]
    ladder_warnings(reports)
    return sorted(reports + misplaced_files(root, follow_symlinks), key=lambda r: r.path)


# Rungs of one entry may differ by a frame or an audio packet; past this a player on the short rung stops early.
RUNG_DURATION_TOLERANCE = Fraction(1, 2)


def ladder_warnings(reports: list[FileReport]) -> None:
    """Warn on each flavor of an entry that ends more than RUNG_DURATION_TOLERANCE before the entry's longest:
    the master lists every rung, and a player that switches to a short one reaches its end early."""
    by_entry: dict[Path, list[FileReport]] = {}
    for report in reports:
        if report.duration is not None and not report.errors:  # a rung the server serves
            by_entry.setdefault(report.path.parent, []).append(report)
    for rungs in by_entry.values():
        longest = max(rungs, key=lambda r: r.duration)
        for rung in rungs:
            gap = longest.duration - rung.duration
            if gap > RUNG_DURATION_TOLERANCE:
                rung.warnings.append(
                    f"ladder rungs differ in duration: {rung.path.name} lasts {float(rung.duration):.2f}s, "
                    f"{longest.path.name} {float(longest.duration):.2f}s: its playlists end {float(gap):.2f}s early, so a "
                    f"player on this rung stops or stalls there; encode every rung of an entry from the same source and cut"
                )


# Files a library may hold by mistake: MP4-family and other audio/video containers (compared in lower case).
MEDIA_SUFFIXES = frozenset({".mp4", ".m4a", ".m4v", ".mov", ".3gp", ".mkv", ".webm", ".ts", ".m2ts", ".mp3", ".aac", ".flv", ".avi"})


def misplaced_files(root: Path, follow_symlinks: bool = True) -> list[FileReport]:
    """A warning for each media file the server never serves: anywhere but ROOT/<partner>/<entry>/, or in an
    entry folder but not named <flavor>.mp4 (``x.m4a``, ``x.MP4``, ``x.mov``). Names starting with a dot are skipped.

    Folder links are followed as the server follows them (``follow_symlinks``), each folder read once: a link
    back up the tree (``loop -> ..``) would list its files again under every name it gives them."""
    found: list[FileReport] = []
    seen: set[tuple[int, int]] = set()

    def visit(folder: Path, depth: int) -> None:  # depth 0 = ROOT, 2 = an entry folder; at most 4 levels read
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            children = sorted(folder.iterdir())
        except OSError:
            return
        for child in children:
            if child.name.startswith("."):
                continue
            if child.is_dir():
                if depth < 3 and (follow_symlinks or not child.is_symlink()):
                    visit(child, depth + 1)
                continue
            if child.suffix.lower() not in MEDIA_SUFFIXES or (depth == 2 and child.suffix == ".mp4"):
                continue
            report = FileReport(child, summary="not served")
            report.warnings.append(_misplaced_reason(child, depth))
            found.append(report)

    visit(root, 0)
    return found


def _misplaced_reason(path: Path, depth: int) -> str:
    if depth != 2:
        where = {0: "the library's top folder", 1: "a partner folder"}.get(depth, "a folder inside an entry")
        return (f"{path.name} is in {where}: the server serves only <partner>/<entry>/<flavor>.mp4; "
                f"move it into an entry folder")
    if path.suffix.lower() == ".mp4":
        return f"{path.name}: flavors end in .mp4 in lower case; rename it {path.stem}.mp4"
    if path.suffix.lower() in (".m4a", ".m4v"):
        return (f"{path.name}: the server serves only <flavor>.mp4 files; an {path.suffix.lower()} is an MP4 file: "
                f"rename it {path.stem}.mp4 to serve it as a flavor of this entry")
    return (f"{path.name}: the server serves only MP4 flavors (<flavor>.mp4); remux it "
            f"(ffmpeg -i {path.name} -c copy {path.stem}.mp4) if its codecs are H.264/HEVC and AAC/AC-3/E-AC-3/MP3/Opus")
