"""uvicorn's httptools protocol with the hot lane in front (see edge/hot.py).

uvicorn accepts a protocol class (``uvicorn.run(app, http=cls)``). This one
extends edge/http_limits.py's (whose head limits apply to every read first) and
answers a plain keep-alive GET that :class:`~edge.hot.HotPaths` knows by
writing the status line, uvicorn's default headers (Date, Server), the
remembered headers and the body straight to the transport, and reports it to
the observers (metrics, play events, edge/access_log.py's access log) as the
ASGI path would. Anything else goes to ``super()``, i.e. to httptools and the
ASGI app, unchanged.

Two entrances: ``feed`` recognises the common shape (one whole
request in one read, between requests) with one regular expression and skips
the parser callbacks; ``on_headers_complete`` catches the rest (a request in
pieces, or pipelined) once httptools has parsed it.

After a hot answer the keep-alive timer is not re-created (uvicorn cancels and
re-arms one per request, a third of the hot lane's Python time): one timer per
connection stays armed and re-arms itself for the rest of the idle time. A
connection over uvicorn's ``limit_concurrency`` gets no hot answer: its request
goes to httptools, where uvicorn answers it 503 as any other.

This leans on uvicorn internals (uvicorn 0.54), all exercised by
tests/test_hot_lane.py: ``self.cycle`` (``response_complete``), ``self.pipeline``,
``self.flow.write_paused``, ``self.timeout_keep_alive_task`` and its handler,
``self.server_state`` (``default_headers``, ``total_requests``),
``self.limit_concurrency``/``self.connections``/``self.tasks`` (uvicorn's 503 rule)
and ``self.headers``/``self.url`` as the parser callbacks fill them.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from typing import Any, Callable

from analytics.events import Observation
from auth.tokens import carries_token

from .hot import HotAnswer, HotPaths
from .viewer import only_a_session_query

_OK = b"HTTP/1.1 200 OK\r\n"

# One plain GET as players and CDNs send it on a keep-alive connection, whole in one read: origin-form
# target (path, optional query), HTTP/1.1, token header names, printable ASCII values. Anything else (a
# partial or pipelined request, a body, obs-text) is fed to httptools exactly as it came.
_PLAIN_GET = re.compile(
    rb"GET (/[!->@-~]*)(?:\?([!-~]*))? HTTP/1\.1\r\n((?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t -~]*\r\n)*)\r\n"
)
_CONNECTION_MANAGEMENT = frozenset({b"connection", b"upgrade", b"te", b"keep-alive"})


class _Answered:
    """Stands for uvicorn's RequestResponseCycle of a request the hot lane answered: complete."""

    response_complete = True
    keep_alive = True
    disconnected = False

    class message_event:  # noqa: N801 - mirrors the attribute uvicorn reads
        @staticmethod
        def set() -> None:
            pass


_ANSWERED = _Answered()


