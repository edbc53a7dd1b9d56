"""The origins an edge pulls from: pooled HTTP, timeouts, health checks, failover.

An :class:`UpstreamPool` holds one ``httpx.AsyncClient`` (keep-alive
connections shared by every request) and the configured origins in order of
preference. A fetch tries the healthy origins first, in order, then, as a last
resort, the ones marked down (so a recovered origin is found before the next
probe). An origin is marked down by a connection error, a timeout or a
502/503/504 answer, and up again by a successful ``/healthz`` probe (every
``health_interval`` seconds) or by any successful answer; without probes a
mark-down lapses after ``down_seconds``. A successful probe is logged at DEBUG only (httpx would log
each at INFO: a line per upstream every few seconds); a failed one is logged, and marks the origin down.

Only failures move on to the next origin: a 4xx (say ``404 unknown_entry``) is
the answer and is returned as is. When every origin fails the fetch raises
:class:`UpstreamUnavailable`, whose ``status`` is 504 when every failure was a
timeout and 502 otherwise, and whose ``detail`` names each origin and its
failure; the caller serves a stale copy instead when it has one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import httpx

from config.edge import normalize_upstream

log = logging.getLogger("vodgate.upstream")
HEALTH_PATH = "/healthz"


class QuietProbes(logging.Filter):
    """httpx logs every request at INFO; a successful health probe of ``urls`` goes to DEBUG instead.

    An edge probes each upstream every ``health_interval`` seconds: at INFO that is a log line per upstream
    every few seconds, burying what operators read. A failed probe stays at INFO (and mark_down warns)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.levelno != logging.INFO or not isinstance(args, tuple) or len(args) < 4:
            return True
        if args[3] != 200 or str(args[1]) not in self.urls:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_QUIET_PROBES = QuietProbes()

GATEWAY_STATUSES = frozenset({502, 503, 504})  # the origin itself says it cannot work: mark it down


@dataclass
class Upstream:
    url: str  # scheme://host:port[/base], no trailing slash
    down_until: float = 0.0  # monotonic time; 0 = up
    last_error: str | None = None
    failures: int = 0  # consecutive
    requests: int = 0

    def is_up(self, now: float) -> bool:
        return self.down_until <= now


@dataclass(frozen=True)
class UpstreamResponse:
    upstream: str
    status: int
    headers: httpx.Headers
    content: bytes


@dataclass(frozen=True)
class Failure:
    upstream: str
    reason: str  # human-readable: "connection refused (ConnectError)", "timed out after 10 s", "HTTP 503 ..."
    timeout: bool = False
    response: UpstreamResponse | None = None  # a 5xx answer, kept so a media error can be relayed


class UpstreamUnavailable(Exception):
    """No origin answered usefully. ``status``: 504 if every failure was a timeout, else 502."""

    def __init__(self, path: str, failures: Sequence[Failure]) -> None:
        self.path = path
        self.failures = tuple(failures)
        self.timeout = bool(failures) and all(f.timeout for f in failures)
        self.status = 504 if self.timeout else 502
        self.code = "upstream_timeout" if self.timeout else "upstream_unavailable"
        reasons = "; ".join(f"{f.upstream}: {f.reason}" for f in failures) or "no upstream configured"
        super().__init__(f"no upstream could serve {path}: {reasons}")

    @property
    def detail(self) -> str:
        return str(self)

    @property
    def relayable(self) -> UpstreamResponse | None:
        """The last origin's own 500 answer (e.g. ``malformed_media`` naming the file), when every
        origin answered 500: that is a property of the media, not an outage, so the client gets it."""
        if self.failures and all(f.response is not None and f.response.status == 500 for f in self.failures):
            return self.failures[-1].response
        return None


