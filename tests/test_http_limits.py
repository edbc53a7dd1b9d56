"""HTTP limits ([server] header_timeout, max_header_bytes, max_connections, keep_alive_timeout).

Real ``vodgate serve`` processes, raw sockets, each server with the hot lane on and off: the limits live
in the protocol (edge/http_limits.py) and uvicorn's limit_concurrency, under the hot lane as well as the
ASGI path. Whether an answer came from the hot lane is read from /metrics, as in tests/test_hot_lane.py.
"""

from __future__ import annotations

import re
import socket
import time

import m3u8
import pytest

from config.settings import ConfigError, parse_settings
from conftest import ServerProcess

ENTRY = "/p/demo/e/h264_2997"
HEADER_TIMEOUT = 1
KEEP_ALIVE_TIMEOUT = 2  # unlike HEADER_TIMEOUT: which of the two closed an idle connection shows
MAX_CONNECTIONS = 5

CONFIG = """
[server]
media_root = "{library}"
segment_duration = 2
{limits}

[cache]
hot_lane = {hot_lane}
"""


def _start(tmp_path_factory, library, hot_lane: bool, limits: str) -> ServerProcess:
    d = tmp_path_factory.mktemp("limits")
    config = d / "vodgate.toml"
    config.write_text(CONFIG.format(library=library, hot_lane=str(hot_lane).lower(), limits=limits))
    proc = ServerProcess(["--config", str(config)], d / "server.log")
    proc.hot_lane = hot_lane
    return proc


@pytest.fixture(scope="module", params=[True, False], ids=["hot-lane", "no-hot-lane"])
def limited(request, tmp_path_factory, media_library):
    """Short head and keep-alive timeouts, default sizes and connection limit."""
    limits = f"header_timeout = {HEADER_TIMEOUT}\nkeep_alive_timeout = {KEEP_ALIVE_TIMEOUT}"
    proc = _start(tmp_path_factory, media_library, request.param, limits)
    yield proc
    proc.stop()


@pytest.fixture(scope="module", params=[True, False], ids=["hot-lane", "no-hot-lane"])
def crowded(request, tmp_path_factory, media_library):
    """A small connection limit; idle connections live long enough to fill it."""
    proc = _start(tmp_path_factory, media_library, request.param, f"max_connections = {MAX_CONNECTIONS}\nheader_timeout = 30")
    yield proc
    proc.stop()


# --- raw HTTP -------------------------------------------------------------------------------------------------


