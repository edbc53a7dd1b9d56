"""The access log (``[server] access_log``, edge/access_log.py) of a real `vodgate serve`, over real HTTP.

Each request carries a marker of its own in its query string (the hot lane answers a query too), so
its line can be found; a test waits until every line it expects is written (a line is written when
the response is complete, a moment after the client has it), then a little longer, and counts.
Whether the hot lane answered is read from ``vodgate_hot_lane_answers_total``, as tests/test_hot_lane.py does.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import m3u8
import pytest

from conftest import REPO, ServerProcess, hot_answers_in

from auth.tokens import sign_native
from cli import logs

KEY = "00112233445566778899aabbccddeeff"
SHIELD_LIKE = "a-secret-that-must-never-be-logged-42"
OPEN = "/p/open/e/clip"  # a partner without rules: its warm segments take the hot lane
PAID = "/p/paid/e/clip"  # a partner whose entries need a token
BIG_PADDING = 12 * 1024 * 1024  # Linux lets a socket buffer up to 4 MiB (net.ipv4.tcp_wmem) on each side

# an open partner and a token-gated one (tests/test_attack_edge_ops.py serves the same two); {key} is KEY
PARTNERS = """
[partners.open]
default_profile = "all"
[partners.open.profiles.all]
rules = []

[partners.paid]
token_keys = {{ k1 = "{key}" }}
default_profile = "tokens"
[partners.paid.profiles.tokens]
rules = [ {{ unless = {{ authenticated = true }}, then = ["block"] }} ]
"""

CONFIG = """
[server]
media_root = "{library}"
segment_duration = 2
{server}
""" + PARTNERS

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UVICORN_ACCESS = re.compile(r'\d+\.\d+\.\d+\.\d+:\d+ - "(GET|HEAD) ')  # uvicorn's line: "127.0.0.1:53412 - "GET ..."
COMBINED = re.compile(r'^(\S+) - - \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "(\S+) (.+) HTTP/1\.1" (\d{3}) (\d+) '
                      r'"([^"]*)" "([^"]*)" duration_ms=(\d+\.\d{3}) cache=(\S+) partner=(\S+) entry=(\S+) outcome=(\S+)$')


def _server(tmp_path_factory, media_fixture_paths, name: str, server: str) -> ServerProcess:
    d = tmp_path_factory.mktemp(name)
    for partner in ("open", "paid"):
        (d / "lib" / partner / "clip").mkdir(parents=True)
        shutil.copy(media_fixture_paths["h264_2997"], d / "lib" / partner / "clip" / "main.mp4")
    (d / "lib" / "open" / "big").mkdir()
    with open(d / "lib" / "open" / "big" / "main.mp4", "wb") as big:  # more than a socket's buffers can hold
        big.write(media_fixture_paths["ladder_hi"].read_bytes())
        big.write(struct.pack(">I4s", 8 + BIG_PADDING, b"free") + bytes(BIG_PADDING))  # a box players skip
    config = d / "vodgate.toml"
    config.write_text(CONFIG.format(library=d / "lib", server=server, key=KEY))
    return ServerProcess(["--config", str(config)], d / "server.log")


@pytest.fixture(scope="module")
def trusted(tmp_path_factory, media_fixture_paths):
    """JSON lines; the test client's address (127.0.0.1) is a trusted proxy."""
    proc = _server(tmp_path_factory, media_fixture_paths, "alog-json", 'access_log = "json"\ntrusted_proxies = ["127.0.0.0/8"]')
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def untrusted(tmp_path_factory, media_fixture_paths):
    """JSON lines; only 10.0.0.0/8 are trusted proxies, so the test client's X-Forwarded-For is not read."""
    proc = _server(tmp_path_factory, media_fixture_paths, "alog-untrusted", 'access_log = "json"\ntrusted_proxies = ["10.0.0.0/8"]')
    yield proc
    proc.stop()


def marker() -> str:
    return uuid.uuid4().hex


def lines_with(srv: ServerProcess, needles: list[str], timeout: float = 5.0) -> dict[str, list[str]]:
    """Every log line holding each needle, once each needle has one (or the timeout), after a settle."""
    deadline = time.monotonic() + timeout
    while True:
        text = srv.log_path.read_text(errors="replace")
        if all(n in text for n in needles) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # a second line for a request would come now
    text = srv.log_path.read_text(errors="replace")
    return {n: [line for line in text.splitlines() if n in line] for n in needles}


