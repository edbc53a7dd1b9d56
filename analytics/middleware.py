"""Pure ASGI middleware: observe every request after it is answered; feed events and metrics.

    app = wrap(create_app(settings), settings.analytics, settings.metrics)   # the one call to wire it
    # or by hand:
    app = AnalyticsMiddleware(create_app(settings), analytics=Analytics.from_config(cfg), metrics=Metrics())

What it does per HTTP request: wraps ``send`` to note the status, the body
bytes handed to the server, the time the headers went out (time to first
byte) and, for 206 and errors, the Content-Range header and the first KB of
the JSON error body. When the app has answered, it reads the route's
``MediaInfo`` from the scope, updates the metrics and queues references to
what it saw for :class:`Analytics` (no I/O, no await, nothing built: events
are built in batches by the flush task). Any failure there is counted and
logged at most once a minute; it never reaches the request.

ASGI lifespan: on ``lifespan.startup`` it starts the event flush task, on
``lifespan.shutdown`` (uvicorn sends it after in-flight requests finished,
e.g. on SIGTERM) it flushes every queued event before the app shuts down.
Without lifespan (``--lifespan off``) the flush task starts on the first
event and nothing flushes at exit: call ``analytics.shutdown()`` yourself.

It serves ``metrics_path`` (``/metrics``) itself when given one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from edge.cdn import ShieldGuard, refuse_unshielded
from edge.request_info import SCOPE_KEY

from config.analytics import AnalyticsConfig, MetricsConfig
from .metrics import Metrics
from .service import Analytics

log = logging.getLogger("vodgate.analytics")

ERROR_BODY_LIMIT = 1024
LOG_INTERVAL = 60.0


class AnalyticsMiddleware:
    def __init__(self, app: Any, analytics: Analytics | None = None, metrics: Metrics | None = None,
                 metrics_path: str | None = None) -> None:
        self.app = app
        self.analytics = analytics
        self.metrics = metrics
        self.metrics_path = metrics_path if metrics is not None else None
        self.internal_errors = 0
        self._last_error_log = float("-inf")
        state = getattr(app, "state", None)
        media = getattr(state, "media", None)
        settings = getattr(state, "settings", None)
        secrets = getattr(settings, "shield_secrets", ())
        self.metrics_guard = ShieldGuard(settings.shield_header, secrets) if secrets else None
        if analytics is not None and analytics.media is None and media is not None:
            analytics.bind(media)
        if metrics is not None:
            metrics.bind(media=media, cache=getattr(state, "cache", None), queue=analytics.queue if analytics else None,
                         hot=getattr(state, "hot", None), edge=getattr(state, "edge", None), purger=getattr(state, "purger", None))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.analytics is not None:
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if self.metrics_path is not None and scope["path"] == self.metrics_path:
            if self.metrics_guard is not None and not self.metrics_guard.passes(scope):
                await refuse_unshielded(send)  # a shielded node shows its figures to its CDN/operators only
                return
            await self._serve_metrics(scope, send)
            return
        # One coroutine frame for the whole request, and none for send (observed_send returns send's
        # awaitable): every await of the app passes through each frame, so frames cost (ANALYTICS.md).
        start = time.perf_counter()
        seen: list[Any] = [0, 0, None, None, None]  # status, bytes, ttfb, content_range, error_body

        def observed_send(message: dict) -> Any:
            kind = message["type"]
            if kind == "http.response.body":
                body = message.get("body", b"")
                seen[1] += len(body)
                err = seen[4]
                if err is not None and len(err) < ERROR_BODY_LIMIT:
                    seen[4] = err + body[:ERROR_BODY_LIMIT]
            elif kind == "http.response.start":
                status = seen[0] = message["status"]
                seen[2] = time.perf_counter() - start
                if status == 206 or status >= 400:
                    for name, value in message.get("headers", ()):
                        if name == b"content-range":
                            seen[3] = value
                    if status >= 400:
                        seen[4] = b""
            return send(message)

        try:
            await self.app(scope, receive, observed_send)
        except BaseException:
            if not seen[0]:
                seen[0] = 500  # what the server will answer
                seen[4] = b'{"error":"internal_error"}'
            self._finish(scope, seen, start)
            raise
        self._finish(scope, seen, start)

    def _finish(self, scope: dict, seen: list[Any], start: float) -> None:
        """After the response: record metrics, queue the observation. Appends only; the work is batched."""
        try:
            duration = time.perf_counter() - start
            state = scope.get("state")
            info = state.get(SCOPE_KEY) if state else None  # edge.request_info.media_info, inlined
            status = seen[0]
            path = scope["path"]
            if self.metrics is not None:
                self.metrics.record(path, status, duration, seen[2], seen[1], info)
            if self.analytics is not None and (info is not None or (status >= 400 and path.startswith("/p/"))):
                client = scope.get("client")
                self.analytics.capture((
                    time.time() - duration, scope["method"], path, scope.get("query_string", b""), scope.get("headers", ()),
                    client[0] if client else None, status, seen[1], seen[2], duration, seen[3], seen[4], info,
                ))
        except Exception:  # noqa: BLE001 - observing must never fail a request
            self.internal_errors += 1
            if self.metrics is not None:
                self.metrics.internal_errors += 1
            now = time.monotonic()
            if now - self._last_error_log >= LOG_INTERVAL:
                self._last_error_log = now
                log.exception("analytics: observing a request failed (%d failures so far; logged once a minute)", self.internal_errors)

    async def _lifespan(self, scope: dict, receive: Any, send: Any) -> None:
        analytics = self.analytics
        assert analytics is not None

        async def hooked_receive() -> dict:
            message = await receive()
            kind = message.get("type")
            try:
                if kind == "lifespan.startup":
                    await analytics.startup()
                elif kind == "lifespan.shutdown":
                    await analytics.shutdown()
            except Exception:  # noqa: BLE001 - analytics must not stop the server from starting/stopping
                log.exception("analytics: %s hook failed", kind)
            return message

        await self.app(scope, hooked_receive, send)

    async def _serve_metrics(self, scope: dict, send: Any) -> None:
        assert self.metrics is not None
        if scope["method"] not in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 405, "headers": [(b"allow", b"GET, HEAD")]})
            await send({"type": "http.response.body", "body": b""})
            return
        body, content_type = await self.metrics.render_node()
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})


def wrap(app: Any, analytics_config: AnalyticsConfig | None = None, metrics_config: MetricsConfig | None = None,
         *, sink: Any = None, sink_delay: float = 0.0, relay_to: Any = None) -> Any:
    """The app with play events and/or metrics, as configured; the app itself when both are off.

    ``sink`` replaces the configured sink (tests); ``sink_delay`` slows every
    sink write on purpose (shutdown drills). ``relay_to``: a worker of several hands its observations to
    the node's one event builder at that socket (analytics/relay.py) instead of building events itself.
    """
    analytics_config = analytics_config or AnalyticsConfig()
    metrics_config = metrics_config or MetricsConfig()
    analytics = None
    if analytics_config.enabled:
        from .service import build_sink

        if relay_to is not None:
            from .relay import RelaySink

            sink = RelaySink(relay_to)
        chosen = sink if sink is not None else build_sink(analytics_config)
        if sink_delay > 0:
            from .sinks import DelayedSink

            chosen = DelayedSink(chosen, sink_delay)
        analytics = Analytics.from_config(analytics_config, sink=chosen, relay=relay_to is not None)
    metrics = Metrics() if metrics_config.enabled else None
    if analytics is None and metrics is None:
        return app
    return AnalyticsMiddleware(app, analytics, metrics, metrics_config.path if metrics else None)
