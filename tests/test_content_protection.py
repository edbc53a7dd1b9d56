"""HLS AES-128 content protection (docs/CONTENT_PROTECTION.md): real servers, real ffmpeg.

A library of four partners over the same 8 s fixture (h264_baseline, GOP 2 s, 2 s segments: 4 segments):

* ``enc``   AES-128, a token required for everything, keys rotated every 2 segments;
* ``prev``  AES-128 rotated every 2 segments too, and a 3 s preview for viewers without a token;
* ``plain`` no encryption (the differential oracle: the clear bytes of the same segments);
* ``flip``  switched between clear and AES-128 by SIGHUP reloads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import m3u8
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import media_fixtures as mf
import oracle
from auth.tokens import sign_native
from conftest import REPO, ServerProcess
from media_fixtures import FIXTURES

FIXTURE = "h264_baseline"
TOKEN_KEY = "00112233445566778899aabbccddeeff"
SECRET = "a1" * 32
SECRET2 = "b2" * 32
EDGE_SECRET = "edge-secret-for-the-tests-01234"
PARTNERS = ("enc", "prev", "plain", "flip")
KEY_LINE = re.compile(r'#EXT-X-KEY:METHOD=AES-128,URI="([^"]+)"')


# enc (tokens required) and prev (a 3 s preview without a token), both AES-128 rotated every 2 segments;
# tests/test_attack_protection.py serves the same two
ENC_PREV_PARTNERS = f"""
[partners.enc]
token_keys = {{ k1 = "{TOKEN_KEY}" }}
encryption = "aes-128"
key_secrets = ["{SECRET}"]
key_rotation_segments = 2
default_profile = "tokens"

[partners.enc.profiles.tokens]
rules = [ {{ unless = {{ authenticated = true }}, then = ["block"] }} ]

[partners.prev]
token_keys = {{ k1 = "{TOKEN_KEY}" }}
encryption = "aes-128"
key_secrets = ["{SECRET}"]
key_rotation_segments = 2
default_profile = "members"

[partners.prev.profiles.members]
rules = [ {{ unless = {{ authenticated = true }}, then = [{{ preview = 3 }}] }} ]
"""


def partners_toml(flip: str = "none") -> str:
    flip_keys = f'key_secrets = ["{SECRET2}"]\n' if flip != "none" else ""
    return f"""{ENC_PREV_PARTNERS}
