"""Operating content protection (docs/CONTENT_PROTECTION.md, "Switching and rotating", "Progressive MP4").

* F2: a SIGHUP reload that switches a partner's encryption on, or rotates its master secret, purges the
  partner's cached objects on the node and, over Redis, on an edge: the edge's next answer for a segment it
  had cached is the new one (it decrypts with the key the new playlist names), not a HIT of the old one.
  Real origin, real edge, real ``redis-server`` (skipped visibly without it; VODGATE_REQUIRE_SERVICES=1 fails).
* F4: progressive MP4 (and clip MP4s) of an encrypting partner answer 403 ``progressive_clear`` from origin
  and edge, unless the partner sets ``clear_progressive = true``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import media_fixtures as mf
from conftest import REPO, ServerProcess
from redis_support import redis_server, require_redis  # noqa: F401 (fixture)
from test_content_protection import EDGE_SECRET, FIXTURE, SECRET, SECRET2, absolute, decrypt, key_uris

PARTNERS = ("flip", "rot", "enc", "open", "plain")


def partners_toml(flip: str = "none", rotated: bool = False) -> str:
    rot_secrets = f'"{SECRET2}", "{SECRET}"' if rotated else f'"{SECRET}"'
    flip_keys = f'key_secrets = ["{SECRET2}"]\n' if flip != "none" else ""
    return f"""
[partners.flip]
encryption = "{flip}"
{flip_keys}
[partners.rot]
encryption = "aes-128"
key_secrets = [{rot_secrets}]

[partners.enc]
encryption = "aes-128"
key_secrets = ["{SECRET}"]

[partners.open]
encryption = "aes-128"
key_secrets = ["{SECRET}"]
clear_progressive = true

[partners.plain]
"""


# the same partner tables without any encryption setting (an edge needs none, docs/CONTENT_PROTECTION.md)
BARE_PARTNERS = "\n".join(line for line in partners_toml().splitlines()
                          if not line.startswith(("encryption", "key_", "clear_progressive")))


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ops-library")
    for partner in PARTNERS:
        folder = root / partner / FIXTURE
        folder.mkdir(parents=True)
        shutil.copyfile(mf.fixture_path(FIXTURE), folder / "main.mp4")
    return root


def _head(library: Path) -> str:
    return (f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\ntrusted_proxies = ["127.0.0.1/32"]\n'
            f'[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n')


def _edge_head() -> str:
    return (f'[server]\ntrusted_proxies = ["127.0.0.1/32"]\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n'
            f'[edge]\nttl = 600\n')


@pytest.fixture(scope="module")
def fleet(library, redis_server, tmp_path_factory):
    """An origin and an edge (its config without encryption) on one Redis purge bus, plus an edge with the full
    partner tables (no Redis); None without redis-server."""
    if redis_server is None:
        yield None
        return
    folder = tmp_path_factory.mktemp("ops-fleet")
    config = folder / "origin.toml"
    config.write_text(_head(library) + partners_toml())
    origin = ServerProcess(["--config", str(config), "--workers", "1", "--redis", redis_server.url], folder / "origin.log",
                           name="origin")
    edge_config = folder / "edge.toml"
    edge_config.write_text(_edge_head() + BARE_PARTNERS)
    edge = ServerProcess(["--config", str(edge_config), "--role", "edge", "--upstream", origin.base, "--workers", "1",
                          "--redis", redis_server.url], folder / "edge.log", name="edge")
    yield origin, config, edge
    edge.stop()
    origin.stop()


@pytest.fixture(scope="module")
def nodes(library, tmp_path_factory):
    """F4: an origin and an edge holding the same partner tables (encryption included), no Redis."""
    folder = tmp_path_factory.mktemp("ops-nodes")
    config = folder / "origin.toml"
    config.write_text(_head(library) + partners_toml())
    origin = ServerProcess(["--config", str(config), "--workers", "1"], folder / "origin.log", name="origin")
    edge_config = folder / "edge.toml"
    edge_config.write_text(_edge_head() + partners_toml())
    edge = ServerProcess(["--config", str(edge_config), "--role", "edge", "--upstream", origin.base, "--workers", "1"],
                         folder / "edge.log", name="edge")
    yield origin, edge
    edge.stop()
    origin.stop()


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=30)


def _reload(srv: ServerProcess, config: Path, text: str, purged: str | None) -> None:
    """SIGHUP with ``text`` as the file; wait for the reload and (``purged``: a partner) its purge to be done."""
    def log() -> str:  # the whole log (ServerProcess.log() keeps only its tail)
        return srv.log_path.read_text(errors="replace")

    before, purges = log().count("reloaded "), log().count(f"reload: purged partner {purged} ")
    config.write_text(text)
    os.kill(srv.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while log().count("reloaded ") <= before or (
            purged is not None and log().count(f"reload: purged partner {purged} ") <= purges):
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)


def _edge_answer(edge: ServerProcess, url: str, old: httpx.Response) -> httpx.Response:
    """The edge's answer once the purge (pub/sub, applied asynchronously) has landed: at most 5 s."""
    deadline = time.monotonic() + 5
    while True:
        answer = get(url)
        if answer.headers.get("etag") != old.headers["etag"] or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def _playlist(edge: ServerProcess, partner: str) -> tuple[str, list[str], bytes | None]:
    """The edge's media playlist: its URL, its segment URLs (absolute) and the key it names (None when clear)."""
    url = f"{edge.base}/p/{partner}/e/{FIXTURE}/hls/main/index.m3u8"
    playlist = get(url)
    assert playlist.status_code == 200, playlist.text
    segments = [absolute(url, line) for line in playlist.text.splitlines() if line and not line.startswith("#")]
    keys = key_uris(playlist.text)
    if not keys:
        return url, segments, None
    (_, uri), = keys
    key = get(absolute(url, uri))
    assert key.status_code == 200 and len(key.content) == 16, key.text
    return url, segments, key.content


