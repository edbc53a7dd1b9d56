"""Attacks on the operations side: config errors, SIGHUP reload, analytics wiring, `vodgate check` output.

Each test here failed before the fix it names.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from auth.access import AccessControl
from config.partners import AccessConfig, Partner
from config.settings import load_settings
from conftest import REPO
from edge.reload import Reloader

K1 = "00112233445566778899aabbccddeeff"
K2 = "ffeeddccbbaa99887766554433221100"
SECRET = "hunter2-very-secret-value"


def vodgate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


# --- config errors never print a secret (config/errors.py without_credentials; edge, analytics, storage) ---

LEAKY = {
    # a header value that is not a string: the whole table was echoed, the shield secret with it
    "upstream_headers": f'[edge]\nrole = "edge"\nupstreams = ["http://127.0.0.1:9"]\n'
                        f'upstream_headers = {{ "X-Vodgate-Shield" = "{SECRET}", "X-Other" = 1 }}\n',
    # a typo in a URL's scheme: the URL was echoed, its password with it
    "redis_url": f'[analytics]\nenabled = true\nsinks = ["redis"]\nredis_url = "redis:/:{SECRET}@redis:6379/0"\n',
    "storage": f'[storage]\ntype = "http"\nbase_url = "s3://AKIA:{SECRET}@minio:9000/videos"\n[catalog.demo]\nx = ["hi"]\n',
    "upstream": f'[edge]\nrole = "edge"\nupstreams = ["htp://edge:{SECRET}@origin:8080"]\n',
}


def test_a_bad_redis_url_is_refused_by_config_check_as_serve_refuses_it(tmp_path: Path) -> None:
    """`[redis] url` was not checked: config check said OK, then serve stopped with a traceback."""
    (tmp_path / "media").mkdir()
    path = tmp_path / "vodgate.toml"
    path.write_text(f'[redis]\nurl = "redis:/:{SECRET}@127.0.0.1:6379/0"\n')
    expected = "redis.url has value 'redis:/***@127.0.0.1:6379/0'; expected redis://host:port/db"
    for args in (("config", "check", str(path)), ("serve", "--config", str(path), "--port", "0")):
        done = vodgate(*args)
        assert done.returncode == 2 and expected in done.stderr, done.stderr[-2000:]
        assert SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize("case", sorted(LEAKY))
def test_config_errors_do_not_print_secrets(tmp_path: Path, case: str) -> None:
    path = tmp_path / "vodgate.toml"
    path.write_text(LEAKY[case])
    done = vodgate("config", "check", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "configuration error" in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_config_check_does_not_print_upstream_credentials(tmp_path: Path) -> None:
    path = tmp_path / "vodgate.toml"
    path.write_text(f'[edge]\nrole = "edge"\nupstreams = ["http://edge:{SECRET}@origin:8080"]\n')
    done = vodgate("config", "check", str(path))
    assert done.returncode == 0, done.stderr
    assert "pulling from http://***@origin:8080" in done.stdout and SECRET not in done.stdout


# --- SIGHUP: a reload never interleaves with a request or another reload (edge/reload.py on_signal) ---

def _config(keys: str, extra_partner: str = "") -> str:
    return f'''[partners.demo]
token_keys = {{ {keys} }}
default_profile = "p"
[partners.demo.profiles.p]
rules = [ {{ unless = {{ authenticated = true }}, then = ["block"] }} ]
{extra_partner}'''


@pytest.fixture()
def sighup():
    """Restores the test process's SIGHUP handler after a Reloader installed its own."""
    before = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, before)


def _reloader(path: Path) -> tuple[Reloader, AccessControl]:
    settings = load_settings(path)
    access = AccessControl.from_config(settings.access or AccessConfig())
    reloader = Reloader(path, settings, access, "all")
    reloader.install()
    return reloader, access


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_sighup_during_an_admin_profile_swap_does_not_undo_the_reload(tmp_path, monkeypatch, sighup) -> None:
    """A key rotation by reload, signalled while an admin PUT builds its partner: the PUT wrote the old
    partner (old keys, old admin secret) back over the reloaded table, so the retired key kept working."""
    path = tmp_path / "vodgate.toml"
    path.write_text(_config(f'k1 = "{K1}"'))
    _, access = _reloader(path)
    path.write_text(_config(f'k2 = "{K2}"'))  # the rotation, signalled mid-PUT
    original = Partner.with_profile

    def with_profile_and_a_signal(self, profile):
        os.kill(os.getpid(), signal.SIGHUP)
        return original(self, profile)

    monkeypatch.setattr(Partner, "with_profile", with_profile_and_a_signal)

    async def main() -> None:
        access.replace_profile("demo", access.config_partner("demo").profiles["p"])
        await _settle()

    asyncio.run(main())
    assert set(access.config_partner("demo").keys.keys) == {"k2"}


