"""uvicorn's httptools protocol with limits on request heads: a time limit and a size limit.

uvicorn (0.54) has neither for httptools: a connection that never finishes a
request head is held forever, and httptools buffers a header of any size. The
third limit, on connections, is uvicorn's own ``limit_concurrency`` (cli/main.py
passes it); edge/hot_protocol.py puts the hot lane on top of this class and
keeps all three.

- **Time** (``header_timeout``): a request head must be complete within this
  many seconds, counted from the connection's opening for its first request and
  from the first byte of each later one (idle time between requests is uvicorn's
  keep-alive timeout). One timer per connection stays armed and re-arms itself
  for what is left, so no request pays for a timer. On expiry: a 408 when part
  of a head has arrived, then the connection is closed.
- **Size** (``max_header_bytes``): the bytes of a head are counted as they
  arrive, before httptools sees them (it would buffer a header of any size). A
  head over the limit is answered 431 without waiting for the rest of it. What a
  read holds after the end of a head (a body, or pipelined requests) is not
  counted: a pipelined head may reach the limit plus one read (asyncio reads at
  most 256 KiB) before the 431.

A refused connection is closed gracefully: the answer, then our half of the
connection (FIN), and whatever the client still sends is read and dropped for a
moment, so that its unread bytes do not turn the close into a reset that could
destroy the answer before the client reads it.

uvicorn internals used (HttpToolsProtocol, 0.54): ``data_received`` feeds
httptools; the parser callbacks ``on_headers_complete``/``on_message_complete``;
``on_response_complete`` (the cycle's callback once a response is sent);
``self.cycle`` (``response_complete``, ``keep_alive``), ``self.loop``, ``self.transport``,
``self.client``, ``self.server_state.default_headers`` and ``STATUS_LINE``. All
exercised by tests/test_http_limits.py.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import TimerHandle

log = logging.getLogger("vodgate.http")

HEAD_END = b"\r\n\r\n"  # the blank line that ends a request head (llhttp requires CRLF line ends)
LINGER_SECONDS = 2.0  # after a refusal: time for the client to read it while we drop what it still sends


def limits_protocol(header_timeout: float, max_header_bytes: int) -> type[asyncio.Protocol] | None:
    """The protocol class for ``uvicorn.run(http=...)``, or None where httptools is missing (plain uvicorn)."""
    try:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
    except ImportError:  # uvicorn without [standard]: its h11 protocol, with h11_max_incomplete_event_size
        log.warning("server.header_timeout is not enforced: uvicorn's httptools protocol is not installed")
        return None

    class LimitsProtocol(HttpToolsProtocol):
        _head_open = True  # the next bytes belong to a request head (none completed since the last message)
        _head_bytes = 0  # of that head, received so far
        _head_tail = b""  # the last bytes of an unfinished head: its blank line may straddle two reads
        _head_since: float | None = None  # loop time the head's clock started; None while idle between requests
        _head_timer: TimerHandle | None = None
        _refused = False  # answered 408/431: what arrives now is dropped

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_since = self.loop.time()
            self._head_timer = self.loop.call_later(header_timeout, self._head_clock)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._head_open:
                if self._head_since is None:
                    self._head_since = self.loop.time()
                if not self._count_head(data):
                    self._refuse(431, "Request Header Fields Too Large")
                    return
            self.feed(data)

        def feed(self, data: bytes) -> None:
            """Hand a read to httptools (the hot lane answers some reads itself first)."""
            super().data_received(data)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._head_open = True

        def on_headers_complete(self) -> None:
            self._head_open = False
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._head_since = None  # idle on keep-alive: the next head is timed from its first byte

        def _count_head(self, data: bytes) -> bool:
            """Adds this read's part of the open head; False once the head is larger than max_header_bytes."""
            tail = self._head_tail
            probe = tail + data if tail else data
            end = probe.find(HEAD_END)
            if end < 0:
                size = self._head_bytes + len(data)
                self._head_bytes, self._head_tail = size, probe[-3:]
            else:  # the head ends in this read; what follows is a body or the next request
                size = self._head_bytes + end + len(HEAD_END) - len(tail)
                self._head_bytes, self._head_tail = 0, b""
            return size <= max_header_bytes

        def _head_clock(self) -> None:
            """The connection's one head timer: closes it once a head has taken header_timeout, else sleeps
            until the current head would expire (or a whole period while idle or serving)."""
            self._head_timer = None
            transport = self.transport
            if self._refused or transport.is_closing() or transport.get_protocol() is not self:  # done, or upgraded
                return
            wait = header_timeout
            since, cycle = self._head_since, self.cycle
            if since is not None and (cycle is None or cycle.response_complete):  # waiting for a head
                wait = since + header_timeout - self.loop.time()
                if wait <= 0:
                    if self._head_bytes:  # part of a head arrived
                        self._refuse(408, "Request Timeout")
                    else:
                        transport.close()  # nothing was asked: nobody to answer
                    return
            self._head_timer = self.loop.call_later(wait, self._head_clock)

        def _refuse(self, status: int, reason: str) -> None:
            """Answer ``status`` and close gracefully (see the module docstring)."""
            log.info("%s:%d - %d %s", *(self.client or ("-", 0)), status, reason)
            self._refused = True
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:  # a pipelined head, behind a response on its way:
                cycle.keep_alive = False  # no answer in the middle of it; uvicorn closes once it is sent
                return
            body = reason.encode("ascii")
            self.transport.write(b"".join([
                STATUS_LINE[status], *(b"%s: %s\r\n" % pair for pair in self.server_state.default_headers),
                b"content-type: text/plain; charset=utf-8\r\n", b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n", body,
            ]))
            if self.transport.can_write_eof():
                self.transport.write_eof()  # the client reads the answer, then EOF; closing its side ends ours
                self.loop.call_later(LINGER_SECONDS, self.transport.close)
            else:
                self.transport.close()

    return LimitsProtocol
