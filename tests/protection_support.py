"""A real origin with encrypting partners beside a clear one, for the content-protection tests.

    origin = encrypting_origin(tmp_path_factory, "cbcs", {"cenc": 0, "crot": 2}, FIXTURES, SECRET)

Every encrypting partner requires a token (``token_for``), holds each fixture as ``<entry>/main.mp4`` and
encrypts with ``method`` under ``secret``, rotating keys every N segments (the dict's value); partner
``plain`` holds the same files in the clear, the differential oracle.
"""

from __future__ import annotations

import shutil
import time

import media_fixtures as mf
from auth.tokens import sign_native
from conftest import ServerProcess

TOKEN_KEY = "00112233445566778899aabbccddeeff"


def encrypting_origin(tmp_path_factory, name: str, rotations: dict[str, int], fixtures, secret: str,
                      method: str = "sample-aes") -> ServerProcess:
    library = tmp_path_factory.mktemp(f"{name}-library")
    for partner in (*rotations, "plain"):
        for entry in fixtures:
            (library / partner / entry).mkdir(parents=True)
            shutil.copyfile(mf.fixture_path(entry), library / partner / entry / "main.mp4")
    folder = tmp_path_factory.mktemp(f"{name}-origin")
    config = folder / "vodgate.toml"
    text = f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\n'
    for partner, rotation in rotations.items():
        text += (
            f'[partners.{partner}]\ntoken_keys = {{ k1 = "{TOKEN_KEY}" }}\nencryption = "{method}"\nkey_secrets = ["{secret}"]\n'
            f'key_rotation_segments = {rotation}\ndefault_profile = "tokens"\n'
            f'[partners.{partner}.profiles.tokens]\nrules = [ {{ unless = {{ authenticated = true }}, then = ["block"] }} ]\n'
        )
    config.write_text(text)
    return ServerProcess(["--config", str(config), "--workers", "1"], folder / "server.log")


def token_for(partner: str, entry: str) -> str:
    return sign_native("k1", bytes.fromhex(TOKEN_KEY), f"/p/{partner}/e/{entry}", int(time.time()) + 600)
