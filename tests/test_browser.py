"""Real-browser playback: Debian's Chromium, headless, with hls.js and shaka-player.

Each case plays an entry of the fixture library from a real `vodgate serve` (tests/conftest.py
``server``) to the end at 4x, muted, and fails on any player error (fatal or not), any stall
(a ``waiting`` event after playback started, shaka's ``buffering``, or no progress for 3 s),
a playback that does not reach ``ended`` within 20 s, fewer decoded video frames
(``getVideoPlaybackQuality().totalVideoFrames``) than the source has, buffered media that starts
elsewhere than the source's video or has a hole. One kind of wait is only noted: with the media
buffered around the playhead (0.5 s behind, 1 s ahead), a ``waiting`` or hls.js ``bufferStalledError``
means the decoder fell behind the 4x clock on a busy machine, not that anything was missing.

Cases with a known packager finding carry ``xfail(strict=True, raises=KnownPlayerProblem)``: they
raise KnownPlayerProblem only when every problem seen is one of the case's known ones (and the
deterministic one, where the buffered media starts, is among them); anything else fails, and so
does a case whose finding is gone (remove its mark then).

The players are the versions pinned in tests/browser/package-lock.json, installed by ``make test``
(``npm ci``) into tests/browser/node_modules; the page (tests/browser/harness.html) is served by a
static server on 127.0.0.1, the media by vodgate (CORS ``*``). Chromium is driven by the
``playwright`` Python package with ``executable_path`` set to the system's Chromium; no browser is
ever downloaded. Without Chromium, the players or playwright the tests skip and say why;
VODGATE_REQUIRE_SERVICES=1 (CI) turns that into a failure.
"""
from __future__ import annotations

import functools
import http.server
import fnmatch
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

import media_fixtures

HARNESS_DIR = Path(__file__).resolve().parent / "browser"
PLAYERS = {"hls.js": "hls.js", "shaka": "shaka-player"}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
    "--disable-gpu",
    "--no-first-run",
    # the machine's network is closed: no background calls home
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
RATE = 4
PLAY_TIMEOUT_MS = 20_000


def _services_required() -> bool:
    return os.environ.get("VODGATE_REQUIRE_SERVICES") == "1"


