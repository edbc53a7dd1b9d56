"""The access log: one line per request, hot lane included (``[server] access_log``).

One :class:`AccessLog` writes every line; two callers feed it the same facts:

- :class:`AccessLogMiddleware`, the outermost ASGI layer, for every request the app answers. It notes
  the status, the ``X-Cache`` header and the body bytes handed to the server as they pass through
  ``send``, and writes the line when the app is done: the response complete, or the client gone.
- the hot lane (edge/hot_protocol.py), which answers warm segments before any ASGI work and so is
  never seen by middleware, calls :meth:`AccessLog.write` for each answer it writes.

What a line holds, in both formats (docs/CONFIGURATION.md, ``server.access_log``): the time the request
arrived (RFC 3339, UTC, milliseconds), the client address by the trusted-proxy rule (the access checks'
own function, ``AccessControl.viewer_ip``), method, path and query with every token redacted
(``redact``: cli/main.py passes cli/logs.py's ``redact_text``, the redaction applied to every log record;
this layer does not import cli/), status, body
bytes, duration, cache status (``X-Cache``, or the hot lane's HIT), partner and entry when the path
names them (edge/request_info.py), user agent and referer (redacted, truncated). No other header: shield,
admin and edge secrets never reach a line.

"Client went away": uvicorn marks its request cycle ``disconnected`` when the connection is lost before
the response is complete, and drops what the app sends after that. The middleware reads that flag from
the cycle (``receive.__self__``, the one uvicorn internal it uses, beside those edge/hot_protocol.py
lists) and from an ``http.disconnect`` the app received mid-response; such a line says
``client_gone`` and counts only the bytes sent before. A client that closes once the app has handed
the last byte to the server (uvicorn buffers what the socket does not take at once) is not seen: that
response is complete as far as the app can know. ``error``: the app failed mid-answer (or before one:
status 500).

Lines go to standard output through :class:`LineWriter`, not the logging module (see there for why).

Not logged: what the HTTP protocol answers before a request reaches the app or the hot lane
(408 and 431 of edge/http_limits.py, 400 of the parser, uvicorn's 503 over ``max_connections``, logged
by uvicorn as a warning).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]  # the C escaping json.dumps uses
from typing import Any, Callable, Iterable

from .request_info import media_info

COMPLETE, CLIENT_GONE, ERROR = "complete", "client_gone", "error"
MAX_TARGET = 2048  # characters of path and query kept (after redaction): a 16 KiB query helps no one
MAX_HEADER = 256  # characters of user agent and referer kept

ViewerIp = Callable[[str | None, str | None], Any]  # (peer, X-Forwarded-For) -> address
Redact = Callable[[str], str]  # text -> the same text safe to log


class AccessLog:
    """Formats access lines (``"json"`` or ``"text"``) and hands them to ``out`` (bytes of whole lines)."""

    def __init__(self, fmt: str, viewer_ip: ViewerIp, redact: Redact, out: Callable[[bytes], None]) -> None:
        if fmt not in ("json", "text"):
            raise ValueError(f"access log format {fmt!r}: expected json or text")
        self.viewer_ip = viewer_ip
        self.redact = redact
        self.out = out
        self._format = self._json if fmt == "json" else self._text
        self._second = -1  # the last whole second formatted, and its text: one strftime a second
        self._stamp = ""
        self._clf = ""
        self._names: dict[Any, str] = {}  # address -> its text

    @classmethod
    def to_stdout(cls, fmt: str, viewer_ip: ViewerIp, redact: Redact) -> "AccessLog":
        """The server's access log: lines on standard output (other logs go to standard error), whatever
        ``server.log_level`` says (the access log has its own switch)."""
        sys.stdout.flush()  # what was printed before (the startup lines) stays first
        return cls(fmt, viewer_ip, redact, LineWriter(sys.stdout.fileno()).write)

    def write(self, wall: float, peer: str | None, method: str, path: str, query: bytes, http_version: str,
              headers: Iterable[tuple[bytes, bytes]], status: int, nbytes: int, seconds: float, cache: str | None,
              partner: str | None, entry: str | None, outcome: str = COMPLETE) -> None:
        """One line. ``headers`` as ASGI and the hot lane hold them (lower-case names, bytes); ``wall`` is
        when the request arrived (``time.time()``), ``seconds`` how long the answer took."""
        forwarded: list[str] = []
        agent = referer = ""
        for name, value in headers:
            if name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
            elif name == b"user-agent":
                agent = value.decode("latin-1")
            elif name == b"referer":
                referer = value.decode("latin-1")
        address = self.viewer_ip(peer, ",".join(forwarded) or None)
        client = self._names.get(address)
        if client is None:  # str() of an address costs more than the rest of the line: remembered
            if len(self._names) >= 4096:
                self._names.clear()
            client = self._names[address] = str(address)
        target = f"{path}?{query.decode('latin-1')}" if query else path
        redact = self.redact
        line = self._format(wall, client, method, _clip(redact(target), MAX_TARGET), http_version, status, nbytes,
                            seconds, cache, partner, entry, agent and _clip(redact(agent), MAX_HEADER),
                            referer and _clip(redact(referer), MAX_HEADER), outcome)
        self.out(line.encode("utf-8", "backslashreplace"))

    def _json(self, wall: float, client: str, method: str, target: str, http_version: str, status: int, nbytes: int,
              seconds: float, cache: str | None, partner: str | None, entry: str | None, agent: str, referer: str,
              outcome: str) -> str:
        """One JSON object, keys in a fixed order; strings through the json module's own (C) escaping."""
        return (f'{{"time":"{self._rfc3339(wall)}","client_ip":"{client}","method":{_json_str(method)},'
                f'"path":{_json_str(target)},"status":{status},"bytes":{nbytes},"duration_ms":{round(seconds * 1000, 3)},'
                f'"cache":{_json_str(cache)},"partner":{_json_str(partner)},"entry":{_json_str(entry)},'
                f'"user_agent":{_json_str(agent or None)},"referer":{_json_str(referer or None)},"outcome":"{outcome}"}}\n')

    def _text(self, wall: float, client: str, method: str, target: str, http_version: str, status: int, nbytes: int,
              seconds: float, cache: str | None, partner: str | None, entry: str | None, agent: str, referer: str,
              outcome: str) -> str:
        """The combined log format (what nginx and Apache write), then ``key=value`` for the rest."""
        self._rfc3339(wall)
        return (f'{client} - - [{self._clf}] "{method} {_quoted(target)} HTTP/{http_version}" {status} {nbytes} '
                f'"{_quoted(referer) or "-"}" "{_quoted(agent) or "-"}" duration_ms={seconds * 1000:.3f} '
                f'cache={cache or "-"} partner={partner or "-"} entry={entry or "-"} outcome={outcome}\n')

    def _rfc3339(self, wall: float) -> str:
        second = int(wall)
        if second != self._second:
            utc = time.gmtime(second)
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", utc)
            self._clf = time.strftime("%d/%b/%Y:%H:%M:%S +0000", utc)  # English month names: LC_TIME is C here
        return f"{self._stamp}.{int((wall - second) * 1000):03d}Z"


