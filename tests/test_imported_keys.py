"""Imported content keys (docs/CONTENT_PROTECTION.md, "Imported keys"): ``key_source = "redis"``.

A real redis-server per module, real origins, real ffmpeg. The keys are random here and written into Redis as an
operator would (HSET); the checks are decodes with those keys (ffmpeg fetches them from the key route), the
bytes the key route answers, the KIDs written into cbcs inits, and what happens when Redis or a key is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from urllib.parse import urljoin

import httpx
import pytest

import media_fixtures as mf
import oracle
from conftest import ServerProcess
from redis_support import RedisServer, redis_server, require_redis  # noqa: F401  (the fixture)

ENTRY = "h264_baseline"
SECRET = "d7" * 32
KEY_LINE = re.compile(r'#EXT-X-KEY:METHOD=([A-Z0-9-]+),URI="([^"]+)"')


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("imported-library")
    for partner in ("imp", "icb", "plain"):
        for entry in (ENTRY, "h264_high_bframes"):
            (root / partner / entry).mkdir(parents=True)
            shutil.copyfile(mf.fixture_path(entry), root / partner / entry / "main.mp4")
    return root


def config_text(library, redis_url: str, ttl_note: str = "") -> str:
    return (f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\n[redis]\nurl = "{redis_url}"\n'
            '[partners.imp]\nencryption = "aes-128"\nkey_source = "redis"\nkey_rotation_segments = 2\n'
            '[partners.icb]\nencryption = "sample-aes"\nkey_source = "redis"\n'
            f'[partners.plain]\n{ttl_note}')


@pytest.fixture(scope="module")
def setup(library, redis_server, tmp_path_factory):  # noqa: F811
    require_redis("imported-key tests")
    folder = tmp_path_factory.mktemp("imported-origin")
    config = folder / "vodgate.toml"
    config.write_text(config_text(library, redis_server.url))
    srv = ServerProcess(["--config", str(config), "--workers", "1"], folder / "server.log")
    yield srv, redis_server
    srv.stop()


def import_keys(client, partner: str, entry: str, periods: int) -> dict[int, tuple[bytes, bytes]]:
    keys = {p: (os.urandom(16), os.urandom(16)) for p in range(periods)}
    client.delete(f"vodgate:content-keys:{partner}:{entry}")
    client.hset(f"vodgate:content-keys:{partner}:{entry}", mapping={str(p): f"{kid.hex()}:{key.hex()}" for p, (kid, key) in keys.items()})
    return keys


def get(url: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, url, timeout=60)


def key_lines(url: str, text: str) -> list[tuple[str, str]]:
    return [(m[1], urljoin(url, m[2])) for m in KEY_LINE.finditer(text)]


def test_aes128_with_imported_rotated_keys_decodes_bit_exactly(setup):
    """ffmpeg plays the master with the imported keys (fetched from the key route); the key route answers exactly
    the imported bytes; the kid of each key URL is the first half of the imported KID of its period."""
    srv, redis = setup
    keys = import_keys(redis.client, "imp", ENTRY, 4)
    master = f"{srv.base}/p/imp/e/{ENTRY}/hls/master.m3u8"
    assert oracle.video_hashes(master) == oracle.video_hashes(mf.fixture_path(ENTRY))
    url = f"{srv.base}/p/imp/e/{ENTRY}/hls/main/index.m3u8"
    listed = key_lines(url, get(url).text)
    assert len(listed) >= 2
    for period, (method, key_url) in enumerate(listed):
        kid, key = keys[period]
        assert method == "AES-128" and key_url.endswith(f"/keys/{kid[:8].hex()}.key")
        answer = get(key_url)
        assert answer.status_code == 200 and answer.content == key
        assert answer.headers["cache-control"] == "no-store, private"


def test_cbcs_init_carries_the_imported_kid_and_decodes_with_the_imported_key(setup, tmp_path):
    srv, redis = setup
    keys = import_keys(redis.client, "icb", ENTRY, 1)
    kid, key = keys[0]
    url = f"{srv.base}/p/icb/e/{ENTRY}/cmaf/main/index.m3u8"
    text = get(url).text
    init = get(urljoin(url, re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)[1])).content
    assert b"tenc" in init and kid in init  # the imported KID, as another packager encrypting this content writes it
    segments = [urljoin(url, line) for line in text.splitlines() if line and not line.startswith("#")]
    whole = tmp_path / "whole.mp4"
    whole.write_bytes(init + b"".join(get(s).content for s in segments))
    decoded = oracle.video_hashes(whole, extra_input_args=["-decryption_key", key.hex()])
    assert decoded == oracle.video_hashes(mf.fixture_path(ENTRY))
    master = f"{srv.base}/p/icb/e/{ENTRY}/cmaf/master.m3u8"
    assert oracle.video_hashes(master) == decoded  # ffmpeg's HLS demuxer fetches the imported key itself


def test_a_missing_period_or_entry_is_a_503_that_names_it(setup):
    srv, redis = setup
    redis.client.delete(f"vodgate:content-keys:imp:h264_high_bframes")
    answer = get(f"{srv.base}/p/imp/e/h264_high_bframes/hls/main/index.m3u8")
    assert answer.status_code == 503 and answer.json()["error"] == "content_key_missing"
    assert "h264_high_bframes" in answer.json()["detail"] and answer.headers["retry-after"]
    other = get(f"{srv.base}/p/plain/e/h264_high_bframes/hls/main/index.m3u8")
    assert other.status_code == 200  # everyone else is served


def test_a_malformed_value_is_refused_without_echoing_it(setup, tmp_path):
    srv, redis = setup
    secret_looking = "ab" * 16 + ":" + "cd" * 15  # one hex digit pair short
    redis.client.delete("vodgate:content-keys:icb:h264_high_bframes")
    redis.client.hset("vodgate:content-keys:icb:h264_high_bframes", "0", secret_looking)
    answer = get(f"{srv.base}/p/icb/e/h264_high_bframes/cmaf/main/index.m3u8")
    assert answer.status_code == 503 and answer.json()["error"] == "content_key_invalid"
    assert "cd" * 15 not in answer.text
    assert "cd" * 15 not in srv.log_path.read_text()


def test_redis_down_is_a_503_and_clear_partners_keep_playing(library, tmp_path):
    require_redis("imported-key tests")
    redis = RedisServer(tmp_path / "redis")
    config = tmp_path / "vodgate.toml"
    config.write_text(config_text(library, redis.url))
    srv = ServerProcess(["--config", str(config), "--workers", "1"], tmp_path / "server.log")
    try:
        import_keys(redis.client, "imp", ENTRY, 4)
        assert get(f"{srv.base}/p/imp/e/{ENTRY}/hls/main/index.m3u8").status_code == 200
        redis.stop()
        # the keys read before stay usable for their TTL; an entry not read yet cannot be served
        answer = get(f"{srv.base}/p/imp/e/h264_high_bframes/hls/main/index.m3u8")
        assert answer.status_code == 503 and answer.json()["error"] == "key_store_unavailable"
        assert "password" not in answer.text
        assert get(f"{srv.base}/p/plain/e/{ENTRY}/hls/main/index.m3u8").status_code == 200
        assert get(f"{srv.base}/p/imp/e/{ENTRY}/hls/main/index.m3u8").status_code == 200
        log = (tmp_path / "server.log").read_text()
        assert log.count("content keys: the key store") == 1  # logged once, not per request
    finally:
        srv.stop()
        redis.stop()


def test_clips_are_refused_for_imported_keys(setup):
    srv, redis = setup
    import_keys(redis.client, "imp", ENTRY, 4)
    answer = get(f"{srv.base}/p/imp/e/{ENTRY}/clip-2-6/hls/main/index.m3u8")
    assert answer.status_code == 404 and answer.json()["error"] == "clip_needs_derived_keys"


def test_new_imported_keys_give_new_segment_urls(library, redis_server, tmp_path):  # noqa: F811
    """Keys replaced in Redis show after ``[redis] key_ttl``: the playlist names new keys and new segment URLs; the
    old URLs answer 404 (no cache serves bytes under the replaced keys)."""
    require_redis("imported-key tests")
    config = tmp_path / "vodgate.toml"
    config.write_text(config_text(library, redis_server.url).replace("[partners.imp]", "key_ttl = 1\n[partners.imp]"))
    srv = ServerProcess(["--config", str(config), "--workers", "1"], tmp_path / "server.log")
    try:
        import_keys(redis_server.client, "icb", "h264_high_bframes", 1)
        url = f"{srv.base}/p/icb/e/h264_high_bframes/cmaf/main/index.m3u8"
        before = get(url).text
        old_segment = urljoin(url, [line for line in before.splitlines() if line and not line.startswith("#")][0])
        assert get(old_segment).status_code == 200
        _, new_key = import_keys(redis_server.client, "icb", "h264_high_bframes", 1)[0]
        deadline = time.monotonic() + 10  # key_ttl = 1
        while get(url).text == before:
            assert time.monotonic() < deadline, "the playlist still names the replaced keys"
            time.sleep(1)
        assert get(old_segment).status_code == 404
        (method, key_url), = key_lines(url, get(url).text)
        assert get(key_url).content == new_key
    finally:
        srv.stop()


@pytest.mark.parametrize("partner,redis,message", [
    ('encryption = "aes-128"\nkey_source = "vault"', True, "key_source has value 'vault'"),
    ('encryption = "aes-128"\nkey_source = "redis"\nkey_secrets = ["' + SECRET + '"]', True, "key_secrets is not used with"),
    ('encryption = "aes-128"\nkey_source = "redis"', False, "there is no [redis] url"),
])
def test_config_errors(partner, redis, message):
    import tomllib

    from config.errors import ConfigError
    from config.settings import parse_settings

    text = ('[redis]\nurl = "redis://127.0.0.1:1/0"\n' if redis else "") + f"[partners.p]\n{partner}\n"
    with pytest.raises(ConfigError) as error:
        parse_settings(tomllib.loads(text))
    assert message in str(error.value)
    assert SECRET not in str(error.value)


def test_config_accepts_imported_keys_and_a_key_ttl():
    import tomllib

    from config.settings import parse_settings

    settings = parse_settings(tomllib.loads('[redis]\nurl = "redis://127.0.0.1:1/0"\nkey_ttl = 5\n'
                                            '[partners.p]\nencryption = "sample-aes"\nkey_source = "redis"\n'))
    assert settings.key_ttl == 5 and settings.access.partners["p"].protection.imports