def _not_the_old_answer(answer: httpx.Response, old: httpx.Response) -> None:
    """The URL the edge had cached no longer gives the old bytes: a new answer from the origin (or its refusal)."""
    assert answer.headers.get("x-cache") != "HIT", answer.headers
    assert answer.status_code != 200 or (answer.content != old.content and answer.headers["etag"] != old.headers["etag"])


# --------------------------------------------------------------------------- F2: purge on a protection change


def test_a_reload_switching_encryption_on_purges_the_edges_clear_segment(fleet):
    require_redis("purge-on-reload tests")
    origin, config, edge = fleet
    _, segments, key = _playlist(edge, "flip")
    assert key is None
    seg = segments[0]
    clear = get(seg)
    assert clear.status_code == 200, clear.text
    cached = get(seg)
    assert cached.headers["x-cache"] == "HIT" and cached.content == clear.content
    head = config.read_text().split("\n[partners.flip]")[0]
    try:
        _reload(origin, config, head + partners_toml(flip="aes-128"), purged="flip")
        assert "content protection of partner(s) flip changed" in origin.log_path.read_text()
        _not_the_old_answer(_edge_answer(edge, seg, clear), clear)
        _, segments, key = _playlist(edge, "flip")  # the edge's cached playlist was purged too: it names a key
        assert key is not None
        now = get(segments[0])
        assert now.status_code == 200 and now.content != clear.content, now.text[:200]
        assert decrypt(now.content, key, 1) == clear.content
    finally:
        _reload(origin, config, head + partners_toml(), purged=None)


def test_a_master_secret_rotation_purges_the_edges_segments_under_the_old_key(fleet):
    require_redis("purge-on-reload tests")
    origin, config, edge = fleet
    clear = get(f"{origin.base}/p/plain/e/{FIXTURE}/hls/main/seg-2.ts").content
    _, segments, old_key = _playlist(edge, "rot")
    seg = segments[1]
    first = get(seg)
    assert first.status_code == 200 and decrypt(first.content, old_key, 2) == clear
    assert get(seg).headers["x-cache"] == "HIT"
    head = config.read_text().split("\n[partners.flip]")[0]
    try:
        _reload(origin, config, head + partners_toml(rotated=True), purged="rot")
        assert "content protection of partner(s) rot changed" in origin.log_path.read_text()
        _not_the_old_answer(_edge_answer(edge, seg, first), first)
        _, segments, new_key = _playlist(edge, "rot")  # the playlist (cached on the edge too) names the new kid
        assert new_key != old_key
        now = get(segments[1])
        assert now.status_code == 200 and now.headers["x-cache"] != "HIT"
        assert decrypt(now.content, new_key, 2) == clear
    finally:
        _reload(origin, config, head + partners_toml(), purged=None)


def _reloader(tmp_path: Path, text: str, calls: list):
    from auth.access import AccessControl
    from config.partners import AccessConfig
    from config.settings import load_settings
    from edge.reload import Reloader

    path = tmp_path / "vodgate.toml"
    path.write_text(text)
    settings = load_settings(path)
    access = AccessControl.from_config(settings.access or AccessConfig())
    return path, Reloader(path, settings, access, "origin", on_protection_change=calls.append)