def hot_protocol(
    hot: HotPaths, base: type[Any], metrics: Any = None, analytics: Any = None,
    viewer_ip: Callable[[str | None, str | None], Any] | None = None,
) -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.run(http=...)``: ``base`` (edge/http_limits.py's) with the hot lane.

    ``metrics`` and ``analytics`` observe hot answers as analytics/middleware.py observes the others;
    ``viewer_ip`` (peer, X-Forwarded-For) -> address, when trusted proxies make it differ from the peer.
    """

    class HotLaneProtocol(base):  # type: ignore[misc, valid-type]
        _defaults: tuple[Any, bytes] = (None, b"")  # uvicorn's default headers (Date changes each second), rendered
        _between_requests = True  # httptools holds no part of a request: a whole one may bypass it
        _answered_at = float("-inf")  # loop time of the last hot answer (keep-alive idle time counts from it)
        access_writer: Any = None  # edge/access_log.AccessLog, set by with_access_log: one line per hot answer

        def feed(self, data: bytes) -> None:
            if self._between_requests and self._may_answer_now():
                request = _PLAIN_GET.fullmatch(data)
                if request is not None and self._answer_plain(request.group(1), request.group(2) or b"", request.group(3)):
                    return
            super().feed(data)

        def on_message_begin(self) -> None:
            self._between_requests = False
            super().on_message_begin()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._between_requests = True

        def on_headers_complete(self) -> None:
            if not self._answer_parsed():
                super().on_headers_complete()

        def _may_answer_now(self) -> bool:
            """Not behind a request still running (order), nor onto a slow reader's full buffer (flow), nor
            over uvicorn's limit_concurrency (its on_headers_complete answers 503 then: same test)."""
            cycle, limit = self.cycle, self.limit_concurrency
            return ((cycle is None or cycle.response_complete) and not self.pipeline and not self.flow.write_paused
                    and (limit is None or (len(self.connections) < limit and len(self.tasks) < limit)))

        def _answer_plain(self, path: bytes, query: bytes, header_block: bytes) -> bool:
            """A whole plain GET read in one piece, parsed by _PLAIN_GET: the common case, no parser callbacks."""
            headers = []
            for line in header_block.split(b"\r\n")[:-1]:
                name, _, value = line.partition(b":")
                name = name.lower()
                if name in _CONNECTION_MANAGEMENT:
                    return False  # close/upgrade: uvicorn's own handling
                headers.append((name, value.strip(b" \t")))
            return self._answer(path, query, headers)  # the keep-alive timer stays armed: see _keep_alive

        def _answer_parsed(self) -> bool:
            """The same, for a request httptools parsed (it came in pieces, or behind another one)."""
            if not self._may_answer_now():
                return False
            parser = self.parser
            if parser.get_method() != b"GET" or parser.get_http_version() != "1.1" or not parser.should_keep_alive():
                return False
            if parser.should_upgrade():
                return False
            path, _, query = self.url.partition(b"?")
            if self._answer(path, query, self.headers):
                self.cycle = _ANSWERED  # type: ignore[assignment]  # on_body/on_message_complete see it finished
                return True
            return False

        def _answer(self, path: bytes, query: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
            started = time.perf_counter()
            # a token may pin a clip: only the full path can judge it (a lone session id holds none: players send
            # one on every request, and parsing it costs a tenth of a hot answer)
            if query and only_a_session_query(query) is None and carries_token(query):
                return False
            found = hot.answer(path, headers, query)
            if found is None:
                return False
            answer, body = found
            self.transport.writelines((b"".join((self._status_and_defaults(), answer.header_lines, b"\r\n")), body))
            seconds = time.perf_counter() - started
            if self.access_writer is not None:  # edge/access_log.py: the line the app's requests get
                info = answer.info
                self.access_writer.write(time.time() - seconds, self.client[0] if self.client else None, "GET",
                                         answer.path, query, "1.1", headers, 200, len(body), seconds, info.cache,
                                         info.partner, info.entry)
            if metrics is not None:
                metrics.record_repeat(answer.info, seconds, len(body))
            if analytics is not None:
                self._play_event(answer, query, headers, len(body), seconds)
            self._keep_alive()
            return True

        def _keep_alive(self) -> None:
            """uvicorn's on_response_complete for an answer with nothing pipelined behind it, without a timer
            per request: one timer stays armed and, when it fires, re-arms for what is left of the idle time."""
            self.server_state.total_requests += 1
            self._answered_at = self.loop.time()
            self._head_since = None  # idle now: the next head is timed from its first byte (http_limits.py)
            if self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

        def timeout_keep_alive_handler(self) -> None:
            idle = self.loop.time() - self._answered_at
            if idle < self.timeout_keep_alive and not self.transport.is_closing():
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive - idle, self.timeout_keep_alive_handler)
                return
            super().timeout_keep_alive_handler()

        def _play_event(self, answer: HotAnswer, query: bytes, headers: list[tuple[bytes, bytes]], nbytes: int,
                        seconds: float) -> None:
            """The observation analytics/middleware.py would have queued for this request."""
            peer = self.client[0] if self.client else None
            info = answer.info
            if viewer_ip is not None:
                forwarded = ",".join(v.decode("latin-1") for n, v in headers if n == b"x-forwarded-for") or None
                info = replace(info, client_ip=str(viewer_ip(peer, forwarded)))
            analytics.observe(Observation(wall=time.time() - seconds, method="GET", path=answer.path, query=query,
                                          headers=headers, peer=peer, status=200, bytes_sent=nbytes, ttfb=seconds,
                                          duration=seconds, info=info))

        def _status_and_defaults(self) -> bytes:
            current = self.server_state.default_headers
            if HotLaneProtocol._defaults[0] is not current:
                rendered = b"".join([_OK, *(b"%s: %s\r\n" % pair for pair in current)])
                HotLaneProtocol._defaults = (current, rendered)
            return HotLaneProtocol._defaults[1]

    return HotLaneProtocol
