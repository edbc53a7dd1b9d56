"""Attacks on thumbnails, sprites and thumbs.vtt (docs/URLS.md, "Thumbnails"). Real servers, real ffmpeg.

Each test passes when vodgate is right. Five were findings when written, now fixed: an edge dropped a viewer's
playSessionId from thumbs.vtt, a cut file's pre-roll keyframe became a thumbnail, a short preview got the first
picture presented after its end, the ffmpeg bound held per worker process, and every ms of one keyframe was its
own decode and cache entry."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

import media_fixtures as mf
from auth.tokens import sign_native
from conftest import ServerProcess
from origin import local
from test_thumbnails import cues, reference

TOKEN_KEY = "00112233445566778899aabbccddeeff"
EDGE_SECRET = "thumb-attack-edge-secret-0123456789"
SECRET = "aa" * 32

ENTRIES = {  # entry -> {flavor: fixture}
    "ladder": {"hi": "ladder_hi", "lo": "ladder_lo"},
    "trimmed": {"main": "start_trimmed"}, "edits": {"main": "edit_list"}, "opengop": {"main": "open_gop"},
    "irregular": {"main": "irregular_gop"}, "hevc": {"main": "hevc"}, "bframes": {"main": "h264_high_bframes"},
    "corrupt": {"main": "corrupt"}, "truncated": {"main": "truncated"},
}

PARTNERS = (
    f'[partners.prev]\ntoken_keys = {{ k1 = "{TOKEN_KEY}" }}\ndefault_profile = "p"\n'
    '[partners.prev.profiles.p]\nrules = [ { unless = { authenticated = true }, then = [{ preview = 3 }] } ]\n'
    '[partners.win.entries.ladder]\navailable_from = 2099-01-01T00:00:00Z\n'
    f'[partners.enc]\nencryption = "aes-128"\nkey_secrets = ["{SECRET}"]\n'
    '[partners.short]\ndefault_profile = "s"\n[partners.short.profiles.s]\nrules = [ { then = [{ preview = 0.5 }] } ]\n')


def _library(root: Path) -> Path:
    for partner in ("open", "prev", "win", "enc", "short"):
        for entry, flavors in ENTRIES.items():
            if partner != "open" and entry != ("edits" if partner == "short" else "ladder"):
                continue
            (root / partner / entry).mkdir(parents=True)
            for flavor, fixture in flavors.items():
                shutil.copyfile(mf.fixture_path(fixture), root / partner / entry / f"{flavor}.mp4")
    return root


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return _library(tmp_path_factory.mktemp("attack-thumb-library"))


def _origin(library: Path, folder: Path, workers: int = 1) -> ServerProcess:
    config = folder / "vodgate.toml"
    config.write_text(f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n' + PARTNERS)
    return ServerProcess(["--config", str(config), "--workers", str(workers)], folder / "server.log")


@pytest.fixture(scope="module")
def origin(library, tmp_path_factory):
    srv = _origin(library, tmp_path_factory.mktemp("attack-thumb-origin"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def edge(origin, tmp_path_factory):
    folder = tmp_path_factory.mktemp("attack-thumb-edge")
    config = folder / "edge.toml"
    config.write_text(f'[server]\ntrusted_proxies = ["127.0.0.1/32"]\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n[edge]\nttl = 600\n' + PARTNERS)
    srv = ServerProcess(["--config", str(config), "--role", "edge", "--upstream", origin.base, "--workers", "1"], folder / "edge.log")
    yield srv
    srv.stop()


def get(srv, partner: str, entry: str, flavor: str, name: str, **kw) -> httpx.Response:
    return httpx.get(f"{srv.base}/p/{partner}/e/{entry}/thumb/{flavor}/{name}", timeout=60, **kw)


def token(**kw) -> str:
    return sign_native("k1", bytes.fromhex(TOKEN_KEY), "/p/prev/e/ladder", int(time.time()) + 600, **kw)


# --------------------------------------------------------------------------- access: previews, clips, windows


@pytest.mark.parametrize("full_first", [True, False])
def test_a_preview_viewer_gets_nothing_past_the_preview_whatever_a_full_viewer_fetched_first(origin, edge, full_first):
    """Caches (origin segment cache, hot lane, edge store by path) never hand a preview viewer a frame past its
    preview, a sprite or a track, whichever order the full and the preview viewer come in."""
    tok = token()
    names = ["9000.jpg", "3000.jpg", "sprite.jpg", "thumbs.vtt", "11999-w64.jpg"]
    for srv in (origin, edge):
        for _ in range(2):  # twice: the second asks a warm cache / a remembered hot path
            for name in names:
                if full_first:
                    assert get(srv, "prev", "ladder", "hi", f"{name}?token={tok}").status_code == 200
                refused = get(srv, "prev", "ladder", "hi", name)
                assert refused.status_code == 403 and refused.json()["error"] == "preview_only", (srv.base, name)
                if not full_first:
                    assert get(srv, "prev", "ladder", "hi", f"{name}?token={tok}").status_code == 200
    # before the preview's end: the keyframe at or before (never after) the time
    assert get(edge, "prev", "ladder", "hi", "2999.jpg").content == reference("ladder_hi", 2999)


def test_a_short_preview_gets_no_frame_presented_after_it(origin, edge):
    for srv in (origin, edge):
        answer = get(srv, "short", "edits", "main", "0.jpg")
        assert answer.content != reference("edit_list", 0), f"{srv.base}: the 0.6 s keyframe, past a 0.5 s preview"
        assert answer.status_code == 403 and answer.json()["error"] == "preview_only"


def test_a_clip_pinned_token_gets_no_thumbnail_of_the_whole_entry(origin, edge):
    tok = token(clip="0-2")
    for srv in (origin, edge):
        for name in ("1000.jpg", "9000.jpg", "sprite.jpg", "thumbs.vtt"):
            refused = get(srv, "prev", "ladder", "hi", f"{name}?token={tok}")
            assert refused.status_code == 403 and refused.json()["error"] == "clip_not_allowed", (srv.base, name)
        inside = httpx.get(f"{srv.base}/p/prev/e/ladder/clip-0-2/thumb/hi/1000.jpg?token={tok}", timeout=30)
        assert inside.status_code == 404


def test_an_entry_window_applies_to_thumbnails(origin, edge):
    for srv in (origin, edge):
        for name in ("1000.jpg", "sprite.jpg", "thumbs.vtt"):
            refused = get(srv, "win", "ladder", "hi", name)
            assert refused.status_code == 403 and refused.json()["error"] == "not_yet_available"


def test_an_encrypted_partners_thumbnails_are_clear_jpegs(origin):
    """Pins current behaviour, not an endorsement (see the report): judged tolerable (same access decision as the media) but undocumented in CONTENT_PROTECTION.md: an
    aes-128 partner's frames are served, and cached by edges, as clear JPEGs (a sprite: the whole video)."""
    assert get(origin, "enc", "ladder", "hi", "5000.jpg").content == reference("ladder_hi", 5000)
    assert get(origin, "enc", "ladder", "hi", "sprite.jpg").status_code == 200


