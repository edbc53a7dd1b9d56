"""Access control at an edge: decided before the shared cache, never leaking a cached object.

Origin (shielded) and edge run the real CLI with the same partners config.
A token holder fills the edge cache with full segments; a preview viewer
asking the same edge for those segments must still get 403 preview_only,
and its preview decodes to exactly the source's first frames.
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

KEY = "00112233445566778899aabbccddeeff"
SHIELD = "shield-secret-for-the-tests-0123"
EDGE_SECRET = "edge-secret-for-the-tests-01234"
PARTNERS = f"""
[partners.demo]
admin_secret = "admin-secret-0123456789"
token_keys = {{ k1 = "{KEY}" }}
default_profile = "open"

[partners.demo.profiles.members]
rules = [
  {{ if = {{ authenticated = true }}, then = ["allow"] }},
  {{ then = [ {{ preview = 5 }} ] }},
]

[partners.demo.profiles.tokens]
rules = [ {{ unless = {{ authenticated = true }}, then = ["block"] }} ]

[partners.demo.entries.h264_high_bframes]
profile = "members"

[partners.demo.entries.hevc]
profile = "tokens"
"""


@pytest.fixture(scope="module")
def nodes(media_library, tmp_path_factory):
    folder = tmp_path_factory.mktemp("edge-access")
    origin_cfg = folder / "origin.toml"
    origin_cfg.write_text(
        f'[server]\nmedia_root = "{media_library}"\nsegment_duration = 4\ntrusted_proxies = ["127.0.0.1/32"]\n'
        f'[cdn]\nshield_secrets = ["{SHIELD}"]\nedge_secrets = ["{EDGE_SECRET}"]\n' + PARTNERS
    )
    origin = ServerProcess(["--config", str(origin_cfg)], folder / "origin.log")
    edge_cfg = folder / "edge.toml"
    # open to viewers, shielded upstream: the secret goes in upstream_headers ([cdn] shield_secrets
    # would make the edge demand it from its own clients too; see test_grants_caches.py)
    edge_cfg.write_text(f'[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n[edge]\nttl = 600\nupstream_headers = {{ "X-Vodgate-Shield" = "{SHIELD}" }}\n' + PARTNERS)
    edge = ServerProcess(["--config", str(edge_cfg), "--role", "edge", "--upstream", origin.base], folder / "edge.log")
    yield origin, edge, edge_cfg
    edge.stop()
    origin.stop()


def signed(config, entry: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "token", "sign", "--config", str(config), "--partner", "demo", "--entry", entry, "--ttl", "1h"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split("token=", 1)[1]


def test_origin_answers_only_its_edge(nodes):
    origin, edge, _ = nodes
    assert httpx.get(f"{origin.base}/p/demo/e/ladder/hls/master.m3u8").status_code == 403
    assert httpx.get(f"{edge.base}/p/demo/e/ladder/hls/master.m3u8").status_code == 200


def test_cached_full_segments_never_reach_a_preview_viewer(nodes):
    _, edge, config = nodes
    token = signed(config, "h264_high_bframes")
    base = f"{edge.base}/p/demo/e/h264_high_bframes/hls/main"
    for _ in range(2):  # the member fills the edge cache
        member = httpx.get(f"{base}/seg-2.ts", params={"token": token})
        assert member.status_code == 200
    assert member.headers["x-cache"] == "HIT"
    viewer = httpx.get(f"{base}/seg-2.ts")
    assert viewer.status_code == 403 and viewer.json()["error"] == "preview_only"
    assert len(viewer.content) < 1000
    assert httpx.get(f"{base}/seg-3.ts").status_code == 403
    assert httpx.get(f"{base}/seg-2-p60.ts").json()["error"] == "preview_only"


def test_preview_through_the_edge_decodes_to_the_first_frames(nodes, media_fixture_paths):
    _, edge, _ = nodes
    master_url = f"{edge.base}/p/demo/e/h264_high_bframes/cmaf/master.m3u8"
    master = m3u8.loads(httpx.get(master_url).text)
    assert [p.uri for p in master.playlists] == ["main/index-p5.m3u8"]
    media = m3u8.loads(httpx.get(f"{edge.base}/p/demo/e/h264_high_bframes/cmaf/main/index-p5.m3u8").text)
    end = sum(Fraction(str(s.duration)) for s in media.segments)
    source = framemd5(media_fixture_paths["h264_high_bframes"])
    expected = [f.md5 for f in source if Fraction(f.pts - source[0].pts) * f.tb < end]
    assert video_hashes(f"{edge.base}/p/demo/e/h264_high_bframes/cmaf/main/index-p5.m3u8") == expected
    # the clipped segment is shared in the edge cache like any object
    clipped = media.segments[-1].uri
    first = httpx.get(f"{edge.base}/p/demo/e/h264_high_bframes/cmaf/main/{clipped}")
    second = httpx.get(f"{edge.base}/p/demo/e/h264_high_bframes/cmaf/main/{clipped}")
    assert first.status_code == second.status_code == 200 and second.headers["x-cache"] == "HIT"


def test_tokens_are_checked_at_the_edge(nodes, media_fixture_paths):
    _, edge, config = nodes
    denied = httpx.get(f"{edge.base}/p/demo/e/hevc/hls/master.m3u8")
    assert denied.status_code == 403 and denied.json()["error"] == "token_required"
    token = signed(config, "hevc")
    url = f"{edge.base}/p/demo/e/hevc/cmaf/master.m3u8?token={token}"  # HEVC is offered over fMP4 only
    assert video_hashes(url) == video_hashes(media_fixture_paths["hevc"])
    forged = httpx.get(f"{edge.base}/p/demo/e/hevc/hls/main/seg-1.ts", params={"token": token[:-2] + "xx"})
    assert forged.status_code == 403 and forged.json()["error"] == "token_bad_signature"