[partners.flip]
encryption = "{flip}"
{flip_keys}"""


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("protected-library")
    for partner in PARTNERS:
        folder = root / partner / FIXTURE
        folder.mkdir(parents=True)
        shutil.copyfile(mf.fixture_path(FIXTURE), folder / "main.mp4")
    return root


@pytest.fixture(scope="module")
def origin(library, tmp_path_factory):
    folder = tmp_path_factory.mktemp("protected-origin")
    config = folder / "vodgate.toml"
    config.write_text(
        f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\ntrusted_proxies = ["127.0.0.1/32"]\n'
        f'[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n' + partners_toml()
    )
    srv = ServerProcess(["--config", str(config), "--workers", "1"], folder / "server.log")
    yield srv, config
    srv.stop()


def token(partner: str, ttl: int = 600) -> str:
    return sign_native("k1", bytes.fromhex(TOKEN_KEY), f"/p/{partner}/e/{FIXTURE}", int(time.time()) + ttl)


def root(base: str, partner: str, fmt: str = "hls") -> str:
    return f"{base}/p/{partner}/e/{FIXTURE}/{fmt}"


def get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers=headers, timeout=30)


def key_uris(playlist: str) -> list[tuple[int, str]]:
    """(index of the next segment, key URI) for each EXT-X-KEY."""
    out, segments = [], 0
    for line in playlist.splitlines():
        match = KEY_LINE.match(line)
        if match:
            out.append((segments, match[1]))
        elif line and not line.startswith("#"):
            segments += 1
    return out


def decrypt(body: bytes, key: bytes, sequence: int) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.CBC(sequence.to_bytes(16, "big"))).decryptor()
    padded = decryptor.update(body) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def absolute(playlist_url: str, uri: str) -> str:
    return httpx.URL(playlist_url).join(uri).__str__()


def segment_urls(playlist_url: str, text: str) -> list[str]:
    """The playlist's segment URLs, absolute and in order (an encrypted partner's carry a -k marker)."""
    return [absolute(playlist_url, line) for line in text.splitlines() if line and not line.startswith("#")]


# --------------------------------------------------------------------------- decode


@pytest.mark.parametrize("fmt", ["hls", "cmaf"])
def test_ffmpeg_plays_encrypted_hls_bit_exactly(origin, fmt):
    """ffmpeg reads the master with a token, fetches each key itself (the token is in the key URIs) and decrypts."""
    srv, _ = origin
    playlist = get(f"{root(srv.base, 'enc', fmt)}/main/index.m3u8?token={token('enc')}").text
    assert len(key_uris(playlist)) == 2  # rotation: ffmpeg has to fetch two keys
    source = oracle.framemd5(mf.fixture_path(FIXTURE), "v:0")
    ours = oracle.framemd5(f"{root(srv.base, 'enc', fmt)}/master.m3u8?token={token('enc')}", "v:0")
    assert len(ours) == len(source) == FIXTURES[FIXTURE].expect.video_frames
    assert [f.md5 for f in ours] == [f.md5 for f in source]


@pytest.mark.parametrize("fmt", ["hls", "cmaf"])
def test_a_clip_of_an_encrypted_entry_decodes_like_the_same_clip_in_the_clear(origin, fmt):
    """Key URIs inside a clip folder (clip-{from}-{to}/, one level deeper) still reach the entry's keys."""
    srv, _ = origin
    clip = f"/p/enc/e/{FIXTURE}/clip-2-6/{fmt}"
    playlist = get(f"{srv.base}{clip}/main/index.m3u8?token={token('enc')}")
    assert playlist.status_code == 200, playlist.text
    for _, uri in key_uris(playlist.text):
        key = get(absolute(f"{srv.base}{clip}/main/index.m3u8", uri))
        assert key.status_code == 200 and len(key.content) == 16, (uri, key.text)
    ours = oracle.framemd5(f"{srv.base}{clip}/master.m3u8?token={token('enc')}", "v:0")
    clear = oracle.framemd5(f"{srv.base}/p/plain/e/{FIXTURE}/clip-2-6/{fmt}/master.m3u8", "v:0")
    assert len(ours) == len(clear) > 0
    assert [f.md5 for f in ours] == [f.md5 for f in clear]


def test_every_key_a_player_fetches_is_a_play_event_with_its_kid_and_never_its_bytes(library, tmp_path):
    """ffmpeg plays an encrypted entry with 2 rotated keys: 2 key_served events (the playlist's kids), counted under
    route="key" in /metrics; a refused key request is a denied event; no event holds key bytes."""
    events = tmp_path / "events"
    config = tmp_path / "vodgate.toml"
    config.write_text(f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\n'
                      f'[analytics]\nenabled = true\npath = "{events}"\nflush_interval = 0.05\n' + partners_toml())
    srv = ServerProcess(["--config", str(config), "--workers", "1"], tmp_path / "server.log")
    try:
        playlist = f"{root(srv.base, 'enc')}/main/index.m3u8?token={token('enc')}"
        kids = [uri.rsplit("/", 1)[-1].split(".key")[0] for _, uri in key_uris(get(playlist).text)]
        keys = [get(absolute(playlist, uri)).content for _, uri in key_uris(get(playlist).text)]
        oracle.framemd5(f"{root(srv.base, 'enc')}/master.m3u8?token={token('enc')}", "v:0")
        refused = get(f"{srv.base}/p/enc/e/{FIXTURE}/keys/{kids[0]}.key")  # no token
        assert refused.status_code == 403
        metrics = get(f"{srv.base}/metrics").text
    finally:
        srv.stop()  # flushes the events
    lines = [line for f in sorted(events.glob("*.jsonl")) for line in f.read_text().splitlines()]
    served = [json.loads(line) for line in lines if '"key_served"' in line]
    ffmpeg_served = [e for e in served if e["ua"] == "ffmpeg"]
    # ffmpeg fetches each key once per playlist that names it (video and audio renditions share the entry's keys)
    assert {e["kid"] for e in ffmpeg_served} == set(kids) and len(kids) == 2
    assert all(e["clip"] is None and e["entry"] == FIXTURE and e["session"] for e in served)
    assert any(json.loads(line)["kind"] == "denied" and json.loads(line)["reason"] for line in lines)
    assert 'vodgate_http_requests_total{route="key",status="200"}' in metrics
    text = "\n".join(lines)
    assert not any(key.hex() in text for key in keys) and token("enc").split("~")[0] not in text


