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

The probe asks ``/healthz`` with the edge's upstream headers and ``X-Vodgate-Shield-Check: 1``: a node with a
shield then answers ``403 shield_required`` unless the probe carries one of its secrets (``/healthz`` stays
open to every other caller). An origin that refuses our shield secret, to a probe or to a request, is a
failed origin like one that is down: every answer it would give is that 403, so it is marked down with
that reason and the next origin is tried. Each probe's verdict is kept (:class:`Probe`): ``/readyz``
(edge/readiness.py) reads it instead of asking the origins itself.

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
from urllib.parse import urlsplit, urlunsplit

import httpx

from config.edge import normalize_upstream

log = logging.getLogger("vodgate.upstream")
HEALTH_PATH = "/healthz"
# sent with every probe: a shielded node then answers 403 shield_required to a probe without its secret
SHIELD_CHECK_HEADER = "X-Vodgate-Shield-Check"
SHIELD_REFUSED = ("refuses our shield secret (HTTP 403 shield_required): give this edge the origin's secret "
                  "in [edge] upstream_headers")


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


@dataclass(frozen=True)
class Probe:
    """The verdict of an upstream's last health probe. ``code``: ``ok``, ``shield_required`` (it answered, and
    refuses our shield secret), ``unreachable`` (no connection), ``timeout``, ``http_<status>``."""

    at: float  # the pool's clock (monotonic)
    ok: bool
    code: str
    reason: str