def json_line(srv: ServerProcess, needle: str) -> dict:
    found = lines_with(srv, [needle])[needle]
    assert len(found) == 1, (needle, found, srv.log()[-2000:])
    return json.loads(found[0])


def hot_answers(http: httpx.Client) -> int:
    return hot_answers_in(http.get("/metrics").text)


def segment_url(http: httpx.Client, entry: str = OPEN, number: int = 1, query: str = "") -> str:
    media = m3u8.loads(http.get(f"{entry}/hls/main/index.m3u8{query}").text)
    return f"{entry}/hls/main/{media.segments[number - 1].uri.split('?')[0]}"


def full_then_hot(http: httpx.Client, url: str, **kwargs) -> tuple[tuple[httpx.Response, str], tuple[httpx.Response, str]]:
    """A segment fetched twice: the first by the full path (a MISS), the second by the hot lane (a HIT).
    A remembered answer lapses after 1 s; when that happens between the two, the pair is tried again."""
    for _ in range(3):
        first_marker, second_marker = marker(), marker()
        first = http.get(f"{url}?n={first_marker}", **kwargs)
        before = hot_answers(http)
        second = http.get(f"{url}?n={second_marker}", **kwargs)
        if hot_answers(http) == before + 1:
            return (first, first_marker), (second, second_marker)
    raise AssertionError(f"{url} was not answered by the hot lane")


def assert_matches(line: dict, response: httpx.Response, method: str = "GET") -> None:
    """The line's status and body bytes are the response's, exactly."""
    assert line["status"] == response.status_code, line
    assert line["bytes"] == (len(response.content) if method != "HEAD" else 0), line
    assert line["method"] == method and line["outcome"] == "complete", line


# --------------------------------------------------------------------------- json


def test_json_one_line_per_request_full_path_and_hot_lane_with_exact_status_and_bytes(trusted):
    with httpx.Client(base_url=trusted.base, timeout=30, headers={"User-Agent": "player/1.0"}) as http:
        url = segment_url(http, number=2)
        (miss, miss_marker), (hit, hit_marker) = full_then_hot(http, url)
        assert miss.status_code == hit.status_code == 200 and hit.content == miss.content
        assert hit.headers["x-cache"] == "HIT"
        ranged_marker, head_marker, missing_marker, playlist_marker = marker(), marker(), marker(), marker()
        ranged = http.get(f"{url}?n={ranged_marker}", headers={"Range": "bytes=100-1099"})
        head = http.head(f"{url}?n={head_marker}")
        missing = http.get(f"{OPEN}/hls/main/seg-999.ts?n={missing_marker}")
        playlist = http.get(f"{OPEN}/hls/master.m3u8?n={playlist_marker}")
    assert (ranged.status_code, len(ranged.content), head.status_code, missing.status_code) == (206, 1000, 200, 404)
    cases = {miss_marker: (miss, "GET"), hit_marker: (hit, "GET"), ranged_marker: (ranged, "GET"),
             head_marker: (head, "HEAD"), missing_marker: (missing, "GET"), playlist_marker: (playlist, "GET")}
    found = lines_with(trusted, list(cases))
    now = datetime.now(timezone.utc)
    for needle, (response, method) in cases.items():
        assert len(found[needle]) == 1, (needle, found[needle], trusted.log()[-2000:])  # exactly one, hot lane too
        line = json.loads(found[needle][0])
        assert_matches(line, response, method)
        assert RFC3339_MS.match(line["time"]), line
        assert timedelta(0) <= now - datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc) < timedelta(seconds=30)
        assert isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0
        assert line["client_ip"] == "127.0.0.1" and line["user_agent"] == "player/1.0", line
        assert (line["partner"], line["entry"]) == ("open", "clip"), line
        assert set(line) == {"time", "client_ip", "method", "path", "status", "bytes", "duration_ms", "cache", "partner",
                             "entry", "user_agent", "referer", "outcome"}
    miss_line, hit_line = json.loads(found[miss_marker][0]), json.loads(found[hit_marker][0])
    assert (miss_line["cache"], hit_line["cache"]) == (miss.headers["x-cache"], "HIT")
    assert hit_line["path"] == f"{url}?n={hit_marker}"
    assert json.loads(found[head_marker][0])["cache"] is None  # a HEAD carries no X-Cache (docs/URLS.md)