def _missing(reason: str):
    if _services_required():
        pytest.fail(f"{reason} (VODGATE_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def _chromium_exe() -> str | None:
    """$VODGATE_CHROMIUM (another Chromium or Chrome binary), else the system's Chromium."""
    if "VODGATE_CHROMIUM" in os.environ:
        exe = os.environ["VODGATE_CHROMIUM"]
        return exe if os.path.exists(exe) else None
    for name in ("chromium", "chromium-browser"):
        exe = shutil.which(name)
        if exe:
            return exe
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def _missing_players() -> list[str]:
    return [pkg for pkg in PLAYERS.values() if not (HARNESS_DIR / "node_modules" / pkg / "package.json").exists()]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def harness_url():
    """tests/browser/ (harness page + node_modules) over HTTP on 127.0.0.1."""
    missing = _missing_players()
    if missing:
        _missing(f"players not installed in tests/browser/node_modules ({', '.join(missing)}): "
                 "run `make test` with npm available (it runs `npm ci` in tests/browser)")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(HARNESS_DIR)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/harness.html"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    exe = _chromium_exe()
    if exe is None:
        _missing("chromium is not installed (apt-get install chromium; or set VODGATE_CHROMIUM): "
                 "real-browser playback not tested")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is missing (pip install -e '.[test]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass(frozen=True)
class Case:
    player: str         # "hls.js" | "shaka"
    path: str           # master playlist path on the server
    fixture: str        # media_fixtures name giving the source's frame count
    second_audio: bool = False  # play the second audio language (selected before playback)
    # Known problems (fnmatch patterns over problem keys, see _problems): when every problem the
    # case shows matches one, it raises KnownPlayerProblem, which its xfail(strict) mark expects;
    # the first pattern is the deterministic one (where the buffered media starts) that must show.
    known: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.player}-{self.path.split('/')[4]}-{self.path.split('/')[5]}"


class KnownPlayerProblem(AssertionError):
    """Playback showed exactly a case's known problems (and nothing else)."""


# Findings, measured against this packager's output:
TS_START = (
    "packager finding (TS): every TS video rendition starts 0.08 s late in the browser: the first video PES "
    "has DTS 9.92 s and PTS 10.00 s (two B-frames of composition delay), the audio rendition's first ADTS "
    "frame PTS 9.9787 s (AAC priming). hls.js 1.7.4 and shaka 5.2.12 map the first DTS to 0, so nothing is "
    "buffered before 0.08 s; hls.js reports a non-fatal mediaError bufferSeekOverHole on seg-1.ts "
    "('seeking from 0 to 0.18'), shaka sometimes stalls at 0.081 s")
TS_AUDIO_NO_PROGRESS = (
    "packager finding (TS audio): hls.js 1.7.4 reports a non-fatal mediaError bufferAppendNoProgress "
    "('Fragment append did not increase buffered coverage (1)') on the audio rendition's seg-1.ts "
    "(a1/ or a2/) of the single-flavor entries two_languages and edit_list (not on the ladder)")
EDIT_LIST_START = (
    "packager finding (edit_list, video behind a 0.6 s empty edit): the video rendition's seg-1 starts at DTS "
    "0.52 s / PTS 0.60 s (fMP4 tfdt 0.52 s; TS 10.52/10.60 s) while its playlist places it at 0 (EXTINF 4.6); "
    "hls.js 1.7.4 maps the first DTS to 0, so the video plays from 0.08 s instead of 0.60 s (0.52 s early "
    "against the audio), the presentation ends at 6.08 s instead of 6.6 s, and hls.js sometimes reports a "
    "non-fatal bufferSeekOverHole on seg-1 (seeking from 0 to 0.18)")
CMAF_EDIT_LIST_HOLE = (
    "packager finding (edit_list, fMP4): video seg-1 tfdt 0.52 s at playlist time 0, seg-2 tfdt 4.52 s at "
    "playlist time 4.6 (EXTINF 4.6 + 2.0); shaka-player 5.2.12 maps each segment's tfdt to its playlist start, "
    "so it buffers video [0.081, 4.081] and [4.68, 6.68]: 0.52 s early, a 0.6 s hole with a stall at 4.68 s, "
    "and a duration of 6.68 s instead of 6.6 s; across the hole shaka sometimes decodes fewer frames (146 of 150 seen)")


def _xfail(reason: str):
    return pytest.mark.xfail(strict=True, raises=KnownPlayerProblem, reason=reason)


HLSJS_TS = ("start@0.08", "error:bufferSeekOverHole", "error:bufferAppendNoProgress")
CASES = [
    pytest.param(c, id=c.id, marks=[_xfail("; ".join(reasons))] if reasons else [])
    for c, reasons in [
        (Case("hls.js", "/p/demo/e/ladder/hls/master.m3u8", "ladder_hi", known=HLSJS_TS), [TS_START]),
        (Case("hls.js", "/p/demo/e/ladder/cmaf/master.m3u8", "ladder_hi"), []),
        (Case("shaka", "/p/demo/e/ladder/cmaf/master.m3u8", "ladder_hi"), []),
        (Case("shaka", "/p/demo/e/ladder/hls/master.m3u8", "ladder_hi", known=("start@0.08", "stall:*@0.08")),
         [TS_START]),
        (Case("hls.js", "/p/demo/e/two_languages/hls/master.m3u8", "two_languages", second_audio=True,
              known=HLSJS_TS), [TS_START, TS_AUDIO_NO_PROGRESS]),
        (Case("hls.js", "/p/demo/e/two_languages/cmaf/master.m3u8", "two_languages", second_audio=True), []),
        (Case("shaka", "/p/demo/e/two_languages/cmaf/master.m3u8", "two_languages", second_audio=True), []),
        (Case("hls.js", "/p/demo/e/edit_list/hls/master.m3u8", "edit_list", known=HLSJS_TS),
         [EDIT_LIST_START, TS_AUDIO_NO_PROGRESS]),
        (Case("hls.js", "/p/demo/e/edit_list/cmaf/master.m3u8", "edit_list",
              known=("start@0.08", "error:bufferSeekOverHole")),
         [EDIT_LIST_START]),
        (Case("shaka", "/p/demo/e/edit_list/cmaf/master.m3u8", "edit_list",
              known=("start@0.08", "hole:4.08-4.68", "stall:*@4.68", "stall:*@0.08", "frames")),
         [CMAF_EDIT_LIST_HOLE]),
    ]
]


def _decoder_underrun(t: float, buffered: list[list[float]], duration: float) -> bool:
    """A wait with the media there: the playhead inside one buffered range that reaches at least 1 s
    ahead (or to the end) and began at least 0.5 s before (or is the first range, at start-up).
    The decoder fell behind the 4x clock on a busy machine; no media was missing."""
    for i, (a, b) in enumerate(buffered):
        ahead = b >= t + 1 or b >= duration - 0.05
        behind = a <= t - 0.5 or (i == 0 and a <= t + 0.01 and t - a < 0.25)
        if ahead and behind:
            return True
    return False


def _problems(case: Case, r: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """(key, description) of every problem, and notes (decoder underruns, not failures)."""
    expect = media_fixtures.FIXTURES[case.fixture].expect
    problems, notes = [], []
    duration = r["duration"] or float("inf")
    for e in r["errors"]:
        what = e.get("details") or e.get("code") or e.get("message")
        if what == "bufferStalledError" and _decoder_underrun(e["t"], e.get("buffered") or [], duration):
            notes.append(f"decoder underrun (not counted): {json.dumps(e)}")
            continue
        problems.append((f"error:{what}", f"player error ({'fatal' if e.get('fatal') else 'non-fatal'}): {json.dumps(e)}"))
    for s in r["stalls"]:
        if s["kind"] != "no-progress" and _decoder_underrun(s["t"], s["buffered"], duration):
            notes.append(f"decoder underrun (not counted): {json.dumps(s)}")
        else:
            problems.append((f"stall:{s['kind']}@{s['t']:.2f}", f"stall: {json.dumps(s)}"))
    if r["timedOut"]:
        problems.append(("timeout", f"did not reach the end within {PLAY_TIMEOUT_MS / 1000:.0f} s "
                                    f"(currentTime {r['currentTime']}, duration {r['duration']})"))
    elif not r["ended"]:
        problems.append(("not-ended", f"stopped before the end (currentTime {r['currentTime']}, duration {r['duration']})"))
    if r["totalVideoFrames"] is None or r["totalVideoFrames"] < expect.video_frames:
        problems.append(("frames", f"decoded {r['totalVideoFrames']} video frames, the source has {expect.video_frames}"))
    ranges = r["buffered"]
    if ranges and abs(ranges[0][0] - expect.video_start) > 0.05:
        problems.append((f"start@{ranges[0][0]:.2f}", f"the media starts at {ranges[0][0]:.3f} s, "
                                                       f"the source's video at {expect.video_start:.3f} s"))
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        problems.append((f"hole:{end:.2f}-{start:.2f}", f"a hole in the buffered media from {end:.3f} s to {start:.3f} s"))
    if case.second_audio and not r["audioSwitched"]:
        problems.append(("audio", f"could not select the second audio language (tracks: {r['audioTracks']})"))
    return problems, notes


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", CASES)
def test_plays_to_the_end_without_errors(case: Case, browser, harness_url, server) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(PLAY_TIMEOUT_MS + 10_000)
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.goto(harness_url)
        report = page.evaluate(
            "opts => window.runPlayback(opts)",
            {"player": case.player, "url": server.base + case.path, "rate": RATE,
             "secondAudio": case.second_audio, "timeoutMs": PLAY_TIMEOUT_MS},
        )
    finally:
        context.close()
    problems, notes = _problems(case, report)
    problems += [("page", f"page {line}") for line in console if line.startswith("pageerror")]
    if not problems:
        if case.known:
            pytest.fail(f"{case.id}: the known problems {case.known} are gone: remove the case's xfail", pytrace=False)
        return
    summary = {k: report[k] for k in ("version", "duration", "currentTime", "ended", "elapsed",
                                      "totalVideoFrames", "droppedVideoFrames", "buffered",
                                      "audioTracks", "audioSwitched")}
    text = (f"{case.player} playing {case.path} at {RATE}x:\n  " + "\n  ".join(d for _, d in problems)
            + "".join(f"\n  {n}" for n in notes)
            + f"\nsummary: {json.dumps(summary)}\nevents: {json.dumps(report['events'])}"
            + ("\nconsole:\n  " + "\n  ".join(console[:20]) if console else ""))
    keys = {k for k, _ in problems}
    unexplained = {k for k in keys if not any(fnmatch.fnmatchcase(k, pat) for pat in case.known)}
    if case.known and not unexplained and any(fnmatch.fnmatchcase(k, case.known[0]) for k in keys):
        raise KnownPlayerProblem(text)
    pytest.fail(text, pytrace=False)