@dataclass
class Upstream:
    url: str  # scheme://[user:password@]host:port[/base], no trailing slash
    down_until: float = 0.0  # monotonic time; 0 = up
    last_error: str | None = None
    failures: int = 0  # consecutive
    requests: int = 0  # requests sent (probes aside)
    failures_total: int = 0  # every failure that marked it down (requests and probes)
    failovers: int = 0  # requests that moved on from it to the next upstream
    probe: Probe | None = None  # the last health probe (None: not probed yet)

    def is_up(self, now: float) -> bool:
        return self.down_until <= now

    @property
    def public(self) -> str:
        """The URL without credentials: what /healthz, /readyz, /metrics and error details show."""
        return public_url(self.url)


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
        self._probe_round: asyncio.Task | None = None  # the probe round in flight (prober and /readyz share it)
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
            log.warning("upstream %s marked down: %s", upstream.public, reason)
        upstream.down_until = self.clock() + self.down_seconds
        upstream.last_error = reason
        upstream.failures += 1
        upstream.failures_total += 1

    def mark_up(self, upstream: Upstream) -> None:
        if not upstream.is_up(self.clock()):
            log.info("upstream %s is up again", upstream.public)
        upstream.down_until = 0.0
        upstream.failures = 0

    async def probe(self, upstream: Upstream) -> bool:
        """``GET /healthz`` with our upstream headers and the shield check; the verdict goes to ``upstream.probe``."""
        headers = httpx.Headers(self.headers)
        headers[SHIELD_CHECK_HEADER] = "1"
        probe_timeout = min(self.read_timeout, 5.0)
        try:
            response = await self.client.get(
                f"{upstream.url}{HEALTH_PATH}",
                headers=headers,
                timeout=httpx.Timeout(probe_timeout, connect=self.connect_timeout),
            )
        except httpx.HTTPError as exc:
            reason = f"health probe failed: {_describe(exc, probe_timeout)}"
            return self._probed(upstream, "timeout" if isinstance(exc, httpx.TimeoutException) else "unreachable", reason)
        if refuses_shield(response):
            return self._probed(upstream, "shield_required", SHIELD_REFUSED)
        if response.status_code != 200:
            return self._probed(upstream, f"http_{response.status_code}", f"health probe answered HTTP {response.status_code}")
        return self._probed(upstream, "ok", "answered its health probe")

    def _probed(self, upstream: Upstream, code: str, reason: str) -> bool:
        ok = code == "ok"
        upstream.probe = Probe(self.clock(), ok, code, reason)
        if ok:
            self.mark_up(upstream)
        else:
            self.mark_down(upstream, reason)
        return ok

    async def probe_all(self) -> None:
        """One probe of every upstream; a round already in flight is joined, not doubled."""
        task = self._probe_round
        if task is None or task.done():
            task = self._probe_round = asyncio.get_running_loop().create_task(self._probe_each())
        await asyncio.shield(task)

    async def _probe_each(self) -> None:
        await asyncio.gather(*(self.probe(u) for u in self.upstreams))

    @property
    def probing(self) -> bool:
        """Whether the health prober runs (started, with ``health_interval`` > 0)."""
        return self._health_task is not None and not self._health_task.done()

    async def probed(self, max_age: float | None) -> None:
        """Every upstream has a probe verdict (no older than ``max_age`` s, when given): probes when one lacks it."""
        now = self.clock()
        if all(u.probe is not None and (max_age is None or now - u.probe.at <= max_age) for u in self.upstreams):
            return
        await self.probe_all()

    async def _probe_forever(self) -> None:
        while True:
            try:
                await self.probe_all()
            except Exception:  # never let the prober die
                log.exception("health probe loop error")
            await asyncio.sleep(self.health_interval)

    def status(self) -> list[dict]:
        """Each upstream as /healthz shows it, and /metrics exports it (the same numbers)."""
        now = self.clock()
        return [
            {"url": u.public, "up": u.is_up(now), "last_error": u.last_error, "requests": u.requests,
             "failures": u.failures_total, "failovers": u.failovers}
            for u in self.upstreams
        ]

    def readiness(self) -> list[tuple[str, bool, str, str]]:
        """``(url, ready, code, reason)`` per upstream (its URL without credentials): its last probe succeeded and
        nothing marked it down since."""
        now = self.clock()
        out = []
        for u in self.upstreams:
            probe = u.probe
            if probe is not None and not probe.ok:
                out.append((u.public, False, probe.code, probe.reason))
            elif not u.is_up(now):
                out.append((u.public, False, "down", u.last_error or "marked down"))
            elif probe is None:
                out.append((u.public, False, "not_probed", "not probed yet"))
            else:
                out.append((u.public, True, "ok", f"answered its health probe {now - probe.at:.1f} s ago, shield check passed"))
        return out

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
        candidates = self.candidates()
        for position, upstream in enumerate(candidates):
            outcome = await self._try(upstream, method, target, send_headers, read_body)
            if isinstance(outcome, httpx.Response):
                self.mark_up(upstream)
                return outcome, upstream.public
            failures.append(outcome)
            if position + 1 < len(candidates):
                upstream.failovers += 1
        raise UpstreamUnavailable(path, failures)

    async def _try(self, upstream: Upstream, method: str, target: str, headers: httpx.Headers,
                   read_body: bool) -> httpx.Response | Failure:
        """One upstream's answer, or its Failure (marked down when the failure is the upstream's)."""
        try:
            response = await self._request(upstream, method, target, headers)
            if read_body or response.status_code >= 500 or response.status_code == 403:  # a 403: small, read to tell a shield refusal
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        # a Failure names the upstream without credentials: its reason reaches viewers in a 502's detail
        except httpx.PoolTimeout as exc:  # our own connection pool is full: not the upstream's fault
            return Failure(upstream.public, f"no free connection in the edge's pool ({type(exc).__name__})", timeout=True)
        except httpx.TimeoutException as exc:
            reason = _describe(exc, self.read_timeout)
            self.mark_down(upstream, reason)
            return Failure(upstream.public, reason, timeout=True)
        except httpx.HTTPError as exc:  # refused, reset, protocol error
            reason = _describe(exc, self.read_timeout)
            self.mark_down(upstream, reason)
            return Failure(upstream.public, reason)
        if response.status_code >= 500:
            answer = UpstreamResponse(upstream.public, response.status_code, response.headers, response.content)
            reason = f"HTTP {response.status_code} {_error_code(response)}".rstrip()
            if response.status_code in GATEWAY_STATUSES:
                self.mark_down(upstream, reason)
            return Failure(upstream.public, reason, timeout=response.status_code == 504, response=answer)
        if refuses_shield(response):  # every answer of this origin would be this 403: it is not serving us
            self.mark_down(upstream, SHIELD_REFUSED)
            return Failure(upstream.public, SHIELD_REFUSED)
        return response

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


def public_url(url: str) -> str:
    """``url`` without the ``user:password@`` part (a secret: never in an open answer, a label or a viewer's error)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def refuses_shield(response: httpx.Response) -> bool:
    """Whether ``response`` (its body read) is a node's ``403 shield_required``: our shield secret is refused."""
    if response.status_code != 403 or not response.headers.get("content-type", "").startswith("application/json"):
        return False
    return _error_code(response) == "shield_required"


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