# --------------------------------------------------------------------------- the WebVTT track


def test_no_cue_injection_through_the_session_id_or_the_token(origin):
    plain = cues(get(origin, "open", "ladder", "hi", "thumbs.vtt").text)
    evil = "x\n\n00:00:00.000 --> 99:00:00.000\nhttps://evil.example/a.jpg"
    for params in ({"playSessionId": evil}, {"playSessionId": "a-->b"}, {"token": evil}):
        answer = httpx.get(f"{origin.base}/p/open/e/ladder/thumb/hi/thumbs.vtt", params=params, timeout=30)
        assert answer.status_code == 200 and "evil" not in answer.text and "-->b" not in answer.text
        assert [c[:2] for c in cues(answer.text)] == [c[:2] for c in plain]
    tok = token()
    answer = httpx.get(f"{origin.base}/p/prev/e/ladder/thumb/hi/thumbs.vtt", params={"token": tok + "\n-->"}, timeout=30)
    assert answer.status_code == 403  # a broken token is no token: the preview viewer gets no track


def test_through_an_edge_the_track_carries_this_viewers_session(origin, edge):
    direct = get(origin, "open", "ladder", "lo", "thumbs.vtt?playSessionId=sessB")
    assert all(t.startswith("sprite.jpg?playSessionId=sessB#") for _, _, t in cues(direct.text))
    assert get(edge, "open", "ladder", "lo", "thumbs.vtt").status_code == 200  # viewer A: no session
    via_edge = get(edge, "open", "ladder", "lo", "thumbs.vtt?playSessionId=sessB")
    assert all(t.startswith("sprite.jpg?playSessionId=sessB#") for _, _, t in cues(via_edge.text)), via_edge.text[:300]


# --------------------------------------------------------------------------- which frame


@pytest.mark.parametrize("entry,fixture,ms", [
    ("opengop", "open_gop", 2000), ("opengop", "open_gop", 5999), ("irregular", "irregular_gop", 3100),
    ("irregular", "irregular_gop", 15999), ("irregular", "irregular_gop", 719), ("hevc", "hevc", 7000),
    ("edits", "edit_list", 0), ("edits", "edit_list", 2599), ("edits", "edit_list", 2600),
])
def test_odd_sources_give_the_keyframe_at_or_before(origin, entry, fixture, ms):
    answer = get(origin, "open", entry, "main", f"{ms}.jpg")
    assert answer.status_code == 200 and answer.content == reference(fixture, ms)


