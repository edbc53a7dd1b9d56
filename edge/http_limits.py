"""uvicorn's httptools protocol with limits on requests: time limits on heads and bodies, a size limit on heads.

uvicorn (0.54) has none of them for httptools: a connection that never finishes
a request head, or a request body, is held forever (uvicorn's keep-alive timer
restarts with every byte, even while it discards the body of an answered
request), and httptools buffers a header of any size. The limit on connections
is uvicorn's own ``limit_concurrency`` (cli/main.py passes it);
edge/hot_protocol.py puts the hot lane on top of this class and keeps them all.

- **Time** (``header_timeout``): a request head must be complete within this
  many seconds, counted from the connection's opening for its first request and
  from the first byte of each later one (idle time between requests is uvicorn's
  keep-alive timeout). One timer per connection stays armed and re-arms itself
  for what is left, so no request pays for a timer. On expiry: a 408 when part
  of a head has arrived, then the connection is closed.
- **Body time** (``body_timeout``): a request body (Content-Length or chunked)
  must be complete within this many seconds of the end of its head, whether the
  app reads it or has answered already and uvicorn is dropping it. The same
  timer keeps this deadline: a read that ends inside a body starts the body's
  clock (bodiless requests, the hot lane's, never do) and brings the timer
  forward when it is due later. On expiry: a 408 when no answer has started (the
  app sees the client gone), else the connection is just closed. While the
  server holds the body up (reading paused because the app has not taken what
  it has or a request ahead is still running, or the client waiting for our
  ``100 Continue``), the deadline moves on, and once the hold ends the client
  has at least a whole body_timeout more (at most two).
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
``self.cycle`` (``response_started``, ``response_complete``, ``keep_alive``,
``disconnected``, ``message_event``, ``waiting_for_100_continue``), ``self.pipeline``,
``self.flow.read_paused``, ``self.loop``, ``self.transport``, ``self.client``,
``self.server_state.default_headers`` and ``STATUS_LINE``. All exercised by
tests/test_http_limits.py.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import TimerHandle

log = logging.getLogger("vodgate.http")

HEAD_END = b"\r\n\r\n"  # the blank line that ends a request head (llhttp requires CRLF line ends)
LINGER_SECONDS = 2.0  # after a refusal: time for the client to read it while we drop what it still sends
BODY_TIMEOUT = 10.0  # seconds: [server] body_timeout's default (config/settings.py)


def limits_protocol(header_timeout: float, max_header_bytes: int,
                    body_timeout: float = BODY_TIMEOUT) -> type[asyncio.Protocol] | None:
    """The protocol class for ``uvicorn.run(http=...)``, or None where httptools is missing (plain uvicorn)."""
    try:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
    except ImportError:  # uvicorn without [standard]: its h11 protocol, with h11_max_incomplete_event_size
        log.warning("server.header_timeout and server.body_timeout are not enforced: "
                    "uvicorn's httptools protocol is not installed")
        return None
    seconds_per_body = body_timeout

    class LimitsProtocol(HttpToolsProtocol):
        body_timeout = seconds_per_body
        _head_open = True  # the next bytes belong to a request head (none completed since the last message)
        _head_bytes = 0  # of that head, received so far
        _head_tail = b""  # the last bytes of an unfinished head: its blank line may straddle two reads
        _head_since: float | None = None  # loop time the head's clock started; None while idle between requests
        _body_since: float | None = None  # loop time the body's clock started; None: no request body on its way
        _body_held = False  # the server held that body up when the clock last looked (_clock)
        _timer: TimerHandle | None = None  # the connection's one timer, for heads and bodies (_clock)
        _refused = False  # answered 408/431: what arrives now is dropped

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_since = self.loop.time()
            self._timer = self.loop.call_later(header_timeout, self._clock)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
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
            if not self._head_open and self._body_since is None:  # this read ended in a body: its clock starts
                self._start_body_clock()

        def feed(self, data: bytes) -> None:
            """Hand a read to httptools (the hot lane answers some reads itself first)."""
            super().data_received(data)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._head_open = True
            self._body_since = None

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

        def _start_body_clock(self) -> None:
            """A read ended inside a request body: body_timeout runs from now (the end of its head, give or take
            the rest of that read), and the timer comes forward if it is due later than that."""
            now = self.loop.time()
            self._body_since, self._body_held = now, False
            timer = self._timer
            if timer is not None and timer.when() > now + self.body_timeout:
                timer.cancel()
                self._timer = self.loop.call_later(self.body_timeout, self._clock)

        def _clock(self) -> None:
            """The connection's one timer: closes it once a head has taken header_timeout or a body body_timeout,
            else sleeps until the current one would expire (or a whole header_timeout while idle or serving)."""
            self._timer = None
            transport = self.transport
            if self._refused or transport.is_closing() or transport.get_protocol() is not self:  # done, or upgraded
                return
            wait = header_timeout
            since, cycle, body_since = self._head_since, self.cycle, self._body_since
            if body_since is not None:  # a request body is on its way (no head can be, before it ends)
                now = self.loop.time()
                wait = body_since + self.body_timeout - now
                if wait <= 0:
                    held = self._body_held_by_us()
                    if not held and not self._body_held:
                        self._body_overdue()
                        return
                    # the server holds it up, or did within the last body_timeout: the client gets a whole one more
                    self._body_since, self._body_held, wait = now, held, self.body_timeout
            elif since is not None and (cycle is None or cycle.response_complete):  # waiting for a head
                wait = since + header_timeout - self.loop.time()
                if wait <= 0:
                    if self._head_bytes:  # part of a head arrived
                        self._refuse(408, "Request Timeout")
                    else:
                        transport.close()  # nothing was asked: nobody to answer
                    return
            self._timer = self.loop.call_later(wait, self._clock)

        def _body_held_by_us(self) -> bool:
            """Whether the server, not the client, holds the body up: reading is paused (the app has not taken what
            it was given, or a request ahead is still running) or the client waits for our 100 Continue."""
            return self.flow.read_paused or bool(getattr(self.cycle, "waiting_for_100_continue", False))

        def _body_overdue(self) -> None:
            """A request body not complete within body_timeout: a 408 if no answer has started, else just the
            close; either way its app sees the client gone (receive() says http.disconnect, sends are dropped)."""
            self._refused = True
            cycle, client = self.cycle, self.client or ("-", 0)
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
            if self.pipeline:  # an answer to a request ahead may still be on its way: no 408 in it, no EOF under it
                log.info("%s:%d - request body not complete within body_timeout; closed", *client)
                self.transport.close()
            elif cycle is not None and (cycle.response_complete or cycle.response_started):
                log.info("%s:%d - request body not complete within body_timeout; closed after the answer", *client)
                self._close_gracefully()
            else:
                log.info("%s:%d - %d %s (request body)", *client, 408, "Request Timeout")
                self._write_refusal(408, "Request Timeout")
                self._close_gracefully()

        def _refuse(self, status: int, reason: str) -> None:
            """Answer ``status`` and close gracefully (see the module docstring)."""
            log.info("%s:%d - %d %s", *(self.client or ("-", 0)), status, reason)
            self._refused = True
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:  # a pipelined head, behind a response on its way:
                cycle.keep_alive = False  # no answer in the middle of it; uvicorn closes once it is sent
                return
            self._write_refusal(status, reason)
            self._close_gracefully()

        def _write_refusal(self, status: int, reason: str) -> None:
            """A plain-text answer that closes the connection, written straight to the transport."""
            body = reason.encode("ascii")
            self.transport.write(b"".join([
                STATUS_LINE[status], *(b"%s: %s\r\n" % pair for pair in self.server_state.default_headers),
                b"content-type: text/plain; charset=utf-8\r\n", b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n", body,
            ]))

        def _close_gracefully(self) -> None:
            """Our half of the connection now, after what is written; theirs once read (or LINGER_SECONDS)."""
            if self.transport.can_write_eof():
                self.transport.write_eof()  # the client reads the answer, then EOF; closing its side ends ours
                self.loop.call_later(LINGER_SECONDS, self.transport.close)
            else:
                self.transport.close()

    return LimitsProtocol

