"""SIGHUP reloads the config file of a running `vodgate serve` (edge/reload.py).

A real server, a real signal: rules, token keys and the GeoIP database change without a restart; a bad
file is refused with its error while the running configuration keeps serving; a keep-alive connection
opened before the reload answers after it; a change that needs a restart is named in the log.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from auth.tokens import sign_native
from conftest import ServerProcess
from test_auth_geoip import build as build_mmdb  # a real MaxMind-format database

K1 = "00112233445566778899aabbccddeeff"
K2 = "ffeeddccbbaa99887766554433221100"
MASTER = "/p/demo/e/h264_baseline/hls/master.m3u8"


def config(rules: str, keys: str = f'k1 = "{K1}"', extra: str = "") -> str:
    return f'''[server]
trusted_proxies = ["127.0.0.1/32"]
{extra}
[partners.demo]
token_keys = {{ {keys} }}
default_profile = "p"

[partners.demo.profiles.p]
rules = [ {rules} ]
'''


BLOCK_ALL = '{ then = [{ block = "closed" }] }'
ALLOW_ALL = '{ then = ["allow"] }'
TOKENS_ONLY = '{ unless = { authenticated = true }, then = ["block"] }'


@pytest.fixture()
def running(tmp_path, media_library):
    path = tmp_path / "vodgate.toml"
    path.write_text(config(BLOCK_ALL))
    srv = ServerProcess(["--config", str(path), "--media", str(media_library)], tmp_path / "server.log")
    yield srv, path
    srv.stop()


def reload(srv: ServerProcess, expect_in_log: str, timeout: float = 10) -> None:
    """SIGHUP, then wait for the log line the reload ends with."""
    before = srv.log().count(expect_in_log)
    os.kill(srv.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while srv.log().count(expect_in_log) <= before:
        assert srv.proc.poll() is None, f"the server died on SIGHUP:\n{srv.log()}"
        assert time.monotonic() < deadline, f"no {expect_in_log!r} in the log:\n{srv.log()}"
        time.sleep(0.05)


def status(srv: ServerProcess, path: str = MASTER, **headers: str) -> int:
    return httpx.get(srv.base + path, headers=headers, timeout=30).status_code


def test_rules_change_on_sighup_without_a_restart(running) -> None:
    srv, path = running
    pid = srv.proc.pid
    assert status(srv) == 403
    path.write_text(config(ALLOW_ALL))
    reload(srv, "reloaded ")
    assert status(srv) == 200
    assert srv.proc.pid == pid and srv.proc.poll() is None


def test_a_bad_file_is_refused_and_the_running_config_keeps_serving(running) -> None:
    srv, path = running
    path.write_text(config(ALLOW_ALL))
    reload(srv, "reloaded ")
    path.write_text(config(ALLOW_ALL).replace("default_profile", "default_profil"))
    reload(srv, "reload refused")
    assert "unknown key(s) partners.demo.default_profil (did you mean partners.demo.default_profile?)" in srv.log()
    assert status(srv) == 200  # still the previous, allowing configuration
    path.write_text(config(ALLOW_ALL, extra='geoip_database = "missing.mmdb"'))
    reload(srv, "reload refused")
    assert "server.geoip_database" in srv.log() and status(srv) == 200


def test_token_keys_rotate_on_sighup(running) -> None:
    srv, path = running
    path.write_text(config(TOKENS_ONLY))
    reload(srv, "reloaded ")
    expires = int(time.time()) + 600
    old = sign_native("k1", bytes.fromhex(K1), "/p/demo/e/h264_baseline", expires)
    new = sign_native("k2", bytes.fromhex(K2), "/p/demo/e/h264_baseline", expires)
    assert status(srv, f"{MASTER}?token={old}") == 200 and status(srv, f"{MASTER}?token={new}") == 403
    path.write_text(config(TOKENS_ONLY, keys=f'k2 = "{K2}"'))
    reload(srv, "reloaded ")
    assert status(srv, f"{MASTER}?token={old}") == 403 and status(srv, f"{MASTER}?token={new}") == 200


def _country_db(path: Path, country: str) -> None:
    """Written beside and renamed over ``path``, as geoipupdate replaces a database (a reader never sees half)."""
    build_mmdb(path.with_suffix(".tmp"), records=[(["81.2.69.0/24"], {"country": {"iso_code": country}})])
    os.replace(path.with_suffix(".tmp"), path)


def test_a_new_geoip_database_at_the_same_path_is_read_on_sighup(running, tmp_path) -> None:
    srv, path = running
    db = tmp_path / "countries.mmdb"
    _country_db(db, "FR")
    rules = '{ if = { country = ["FR"] }, then = [{ block = "geo" }] }'
    path.write_text(config(rules, extra=f'geoip_database = "{db.name}"'))
    reload(srv, "reloaded ")
    from_fr = {"X-Forwarded-For": "81.2.69.7"}  # the peer 127.0.0.1 is a trusted proxy
    assert status(srv, **from_fr) == 403
    _country_db(db, "DE")  # the database's next release, same path
    reload(srv, "reloaded ")
    assert status(srv, **from_fr) == 200


def test_a_keep_alive_connection_opened_before_the_reload_answers_after_it(running) -> None:
    srv, path = running
    request = f"GET {MASTER} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as conn:
        conn.sendall(request)
        assert _read_response(conn).startswith(b"HTTP/1.1 403")
        path.write_text(config(ALLOW_ALL))
        reload(srv, "reloaded ")
        conn.sendall(request)  # the same connection
        assert _read_response(conn).startswith(b"HTTP/1.1 200")


def test_a_change_that_needs_a_restart_is_named_and_not_applied(running) -> None:
    srv, path = running
    path.write_text(config(ALLOW_ALL, extra="max_connections = 7\nkeep_alive_timeout = 3"))
    reload(srv, "reloaded ")
    assert "server.max_connections, server.keep_alive_timeout changed" in srv.log()
    assert "only take effect at a restart" in srv.log()
    assert status(srv) == 200  # the rules part was applied


def _read_response(conn: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += conn.recv(65536)
    return head


def test_sighup_without_a_config_file_is_logged_not_fatal(tmp_path, media_library) -> None:
    srv = ServerProcess(["--media", str(media_library)], tmp_path / "server.log")
    try:
        reload(srv, "SIGHUP ignored")
        assert status(srv) == 200
    finally:
        srv.stop()
