"""Encryption per profile (docs/CONTENT_PROTECTION.md, "Per profile"): a profile's ``encryption`` overrides the
partner's for the entries that use the profile; keys, rotation and key source stay the partner's.

A real origin: the partner is clear by default and holds key secrets; entry ``premium`` uses a profile that
encrypts with AES-128. ffmpeg decodes both; the admin API switches a profile's method at runtime.
"""

from __future__ import annotations

import re
import shutil
from urllib.parse import urljoin

import httpx
import pytest

import media_fixtures as mf
import oracle
from conftest import ServerProcess

SECRET = "a9" * 32
ADMIN = "profile-admin-secret-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
ENTRIES = ("premium", "free")


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    library = tmp_path_factory.mktemp("profile-library")
    for entry in ENTRIES:
        (library / "pp" / entry).mkdir(parents=True)
        shutil.copyfile(mf.fixture_path("h264_baseline"), library / "pp" / entry / "main.mp4")
    folder = tmp_path_factory.mktemp("profile-origin")
    config = folder / "vodgate.toml"
    config.write_text(
        f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\n'
        f'[partners.pp]\nadmin_secret = "{ADMIN}"\nkey_secrets = ["{SECRET}"]\nkey_rotation_segments = 2\n'
        '[partners.pp.profiles.paid]\nencryption = "aes-128"\nrules = []\n'
        '[partners.pp.entries.premium]\nprofile = "paid"\n')
    srv = ServerProcess(["--config", str(config), "--workers", "1"], folder / "server.log")
    yield srv
    srv.stop()


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=60)


def playlist(srv, entry: str, fmt: str = "hls") -> tuple[str, str]:
    url = f"{srv.base}/p/pp/e/{entry}/{fmt}/main/index.m3u8"
    answer = get(url)
    assert answer.status_code == 200, answer.text
    return url, answer.text


def test_the_profile_encrypts_its_entries_only(origin):
    _, premium = playlist(origin, "premium")
    _, free = playlist(origin, "free")
    assert premium.count("#EXT-X-KEY:METHOD=AES-128") >= 2 and re.search(r"seg-1-k[0-9a-f]{8}\.ts", premium)
    assert "#EXT-X-KEY" not in free and "seg-1.ts" in free
    source = oracle.video_hashes(mf.fixture_path("h264_baseline"))
    for entry in ENTRIES:  # both play bit for bit; ffmpeg fetches the premium entry's keys
        assert oracle.video_hashes(f"{origin.base}/p/pp/e/{entry}/hls/master.m3u8") == source


def test_progressive_is_refused_for_the_encrypted_entry_only(origin):
    refused = get(f"{origin.base}/p/pp/e/premium/mp4/main.mp4")
    assert refused.status_code == 403 and refused.json()["error"] == "progressive_clear"
    assert get(f"{origin.base}/p/pp/e/free/mp4/main.mp4").status_code == 200


def test_the_admin_api_switches_a_profiles_encryption(origin):
    """PUT the profile with SAMPLE-AES: its entry's playlists name SAMPLE-AES keys and new segment URLs at once;
    the old URLs answer 404; the fMP4 init is then cbcs; PUT it back without ``encryption``: the partner's (clear)."""
    url, before = playlist(origin, "premium")
    old_segment = urljoin(url, next(line for line in before.splitlines() if line.startswith("seg-")))
    put = httpx.put(f"{origin.base}/admin/partners/pp/profiles/paid", headers=AUTH,
                    json={"encryption": "sample-aes", "rules": []}, timeout=10)
    assert put.status_code == 200 and put.json()["paid"]["encryption"] == "sample-aes"
    _, after = playlist(origin, "premium")
    assert "METHOD=SAMPLE-AES" in after and "METHOD=AES-128" not in after
    assert get(old_segment).status_code == 404
    cmaf_url, cmaf = playlist(origin, "premium", "cmaf")
    init = get(urljoin(cmaf_url, re.search(r'#EXT-X-MAP:URI="([^"]+)"', cmaf)[1])).content
    assert b"encv" in init and b"cbcs" in init  # (decoded in tests/test_cbcs.py; ffmpeg takes no rotated cbcs keys)
    put = httpx.put(f"{origin.base}/admin/partners/pp/profiles/paid", headers=AUTH, json={"rules": []}, timeout=10)
    assert put.status_code == 200
    _, clear = playlist(origin, "premium")
    assert "#EXT-X-KEY" not in clear and "seg-1.ts" in clear
    assert get(f"{origin.base}/p/pp/e/premium/mp4/main.mp4").status_code == 200


def test_the_admin_api_refuses_encryption_without_keys_or_an_unknown_method(origin, tmp_path):
    bad = httpx.put(f"{origin.base}/admin/partners/pp/profiles/x", headers=AUTH, json={"encryption": "rot13"}, timeout=10)
    assert bad.status_code == 400 and "encryption" in bad.json()["detail"]


def test_config_refuses_a_profile_that_encrypts_without_partner_keys():
    import tomllib

    from config.errors import ConfigError
    from config.settings import parse_settings

    with pytest.raises(ConfigError) as error:
        parse_settings(tomllib.loads('[partners.p.profiles.paid]\nencryption = "aes-128"\n'))
    assert "needs content keys on the partner" in str(error.value)
    settings = parse_settings(tomllib.loads(f'[partners.p]\nkey_secrets = ["{SECRET}"]\n'
                                            '[partners.p.profiles.paid]\nencryption = "sample-aes"\n'
                                            '[partners.p.entries.e]\nprofile = "paid"\n'))
    partner = settings.access.partners["p"]
    assert partner.protection_for("e").method == "sample-aes" and not partner.protection_for("other").encrypts