def test_a_sighup_during_a_reload_leaves_the_newest_file_applied(tmp_path, monkeypatch, sighup) -> None:
    """Two edits and two signals in a burst: the second signal ran a reload inside the first, which then
    applied the older file it had read over the newer one."""
    import config.settings
    import edge.reload as reload_module

    path = tmp_path / "vodgate.toml"
    path.write_text(_config(f'k1 = "{K1}"'))
    _, access = _reloader(path)
    path.write_text(_config(f'k1 = "{K1}"', '[partners.second]\n'))
    original = config.settings.read_toml
    calls = []

    def read_then_edit_and_signal(p):
        raw = original(p)
        calls.append(p)
        if len(calls) == 1:  # the operator's next edit and signal land while this reload runs
            path.write_text(_config(f'k2 = "{K2}"', '[partners.third]\n'))
            os.kill(os.getpid(), signal.SIGHUP)
        return raw

    monkeypatch.setattr(config.settings, "read_toml", read_then_edit_and_signal)  # what load_settings reads with
    monkeypatch.setattr(reload_module, "read_toml", read_then_edit_and_signal, raising=False)

    async def main() -> None:
        os.kill(os.getpid(), signal.SIGHUP)
        await _settle()

    asyncio.run(main())
    assert sorted(access.config.partners) == ["demo", "third"]
    assert set(access.config_partner("demo").keys.keys) == {"k2"}


def test_a_burst_of_sighups_makes_one_reload(tmp_path, sighup) -> None:
    path = tmp_path / "vodgate.toml"
    path.write_text(_config(f'k1 = "{K1}"'))
    reloader, access = _reloader(path)
    reloads = []
    original = reloader.reload
    reloader.reload = lambda: reloads.append(1) or original()  # type: ignore[method-assign]
    path.write_text(_config(f'k2 = "{K2}"'))

    async def main() -> None:
        for _ in range(20):
            os.kill(os.getpid(), signal.SIGHUP)
        await _settle()

    asyncio.run(main())
    assert len(reloads) == 1
    assert set(access.config_partner("demo").keys.keys) == {"k2"}


# --- reload adds trusted proxies: the hot lane's play events follow them (edge/app.py with_hot_lane) ---

def _first_uri(playlist: str) -> str:
    return next(line for line in playlist.splitlines() if line and not line.startswith("#"))


def test_trusted_proxies_added_by_reload_reach_hot_lane_play_events(tmp_path, media_library) -> None:
    """The hot lane resolved the viewer by X-Forwarded-For only when the start config had trusted proxies:
    after a reload added them, its segment events kept the proxy's address (the full path's had the viewer's)."""
    import json

    import httpx

    from conftest import ServerProcess
    from test_reload import reload

    events = tmp_path / "events"
    base = f'[server]\nmedia_root = "{media_library}"\n{{proxies}}\n[analytics]\nenabled = true\npath = "{events}"\n' \
           'store_ip = true\nflush_interval = 0.05\nsession_salt = "s"\n'
    path = tmp_path / "vodgate.toml"
    path.write_text(base.format(proxies=""))
    srv = ServerProcess(["--config", str(path)], tmp_path / "server.log")
    try:
        path.write_text(base.format(proxies='trusted_proxies = ["127.0.0.1/32"]'))
        reload(srv, "reloaded ")
        viewer = {"X-Forwarded-For": "203.0.113.9"}
        with httpx.Client(base_url=srv.base, headers=viewer, timeout=30) as c:
            master = "/p/demo/e/h264_baseline/hls/master.m3u8"
            media = httpx.URL(srv.base + master).join(_first_uri(c.get(master).text))
            segment = media.join(_first_uri(c.get(media).text))
            lanes = [c.get(segment).headers.get("x-cache") for _ in range(4)]
    finally:
        srv.stop()  # flushes the events
    served = [json.loads(line) for f in events.glob("*.jsonl") for line in f.read_text().splitlines()]
    ips = [e["ip"] for e in served if e["kind"] == "segment_served"]
    assert len(ips) == 4, (lanes, ips)
    assert set(ips) == {"203.0.113.9"}, (lanes, ips)


# --- vodgate check: names from the library are shown, never obeyed (cli/main.py _printable, origin/check.py) ---

