"""cli/access.py: token sign / verify and access explain, through the argparse hooks."""

import argparse
import io
import time
from ipaddress import ip_address
from urllib.parse import parse_qs, urlsplit

import pytest

from auth.tokens import KeyRing, verify
from cli import access as access_cli
from config.settings import ConfigError

K1 = "00112233445566778899aabbccddeeff"
K2 = "ffeeddccbbaa99887766554433221100"

CONFIG = f'''
[server]
token_clock_skew = 0

[partners.demo]
token_keys = {{ k1 = "{K1}", k2 = "{K2}" }}
token_signing_key = "k2"
default_profile = "site"

[partners.demo.profiles.site]
rules = [
  {{ name = "office", if = {{ ip = ["192.0.2.0/24"] }}, then = ["allow"] }},
  {{ if = {{ referrer = ["*.example.com"] }}, then = [{{ preview = 30 }}] }},
  {{ if = {{ schedule = {{ time = "18:00-20:00", tz = "Europe/Paris" }} }}, then = [{{ block = "blackout" }}] }},
  {{ unless = {{ authenticated = true }}, then = ["block"] }},
]
'''


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "vodgate.toml"
    path.write_text(CONFIG)
    return path


def run(*argv):
    parser = argparse.ArgumentParser(prog="vodgate")
    commands = parser.add_subparsers(dest="command", required=True)
    access_cli.add_token_commands(commands)
    access_cli.add_access_commands(commands)
    ns = parser.parse_args(argv)
    out = io.StringIO()
    code = access_cli.run(ns, out)
    return code, out.getvalue()


def test_sign_prints_a_playable_url(config):
    code, out = run("token", "sign", "--config", str(config), "--partner", "demo", "--entry", "ladder", "--ttl", "1h",
                    "--base-url", "https://cdn.example.com/")
    assert code == 0
    url = out.strip()
    parts = urlsplit(url)
    assert url.startswith("https://cdn.example.com/p/demo/e/ladder/hls/master.m3u8?token=vg1.k2.")
    token = parse_qs(parts.query)["token"][0]
    keys = KeyRing({"k1": bytes.fromhex(K1), "k2": bytes.fromhex(K2)})
    assert verify(token, "/p/demo/e/ladder/hls/hi/seg-9.ts", ip_address("198.51.100.1"), keys, time.time()).valid
    assert not verify(token, "/p/demo/e/ladder/hls/master.m3u8", ip_address("198.51.100.1"), keys, time.time() + 3700, 0).valid


def test_sign_and_verify_round_trip(config):
    _, url = run("token", "sign", "--config", str(config), "--partner", "demo", "--entry", "ladder", "--ip", "2001:db8:1:2::5", "--key", "k1")
    code, out = run("token", "verify", "--config", str(config), url.strip(), "--ip", "2001:db8:1:2::99")
    assert code == 0 and out.startswith("VALID token_valid: valid until")
    assert "ip:      2001:db8:1:2::/64" in out
    code, out = run("token", "verify", "--config", str(config), url.strip(), "--ip", "2001:db8:1:3::1")
    assert code == 1 and out.startswith("INVALID token_wrong_ip: bound to 2001:db8:1:2::/64, request from 2001:db8:1:3::1")
    code, out = run("token", "verify", "--config", str(config), url.strip())
    assert code == 0 and "IP binding 2001:db8:1:2::/64 not checked" in out


def test_verify_explains_each_failure(config):
    _, url = run("token", "sign", "--config", str(config), "--partner", "demo", "--entry", "ladder", "--ttl", "60")
    url = url.strip()
    code, out = run("token", "verify", "--config", str(config), url, "--at", "2099-01-01T00:00:00Z")
    assert code == 1 and out.startswith("INVALID token_expired:")
    other = url.replace("/e/ladder/", "/e/ladder2/")
    assert run("token", "verify", "--config", str(config), other)[1].startswith("INVALID token_wrong_path:")
    tampered = url[:-2] + ("AA" if not url.endswith("AA") else "BB")
    code, out = run("token", "verify", "--config", str(config), tampered)
    assert out.startswith("INVALID token_bad_signature:") and "claims (unverified" in out
    assert run("token", "verify", "--config", str(config), "/p/demo/e/ladder/hls/master.m3u8")[1].startswith("INVALID token_missing")


def test_sign_hdnts(config):
    code, out = run("token", "sign", "--config", str(config), "--partner", "demo", "--entry", "ladder", "--format", "hdnts")
    assert code == 0 and "?hdnts=exp=" in out and "~acl=/p/demo/e/ladder/*~hmac=" in out
    code, out = run("token", "verify", "--config", str(config), out.strip())
    assert code == 0 and "format: akamai, key k2" in out