def test_json_client_ip_from_x_forwarded_for_only_when_the_peer_is_a_trusted_proxy(trusted, untrusted):
    forwarded = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}  # the client, then a proxy we do not know
    for srv, expected in ((trusted, "203.0.113.9"), (untrusted, "127.0.0.1")):
        with httpx.Client(base_url=srv.base, timeout=30, headers=forwarded) as http:
            (_, miss_marker), (_, hit_marker) = full_then_hot(http, segment_url(http, number=3))
            playlist_marker = marker()
            http.get(f"{OPEN}/hls/master.m3u8?n={playlist_marker}")
        for needle in (miss_marker, hit_marker, playlist_marker):
            assert json_line(srv, needle)["client_ip"] == expected, (srv.base, needle)


def test_json_paths_are_redacted_and_no_secret_header_is_logged(trusted):
    token = sign_native("k1", bytes.fromhex(KEY), PAID, int(time.time()) + 3600)
    mac = token.rsplit(".", 1)[1]
    secret_headers = {"X-Vodgate-Shield": SHIELD_LIKE, "X-Vodgate-Edge-Checked": SHIELD_LIKE,
                      "Authorization": f"Bearer {SHIELD_LIKE}", "Cookie": f"token={token}"}
    spellings = {  # as sent -> as logged
        f"token={token}": "token=<redacted #",
        f"%74oken={token}": "%74oken=<redacted #",  # a name vodgate decodes to "token" (cli/logs.py handles it)
        f"%20token=%20{token}": "%20token=%20<redacted #",  # a name vodgate does not read: the token anywhere goes
        f"token={token}&next=http://viewer:hunter2@example.com/": "token=<redacted #",  # and whatever else cli/logs.py hides
    }
    markers = {}
    with httpx.Client(base_url=trusted.base, timeout=30) as http:
        for query, shown in spellings.items():
            n = marker()
            answer = http.get(f"{PAID}/hls/master.m3u8?n={n}&{query}", headers=secret_headers)
            markers[n] = (answer, shown, f"{PAID}/hls/master.m3u8?n={n}&{query}")
        agent_marker = marker()
        http.get(f"{OPEN}/hls/master.m3u8?n={agent_marker}", headers={"User-Agent": f"evil/{token} " + "x" * 1000,
                                                                        "Referer": f"https://site.example/?token={token}"})
    assert [a.status_code for a, _, _ in markers.values()] == [200, 200, 403, 200]  # " token" is no token: refused
    for n, (answer, shown, sent) in markers.items():
        line = json_line(trusted, n)
        assert line["path"].startswith(f"{PAID}/hls/master.m3u8?n={n}&{shown}"), line
        assert line["path"] == logs.redact_text(sent), line  # the very redaction of every other log line
        assert_matches(line, answer)
        assert (line["partner"], line["entry"]) == ("paid", "clip"), line
    agent = json_line(trusted, agent_marker)
    assert len(agent["user_agent"]) == 256 and agent["user_agent"].startswith("evil/<redacted #") and agent["user_agent"].endswith("...")
    assert agent["referer"].startswith("https://site.example/?token=<redacted #"), agent
    log = trusted.log_path.read_text(errors="replace")
    assert token not in log and mac not in log and SHIELD_LIKE not in log


