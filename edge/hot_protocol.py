"""uvicorn's httptools protocol with the hot lane in front (see edge/hot.py).

uvicorn accepts a protocol class (``uvicorn.run(app, http=cls)``). This one
overrides a single parser callback, ``on_headers_complete``: when the request
is a plain keep-alive GET that :class:`~edge.hot.HotPaths` can answer, it
writes the status line, uvicorn's default headers (Date, Server), the
remembered headers and the body straight to the transport, and reports the
request to the observers (metrics, access log) as uvicorn's own cycle would.
Anything else goes to ``super()``, i.e. to the ASGI app, unchanged.

This leans on three uvicorn internals, all exercised by tests/test_hot_lane.py:
``self.cycle`` (``response_complete``), ``on_response_complete()`` (keep-alive
timer, pipelined requests) and ``self.flow.write_paused``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .hot import HotPaths

log = logging.getLogger("vodgate.hot")

_OK = b"HTTP/1.1 200 OK\r\n"


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


def hot_protocol(hot: HotPaths, metrics: Any = None) -> type[asyncio.Protocol] | None:
    """The protocol class for ``uvicorn.run(http=...)``, or None where httptools is missing (plain uvicorn)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # uvicorn without [standard]: serve everything the ordinary way
        log.warning("hot lane off: uvicorn's httptools protocol is not installed")
        return None

    class HotLaneProtocol(HttpToolsProtocol):
        _defaults: tuple[Any, bytes] = (None, b"")  # uvicorn's default headers (Date changes each second), rendered

        def _status_and_defaults(self) -> bytes:
            current = self.server_state.default_headers
            if HotLaneProtocol._defaults[0] is not current:
                rendered = b"".join([_OK, *(b"%s: %s\r\n" % pair for pair in current)])
                HotLaneProtocol._defaults = (current, rendered)
            return HotLaneProtocol._defaults[1]

        def on_headers_complete(self) -> None:
            if not self._answer_hot():
                super().on_headers_complete()

        def _answer_hot(self) -> bool:
            cycle = self.cycle
            if (cycle is not None and not cycle.response_complete) or self.flow.write_paused:
                return False  # pipelined behind a running request, or a slow reader: keep uvicorn's order and flow
            parser = self.parser
            if parser.get_method() != b"GET" or parser.get_http_version() != "1.1" or not parser.should_keep_alive():
                return False
            if b"?" in self.url or parser.should_upgrade():
                return False
            started = time.perf_counter()
            found = hot.answer(self.url, self.headers)
            if found is None:
                return False
            answer, body = found
            self.transport.writelines((b"".join((self._status_and_defaults(), answer.header_lines, b"\r\n")), body))
            self.cycle = _ANSWERED  # type: ignore[assignment]  # on_body/on_message_complete see a finished request
            if self.access_log:
                client = "%s:%d" % self.client if self.client else "-"  # uvicorn's AccessFormatter wants these 5 args
                self.access_logger.info('%s - "%s %s HTTP/%s" %d', client, "GET", answer.path, "1.1", 200)
            if metrics is not None:
                seconds = time.perf_counter() - started
                metrics.record(answer.path, 200, seconds, seconds, len(body), answer.info)
            self.on_response_complete()
            return True

    return HotLaneProtocol
