"""CORS for players in browsers, without splitting CDN caches.

Starlette's CORSMiddleware adds ``Vary: Origin`` even when every origin gets
``Access-Control-Allow-Origin: *``; a CDN then keeps one copy of each segment
per web site embedding the player. Here ``Vary: Origin`` is sent only when the
response really differs by origin (an explicit allow-list).
"""

from __future__ import annotations

from typing import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOWED_METHODS = "GET, HEAD, OPTIONS"
ALLOWED_HEADERS = "Range, If-Range, If-None-Match, If-Modified-Since"
EXPOSED_HEADERS = "Content-Length, Content-Range, ETag, Accept-Ranges, X-Cache"
PREFLIGHT_MAX_AGE = "86400"


class CorsMiddleware:
    def __init__(self, app: ASGIApp, allow_origins: Sequence[str]) -> None:
        self.app = app
        self.allow_all = "*" in allow_origins
        self.allowed = frozenset(allow_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(origin, send)
            return
        if origin is None:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._decorate(MutableHeaders(scope=message), origin)
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _allow_origin(self, origin: str) -> str | None:
        if self.allow_all:
            return "*"
        return origin if origin in self.allowed else None

    def _decorate(self, headers: MutableHeaders, origin: str) -> None:
        allowed = self._allow_origin(origin)
        if not self.allow_all:
            headers.append("Vary", "Origin")  # the answer depends on the origin only with a list
        if allowed is not None:
            headers["Access-Control-Allow-Origin"] = allowed
            headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS

    async def _preflight(self, origin: str, send: Send) -> None:
        allowed = self._allow_origin(origin)
        status = 204 if allowed is not None else 403
        response_headers = [(b"content-length", b"0")]
        if allowed is not None:
            response_headers += [
                (b"access-control-allow-origin", allowed.encode("latin-1")),
                (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
                (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
                (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
            ]
        if not self.allow_all:
            response_headers.append((b"vary", b"Origin"))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": b""})