def test_a_client_that_goes_away_mid_response_gets_a_line_that_says_so(trusted):
    """A progressive MP4 larger than the socket buffers can hold, asked for with a small receive window
    and dropped (RST) after the first bytes: the line is written when the server notices, with the status
    and the bytes sent until then, and says ``client_gone``."""
    size = (trusted.log_path.parent / "lib" / "open" / "big" / "main.mp4").stat().st_size
    n = marker()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", trusted.port))
        sock.sendall(f"GET /p/open/e/big/mp4/main.mp4?n={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        time.sleep(0.3)  # the server fills the small window and its buffers, then waits
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    line = json_line(trusted, n)
    assert (line["status"], line["outcome"]) == (200, "client_gone"), line
    assert 0 < line["bytes"] < size, (line, size)


# --------------------------------------------------------------------------- text and off


def test_text_is_one_combined_log_line_per_request_and_uvicorn_writes_none(tmp_path_factory, media_fixture_paths):
    """No access_log key: "text" is the default."""
    srv = _server(tmp_path_factory, media_fixture_paths, "alog-text", 'trusted_proxies = ["127.0.0.0/8"]')
    try:
        with httpx.Client(base_url=srv.base, timeout=30, headers={"User-Agent": 'say "hi"', "X-Forwarded-For": "192.0.2.44"}) as http:
            (miss, miss_marker), (hit, hit_marker) = full_then_hot(http, segment_url(http))
            token = sign_native("k1", bytes.fromhex(KEY), PAID, int(time.time()) + 3600)
            paid_marker = marker()
            paid = http.get(f"{PAID}/hls/master.m3u8?n={paid_marker}&%74oken={token}")
        assert hit.headers["x-cache"] == "HIT"
        cases = {miss_marker: (miss, "open"), hit_marker: (hit, "open"), paid_marker: (paid, "paid")}
        found = lines_with(srv, list(cases))
        for needle, (response, partner) in cases.items():
            assert len(found[needle]) == 1, (needle, found[needle])
            fields = COMBINED.match(found[needle][0])
            assert fields, found[needle][0]
            client, stamp, method, target, status, nbytes, referer, agent, _, logged_cache, logged_partner, entry, outcome = fields.groups()
            assert (client, method, int(status), int(nbytes)) == ("192.0.2.44", "GET", response.status_code, len(response.content))
            assert (referer, agent, logged_partner, entry, outcome) == ("-", r"say \x22hi\x22", partner, "clip", "complete")
            assert logged_cache == response.headers["x-cache"]
            datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S +0000")
        paid_target = COMBINED.match(found[paid_marker][0]).group(4)
        assert re.fullmatch(rf"{PAID}/hls/master\.m3u8\?n={paid_marker}&%74oken=<redacted #[0-9a-f]{{10}}>", paid_target), paid_target
        log = srv.log_path.read_text(errors="replace")
        assert token not in log and not UVICORN_ACCESS.search(log), log[-2000:]
    finally:
        srv.stop()


def test_off_writes_no_access_line(tmp_path_factory, media_fixture_paths):
    srv = _server(tmp_path_factory, media_fixture_paths, "alog-off", 'access_log = "off"')
    try:
        with httpx.Client(base_url=srv.base, timeout=30) as http:
            (_, miss_marker), (_, hit_marker) = full_then_hot(http, segment_url(http))
            missing_marker = marker()
            assert http.get(f"{OPEN}/hls/main/seg-999.ts?n={missing_marker}").status_code == 404
        found = lines_with(srv, [miss_marker, hit_marker, missing_marker], timeout=1.0)
        assert found == {miss_marker: [], hit_marker: [], missing_marker: []}, srv.log()[-2000:]
        assert "/metrics" not in srv.log_path.read_text(errors="replace")  # not even the counter's own requests
    finally:
        srv.stop()


# --------------------------------------------------------------------------- configuration


def vodgate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("value", ['"yes"', "true", '"JSONL"'])
def test_a_bad_access_log_value_is_refused_by_config_check_and_serve_alike(value, tmp_path, media_library):
    path = tmp_path / "vodgate.toml"
    path.write_text(f'[server]\nmedia_root = "{media_library}"\naccess_log = {value}\n')
    shown = {'"yes"': "'yes'", "true": "True", '"JSONL"': "'JSONL'"}[value]
    message = (f"{path}: server.access_log has value {shown}; expected \"text\" (a combined-log-format line per request), "
               f"\"json\" (a JSON object per line) or \"off\" (quoted)")
    check = vodgate("config", "check", str(path))
    assert check.returncode == 2 and check.stderr.strip() == f"vodgate: configuration error: {message}", check.stderr
    serve = vodgate("serve", "--config", str(path), "--port", "0")
    assert serve.returncode == 2 and serve.stderr.strip().splitlines()[-1] == f"vodgate: configuration error: {message}"


def test_the_access_log_key_parses():
    from config.settings import Settings, parse_settings

    assert Settings().access_log == "text"
    assert [parse_settings({"server": {"access_log": v}}).access_log for v in ("text", "json", "off", "JSON")] == ["text", "json", "off", "json"]
