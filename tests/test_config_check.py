"""`vodgate config check FILE`: every check `vodgate serve` makes of its config, without serving.

Each bad config is also given to `vodgate serve`, which must refuse it with the same message: the
check is only worth running if it agrees with the server.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import REPO, ServerProcess

KEY = "00112233445566778899aabbccddeeff"
RULES = f'''
[partners.demo]
token_keys = {{ k1 = "{KEY}" }}
default_profile = "p"
[partners.demo.profiles.p]
rules = [ {{ unless = {{ authenticated = true }}, then = ["block"] }} ]
'''


def vodgate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


BAD = {
    "typo": ('[server]\nprot = 8080\n', "unknown key(s) server.prot (did you mean server.port?)"),
    "type": ('[server]\nport = "8080"\n', "server.port has value '8080'; expected an integer"),
    "section": ('[sever]\nport = 8080\n', "unknown key(s) sever (did you mean server?)"),
    "geoip": ('[server]\ngeoip_database = "broken.mmdb"\n', "server.geoip_database"),
    "media": ('[server]\nmedia_root = "no-such-folder"\n', "media folder"),
    "edge_without_secrets": ('[edge]\nrole = "edge"\nupstreams = ["http://127.0.0.1:9"]\n' + RULES, "set cdn.edge_secrets"),
    "toml": ('[server\n', "is not valid TOML"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_config_is_refused_by_check_and_by_serve_alike(name, tmp_path, media_library):
    document, message = BAD[name]
    if "media_root" not in document and "[edge]" not in document:
        document = document.replace("[server]\n", f'[server]\nmedia_root = "{media_library}"\n', 1)
    path = tmp_path / "vodgate.toml"
    path.write_text(document)
    (tmp_path / "broken.mmdb").write_bytes(b"not a MaxMind database")
    check = vodgate("config", "check", str(path))
    assert check.returncode == 2 and message in check.stderr, check.stderr
    assert check.stdout == ""
    serve = vodgate("serve", "--config", str(path), "--port", "0")
    assert serve.returncode == 2 and message in serve.stderr, serve.stderr
    assert check.stderr.strip().splitlines()[-1] == serve.stderr.strip().splitlines()[-1]


def test_a_good_config_passes_and_serve_starts_with_it(tmp_path, media_library):
    path = tmp_path / "vodgate.toml"
    path.write_text(f'[server]\nport = 9999\nmedia_root = "{media_library}"\n[cdn]\nedge_secrets = ["{KEY}"]\n' + RULES)
    check = vodgate("config", "check", str(path))
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == (f"vodgate: {path}: configuration OK: role all on 127.0.0.1:9999, "
                                    f"media from {media_library}, 1 partner(s)")
    srv = ServerProcess(["--config", str(path)], tmp_path / "server.log")
    try:
        assert httpx.get(f"{srv.base}/p/demo/e/ladder/hls/master.m3u8", timeout=30).status_code == 403  # its rules apply
    finally:
        srv.stop()


def test_an_edge_config_names_its_upstreams(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text(f'[edge]\nrole = "edge"\nupstreams = ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]\n'
                    f'[cdn]\nedge_secrets = ["{KEY}"]\n' + RULES)
    check = vodgate("config", "check", str(path))
    assert check.returncode == 0, check.stderr
    assert "role edge" in check.stdout and "pulling from http://10.0.0.1:8080, http://10.0.0.2:8080" in check.stdout