# --------------------------------------------------------------------------- playlists and keys


@pytest.mark.parametrize("fmt", ["hls", "cmaf"])
def test_rotation_writes_a_new_key_every_two_segments(origin, fmt):
    srv, _ = origin
    text = get(f"{root(srv.base, 'enc', fmt)}/main/index.m3u8?token={token('enc')}").text
    playlist = m3u8.loads(text)
    assert len(playlist.segments) == 4
    keys = key_uris(text)
    assert [at for at, _ in keys] == [0, 2]
    kids = [re.search(r"keys/([0-9a-f]{16})\.key", uri)[1] for _, uri in keys]
    assert len(set(kids)) == 2
    assert all(uri.startswith("../../keys/") and "token=" in uri for _, uri in keys)  # relative, token carried
    assert "IV=" not in text  # the sequence-number IV (RFC 8216 5.2)
    if fmt == "cmaf":  # the init stays clear: EXT-X-MAP before the first EXT-X-KEY (RFC 8216 4.3.2.4)
        assert text.index("#EXT-X-MAP") < text.index("#EXT-X-KEY")
    master = get(f"{root(srv.base, 'enc', fmt)}/master.m3u8?token={token('enc')}").text
    assert "EXT-X-I-FRAME-STREAM-INF" not in master
    assert get(f"{root(srv.base, 'enc', fmt)}/main/iframes.m3u8?token={token('enc')}").status_code == 404


def _key_urls(srv, partner: str, tok: str) -> list[str]:
    url = f"{root(srv.base, partner)}/main/index.m3u8?token={tok}"
    return [absolute(url, uri).split("?")[0] for _, uri in key_uris(get(url).text)]


def test_no_key_without_a_valid_token(origin):
    srv, _ = origin
    first = _key_urls(srv, "enc", token("enc"))[0]
    good = get(f"{first}?token={token('enc')}")
    assert good.status_code == 200 and len(good.content) == 16
    assert good.headers["content-type"] == "application/octet-stream"
    assert good.headers["cache-control"] == "no-store, private"
    wrong = sign_native("k1", bytes.fromhex("ff" * 16), f"/p/enc/e/{FIXTURE}", int(time.time()) + 600)
    expired = sign_native("k1", bytes.fromhex(TOKEN_KEY), f"/p/enc/e/{FIXTURE}", int(time.time()) - 3600)
    for query in ("", f"?token={wrong}", f"?token={expired}"):
        denied = get(first + query)
        assert denied.status_code == 403, (query, denied.text)
        assert denied.headers["content-type"].startswith("application/json") and good.content not in denied.content
    # a kid of another entry (or none at all) is not found
    assert get(f"{srv.base}/p/enc/e/{FIXTURE}/keys/0123456789abcdef.key?token={token('enc')}").status_code == 404


def test_a_preview_viewer_gets_only_the_keys_of_its_preview(origin):
    srv, _ = origin
    playlist_url = f"{root(srv.base, 'prev')}/main/index.m3u8"
    full = [absolute(playlist_url, uri).split("?")[0] for _, uri in key_uris(get(f"{playlist_url}?token={token('prev')}").text)]
    assert len(full) == 2
    preview = get(f"{root(srv.base, 'prev')}/main/index-p3.m3u8")
    assert preview.status_code == 200
    assert len(key_uris(preview.text)) == 1  # 3 s: segments 1 and 2 (cut), one period
    first, second = get(full[0]), get(full[1])
    assert first.status_code == 200 and len(first.content) == 16
    assert second.status_code == 403 and second.json()["error"] == "preview_only"
    assert get(f"{full[1]}?token={token('prev')}").status_code == 200


