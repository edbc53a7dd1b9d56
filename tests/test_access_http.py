"""Access control over real HTTP: previews that cannot be bypassed, tokens, limits, windows, admin API.

A server of its own runs with a config that gives several fixture entries a
profile. Media is judged by ffmpeg: a preview decodes to exactly the
source's first frames, and every bypass attempt gets 403/416 with no media.
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import httpx
import m3u8
import pytest

from conftest import REPO, ServerProcess
from oracle import framemd5, video_hashes

ADMIN = "admin-secret-0123456789"
KEY = "00112233445566778899aabbccddeeff"
PREVIEW = 5

CONFIG = """
[server]
media_root = "{library}"
segment_duration = 4

[partners.demo]
admin_secret = "{admin}"
token_keys = {{ k1 = "{key}" }}
default_profile = "open"

[partners.demo.profiles.preview]
rules = [ {{ then = [ {{ preview = {preview} }} ] }} ]

[partners.demo.profiles.tokens]
rules = [ {{ unless = {{ authenticated = true }}, then = ["block"] }} ]

[partners.demo.profiles.limited]
rules = [ {{ then = [ {{ limit_flavors = {{ max_height = 270 }} }} ] }} ]

[partners.demo.profiles.referrer]
rules = [
  {{ if = {{ referrer = ["*.example.com"] }}, then = ["allow"] }},
  {{ then = [ {{ block = "referrer_blocked" }} ] }},
]

[partners.demo.profiles.office]
rules = [
  {{ if = {{ ip = ["10.1.0.0/16"] }}, then = ["allow"] }},
  {{ then = [ {{ block = "outside_office" }} ] }},
]

[partners.demo.entries.h264_high_bframes]
profile = "preview"

[partners.demo.entries.hevc]
profile = "tokens"

[partners.demo.entries.ladder]
profile = "limited"

[partners.demo.entries.video_only]
profile = "referrer"

[partners.demo.entries.moov_at_end]
profile = "office"