def test_a_reload_without_protection_changes_purges_nothing(tmp_path, caplog):
    head = f'[server]\nmedia_root = "{tmp_path}"\n'
    calls: list[list[str]] = []
    path, reloader = _reloader(tmp_path, head + partners_toml(), calls)
    # other partner settings change, the protection does not (the older secret listed after the first is no change)
    path.write_text(head + partners_toml().replace("[partners.plain]\n", '[partners.plain]\ndefault_profile = "open"\n')
                    .replace(f'[partners.enc]\nencryption = "aes-128"\nkey_secrets = ["{SECRET}"]',
                             f'[partners.enc]\nencryption = "aes-128"\nkey_secrets = ["{SECRET}", "{SECRET2}"]'))
    with caplog.at_level(logging.WARNING, logger="vodgate.reload"):
        assert reloader.reload()
        assert reloader.reload()
    assert calls == [] and "content protection" not in caplog.text
    # a change of each kind is reported, once per reload, naming exactly the changed partners
    changed = head + partners_toml(flip="aes-128", rotated=True).replace(
        '[partners.enc]\nencryption = "aes-128"\n', '[partners.enc]\nencryption = "aes-128"\nkey_rotation_segments = 2\n')
    path.write_text(changed)
    with caplog.at_level(logging.WARNING, logger="vodgate.reload"):
        assert reloader.reload()
    assert calls == [["enc", "flip", "rot"]]
    assert "p-enc, p-flip, p-rot" in caplog.text and SECRET not in caplog.text and SECRET2 not in caplog.text
    path.write_text(changed.replace("[partners.plain]\n", ""))  # a clear partner removed: no change
    assert reloader.reload() and calls == [["enc", "flip", "rot"]]


# --------------------------------------------------------------------------- F4: progressive MP4 of an encrypting partner


def _mp4_urls(base: str, partner: str) -> list[str]:
    return [f"{base}/p/{partner}/e/{FIXTURE}/mp4/main.mp4", f"{base}/p/{partner}/e/{FIXTURE}/clip-2-6/mp4/main.mp4"]


@pytest.mark.parametrize("node", ["origin", "edge"])
def test_progressive_mp4_of_an_encrypting_partner_is_refused(nodes, node):
    origin, edge = nodes
    srv = origin if node == "origin" else edge
    for url in _mp4_urls(srv.base, "enc"):
        for method in ("GET", "HEAD"):
            answer = httpx.request(method, url, timeout=30)
            assert answer.status_code == 403, (url, method, answer.status_code)
        body = get(url).json()
        assert body["error"] == "progressive_clear", body
        assert "encrypts this entry's HLS" in body["detail"] and "clear file" in body["detail"]
        assert "immutable" not in get(url).headers.get("cache-control", "")
    for partner in ("open", "plain"):  # clear_progressive = true, and a partner without encryption
        for url in _mp4_urls(srv.base, partner):
            answer = get(url)
            assert answer.status_code == 200 and answer.headers["content-type"] == "video/mp4", (url, answer.text[:200])
            assert len(answer.content) > 1000


def test_an_edge_without_the_encryption_settings_relays_the_origins_refusal(fleet):
    require_redis("purge-on-reload tests")
    origin, _, edge = fleet  # its partner tables hold no encryption: the origin decides, the edge relays
    for url in _mp4_urls(edge.base, "enc"):
        for _ in range(2):  # and never caches it
            answer = get(url)
            assert answer.status_code == 403 and answer.json()["error"] == "progressive_clear", answer.text
            assert answer.headers.get("x-cache") != "HIT"
    assert get(_mp4_urls(edge.base, "open")[0]).status_code == 200


def _check(tmp_path: Path, partner: str) -> subprocess.CompletedProcess:
    path = tmp_path / "vodgate.toml"
    path.write_text(f'[server]\nmedia_root = "{tmp_path}"\n[partners.demo]\n{partner}')
    return subprocess.run([sys.executable, "-m", "cli.main", "config", "check", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("value", ['"yes"', "1", "[true]"])
def test_clear_progressive_must_be_a_boolean(tmp_path, value):
    result = _check(tmp_path, f'encryption = "aes-128"\nkey_secrets = ["{SECRET}"]\nclear_progressive = {value}')
    assert result.returncode != 0
    assert "partners.demo.clear_progressive has value" in result.stderr + result.stdout
    assert SECRET not in result.stderr + result.stdout


def test_config_check_warns_about_clear_progressive_with_encryption(tmp_path):
    result = _check(tmp_path, f'encryption = "aes-128"\nkey_secrets = ["{SECRET}"]\nclear_progressive = true')
    assert result.returncode == 0, result.stderr
    assert "warning: partner demo encrypts its HLS" in result.stderr and "clear_progressive = true" in result.stderr
    quiet = _check(tmp_path, "clear_progressive = true")  # no encryption: nothing to warn about
    assert quiet.returncode == 0 and "clear_progressive" not in quiet.stderr
    default = _check(tmp_path, f'encryption = "aes-128"\nkey_secrets = ["{SECRET}"]')
    assert default.returncode == 0 and "clear_progressive" not in default.stderr