def test_encrypted_segments_decrypt_to_the_clear_ones(origin):
    """Differential: AES-128-CBC with the key fetched over HTTP and the sequence-number IV gives the clear bytes."""
    srv, _ = origin
    tok = token("enc")
    for fmt, ext in (("hls", "ts"), ("cmaf", "m4s")):
        url = f"{root(srv.base, 'enc', fmt)}/main/index.m3u8?token={tok}"
        text = get(url).text
        keys = {at: get(absolute(url, uri)).content for at, uri in key_uris(text)}
        listed = segment_urls(url, text)
        assert all(re.search(rf"/seg-{n}-k[0-9a-f]{{8}}\.{ext}\?", u) for n, u in enumerate(listed, 1)), listed
        for n in range(1, 5):
            key = keys[0 if n <= 2 else 2]
            encrypted = get(listed[n - 1])
            clear = get(f"{root(srv.base, 'plain', fmt)}/main/seg-{n}.{ext}")
            assert encrypted.status_code == clear.status_code == 200
            assert encrypted.content != clear.content and len(encrypted.content) % 16 == 0
            assert decrypt(encrypted.content, key, n) == clear.content, (fmt, n)
            head = httpx.head(listed[n - 1])
            assert int(head.headers["content-length"]) == len(encrypted.content)
            unmarked = get(f"{root(srv.base, 'enc', fmt)}/main/seg-{n}.{ext}?token={tok}")  # no bytes without the marker
            assert unmarked.status_code == 404 and unmarked.json()["error"] == "not_found"
        if fmt == "cmaf":  # the init segment is the same clear bytes, under a marked URL as the segments are
            map_uri = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)[1]
            assert re.fullmatch(r"init-k[0-9a-f]{8}\.mp4\?token=.*", map_uri), map_uri
            init = get(absolute(url, map_uri)).content
            assert get(f"{root(srv.base, 'enc', fmt)}/main/init.mp4?token={tok}").status_code == 404
            assert init == get(f"{root(srv.base, 'plain', fmt)}/main/init.mp4").content


# --------------------------------------------------------------------------- reload


def _reload(srv: ServerProcess, config: Path, text: str) -> None:
    before = srv.log().count("reloaded ")
    config.write_text(text)
    os.kill(srv.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while srv.log().count("reloaded ") <= before:
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)


def test_a_reload_that_switches_encryption_never_serves_the_other_mode(origin):
    """flip: clear -> aes-128 -> clear with SIGHUP; segment and playlist caches (and ETags) follow each switch."""
    srv, config = origin
    base_text = config.read_text().split("\n[partners.enc]")[0]
    seg, playlist = f"{root(srv.base, 'flip')}/main/seg-2.ts", f"{root(srv.base, 'flip')}/main/index.m3u8"
    clear = get(seg)
    assert clear.status_code == 200 and "#EXT-X-KEY" not in get(playlist).text
    assert segment_urls(playlist, get(playlist).text)[1] == seg
    assert get(seg).headers["x-cache"] == "HIT"
    try:
        _reload(srv, config, base_text + partners_toml(flip="aes-128"))
        text = get(playlist).text
        keys = key_uris(text)
        assert len(keys) == 1
        marked = segment_urls(playlist, text)[1]  # the encrypted bytes have a URL of their own (-k marker)
        assert marked != seg and get(seg).status_code == 404  # the clear URL no longer names any bytes here
        encrypted = get(marked)
        assert encrypted.headers["etag"] != clear.headers["etag"]
        assert get(marked, **{"If-None-Match": clear.headers["etag"]}).status_code == 200  # no 304 across modes
        assert decrypt(encrypted.content, get(absolute(playlist, keys[0][1])).content, 2) == clear.content
        assert get(marked).content == encrypted.content
    finally:
        _reload(srv, config, base_text + partners_toml(flip="none"))
    again = get(seg)
    assert again.content == clear.content and again.headers["etag"] == clear.headers["etag"]
    assert "#EXT-X-KEY" not in get(playlist).text
    assert get(f"{srv.base}/p/flip/e/{FIXTURE}/keys/0123456789abcdef.key").status_code == 404