def test_explain_prints_rules_and_reasons(config):
    code, out = run("access", "explain", "--config", str(config), "--partner", "demo", "--entry", "ladder",
                    "--ip", "198.51.100.4", "--referrer", "https://evil-example.com/", "--at", "2026-07-01T18:30:00+02:00")
    assert code == 1
    assert "rule 0: no match: if ip in [192.0.2.0/24] then allow" in out
    assert "[ ] referrer in [*.example.com]: referrer host is evil-example.com" in out
    assert "rule 2: DECIDED: if time in [daily 18:00-20:00 Europe/Paris] then block (blackout)" in out
    assert out.rstrip().endswith("=> DENY 403 blackout: blocked by rule 2")

    _, url = run("token", "sign", "--config", str(config), "--partner", "demo", "--entry", "ladder")
    code, out = run("access", "explain", "--config", str(config), "--partner", "demo", "--entry", "ladder",
                    "--ip", "198.51.100.4", "--token", url.strip(), "--at", "2026-07-01T12:00:00Z")
    assert "token <token vodgate kid=k2" in out
    # a fixed time outside the daily 18:00-20:00 Paris blackout (with "now" this failed every evening)
    code, out = run("access", "explain", "--config", str(config), "--partner", "demo", "--entry", "ladder", "--ip", "198.51.100.4",
                    "--at", "2026-07-01T12:00:00Z")
    assert code == 1 and "DENY 403 token_required" in out


def test_configuration_errors(config):
    with pytest.raises(ConfigError, match=r"no \[partners.nobody\]"):
        run("token", "sign", "--config", str(config), "--partner", "nobody", "--entry", "x")
    with pytest.raises(ConfigError, match="--ttl has value 'forever'"):
        run("token", "sign", "--config", str(config), "--partner", "demo", "--entry", "x", "--ttl", "forever")
    with pytest.raises(ConfigError, match="--key 'k9' is not one of"):
        run("token", "sign", "--config", str(config), "--partner", "demo", "--entry", "x", "--key", "k9")
    with pytest.raises(ConfigError, match="--entry has value"):
        run("token", "sign", "--config", str(config), "--partner", "demo", "--entry", "../x")


@pytest.mark.parametrize("text, seconds", [("3600", 3600), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800)])
def test_parse_ttl(text, seconds):
    assert access_cli.parse_ttl(text) == seconds


def test_auth_core_imports_no_web_framework():
    """auth/ and config/partners.py stay pure: no starlette, edge/ or packager/."""
    import subprocess
    import sys

    code = ("import sys, auth.rules, auth.tokens, auth.client_ip, auth.access, config.partners, cli.access; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('starlette', 'edge', 'packager', 'uvicorn')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sign_builds_the_url_from_the_configured_host_and_port(tmp_path, media_library):
    """Without --base-url the URL names the server the config runs, and that server plays it."""
    import httpx
    from conftest import ServerProcess

    path = tmp_path / "vodgate.toml"
    # tokens only (CONFIG's profile also has a clock-dependent blackout)
    document = f'''[server]
port = PORT

[partners.demo]
token_keys = {{ k2 = "{K2}" }}
default_profile = "tokens"

[partners.demo.profiles.tokens]
rules = [ {{ unless = {{ authenticated = true }}, then = ["block"] }} ]
'''
    path.write_text(document.replace("PORT", "8080"))
    srv = ServerProcess(["--config", str(path), "--media", str(media_library)], tmp_path / "server.log")
    try:
        path.write_text(document.replace("PORT", str(srv.port)))  # the port it runs on, as the operator's file says
        code, out = run("token", "sign", "--config", str(path), "--partner", "demo", "--entry", "ladder")
        assert code == 0
        url = out.strip()
        assert url.startswith(f"http://127.0.0.1:{srv.port}/p/demo/e/ladder/hls/master.m3u8?token=vg1.k2.")
        assert httpx.get(url, timeout=30).status_code == 200
        assert httpx.get(url.split("?")[0], timeout=30).status_code == 403  # the token is what lets it play
    finally:
        srv.stop()


@pytest.mark.parametrize("host,base", [("0.0.0.0", "http://127.0.0.1:9000"), ("::", "http://[::1]:9000"),
                                       ("10.1.2.3", "http://10.1.2.3:9000")])
def test_sign_puts_a_reachable_address_for_a_wildcard_bind(tmp_path, host, base):
    path = tmp_path / "vodgate.toml"
    path.write_text(CONFIG.replace("[server]\n", f'[server]\nhost = "{host}"\nport = 9000\n'))
    code, out = run("token", "sign", "--config", str(path), "--partner", "demo", "--entry", "ladder")
    assert code == 0 and out.startswith(f"{base}/p/demo/e/ladder/hls/master.m3u8?token=")