class UpstreamPool:
    def __init__(
        self,
        urls: Sequence[str],
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        health_interval: float = 5.0,
        down_seconds: float = 10.0,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("an edge needs at least one upstream URL")
        self.upstreams = [Upstream(normalize_upstream(u)) for u in urls]
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.health_interval = health_interval
        self.down_seconds = down_seconds
        # sent on every upstream request (e.g. the origin-shield secret)
        self.headers = httpx.Headers({"User-Agent": "vodgate-edge"})
        self.headers.update(headers or {})  # header names are case-insensitive: one value per name
        self.clock = clock
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max(10, max_connections // 4)),
            follow_redirects=False,
            trust_env=False,
        )
        self._health_task: asyncio.Task | None = None
        quiet_probes(f"{u.url}{HEALTH_PATH}" for u in self.upstreams)

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start the health probes (idempotent; needs a running loop)."""
        if self.health_interval > 0 and self._health_task is None:
            self._health_task = asyncio.get_running_loop().create_task(self._probe_forever(), name="vodgate-health")

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            try:
                await self._health_task
            except (asyncio.CancelledError, Exception):
                pass
            self._health_task = None
        if self._own_client:
            await self.client.aclose()

    # --- health ----------------------------------------------------------------

    def all_down(self) -> bool:
        now = self.clock()
        return not any(u.is_up(now) for u in self.upstreams)

    def mark_down(self, upstream: Upstream, reason: str) -> None:
        if upstream.is_up(self.clock()):
            log.warning("upstream %s marked down: %s", upstream.url, reason)
        upstream.down_until = self.clock() + self.down_seconds
        upstream.last_error = reason
        upstream.failures += 1

    def mark_up(self, upstream: Upstream) -> None:
        if not upstream.is_up(self.clock()):
            log.info("upstream %s is up again", upstream.url)
        upstream.down_until = 0.0
        upstream.failures = 0

    async def probe(self, upstream: Upstream) -> bool:
        try:
            response = await self.client.get(
                f"{upstream.url}{HEALTH_PATH}",
                headers=self.headers,
                timeout=httpx.Timeout(min(self.read_timeout, 5.0), connect=self.connect_timeout),
            )
        except httpx.HTTPError as exc:
            self.mark_down(upstream, f"health probe failed: {_describe(exc, self.read_timeout)}")
            return False
        if response.status_code != 200:
            self.mark_down(upstream, f"health probe answered HTTP {response.status_code}")
            return False
        self.mark_up(upstream)
        return True

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(u) for u in self.upstreams))

    async def _probe_forever(self) -> None:
        while True:
            try:
                await self.probe_all()
            except Exception:  # never let the prober die
                log.exception("health probe loop error")
            await asyncio.sleep(self.health_interval)

    def status(self) -> list[dict]:
        now = self.clock()
        return [
            {"url": u.url, "up": u.is_up(now), "last_error": u.last_error, "requests": u.requests}
            for u in self.upstreams
        ]

    # --- fetching --------------------------------------------------------------

    def candidates(self) -> list[Upstream]:
        now = self.clock()
        up = [u for u in self.upstreams if u.is_up(now)]
        return up + [u for u in self.upstreams if not u.is_up(now)]

    async def fetch(self, path: str, query: str = "", headers: Mapping[str, str | bytes] | None = None, method: str = "GET") -> UpstreamResponse:
        """``method path?query`` on the first origin that answers below 500, body read; UpstreamUnavailable otherwise."""
        response, upstream = await self._exchange(path, query, headers, method, read_body=True)
        return UpstreamResponse(upstream, response.status_code, response.headers, response.content)

    async def open(self, path: str, query: str = "", headers: Mapping[str, str | bytes] | None = None, method: str = "GET") -> httpx.Response:
        """As :meth:`fetch`, but the body is left unread for the caller to stream (it must ``aclose()`` the answer)."""
        response, _ = await self._exchange(path, query, headers, method, read_body=False)
        return response

    async def _exchange(self, path: str, query: str, headers: Mapping[str, str | bytes] | None, method: str,
                        read_body: bool) -> tuple[httpx.Response, str]:
        target = f"{path}?{query}" if query else path
        send_headers = httpx.Headers(self.headers)
        send_headers.update(headers or {})  # by name, case-insensitively: a viewer's User-Agent replaces ours
        failures: list[Failure] = []
        for upstream in self.candidates():
            try:
                response = await self._request(upstream, method, target, send_headers)
                if read_body or response.status_code >= 500:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
            except httpx.PoolTimeout as exc:  # our own connection pool is full: not the upstream's fault
                failures.append(Failure(upstream.url, f"no free connection in the edge's pool ({type(exc).__name__})", timeout=True))
                continue
            except httpx.TimeoutException as exc:
                reason = _describe(exc, self.read_timeout)
                self.mark_down(upstream, reason)
                failures.append(Failure(upstream.url, reason, timeout=True))
                continue
            except httpx.HTTPError as exc:  # refused, reset, protocol error
                reason = _describe(exc, self.read_timeout)
                self.mark_down(upstream, reason)
                failures.append(Failure(upstream.url, reason))
                continue
            if response.status_code >= 500:
                answer = UpstreamResponse(upstream.url, response.status_code, response.headers, response.content)
                reason = f"HTTP {response.status_code} {_error_code(response)}".rstrip()
                if response.status_code in GATEWAY_STATUSES:
                    self.mark_down(upstream, reason)
                failures.append(Failure(upstream.url, reason, timeout=response.status_code == 504, response=answer))
                continue
            self.mark_up(upstream)
            return response, upstream.url
        raise UpstreamUnavailable(path, failures)

    async def _request(self, upstream: Upstream, method: str, target: str, headers: httpx.Headers) -> httpx.Response:
        """One request, its body not yet read; a kept-alive connection that the upstream closed meanwhile is retried once."""
        for attempt in (1, 2):
            upstream.requests += 1
            try:
                return await self.client.send(self.client.build_request(method, f"{upstream.url}{target}", headers=headers), stream=True)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def quiet_probes(urls: Iterable[str]) -> None:
    """Log successful probes of ``urls`` at DEBUG, not INFO (QuietProbes on the httpx logger; idempotent)."""
    _QUIET_PROBES.urls.update(urls)
    httpx_log = logging.getLogger("httpx")
    if _QUIET_PROBES not in httpx_log.filters:
        httpx_log.addFilter(_QUIET_PROBES)


def _describe(exc: httpx.HTTPError, read_timeout: float) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connect timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {read_timeout:g} s ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed: {exc or 'refused'} ({type(exc).__name__})"
    return f"{exc or 'transport error'} ({type(exc).__name__})"


def _error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""
