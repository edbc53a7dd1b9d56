"""HTTP limits ([server] header_timeout, body_timeout, max_header_bytes, max_connections, keep_alive_timeout).

Real ``vodgate serve`` processes, raw sockets, each server with the hot lane on and off: the limits live
in the protocol (edge/http_limits.py) and uvicorn's limit_concurrency, under the hot lane as well as the
ASGI path. Whether an answer came from the hot lane is read from /metrics, as in tests/test_hot_lane.py.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time

import httpx
import m3u8
import pytest

import uvicorn

from config.settings import ConfigError, parse_settings
from conftest import ServerProcess, free_port, hot_answers_in
from edge.http_limits import BODY_TIMEOUT as BODY_TIMEOUT_DEFAULT, limits_protocol

ENTRY = "/p/demo/e/h264_2997"
HEADER_TIMEOUT = 1
KEEP_ALIVE_TIMEOUT = 2  # unlike HEADER_TIMEOUT: which of the two closed an idle connection shows
MAX_CONNECTIONS = 5
BODY_TIMEOUT = 1
DRIBBLE = 0.5  # seconds between the bytes of a dribbled body
ADMIN = "admin-secret-0123456789"
AUTH = f"Authorization: Bearer {ADMIN}\r\n".encode()

CONFIG = """
[server]
media_root = "{library}"
segment_duration = 2
{limits}

[cache]
hot_lane = {hot_lane}
{tables}"""


def _start(tmp_path_factory, library, hot_lane: bool, limits: str, tables: str = "") -> ServerProcess:
    d = tmp_path_factory.mktemp("limits")
    config = d / "vodgate.toml"
    config.write_text(CONFIG.format(library=library, hot_lane=str(hot_lane).lower(), limits=limits, tables=tables))
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


@pytest.fixture(scope="module", params=[True, False], ids=["hot-lane", "no-hot-lane"])
def bodies(request, tmp_path_factory, media_library):
    """A short body timeout, a long head timeout (only the body limit can cut a connection early), a small
    connection limit, and the admin API (the one reader of request bodies)."""
    limits = f"body_timeout = {BODY_TIMEOUT}\nheader_timeout = 30\nmax_connections = {MAX_CONNECTIONS}"
    proc = _start(tmp_path_factory, media_library, request.param, limits, f'\n[partners.demo]\nadmin_secret = "{ADMIN}"\n')
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


def _dribble(sock: socket.socket, head: bytes, limit: float = 4) -> tuple[bytes, float]:
    """Sends ``head`` (and what follows it), then one byte of body per DRIBBLE seconds, reading whatever the
    server sends, until the server closes the connection; what it sent and how long after the head it closed."""
    sock.sendall(head)
    started, received = time.monotonic(), b""
    while time.monotonic() - started < limit:
        try:
            if not select.select([sock], [], [], DRIBBLE)[0]:
                sock.sendall(b"x")
            elif chunk := sock.recv(65536):
                received += chunk
            else:
                break
        except (BrokenPipeError, ConnectionResetError):  # closed too, if less politely
            break
    else:
        raise AssertionError(f"the server still holds the connection after {limit} s (received {received[:80]!r})")
    return received, time.monotonic() - started


def _segment(port: int) -> str:
    playlist = _get(port, f"{ENTRY}/hls/main/index.m3u8")[2].decode()
    return f"{ENTRY}/hls/main/{m3u8.loads(playlist).segments[0].uri}"


def _hot_answers(sock: socket.socket, f) -> int:
    return hot_answers_in(_ask(sock, f, "/metrics")[2].decode(), required=False)


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


# --- body_timeout --------------------------------------------------------------------------------------------

BODY = b"Host: x\r\nContent-Length: 100000\r\n\r\n"  # the review's request: a body sent one byte at a time


@pytest.mark.parametrize("request_line, head, answered", [
    ("GET /healthz", BODY, 200),  # answered at once, then uvicorn drops the body as it comes
    ("POST /healthz", BODY, 405),
    ("GET {segment}", BODY, 200),
    ("PUT /admin/partners/demo/profiles/slow", AUTH + b"Host: x\r\nContent-Length: 1000\r\n\r\n", 408),  # read by the app
    ("POST /admin/partners/demo/purge", AUTH + b"Host: x\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n", 408),
], ids=["get-answered", "post-answered", "segment-answered", "admin-put", "admin-chunked"])
def test_a_dribbled_request_body_is_cut_after_body_timeout(bodies, request_line, head, answered):
    """408 while the app waits for the body, else the answer (one, whole) and then the close."""
    request_line = request_line.format(segment=_segment(bodies.port) if "{segment}" in request_line else "")
    with _connect(bodies.port) as s:
        received, seconds = _dribble(s, f"{request_line} HTTP/1.1\r\n".encode() + head)
    assert received.startswith(b"HTTP/1.1 %d " % answered), received[:80]
    assert received.count(b"HTTP/1.1 ") == 1, received[:200]
    if answered == 408:
        assert received.lower().endswith(b"connection: close\r\n\r\nrequest timeout"), received
    assert BODY_TIMEOUT - 0.2 <= seconds < BODY_TIMEOUT + 2, seconds  # header_timeout is 30 s: the body's limit cut it
    assert _get(bodies.port, "/healthz")[0] == 200


def _gone(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (what it sent before is read and dropped)."""
    try:
        while select.select([sock], [], [], 0)[0]:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    return False


