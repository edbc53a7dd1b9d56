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
        head = re.match(r"^(OK|WARN|FAIL)\s+(\S+)", line)
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


def _link(target: Path, fixture: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(mf.fixture_path(fixture))


def test_media_files_the_server_would_not_serve_are_warned(tmp_path):
    """Each file of a media kind that is not ROOT/<partner>/<entry>/<flavor>.mp4 is listed with what to do."""
    _link(tmp_path / "demo" / "ladder" / "hi.mp4", "ladder_hi")
    _link(tmp_path / "demo" / "loose.mp4", "h264_baseline")  # a partner folder
    _link(tmp_path / "top.mp4", "h264_baseline")  # the library's top folder
    _link(tmp_path / "demo" / "ladder" / "audio.m4a", "audio_only")
    _link(tmp_path / "demo" / "ladder" / "LO.MP4", "ladder_lo")
    _link(tmp_path / "demo" / "ladder" / "old" / "mid.mp4", "ladder_mid")  # a folder inside an entry
    _link(tmp_path / "demo" / "ladder" / "master.mov", "h264_baseline")
    (tmp_path / "demo" / "ladder" / "notes.txt").write_text("not media: not listed")
    proc = run_check(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # warnings, nothing unplayable
    files = parse_report(proc.stdout)
    expected = {
        "demo/loose.mp4": "loose.mp4 is in a partner folder: the server serves only <partner>/<entry>/<flavor>.mp4; "
                          "move it into an entry folder",
        "top.mp4": "top.mp4 is in the library's top folder: the server serves only <partner>/<entry>/<flavor>.mp4; "
                   "move it into an entry folder",
        "demo/ladder/old/mid.mp4": "mid.mp4 is in a folder inside an entry: the server serves only "
                                   "<partner>/<entry>/<flavor>.mp4; move it into an entry folder",
        "demo/ladder/audio.m4a": "audio.m4a: the server serves only <flavor>.mp4 files; an .m4a is an MP4 file: "
                                 "rename it audio.mp4 to serve it as a flavor of this entry",
        "demo/ladder/LO.MP4": "LO.MP4: flavors end in .mp4 in lower case; rename it LO.mp4",
        "demo/ladder/master.mov": "master.mov: the server serves only MP4 flavors (<flavor>.mp4); remux it "
                                  "(ffmpeg -i master.mov -c copy master.mp4) if its codecs are H.264/HEVC and AAC/AC-3/E-AC-3/MP3/Opus",
    }
    assert set(files) == {"demo/ladder/hi.mp4", *expected}, proc.stdout
    assert files["demo/ladder/hi.mp4"] == ("OK", [])
    for name, warning in expected.items():
        assert files[name] == ("WARN", [f"warning: {warning}"]), (name, files[name])
    assert re.search(rf"^WARN\s+{re.escape('demo/loose.mp4')}\s+not served$", proc.stdout, re.MULTILINE), proc.stdout
    assert "7 files: 1 ok, 6 with warnings, 0 unplayable" in proc.stdout


def test_ladder_rungs_of_different_durations_are_warned(tmp_path):
    """An entry's flavors should last as long as each other: the 8 s rung of a 12 s entry is warned, the rest pass."""
    for flavor, name in LADDER.items():  # same source, cut alike: 12 s each
        _link(tmp_path / "demo" / "ladder" / f"{flavor}.mp4", name)
    _link(tmp_path / "demo" / "uneven" / "hi.mp4", "ladder_hi")  # 12 s
    _link(tmp_path / "demo" / "uneven" / "lo.mp4", "h264_baseline")  # 8 s
    proc = run_check(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = parse_report(proc.stdout)
    assert {name: status for name, (status, _) in files.items()} == {
        **{f"demo/ladder/{flavor}.mp4": "OK" for flavor in LADDER},
        "demo/uneven/hi.mp4": "OK",
        "demo/uneven/lo.mp4": "WARN",
    }
    assert files["demo/uneven/lo.mp4"][1] == [
        "warning: ladder rungs differ in duration: lo.mp4 lasts 8.00s, hi.mp4 12.00s: its playlists end 4.00s early, "
        "so a player on this rung stops or stalls there; encode every rung of an entry from the same source and cut"
    ]
