"""Thumbnails (docs/URLS.md, "Thumbnails"): /p/{partner}/e/{entry}/thumb/{flavor}/{ms}[-w{width}].jpg.

The decisive check: our JPEG is byte for byte the JPEG ffmpeg makes of the same frame of the source file (the
keyframe presented at or before the time), decoded from the source and encoded with the same settings. Real
servers; access rules as for media.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

import media_fixtures as mf
from auth.tokens import sign_native
from conftest import ServerProcess
from origin import local

TOKEN_KEY = "00112233445566778899aabbccddeeff"
EDGE_SECRET = "thumb-edge-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    library = tmp_path_factory.mktemp("thumb-library")
    for partner in ("open", "prev", "lim"):
        for entry, fixture in (("bframes", "h264_high_bframes"), ("hevc", "hevc"), ("audio", "audio_only")):
            (library / partner / entry).mkdir(parents=True)
            shutil.copyfile(mf.fixture_path(fixture), library / partner / entry / "main.mp4")
        (library / partner / "ladder").mkdir(parents=True)
        for flavor in ("hi", "lo"):
            shutil.copyfile(mf.fixture_path(f"ladder_{flavor}"), library / partner / "ladder" / f"{flavor}.mp4")
    folder = tmp_path_factory.mktemp("thumb-origin")
    config = folder / "vodgate.toml"
    config.write_text(f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n' + PARTNERS)
    srv = ServerProcess(["--config", str(config), "--workers", "1"], folder / "server.log")
    yield srv
    srv.stop()


PARTNERS = (
    f'[partners.prev]\ntoken_keys = {{ k1 = "{TOKEN_KEY}" }}\ndefault_profile = "p"\n'
    '[partners.prev.profiles.p]\nrules = [ { unless = { authenticated = true }, then = [{ preview = 3 }] } ]\n'
    '[partners.lim]\ndefault_profile = "l"\n'
    '[partners.lim.profiles.l]\nrules = [ { then = [{ limit_flavors = { max_height = 200 } }] } ]\n')


def reference(fixture: str, ms: int, width: int | None = None) -> bytes:
    """ffmpeg's own JPEG of the source's keyframe presented last at or before ``ms`` (the first, if none is)."""
    path = mf.fixture_path(fixture)
    video = local.read_index_sync(path).video
    pts = video.pts
    keys = np.flatnonzero(video.keyframes)
    limit = ms * video.timescale // 1000
    candidates = [k for k in keys if pts[k] <= limit] or [keys[np.argmin(pts[keys])]]
    key = max(candidates, key=lambda k: pts[k])
    shown = int((pts < pts[key]).sum())  # its place in presentation order
    vf = f"select=eq(n\\,{shown})" + (f",scale={width}:-2" if width else "")
    out = subprocess.run([mf.ffmpeg_exe(), "-v", "error", "-i", str(path), "-vf", vf, "-frames:v", "1", "-q:v", "3",
                          "-f", "mjpeg", "pipe:1"], capture_output=True, check=True).stdout
    assert out.startswith(b"\xff\xd8")
    return out


def thumb(srv, partner: str, entry: str, flavor: str, name: str, **kw) -> httpx.Response:
    return httpx.get(f"{srv.base}/p/{partner}/e/{entry}/thumb/{flavor}/{name}", timeout=60, **kw)


@pytest.mark.parametrize("entry,flavor,fixture,ms,width", [
    ("ladder", "hi", "ladder_hi", 2500, None), ("ladder", "hi", "ladder_hi", 0, 160), ("ladder", "lo", "ladder_lo", 11999, None),
    ("ladder", "hi", "ladder_hi", 999999, None),  # past the end: the last keyframe
    ("bframes", "main", "h264_high_bframes", 4100, 320), ("hevc", "main", "hevc", 3000, None),
])
def test_a_thumbnail_is_ffmpegs_jpeg_of_the_keyframe(origin, entry, flavor, fixture, ms, width):
    name = f"{ms}" + (f"-w{width}" if width else "") + ".jpg"
    answer = thumb(origin, "open", entry, flavor, name)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg", answer.text[:200]
    assert answer.content == reference(fixture, ms, width)


def test_thumbnails_are_cached_and_answer_304(origin):
    first = thumb(origin, "open", "ladder", "hi", "6100.jpg")
    again = thumb(origin, "open", "ladder", "hi", "6100.jpg")
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT") and first.content == again.content
    assert "immutable" in first.headers["cache-control"]
    assert thumb(origin, "open", "ladder", "hi", "6100.jpg", headers={"If-None-Match": first.headers["etag"]}).status_code == 304


def test_many_at_once_all_answer(origin):
    """The ffmpeg pool is bounded (half the CPUs): 16 different thumbnails asked at once all come, right."""
    names = [f"{ms}-w{w}.jpg" for ms in (500, 2500, 4500, 6500) for w in (64, 96, 128, 200)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda n: thumb(origin, "open", "bframes", "main", n), names))
    assert [a.status_code for a in answers] == [200] * 16
    assert answers[5].content == reference("h264_high_bframes", 2500, 96)


def test_a_preview_viewer_gets_no_thumbnail_past_the_preview(origin):
    assert thumb(origin, "prev", "ladder", "hi", "2999.jpg").status_code == 200
    refused = thumb(origin, "prev", "ladder", "hi", "3000.jpg")
    assert refused.status_code == 403 and refused.json()["error"] == "preview_only"
    tok = sign_native("k1", bytes.fromhex(TOKEN_KEY), "/p/prev/e/ladder", int(time.time()) + 600)
    assert thumb(origin, "prev", "ladder", "hi", f"9000.jpg?token={tok}").status_code == 200


def test_flavor_limits_apply(origin):
    refused = thumb(origin, "lim", "ladder", "hi", "1000.jpg")
    assert refused.status_code == 403 and refused.json()["error"] == "flavor_not_allowed"
    assert thumb(origin, "lim", "ladder", "lo", "1000.jpg").status_code == 200


@pytest.mark.parametrize("path,status,code", [
    ("audio/thumb/main/1000.jpg", 404, "no_video"), ("ladder/thumb/nope/1000.jpg", 404, "unknown_flavor"),
    ("ladder/thumb/hi/01000.jpg", 404, "not_found"), ("ladder/thumb/hi/1000-w8.jpg", 404, "not_found"),
    ("ladder/thumb/hi/1000-w9999.jpg", 400, "bad_request"), ("ladder/clip-1-5/thumb/hi/1000.jpg", 404, "not_found"),
    ("ladder/thumb/hi/1000.png", 404, "not_found"), ("ladder/thumb/hi/1000.jpg/x", 404, "not_found"),
])
def test_bad_thumbnail_urls(origin, path, status, code):
    answer = httpx.get(f"{origin.base}/p/open/e/{path}", timeout=30)
    assert answer.status_code == status and answer.json()["error"] == code, answer.text


def test_without_ffmpeg_a_thumbnail_is_a_503():
    from edge.thumbnails import Thumbnailer, ThumbnailUnavailable

    for ffmpeg in (None, "/nonexistent/ffmpeg"):
        thumbnailer = Thumbnailer(ffmpeg=ffmpeg)
        thumbnailer.ffmpeg = ffmpeg
        with pytest.raises(ThumbnailUnavailable):
            asyncio.run(thumbnailer.jpeg(b"", None))


def test_an_edge_serves_the_same_thumbnails_under_the_same_rules(origin, tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text(f'[server]\ntrusted_proxies = ["127.0.0.1/32"]\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n[edge]\nttl = 600\n' + PARTNERS)
    edge = ServerProcess(["--config", str(config), "--role", "edge", "--upstream", origin.base, "--workers", "1"], tmp_path / "edge.log")
    try:
        for partner, name, status in (("open", "2500-w200.jpg", 200), ("prev", "2999.jpg", 200), ("prev", "3000.jpg", 403)):
            via_edge = thumb(edge, partner, "ladder", "hi", name)
            direct = thumb(origin, partner, "ladder", "hi", name)
            assert via_edge.status_code == direct.status_code == status and via_edge.content == direct.content
        refused = thumb(edge, "lim", "ladder", "hi", "1000.jpg")
        assert refused.status_code == 403 and refused.json()["error"] == "flavor_not_allowed"
    finally:
        edge.stop()


# --------------------------------------------------------------------------- scrubbing sprite + WebVTT track


def reference_sprite(fixture: str, shown: list[int], rows: int) -> bytes:
    """ffmpeg's own sprite of the source's frames at these presentation indexes: scaled to 160 wide, 10 a row."""
    select = "+".join(f"eq(n\\,{n})" for n in shown)
    out = subprocess.run([mf.ffmpeg_exe(), "-v", "error", "-i", str(mf.fixture_path(fixture)),
                          "-vf", f"select={select},scale=160:-2,tile=10x{rows}", "-frames:v", "1", "-q:v", "3",
                          "-f", "mjpeg", "pipe:1"], capture_output=True, check=True).stdout
    return out


def cues(text: str) -> list[tuple[str, str, str]]:
    assert text.startswith("WEBVTT\n")
    return [tuple(block.split("\n")[0].split(" --> ")) + (block.split("\n")[1],) for block in text.strip().split("\n\n")[1:]]


def test_the_sprite_is_ffmpegs_tiling_of_the_keyframes_the_vtt_names(origin):
    """thumbs.vtt: one cue per keyframe, back to back from 0 to the end, each naming its tile of sprite.jpg; the
    sprite is byte for byte what ffmpeg makes of those source frames (scale=160:-2, tile=10xN)."""
    text = thumb(origin, "open", "bframes", "main", "thumbs.vtt")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/vtt")
    listed = cues(text.text)
    video = local.read_index_sync(mf.fixture_path("h264_high_bframes")).video
    keys = sorted(np.flatnonzero(video.keyframes), key=lambda k: video.pts[k])
    assert len(listed) == len(keys) and listed[0][0] == "00:00:00.000"
    assert all(a[1] == b[0] for a, b in zip(listed, listed[1:]))  # back to back
    height = round(160 * video.video.height / (video.video.width * 2)) * 2
    for i, (_, _, target) in enumerate(listed):
        assert target == f"sprite.jpg#xywh={i % 10 * 160},{i // 10 * height},160,{height}"
    shown = [int((video.pts < video.pts[k]).sum()) for k in keys]
    sprite = thumb(origin, "open", "bframes", "main", "sprite.jpg")
    assert sprite.status_code == 200 and sprite.content == reference_sprite("h264_high_bframes", shown, -(-len(keys) // 10))


def test_the_vtt_carries_the_token_and_a_preview_viewer_gets_no_sprite(origin):
    tok = sign_native("k1", bytes.fromhex(TOKEN_KEY), "/p/prev/e/ladder", int(time.time()) + 600)
    text = thumb(origin, "prev", "ladder", "hi", f"thumbs.vtt?token={tok}").text
    assert all(target.startswith(f"sprite.jpg?token={tok}#xywh=") for _, _, target in cues(text))
    assert thumb(origin, "prev", "ladder", "hi", f"sprite.jpg?token={tok}").status_code == 200
    for name in ("thumbs.vtt", "sprite.jpg"):
        refused = thumb(origin, "prev", "ladder", "hi", name)
        assert refused.status_code == 403 and refused.json()["error"] == "preview_only"