def test_check_output_escapes_control_characters_in_file_names(tmp_path: Path) -> None:
    """A file name with a newline forged an "ok" line; one with an escape sequence reached the terminal; one
    that is not UTF-8 stopped the report with a UnicodeEncodeError."""
    library = tmp_path / "library"
    library.mkdir()
    (library / "x\nok    demo:forged:main.mp4  10.00s.mov").write_bytes(b"")
    (library / "\x1b]2;owned\x07title.mov").write_bytes(b"")
    (library / os.fsdecode(b"caf\xe9.mov")).write_bytes(b"")
    done = subprocess.run([sys.executable, "-m", "cli.main", "check", str(library)], cwd=REPO, capture_output=True,
                          timeout=60, env={**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8"})
    out = done.stdout.decode("utf-8")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert "\x1b" not in out and "\x07" not in out
    assert not [line for line in out.splitlines() if line.startswith("ok")]
    assert "x\\nok" in out and "\\x1b]2;owned\\x07title.mov" in out and "caf\\udce9.mov" in out
    assert out.splitlines()[-1] == "3 files: 0 ok, 3 with warnings, 0 unplayable"


def test_misplaced_file_walker_reads_each_folder_once_and_follows_links_as_the_server_does(tmp_path: Path) -> None:
    from origin.check import misplaced_files

    library, outside = tmp_path / "library", tmp_path / "outside"
    (library / "demo").mkdir(parents=True)
    outside.mkdir()
    (library / "loose.mov").write_bytes(b"")
    (library / "demo" / "loop").symlink_to("..")  # a link back up: the walker went round it to its depth limit
    (outside / "private.mov").write_bytes(b"")
    (library / "linked").symlink_to(outside)
    followed = [r.path.relative_to(library) for r in misplaced_files(library)]
    assert sorted(map(str, followed)) == ["linked/private.mov", "loose.mov"]
    not_followed = [r.path.relative_to(library) for r in misplaced_files(library, follow_symlinks=False)]
    assert list(map(str, not_followed)) == ["loose.mov"]


# --- token sign's base URL from [server] host (cli/access.py _url_host) ---

@pytest.mark.parametrize("host, expected", [
    ("::0", "http://[::1]:8080/"),  # a wildcard in another spelling was put in the URL as is
    ("0:0::0", "http://[::1]:8080/"),
    ("fe80::1%eth0", "http://[fe80::1%25eth0]:8080/"),  # a zone's "%" made the URL invalid
])
def test_token_sign_base_url_from_any_host_spelling(tmp_path: Path, host: str, expected: str) -> None:
    path = tmp_path / "vodgate.toml"
    path.write_text(f'[server]\nhost = "{host}"\nport = 8080\n[partners.demo]\ntoken_keys = {{ k1 = "{K1}" }}\n')
    done = vodgate("token", "sign", "--config", str(path), "--partner", "demo", "--entry", "e1")
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    assert url.startswith(expected + "p/demo/e/e1/hls/master.m3u8?token=vg1."), url


def test_a_config_that_cannot_be_read_is_refused_by_reload_like_a_bad_one(tmp_path: Path, media_library) -> None:
    """A config path that became a folder (or unreadable for the server's user): the reload raised
    IsADirectoryError out of the signal handler, a traceback in the log instead of its refusal."""
    import httpx

    from conftest import ServerProcess
    from test_reload import reload

    path = tmp_path / "vodgate.toml"
    path.write_text(_config(f'k1 = "{K1}"'))
    srv = ServerProcess(["--config", str(path), "--media", str(media_library)], tmp_path / "server.log")
    try:
        path.unlink()
        path.mkdir()
        reload(srv, "reload refused, still serving the previous configuration: config file")
        assert "cannot be read: Is a directory" in srv.log() and "Traceback" not in srv.log()
        assert httpx.get(srv.base + "/p/demo/e/h264_baseline/hls/master.m3u8", timeout=30).status_code == 403
    finally:
        srv.stop()


def test_reload_refuses_an_empty_file_and_warns_when_rules_are_dropped(tmp_path: Path, media_library) -> None:
    """A reload between an editor's truncation and its write read an empty file: every partner became open,
    logged as an ordinary "reloaded ...: 0 partner(s)"."""
    import httpx

    from conftest import ServerProcess
    from test_reload import reload

    path = tmp_path / "vodgate.toml"
    path.write_text(_config(f'k1 = "{K1}"'))
    master = "/p/demo/e/h264_baseline/hls/master.m3u8"
    srv = ServerProcess(["--config", str(path), "--media", str(media_library)], tmp_path / "server.log")
    try:
        path.write_text("")
        reload(srv, "reload refused, still serving the previous configuration: config file")
        assert "is empty" in srv.log()
        assert httpx.get(srv.base + master, timeout=30).status_code == 403
        path.write_text("[partners.demo]\n")  # meant: demo's rules are gone
        reload(srv, "reloaded ")
        assert "partner(s) demo no longer have access rules" in srv.log()
        assert httpx.get(srv.base + master, timeout=30).status_code == 200
    finally:
        srv.stop()


def test_a_role_given_on_the_command_line_is_not_reported_as_a_file_change(tmp_path, caplog, sighup) -> None:
    """`serve --role edge` with a file without [edge]: every reload said edge.role changed."""
    path = tmp_path / "vodgate.toml"
    path.write_text("[cdn]\nedge_secrets = [\"0123456789abcdef0123\"]\n" + _config(f'k1 = "{K1}"'))
    settings = load_settings(path)
    reloader = Reloader(path, settings, AccessControl.from_config(settings.access), "edge")
    with caplog.at_level("INFO", logger="vodgate.reload"):
        assert reloader.reload()
    assert "edge.role" not in caplog.text and "reloaded " in caplog.text


# --- logs: an upstream URL's password never reaches the log (cli/logs.py) ---

def test_edge_log_does_not_print_the_upstream_password(tmp_path: Path, media_library) -> None:
    """httpx logs every upstream request at INFO with its URL: `--upstream http://user:pw@origin` put the
    password in the edge's log once per request."""
    import httpx

    from conftest import ServerProcess

    origin = ServerProcess(["--media", str(media_library)], tmp_path / "origin.log")
    try:
        upstream = origin.base.replace("http://", f"http://edge:{SECRET}@")
        edge = ServerProcess(["--role", "edge", "--upstream", upstream], tmp_path / "edge.log")
        try:
            assert httpx.get(edge.base + "/p/demo/e/h264_baseline/hls/master.m3u8", timeout=30).status_code == 200
        finally:
            edge.stop()
    finally:
        origin.stop()
    log = (tmp_path / "edge.log").read_text()
    assert "HTTP Request: GET http://***@127.0.0.1" in log
    assert SECRET not in log


# --- config check: a config holding secrets that every user can read is named (cli/main.py) ---

def test_config_check_warns_when_a_config_with_secrets_is_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "vodgate.toml"
    (tmp_path / "media").mkdir()
    path.write_text(f'[cdn]\nshield_secrets = ["{SECRET}"]\n' + _config(f'k1 = "{K1}"'))
    path.chmod(0o644)  # what a plain `cp` or editor leaves under the usual umask
    done = vodgate("config", "check", str(path))
    assert done.returncode == 0, done.stderr
    assert "holds cdn.shield_secrets, token keys and every user of this machine can read it" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    path.chmod(0o640)
    assert "warning" not in vodgate("config", "check", str(path)).stderr
    path.write_text("[server]\nport = 8080\n")  # nothing secret: nothing to say
    path.chmod(0o644)
    assert "warning" not in vodgate("config", "check", str(path)).stderr


# --- analytics: what a client seeking all over a file costs the node (analytics/mediatime.py) ---

def test_progressive_range_state_of_a_session_stays_small_at_its_cap() -> None:
    """64 disjoint ranges per session and flavor, up to 100 000 sessions anyone can open (a playSessionId
    each): the ranges were a list of int tuples, 8 KB a session and flavor, 800 MB a flavor at the cap."""
    import tracemalloc

    import numpy as np

    from analytics.mediatime import MAX_RANGES, DeliveredBytes
    from packager.media import MediaIndex, Track

    n = 2000
    arr = lambda values: np.array(values, dtype=np.int64)  # noqa: E731
    track = Track(
        track_id=1, kind="video", fourcc="avc1", codec_string="avc1.64001f", timescale=1000, language="und",
        sample_entry=b"", video=None, audio=None, dts=arr(range(0, 40 * n, 40)), cts_offsets=arr([0] * n),
        durations=arr([40] * n), sizes=arr([1000] * n), offsets=arr(range(10**6, 10**6 + 1000 * n, 1000)),
        keyframes=np.ones(n, dtype=bool), presentation_shift=0, edit_end=None,
    )
    index = MediaIndex(tracks=(track,), movie_timescale=1000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sessions = []
        for _ in range(20):
            sent = DeliveredBytes()
            for k in range(MAX_RANGES + 8):  # a seek every request: one whole frame each, none touching
                first = 10**6 + 3000 * k
                sent.add(index, first, first + 999)
            sessions.append(sent)
        per_session = (tracemalloc.get_traced_memory()[0] - before) / len(sessions)
    finally:
        tracemalloc.stop()
    assert all(len(s.ranges) == MAX_RANGES for s in sessions)
    assert sessions[0].ticks == 40 * MAX_RANGES
    assert per_session < 2000, per_session