def test_dribbled_bodies_hold_max_connections_only_for_body_timeout(bodies):
    """The review's attack in small: connections that each send a body slowly fill max_connections (others get
    503) until body_timeout cuts them; then others are served again."""
    dribblers = [_connect(bodies.port) for _ in range(MAX_CONNECTIONS)]
    try:
        for s in dribblers:
            s.sendall(b"GET /healthz HTTP/1.1\r\n" + BODY)
        started = time.monotonic()
        time.sleep(0.2)
        assert _get(bodies.port, "/healthz")[0] == 503, "the dribbling connections fill the server"
        held = list(dribblers)
        while held:
            assert time.monotonic() - started < BODY_TIMEOUT + 2, f"{len(held)} dribbling connection(s) still held"
            for s in list(held):
                if _gone(s):
                    held.remove(s)
                else:
                    s.sendall(b"x")
            time.sleep(DRIBBLE / 5)
        while (status := _get(bodies.port, "/healthz")[0]) != 200:
            assert time.monotonic() - started < BODY_TIMEOUT + 3, f"still {status} with the dribbling connections cut"
            time.sleep(0.1)
    finally:
        for s in dribblers:
            s.close()


def test_admin_bodies_sent_in_time_are_served(bodies):
    """In pieces too, Content-Length or chunked; the connection then lives on past body_timeout (no deadline
    is left over from the body)."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    assert httpx.put(f"{bodies.base}/admin/partners/demo/profiles/plain", headers=auth, json={"rules": []}).status_code == 200
    body = b'{"rules": []}'
    for framing, pieces in [
        (b"Content-Length: %d\r\n" % len(body), [body[:5], body[5:]]),
        (b"Transfer-Encoding: chunked\r\n", [b"5\r\n" + body[:5] + b"\r\n", b"%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n", b"0\r\n\r\n"]),
    ]:
        with _connect(bodies.port) as s:
            f = s.makefile("rb")
            s.sendall(b"PUT /admin/partners/demo/profiles/pieces HTTP/1.1\r\nHost: x\r\n" + AUTH + framing + b"\r\n")
            for piece in pieces:
                time.sleep(BODY_TIMEOUT / 4)
                s.sendall(piece)
            status, _, answer = _read_response(f)
            assert status == 200, answer
            time.sleep(BODY_TIMEOUT + 0.5)  # idle on keep-alive (5 s)
            assert _ask(s, f, "/healthz")[0] == 200


async def _echo_after_x_delay(scope, receive, send) -> None:
    """Takes X-Delay seconds before reading the request body, then answers it back: an app slower than
    body_timeout, which no vodgate route is."""
    await asyncio.sleep(float(dict(scope["headers"]).get(b"x-delay", b"0")))
    body, more = b"", True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body, more = body + message.get("body", b""), message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def slow_app_port():
    """uvicorn in this process with edge/http_limits.py's protocol (body_timeout 1 s) before a slow app."""
    config = uvicorn.Config(_echo_after_x_delay, host="127.0.0.1", port=free_port(), lifespan="off", log_level="warning",
                            http=limits_protocol(30, 16384, body_timeout=BODY_TIMEOUT))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield config.port
    server.should_exit = True
    thread.join(10)


def test_time_the_server_holds_a_body_up_is_not_the_clients(slow_app_port):
    """A body behind a pipelined request that runs past body_timeout (reading is paused), and a body the client
    holds back until our 100 Continue, which the app asks for only once it reads: both are served."""
    with _connect(slow_app_port) as s:
        f = s.makefile("rb")
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Delay: 2\r\n\r\n"
                  b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        time.sleep(0.2)
        s.sendall(b"hello")
        assert _read_response(f)[0] == 200
        assert _read_response(f)[::2] == (200, b"hello")
    with _connect(slow_app_port) as s:
        f = s.makefile("rb")
        s.sendall(b"PUT /echo HTTP/1.1\r\nHost: x\r\nX-Delay: 2\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n" and f.readline() == b"\r\n"
        s.sendall(b"hello")
        assert _read_response(f)[::2] == (200, b"hello")


# --- configuration -------------------------------------------------------------------------------------------


def test_defaults_and_values():
    defaults = parse_settings({})
    assert (defaults.header_timeout, defaults.max_header_bytes, defaults.max_connections, defaults.keep_alive_timeout) == (
        10.0, 16384, 1000, 5.0)
    assert defaults.body_timeout == 10.0 == BODY_TIMEOUT_DEFAULT
    s = parse_settings({"server": {"header_timeout": 2.5, "max_header_bytes": 8192, "max_connections": 1,
                                   "keep_alive_timeout": 75, "body_timeout": 0.5}})
    assert (s.header_timeout, s.max_header_bytes, s.max_connections, s.keep_alive_timeout) == (2.5, 8192, 1, 75.0)
    assert s.body_timeout == 0.5


@pytest.mark.parametrize("key, value, expected", [
    ("header_timeout", 0, "expected seconds such as 10, more than 0 and at most 3600"),
    ("header_timeout", "10", "expected seconds"),
    ("header_timeout", True, "expected seconds"),
    ("header_timeout", 86400, "at most 3600"),
    ("keep_alive_timeout", -1, "expected seconds such as 5, more than 0"),
    ("body_timeout", 0, "expected seconds such as 10, more than 0 and at most 3600"),
    ("body_timeout", "10", "expected seconds"),
    ("body_timeout", 7200, "at most 3600"),
    ("max_header_bytes", 1024, "expected bytes between 8192 and 65536"),
    ("max_header_bytes", 4 * 1024 * 1024, "expected bytes between 8192 and 65536"),
    ("max_header_bytes", 16384.0, "expected an integer"),
    ("max_connections", 0, "expected a positive integer"),
    ("max_connections", "many", "expected an integer"),
])
def test_bad_values_name_key_value_and_fix(key, value, expected):
    with pytest.raises(ConfigError) as err:
        parse_settings({"server": {key: value}}, source="vodgate.toml")
    message = str(err.value)
    assert message.startswith(f"vodgate.toml: server.{key} has value {value!r}"), message
    assert expected in message, message