# --------------------------------------------------------------------------- edge


# the same partners and rules without any encryption setting: an edge neither packages nor derives keys
EDGE_PARTNERS = "\n".join(line for line in partners_toml().splitlines() if not line.startswith(("encryption", "key_")))


def test_an_edge_forwards_key_requests_uncached(origin, tmp_path):
    srv, _ = origin
    config = tmp_path / "edge.toml"
    config.write_text(f'[server]\ntrusted_proxies = ["127.0.0.1/32"]\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n'
                      f'[edge]\nttl = 600\n' + EDGE_PARTNERS)
    edge = ServerProcess(["--config", str(config), "--role", "edge", "--upstream", srv.base, "--workers", "1"], tmp_path / "edge.log")
    try:
        tok = token("enc")
        url = f"{edge.base}/p/enc/e/{FIXTURE}/hls/main/index.m3u8?token={tok}"
        playlist = httpx.get(url, timeout=30)
        assert playlist.status_code == 200, playlist.text
        key_url = absolute(url, key_uris(playlist.text)[0][1])
        for _ in range(2):
            key = httpx.get(key_url, timeout=30)
            assert key.status_code == 200 and len(key.content) == 16
            assert key.headers["cache-control"] == "no-store, private" and key.headers["x-cache"] == "MISS"
        assert httpx.get(key_url.split("?")[0], timeout=30).status_code == 403
        preview_playlist = httpx.get(f"{edge.base}/p/prev/e/{FIXTURE}/hls/main/index.m3u8?token={token('prev')}", timeout=30)
        later = absolute(str(preview_playlist.url), key_uris(preview_playlist.text)[1][1]).split("?")[0]
        denied = httpx.get(later, timeout=30)  # no token: the edge's preview grant reaches the origin
        assert denied.status_code == 403 and denied.json()["error"] == "preview_only"
        decoded = oracle.framemd5(url, "v:0")
        assert [f.md5 for f in decoded] == [f.md5 for f in oracle.framemd5(mf.fixture_path(FIXTURE), "v:0")]
    finally:
        edge.stop()


# --------------------------------------------------------------------------- config


