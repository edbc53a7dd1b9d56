"""`vodgate check DIR` (run as ``python -m cli.main check DIR``): which files can't play, and why."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import media_fixtures as mf
from media_fixtures import ALL_BAD, ALL_GOOD, LADDER

REPO = Path(__file__).resolve().parent.parent

# the error code each bad file must be reported with
REASONS = {
    "truncated": ("truncated_media", "malformed_media"),
    "corrupt": ("truncated_media", "malformed_media"),
    "text_as_mp4": ("malformed_media",),
    "empty": ("malformed_media",),
    "unsupported_codec": ("unsupported_media",),
}
assert set(REASONS) == set(ALL_BAD)
LONG_GOP = {"irregular_gop"}  # last GOP 7.88 s > the default 6 s target


def run_check(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "check", str(folder), *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def parse_report(stdout: str) -> dict[str, tuple[str, list[str]]]:
    """``relative path -> (status, the indented detail lines under it)``."""
    files: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in stdout.splitlines():
        head = re.match(r"^(OK|WARN|FAIL)\s+(\S+\.mp4)\b", line)
        if head:
            current = head[2]
            files[current] = (head[1], [])
        elif line.startswith(" ") and current:
            files[current][1].append(line.strip())
        else:
            current = None
    return files


@pytest.fixture(scope="module")
def library_report(media_library):
    proc = run_check(media_library)
    return proc, parse_report(proc.stdout)


def test_every_file_is_listed(library_report, media_library):
    _, files = library_report
    on_disk = {str(p.relative_to(media_library)) for p in media_library.glob("*/*/*.mp4")}
    assert set(files) == on_disk


@pytest.mark.parametrize("name", ALL_BAD)
def test_bad_files_fail_with_their_reason(name, library_report):
    _, files = library_report
    status, details = files[f"bad/{name}/main.mp4"]
    assert status == "FAIL"
    errors = [d for d in details if d.startswith("error:")]
    assert errors, details
    assert any(any(code in e for code in REASONS[name]) for e in errors), errors


@pytest.mark.parametrize("name", ALL_GOOD)
def test_good_files_pass(name, library_report):
    _, files = library_report
    status, details = files[f"demo/{name}/main.mp4"]
    assert status == ("WARN" if name in LONG_GOP else "OK"), details
    assert not [d for d in details if d.startswith("error:")]


def test_ladder_flavors_pass(library_report):
    _, files = library_report
    for flavor in LADDER:
        assert files[f"demo/ladder/{flavor}.mp4"][0] == "OK"


def test_long_gop_is_warned(library_report):
    _, files = library_report
    status, details = files["demo/irregular_gop/main.mp4"]
    assert status == "WARN"
    warnings = [d for d in details if d.startswith("warning:")]
    assert any("GOP" in w and "keyframe" in w for w in warnings), details


def test_exit_status_and_summary(library_report):
    proc, files = library_report
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fail = sum(s == "FAIL" for s, _ in files.values())
    warn = sum(s == "WARN" for s, _ in files.values())
    ok = sum(s == "OK" for s, _ in files.values())
    assert {path for path, (s, _) in files.items() if s == "FAIL"} == {f"bad/{n}/main.mp4" for n in ALL_BAD}
    assert f"{len(files)} files: {ok} ok, {warn} with warnings, {fail} unplayable" in proc.stdout


def test_only_good_files_exit_0(tmp_path):
    for name in ALL_GOOD:
        target = tmp_path / "demo" / name / "main.mp4"
        target.parent.mkdir(parents=True)
        target.symlink_to(mf.fixture_path(name))
    proc = run_check(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = parse_report(proc.stdout)
    assert len(files) == len(ALL_GOOD)
    assert {s for s, _ in files.values()} <= {"OK", "WARN"}
    assert "0 unplayable" in proc.stdout


def test_not_a_folder(tmp_path):
    proc = run_check(tmp_path / "missing")
    assert proc.returncode == 2
    assert "not a folder" in proc.stderr