def _connect(port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _read_response(f) -> tuple[int, dict[str, str], bytes]:
    status_line = f.readline()
    assert status_line, "the server closed the connection without an answer"
    status = int(status_line.split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, f.read(int(headers.get("content-length", "0")))


def _ask(sock: socket.socket, f, path: str, extra: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """A plain keep-alive GET (the shape the hot lane answers) on an open connection."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n")
    return _read_response(f)


def _get(port: int, path: str, extra: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection, then the connection is closed."""
    with _connect(port) as s:
        return _ask(s, s.makefile("rb"), path, extra)


def _until_closed(sock: socket.socket, limit: float, since: float | None = None) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took (from ``since``)."""
    started, received = since or time.monotonic(), b""
    sock.settimeout(limit)
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except socket.timeout:
        raise AssertionError(f"the server still holds the connection after {limit} s (received {received[:80]!r})")
    except ConnectionResetError:
        pass  # closed too, if less politely
    return received, time.monotonic() - started


def _segment(port: int) -> str:
    playlist = _get(port, f"{ENTRY}/hls/main/index.m3u8")[2].decode()
    return f"{ENTRY}/hls/main/{m3u8.loads(playlist).segments[0].uri}"


def _hot_answers(sock: socket.socket, f) -> int:
    text = _ask(sock, f, "/metrics")[2].decode()
    m = re.search(r"^vodgate_hot_lane_answers_total (\S+)$", text, re.MULTILINE)
    return int(float(m.group(1))) if m else 0


def _hot_answer(server: ServerProcess, sock: socket.socket, f, url: str) -> float:
    """GET ``url`` on ``sock`` until the hot lane answers it (with the hot lane off: one ordinary answer);
    when that answer was read."""
    with _connect(server.port) as m:
        mf = m.makefile("rb")
        for _ in range(3):  # a remembered answer lapses after 1 s: the retry is the one that counts
            before = _hot_answers(m, mf)
            assert _ask(sock, f, url)[0] == 200
            answered = time.monotonic()
            if not server.hot_lane or _hot_answers(m, mf) == before + 1:
                return answered
    raise AssertionError(f"{url} was not answered by the hot lane")


# --- header_timeout ------------------------------------------------------------------------------------------


def test_a_stalled_request_head_is_closed_after_header_timeout_while_others_are_served(limited):
    with _connect(limited.port) as stalled:
        stalled.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for _ in range(3):
            assert _get(limited.port, "/healthz")[0] == 200
        received, seconds = _until_closed(stalled, 5)
    assert received.startswith(b"HTTP/1.1 408 "), received[:80]
    assert seconds < HEADER_TIMEOUT + 2, seconds
    assert _get(limited.port, "/healthz")[0] == 200


def test_a_connection_that_sends_nothing_is_closed_after_header_timeout(limited):
    with _connect(limited.port) as silent:
        received, seconds = _until_closed(silent, 5)
    assert received == b"", "nothing was asked: nothing to answer"
    assert seconds < HEADER_TIMEOUT + 2, seconds


def test_a_stalled_head_after_an_answer_on_keep_alive_is_closed_too(limited):
    """The hot lane keeps uvicorn's keep-alive timer armed after its answers; a started head stops that timer."""
    url = _segment(limited.port)
    with _connect(limited.port) as s:
        f = s.makefile("rb")
        assert _ask(s, f, url)[0] == 200
        _hot_answer(limited, s, f, url)
        s.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\n".encode())  # and no blank line
        received, seconds = _until_closed(s, 5)
    assert received.startswith(b"HTTP/1.1 408 "), received[:80]
    assert seconds < HEADER_TIMEOUT + 2, seconds


# --- max_header_bytes ----------------------------------------------------------------------------------------


def test_an_oversized_request_head_is_answered_431_and_the_server_keeps_serving(limited):
    assert _get(limited.port, "/healthz", b"X-Pad: " + b"a" * 15_000 + b"\r\n")[0] == 200  # under 16 KiB: served
    with _connect(limited.port) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000 + b"\r\n\r\n")
        received, _ = _until_closed(s, 5)
    assert received.startswith(b"HTTP/1.1 431 "), received[:80]
    assert b"connection: close" in received.lower()
    assert _get(limited.port, "/healthz")[0] == 200


def test_431_comes_before_the_oversized_head_ends(limited):
    """The head is counted as it arrives: no waiting for (and buffering) the rest of it."""
    with _connect(limited.port) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000)  # no end of head, ever
        received, seconds = _until_closed(s, 5)
    assert received.startswith(b"HTTP/1.1 431 "), received[:80]
    assert seconds < HEADER_TIMEOUT, "answered by the size limit, not the time limit"


def test_the_hot_lane_does_not_answer_an_oversized_head(limited):
    """One read holding a whole plain GET of a warm segment is the hot lane's fast path: the limit comes first."""
    url = _segment(limited.port)
    with _connect(limited.port) as s:
        f = s.makefile("rb")
        assert _ask(s, f, url)[0] == 200
        _hot_answer(limited, s, f, url)
        s.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\nX-Pad: ".encode() + b"a" * 20_000 + b"\r\n\r\n")
        assert _read_response(f)[0] == 431


# --- max_connections -----------------------------------------------------------------------------------------


def test_connections_beyond_max_connections_are_answered_503_at_once(crowded):
    idle = [_connect(crowded.port) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)  # accepted by the server
        started = time.monotonic()
        status, headers, _ = _get(crowded.port, "/healthz")
        assert status == 503 and headers.get("connection") == "close"
        assert time.monotonic() - started < 1
    finally:
        idle.pop().close()
    try:
        deadline = time.monotonic() + 5
        while _get(crowded.port, "/healthz")[0] != 200:  # a place is free again
            assert time.monotonic() < deadline, "still 503 with a connection closed"
            time.sleep(0.1)
    finally:
        for s in idle:
            s.close()


def test_the_hot_lane_answers_no_connection_beyond_max_connections(crowded):
    """A request the hot lane would answer gets the same 503 past the limit: warm on both sides of it."""
    url = _segment(crowded.port)
    time.sleep(0.3)  # that connection is gone
    idle = [_connect(crowded.port) for _ in range(MAX_CONNECTIONS - 1)]
    try:
        with _connect(crowded.port) as w:  # the last one within the limit
            f = w.makefile("rb")
            for _ in range(3):  # a remembered answer lapses after 1 s: then the check is repeated
                assert _ask(w, f, url)[0] == 200
                before = _hot_answers(w, f)
                assert _ask(w, f, url)[0] == 200
                between = _hot_answers(w, f)
                with _connect(crowded.port) as extra:
                    ef = extra.makefile("rb")
                    status, headers, _ = _ask(extra, ef, url)
                    assert status == 503 and headers.get("connection") == "close"
                    assert ef.read() == b""  # closed by the server: back within the limit
                assert _ask(w, f, url)[0] == 200
                after = _hot_answers(w, f)
                if not crowded.hot_lane or (between == before + 1 and after == between + 1):
                    return  # warm (answered hot) just before and just after the 503
            raise AssertionError("the segment did not stay warm around the refused request")
    finally:
        for s in idle:
            s.close()


# --- keep_alive_timeout --------------------------------------------------------------------------------------


def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_timeout(limited):
    """After a hot answer too (the hot lane keeps its own lazy keep-alive timer)."""
    url = _segment(limited.port)
    with _connect(limited.port) as s:
        f = s.makefile("rb")
        assert _ask(s, f, url)[0] == 200
        answered = _hot_answer(limited, s, f, url)
        received, seconds = _until_closed(s, 6, since=answered)
    assert received == b""
    assert KEEP_ALIVE_TIMEOUT - 0.5 <= seconds <= KEEP_ALIVE_TIMEOUT + 1.5, seconds


# --- configuration -------------------------------------------------------------------------------------------


def test_defaults_and_values():
    defaults = parse_settings({})
    assert (defaults.header_timeout, defaults.max_header_bytes, defaults.max_connections, defaults.keep_alive_timeout) == (
        10.0, 16384, 1000, 5.0)
    s = parse_settings({"server": {"header_timeout": 2.5, "max_header_bytes": 8192, "max_connections": 1,
                                   "keep_alive_timeout": 75}})
    assert (s.header_timeout, s.max_header_bytes, s.max_connections, s.keep_alive_timeout) == (2.5, 8192, 1, 75.0)


@pytest.mark.parametrize("key, value, expected", [
    ("header_timeout", 0, "expected seconds such as 10, more than 0 and at most 3600"),
    ("header_timeout", "10", "expected seconds"),
    ("header_timeout", True, "expected seconds"),
    ("header_timeout", 86400, "at most 3600"),
    ("keep_alive_timeout", -1, "expected seconds such as 5, more than 0"),
    ("max_header_bytes", 1024, "expected bytes between 8192 and 65536"),
    ("max_header_bytes", 4 * 1024 * 1024, "expected bytes between 8192 and 65536"),
    ("max_header_bytes", 16384.0, "expected a int"),
    ("max_connections", 0, "expected a positive integer"),
    ("max_connections", "many", "expected a int"),
])
def test_bad_values_name_key_value_and_fix(key, value, expected):
    with pytest.raises(ConfigError) as err:
        parse_settings({"server": {key: value}}, source="vodgate.toml")
    message = str(err.value)
    assert message.startswith(f"vodgate.toml: server.{key} has value {value!r}"), message
    assert expected in message, message