[partners.demo.entries.h264_baseline]
available_from = 2099-01-01T00:00:00Z
"""


@pytest.fixture(scope="module")
def config_path(media_library, tmp_path_factory):
    path = tmp_path_factory.mktemp("access") / "vodgate.toml"
    path.write_text(CONFIG.format(library=media_library, admin=ADMIN, key=KEY, preview=PREVIEW))
    return path


@pytest.fixture(scope="module")
def srv(config_path, tmp_path_factory):
    proc = ServerProcess(["--config", str(config_path)], tmp_path_factory.mktemp("access-srv") / "server.log")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def http(srv):
    with httpx.Client(base_url=srv.base, timeout=30) as client:
        yield client


def denied(response: httpx.Response, code: str, status: int = 403) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == code
    assert response.headers["cache-control"] == "no-store"
    assert len(response.content) < 1000  # a JSON error, not media


# --------------------------------------------------------------------------- preview


@pytest.mark.parametrize("fmt", ["hls", "cmaf"])
def test_preview_decodes_to_exactly_the_first_frames(http, srv, media_fixture_paths, fmt):
    master = m3u8.loads(http.get(f"/p/demo/e/h264_high_bframes/{fmt}/master.m3u8").text)
    assert [p.uri for p in master.playlists] == [f"main/index-p{PREVIEW}.m3u8"]
    media = m3u8.loads(http.get(f"/p/demo/e/h264_high_bframes/{fmt}/main/index-p{PREVIEW}.m3u8").text)
    end = sum(Fraction(str(s.duration)) for s in media.segments)
    assert 0 < end <= PREVIEW
    assert media.segments[-1].uri.endswith(f"-p{PREVIEW}.{'ts' if fmt == 'hls' else 'm4s'}")
    source = framemd5(media_fixture_paths["h264_high_bframes"])
    first_pts = source[0].pts
    expected = [f.md5 for f in source if Fraction(f.pts - first_pts) * f.tb < end]
    got = video_hashes(f"{srv.base}/p/demo/e/h264_high_bframes/{fmt}/main/index-p{PREVIEW}.m3u8")
    assert got == expected
    assert len(got) < len(source)


def test_preview_bypass_attempts_get_no_media(http):
    base = "/p/demo/e/h264_high_bframes"
    # segment 2 spans [4 s, 8 s): the preview cuts it, so only its -p5 URL exists for this viewer
    denied(http.get(f"{base}/hls/main/seg-2.ts"), "preview_only")
    denied(http.get(f"{base}/cmaf/main/seg-2.m4s"), "preview_only")
    denied(http.get(f"{base}/hls/main/seg-3.ts"), "preview_only")
    denied(http.get(f"{base}/hls/main/a1/seg-2.ts"), "preview_only")
    denied(http.get(f"{base}/hls/main/seg-2-p10.ts"), "preview_only")  # asking for more than granted
    denied(http.get(f"{base}/hls/main/index-p6.m3u8"), "preview_only")
    denied(http.get(f"{base}/mp4/main-p60.mp4"), "preview_only")
    denied(http.get(f"{base}/hls/main/seg-2.ts", params={"preview": "100", "flavors": "main"}), "preview_only")
    denied(http.get(f"{base}/hls/main/seg-2.ts", headers={"Range": "bytes=0-100"}), "preview_only")
    # the unmarked media playlist is clipped too: it never lists media past the preview
    media = m3u8.loads(http.get(f"{base}/hls/main/index.m3u8").text)
    assert sum(float(s.duration) for s in media.segments) <= PREVIEW
    assert http.get(f"{base}/hls/main/index.m3u8").headers["cache-control"].startswith("private")


def test_clipped_segment_has_its_own_url_and_etag(http, srv):
    clipped = http.get("/p/demo/e/h264_high_bframes/hls/main/seg-2-p5.ts")
    assert clipped.status_code == 200
    with httpx.Client(base_url=srv.base) as other:  # a full-access entry's segment 2 for comparison
        full = other.get("/p/demo/e/h264_high_bframes/hls/main/seg-1.ts")
    assert full.status_code == 200  # wholly inside the preview: served as is
    assert clipped.headers["etag"] != http.get("/p/demo/e/h264_high_bframes/hls/main/seg-1.ts").headers["etag"]


def test_progressive_preview_is_a_clipped_playable_mp4(http, srv, media_fixture_paths, tmp_path):
    response = http.get("/p/demo/e/h264_high_bframes/mp4/main.mp4", follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"].endswith(f"/main-p{PREVIEW}.mp4")
    clipped = http.get(f"/p/demo/e/h264_high_bframes/mp4/main-p{PREVIEW}.mp4")
    assert clipped.status_code == 200
    full_size = media_fixture_paths["h264_high_bframes"].stat().st_size
    assert int(clipped.headers["content-length"]) == len(clipped.content) < full_size
    path = tmp_path / "clip.mp4"
    path.write_bytes(clipped.content)
    source = video_hashes(media_fixture_paths["h264_high_bframes"])
    got = video_hashes(path)
    assert 0 < len(got) < len(source) and got == source[: len(got)]
    assert len(got) <= PREVIEW * 25  # 25 fps: nothing past the preview
    # ranges over the clipped file are byte-exact; past its end is 416
    part = http.get(f"/p/demo/e/h264_high_bframes/mp4/main-p{PREVIEW}.mp4", headers={"Range": "bytes=1000-4999"})
    assert part.status_code == 206 and part.content == clipped.content[1000:5000]
    beyond = http.get(f"/p/demo/e/h264_high_bframes/mp4/main-p{PREVIEW}.mp4", headers={"Range": f"bytes={len(clipped.content)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(clipped.content)}"
    # ffmpeg follows the redirect from the unmarked URL to the same frames
    assert video_hashes(f"{srv.base}/p/demo/e/h264_high_bframes/mp4/main.mp4") == got


# --------------------------------------------------------------------------- tokens


def sign(config_path, entry: str, *extra: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "token", "sign", "--config", str(config_path), "--partner", "demo", "--entry", entry, "--ttl", "1h", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_tokens_required_and_propagated_to_every_child(http, srv, config_path, media_fixture_paths):
    denied(http.get("/p/demo/e/hevc/hls/master.m3u8"), "token_required")
    url = sign(config_path, "hevc", "--base-url", srv.base, "--delivery", "cmaf")  # HEVC is offered over fMP4 only
    assert "/p/demo/e/hevc/cmaf/master.m3u8?token=" in url
    master = http.get(url)
    assert master.status_code == 200
    token = url.split("token=", 1)[1]
    parsed = m3u8.loads(master.text)
    assert all(p.uri.endswith(f"token={token}") for p in parsed.playlists + parsed.media + parsed.iframe_playlists)
    # a player (ffmpeg) follows master -> media playlist -> segments carrying the token
    assert video_hashes(url, "v:0") == video_hashes(media_fixture_paths["hevc"])
    # the server log never holds the token itself
    assert token not in srv.log()


def test_forged_and_misdirected_tokens_are_refused_with_their_reason(http, srv, config_path):
    url = sign(config_path, "hevc", "--base-url", srv.base)
    token = url.split("token=", 1)[1]
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    denied(http.get("/p/demo/e/hevc/hls/master.m3u8", params={"token": tampered}), "token_bad_signature")
    other = sign(config_path, "hevc_other_entry", "--base-url", srv.base).split("token=", 1)[1]
    denied(http.get("/p/demo/e/hevc/hls/master.m3u8", params={"token": other}), "token_wrong_path")
    denied(http.get("/p/demo/e/hevc/hls/master.m3u8", params={"token": "garbage"}), "token_malformed")
    bound = sign(config_path, "hevc", "--base-url", srv.base, "--ip", "203.0.113.9").split("token=", 1)[1]
    denied(http.get("/p/demo/e/hevc/hls/master.m3u8", params={"token": bound}), "token_wrong_ip")


# --------------------------------------------------------------------------- other conditions


def test_flavor_limits(http):
    master = m3u8.loads(http.get("/p/demo/e/ladder/hls/master.m3u8").text)
    assert sorted(p.uri for p in master.playlists) == ["lo/index.m3u8", "mid/index.m3u8"]
    denied(http.get("/p/demo/e/ladder/hls/hi/index.m3u8"), "flavor_not_allowed")
    denied(http.get("/p/demo/e/ladder/cmaf/hi/seg-1.m4s"), "flavor_not_allowed")
    assert http.get("/p/demo/e/ladder/hls/mid/seg-1.ts").status_code == 200


def test_entry_window_and_referrer(http):
    denied(http.get("/p/demo/e/h264_baseline/hls/master.m3u8"), "not_yet_available")
    ok = http.get("/p/demo/e/video_only/hls/master.m3u8", headers={"Referer": "https://www.example.com/watch"})
    assert ok.status_code == 200
    denied(http.get("/p/demo/e/video_only/hls/master.m3u8", headers={"Referer": "https://evil-example.com/"}), "referrer_blocked")
    denied(http.get("/p/demo/e/video_only/hls/master.m3u8"), "referrer_blocked")


def test_forwarded_for_from_an_untrusted_peer_is_ignored(http):
    denied(http.get("/p/demo/e/moov_at_end/hls/master.m3u8", headers={"X-Forwarded-For": "10.1.2.3"}), "outside_office")


# --------------------------------------------------------------------------- admin API


def test_admin_api_lists_replaces_and_explains(http):
    auth = {"Authorization": f"Bearer {ADMIN}"}
    assert http.get("/admin/partners/demo/profiles").status_code == 401
    assert http.get("/admin/partners/demo/profiles", headers={"Authorization": "Bearer wrong"}).status_code == 403
    listed = http.get("/admin/partners/demo/profiles", headers=auth)
    assert listed.status_code == 200 and "preview" in listed.json()
    # a bad profile is refused naming the field
    bad = http.put("/admin/partners/demo/profiles/open", headers=auth, json={"rules": [{"then": [{"preview": "soon"}]}]})
    assert bad.status_code == 400 and "partners.demo.profiles.open.rules[0]" in bad.json()["detail"]
    # the default profile blocks from the next request on, without a restart
    assert http.get("/p/demo/e/two_languages/hls/master.m3u8").status_code == 200
    put = http.put("/admin/partners/demo/profiles/open", headers=auth, json={"rules": [{"then": [{"block": "maintenance"}]}]})
    assert put.status_code == 200
    try:
        denied(http.get("/p/demo/e/two_languages/hls/master.m3u8"), "maintenance")
        explained = http.get("/admin/partners/demo/explain", headers=auth, params={"entry": "two_languages", "ip": "198.51.100.7"})
        assert explained.status_code == 200
        decision = explained.json()["decision"]
        assert decision["allowed"] is False and decision["reason"] == "maintenance"
    finally:
        http.put("/admin/partners/demo/profiles/open", headers=auth, json={"rules": []})
    assert http.get("/p/demo/e/two_languages/hls/master.m3u8").status_code == 200
    in_use = http.delete("/admin/partners/demo/profiles/preview", headers=auth)
    assert in_use.status_code == 409