def _presented_keyframe_reference(fixture: str) -> bytes:
    """ffmpeg's JPEG of the first keyframe that is presented (pts >= 0), in presentation order."""
    video = local.read_index_sync(mf.fixture_path(fixture)).video
    keys = [k for k in np.flatnonzero(video.keyframes) if video.pts[k] >= 0]
    key = min(keys, key=lambda k: video.pts[k])
    shown = int(((video.pts >= 0) & (video.pts < video.pts[key])).sum())
    return subprocess.run([mf.ffmpeg_exe(), "-v", "error", "-i", str(mf.fixture_path(fixture)), "-vf", f"select=eq(n\\,{shown})",
                           "-frames:v", "1", "-q:v", "3", "-f", "mjpeg", "pipe:1"], capture_output=True, check=True).stdout


def test_a_cut_files_pre_roll_is_never_a_thumbnail(origin):
    preroll = subprocess.run([mf.ffmpeg_exe(), "-v", "error", "-ignore_editlist", "1", "-i", str(mf.fixture_path("start_trimmed")),
                              "-frames:v", "1", "-q:v", "3", "-f", "mjpeg", "pipe:1"], capture_output=True, check=True).stdout
    answer = get(origin, "open", "trimmed", "main", "0.jpg")
    assert answer.status_code == 200
    assert answer.content != preroll, "the thumbnail at 0 is the cut-away pre-roll frame"
    assert answer.content == _presented_keyframe_reference("start_trimmed")


@pytest.mark.parametrize("width", [16, 17, 641, 3839, 3840])
def test_width_extremes(origin, width):
    answer = get(origin, "open", "ladder", "lo", f"4000-w{width}.jpg")
    assert answer.status_code == 200 and answer.content == reference("ladder_lo", 4000, width)


@pytest.mark.parametrize("entry", ["corrupt", "truncated"])
def test_broken_media_is_a_json_error_and_the_server_keeps_serving(origin, entry):
    for name in ("1000.jpg", "sprite.jpg", "thumbs.vtt"):
        answer = get(origin, "open", entry, "main", name)
        assert answer.status_code in (404, 415, 422, 500, 502, 503) and answer.headers["content-type"].startswith("application/json")
        assert "Traceback" not in answer.text and answer.json()["error"]
    assert get(origin, "open", "ladder", "lo", "1000-w32.jpg").status_code == 200


# --------------------------------------------------------------------------- resources


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _ffmpegs_under(pid: int) -> int:
    count = 0
    for child in _descendants(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"ffmpeg" in cmd and b"pipe:0" in cmd:
            count += 1
    return count


def _fire_and_count(srv: ServerProcess, names: list[str], entry: str = "bframes") -> tuple[int, list[int]]:
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _ffmpegs_under(srv.proc.pid))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(len(names)) as pool:
            statuses = list(pool.map(lambda n: get(srv, "open", entry, "main", n).status_code, names))
    finally:
        stop.set()
        watcher.join()
    return peak[0], statuses


def test_the_ffmpeg_pool_is_bounded_in_one_process(origin):
    bound = max(1, (os.cpu_count() or 2) // 2)
    names = [f"{ms}-w{w}.jpg" for ms in (100, 2100, 4100, 6100, 7900) for w in (3840, 3000, 2500, 2000, 1920, 1500, 1280, 1000, 960, 800)]
    peak, statuses = _fire_and_count(origin, names)
    assert statuses == [200] * len(names)
    assert 1 <= peak <= bound, (peak, bound)


def test_the_ffmpeg_pool_is_bounded_across_workers(library, tmp_path):
    srv = _origin(library, tmp_path, workers=4)
    try:
        bound = max(1, (os.cpu_count() or 2) // 2)
        names = [f"{ms}-w{w}.jpg" for ms in (100, 2100, 4100, 6100, 7900) for w in (3840, 3000, 2500, 2000, 1920, 1500, 1280, 1000)]
        peak, statuses = _fire_and_count(srv, names)
        assert statuses == [200] * len(names)
        assert peak <= bound, f"{peak} ffmpeg processes at once; documented bound {bound}"
    finally:
        srv.stop()


def test_two_times_of_one_keyframe_share_one_decode(origin):
    first = get(origin, "open", "ladder", "lo", "8100-w48.jpg")
    second = get(origin, "open", "ladder", "lo", "8101-w48.jpg")  # the same keyframe (8 s)
    assert first.status_code == second.status_code == 200 and first.content == second.content
    assert second.headers["x-cache"] == "HIT" or second.status_code in (301, 302, 307, 308)