class LineWriter:
    """Whole lines to a file descriptor, the lines of one event-loop iteration in one ``write``.

    Not through the logging module: a LogRecord, its caller lookup, the handler's lock and a flush per
    line cost more than the line itself, per request. Lines are redacted where they are made (above),
    with the function cli/logs.py applies to every log record. A line is written by the end of the
    loop iteration that made it (at once when no loop runs), so nothing waits behind a quiet moment.
    The write blocks when the reader (a pipe to a log shipper, journald) stops reading, as logging's
    StreamHandler does; a failing descriptor is reported once and its lines dropped.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending: list[bytes] = []
        self._failed = False

    def write(self, line: bytes) -> None:
        pending = self._pending
        pending.append(line)
        if len(pending) > 1:
            return  # already scheduled
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:
            self.flush()

    def flush(self) -> None:
        data, self._pending = b"".join(self._pending), []
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            if not self._failed:
                self._failed = True
                logging.getLogger("vodgate").error("access log: writing to descriptor %d failed (%s); lines dropped", self.fd, exc)


def _json_str(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quoted(text: str) -> str:
    """Safe inside a double-quoted field of a text line: quotes, backslashes, control characters as \\xHH."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c not in '"\\' else f"\\x{ord(c):02x}" for c in text)


class AccessLogMiddleware:
    """Outermost ASGI middleware: one access line per HTTP request, once the app is done with it."""

    def __init__(self, app: Any, log: AccessLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wall, started = time.time(), time.perf_counter()
        cycle = getattr(receive, "__self__", None)  # uvicorn's RequestResponseCycle: its .disconnected
        counts_body = scope["method"] != "HEAD"  # uvicorn writes no body for HEAD, whatever the app sends
        status, nbytes, cache = 0, 0, None
        complete = gone = False

        async def observed_receive() -> Any:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and not complete:
                gone = True
            return message

        async def observed_send(message: Any) -> None:
            nonlocal status, nbytes, cache, complete
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-cache":
                        cache = value.decode("latin-1")
            await send(message)
            if kind == "http.response.body" and not getattr(cycle, "disconnected", False):
                if counts_body:
                    nbytes += len(message.get("body", b""))
                if not message.get("more_body", False):
                    complete = True

        outcome = ERROR
        try:
            await self.app(scope, observed_receive, observed_send)
            outcome = COMPLETE if complete else ERROR
        finally:
            if gone or getattr(cycle, "disconnected", False):
                outcome = CLIENT_GONE
            info = media_info(scope)
            client = scope.get("client")
            raw_path = scope.get("raw_path") or scope["path"].encode()
            try:
                self.log.write(wall, client[0] if client else None, scope["method"], raw_path.decode("latin-1"),
                               scope["query_string"], scope["http_version"], scope["headers"], status or 500, nbytes,
                               time.perf_counter() - started, cache, info.partner if info else None,
                               info.entry if info else None, outcome)
            except Exception:  # the log must never fail a request
                logging.getLogger("vodgate").exception("access log line failed")


def with_access_log(served: Any, protocol: Any, fmt: str, viewer_ip: ViewerIp, redact: Redact) -> tuple[Any, Any]:
    """``served`` and the server's protocol class with the access log of ``fmt`` ("off": unchanged).

    The app gets :class:`AccessLogMiddleware` outermost; the hot lane's protocol (edge/hot_protocol.py),
    when there is one, the same :class:`AccessLog` as its ``access_writer``.
    """
    if fmt == "off":
        return served, protocol
    log = AccessLog.to_stdout(fmt, viewer_ip, redact)
    if protocol is not None and hasattr(protocol, "access_writer"):
        protocol = type(protocol.__name__, (protocol,), {"access_writer": log})
    return AccessLogMiddleware(served, log), protocol