def _check(tmp_path: Path, partner: str) -> subprocess.CompletedProcess:
    path = tmp_path / "vodgate.toml"
    path.write_text(f'[server]\nmedia_root = "{tmp_path}"\n[partners.demo]\n{partner}')
    return subprocess.run([sys.executable, "-m", "cli.main", "config", "check", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("partner, message", [
    ('encryption = "sample-aes"', 'partners.demo.encryption = "sample-aes" needs partners.demo.key_secrets'),
    ('encryption = "aes-128"', 'partners.demo.encryption = "aes-128" needs partners.demo.key_secrets'),
    ('encryption = "aes-128"\nkey_secrets = ["xyz' + SECRET + '"]', "partners.demo.key_secrets[0] is not an even number of hex digits"),
    ('encryption = "aes-128"\nkey_secrets = ["abcd"]', "partners.demo.key_secrets[0] is 2 bytes; expected at least 16 bytes"),
    ('encryption = "aes"\nkey_secrets = ["' + SECRET + '"]', "partners.demo.encryption has value 'aes'; expected one of 'none', 'aes-128', 'sample-aes'"),
    ('encryption = "aes-128"\nkey_secrets = ["' + SECRET + '"]\nkey_rotation_segments = -1', "partners.demo.key_rotation_segments has value -1"),
])
def test_config_check_refuses_bad_encryption_settings(tmp_path, partner, message):
    result = _check(tmp_path, partner)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert SECRET not in result.stderr + result.stdout


def test_config_check_accepts_encryption_and_never_prints_the_secret(tmp_path):
    result = _check(tmp_path, f'encryption = "aes-128"\nkey_secrets = ["{SECRET}", "{SECRET2}"]\nkey_rotation_segments = 5')
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    assert SECRET not in result.stdout + result.stderr and SECRET2 not in result.stdout + result.stderr


# --------------------------------------------------------------------------- pure units


def test_keys_are_derived_per_entry_and_period_and_kids_are_independent():
    from auth.content_keys import Protection, content_key, find_period, key_id, period_count, period_of

    s1, s2 = bytes.fromhex(SECRET), bytes.fromhex(SECRET2)
    assert content_key(s1, "p", "e", 0) == content_key(s1, "p", "e", 0) and len(content_key(s1, "p", "e", 0)) == 16
    keys = {content_key(s, p, e, n) for s in (s1, s2) for p in ("p", "q") for e in ("e", "f") for n in (0, 1)}
    assert len(keys) == 16
    assert bytes.fromhex(key_id(s1, "p", "e", 0)) not in content_key(s1, "p", "e", 0)
    assert [period_of(n, 2) for n in range(1, 6)] == [0, 0, 1, 1, 2] and period_of(99, 0) == 0
    assert period_count(5, 2) == 3 and period_count(4, 2) == 2 and period_count(7, 0) == 1
    # a kid of the second (older) secret is still found, with its own secret: a rotation keeps old playlists playing
    both = Protection("aes-128", (s2, s1), 2)
    assert find_period(both, "p", "e", key_id(s1, "p", "e", 1), 3) == (s1, 1)
    assert find_period(both, "p", "e", key_id(s2, "p", "e", 2), 3) == (s2, 2)
    assert find_period(both, "p", "e", key_id(s1, "p", "e", 3), 3) is None  # past the entry's periods
    assert find_period(both, "p", "f", key_id(s1, "p", "e", 0), 3) is None  # another entry's kid
    assert "a1a1" not in repr(both) and "b2b2" not in repr(both)


def test_playlist_writes_ext_x_key_where_the_key_changes():
    from fractions import Fraction

    from packager.hls.playlists import InitSection, PlaylistSegment, media_playlist

    segs = [PlaylistSegment(f"seg-{n}.m4s", Fraction(2), key_uri=f"k{(n - 1) // 2}") for n in range(1, 6)]
    text = media_playlist(segs, target_duration=2, version=7, init=InitSection("init.mp4"))
    lines = text.splitlines()
    keyed = [lines[i + 1] for i, line in enumerate(lines) if line.startswith("#EXT-X-KEY")]
    assert [line for line in lines if line.startswith("#EXT-X-KEY")] == [
        '#EXT-X-KEY:METHOD=AES-128,URI="k0"', '#EXT-X-KEY:METHOD=AES-128,URI="k1"', '#EXT-X-KEY:METHOD=AES-128,URI="k2"']
    assert keyed == ["#EXTINF:2.000000,"] * 3
    assert text.index("#EXT-X-MAP") < text.index("#EXT-X-KEY")
    clear = media_playlist([PlaylistSegment("seg-1.ts", Fraction(2))], target_duration=2, version=3)
    assert "EXT-X-KEY" not in clear


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 65535, 65536, 65537, 188 * 1000])
def test_encrypt_segment_is_aes_128_cbc_with_pkcs7_and_the_sequence_iv(size):
    """Against cryptography's own padder and cipher in one call: the chunked writer changes nothing."""
    from packager.encryption import encrypt_segment, encrypted_size

    key, body = bytes(range(16)), bytes((i * 7) % 251 for i in range(size))
    padder = padding.PKCS7(128).padder()
    reference = Cipher(algorithms.AES(key), modes.CBC((9).to_bytes(16, "big"))).encryptor()
    expected = reference.update(padder.update(body) + padder.finalize()) + reference.finalize()
    assert encrypt_segment(body, key, 9) == expected
    assert len(expected) == encrypted_size(size) and decrypt(expected, key, 9) == body
