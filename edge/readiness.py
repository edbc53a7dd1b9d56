"""``/readyz``: whether this node can serve now, check by check (``/healthz`` only says the process answers).

    readiness = origin_readiness(settings, storage, access)   # roles all and origin
    readiness = edge_readiness(pool, access)                  # role edge
    Route("/readyz", readiness.endpoint)                      # 200 when every check passes, else 503

Each check is cheap: no media is parsed, and no request is sent per call where something already knows.

============  ==================================================================================================
media_root    roles all/origin reading local files: the folder lists (one entry read, in a thread; a listing
              still running after MEDIA_ROOT_TIMEOUT s fails the check, and no second one is started meanwhile)
storage       remote HTTP storage: its base URL answers below 500 (one HEAD; the verdict is kept STORAGE_TTL s)
geoip         when ``server.geoip_database`` is set: the database is loaded and readable (its metadata, in memory)
upstream      role edge, one per upstream: the pool's health prober (edge/upstream.py) reached it and it accepted
              our shield secret (``shield_required`` when it refused it). Without a running prober
              (``health_interval = 0``) a call probes, at most once per ON_DEMAND_MAX_AGE s
============  ==================================================================================================

The body names no folder or file of the server (the endpoint is open, like ``/healthz``): a storage check shows
the storage's scheme, host and port only.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .cdn import ShieldGuard
from .upstream import SHIELD_CHECK_HEADER

MEDIA_ROOT_TIMEOUT = 2.0  # s a listing of the media root may take
STORAGE_TIMEOUT = 2.0  # s for the storage's answer
STORAGE_TTL = 2.0  # s a storage verdict is reused (a load balancer polling every 100 ms costs storage 1 HEAD in 2 s)
ON_DEMAND_MAX_AGE = 1.0  # s an upstream probe made for /readyz is reused when the edge runs no prober
GEOIP_PROBE_ADDRESS = ip_address("1.1.1.1")  # for a CountrySource other than auth.geoip.CountryLookup


@dataclass(frozen=True)
class Check:
    name: str  # media_root, storage, geoip, upstream
    ok: bool
    code: str  # "ok", or why not: missing, permission_denied, unreachable, shield_required, ...
    reason: str  # in words
    target: str | None = None  # which upstream or storage host

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.name}
        if self.target is not None:
            out["target"] = self.target
        out.update(state="ok" if self.ok else "fail", code=self.code, reason=self.reason)
        return out


CheckFn = Callable[[], Awaitable["Check | list[Check]"]]


class Readiness:
    """The node's checks, run together on every ``/readyz``."""

    def __init__(self, role: str | None, checks: Sequence[CheckFn], any_upstream: bool = False) -> None:
        self.role = role
        self.checks = list(checks)
        self.any_upstream = any_upstream  # [edge] ready_when = "any": one passing upstream is enough

    async def report(self) -> tuple[bool, list[Check]]:
        results: list[Check] = []
        for found in await asyncio.gather(*(check() for check in self.checks)):
            results.extend(found if isinstance(found, list) else [found])
        if not self.any_upstream:
            return all(c.ok for c in results), results
        upstreams = [c for c in results if c.name == "upstream"]
        others_ok = all(c.ok for c in results if c.name != "upstream")
        return others_ok and (not upstreams or any(c.ok for c in upstreams)), results

    async def endpoint(self, request: Request) -> Response:
        ready, checks = await self.report()
        body: dict[str, Any] = {"status": "ready" if ready else "not_ready"}
        if self.role is not None:
            body["role"] = self.role
        body["checks"] = [c.to_dict() for c in checks]
        return JSONResponse(body, status_code=200 if ready else 503, headers={"Cache-Control": "no-store"})


class MediaRootCheck:
    """The local media folder can be listed. A listing that hangs (a dead network mount) fails the check after
    MEDIA_ROOT_TIMEOUT s and is not started again while it runs: stuck threads never pile up."""

    def __init__(self, root: Path, timeout: float = MEDIA_ROOT_TIMEOUT) -> None:
        self.root = root
        self.timeout = timeout
        self._running: asyncio.Task | None = None
        self._started = 0.0

    def _list(self) -> None:
        with os.scandir(self.root) as entries:
            next(entries, None)

    async def __call__(self) -> Check:
        task = self._running
        if task is None or task.done():
            task = self._running = asyncio.ensure_future(asyncio.to_thread(self._list))
            task.add_done_callback(_retrieved)  # a listing that outlived its caller: no "never retrieved" noise
            self._started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(task), max(0.0, self.timeout - (time.monotonic() - self._started)))
        except asyncio.TimeoutError:
            return _fail("media_root", "timeout", f"listing the media root has taken over {self.timeout:g} s")
        except FileNotFoundError:
            return _fail("media_root", "missing", "the media root does not exist")
        except NotADirectoryError:
            return _fail("media_root", "not_a_folder", "the media root is not a folder")
        except PermissionError:
            return _fail("media_root", "permission_denied", "the media root cannot be listed (permission denied)")
        except OSError as exc:
            return _fail("media_root", "unreadable", f"the media root cannot be listed ({exc.strerror or type(exc).__name__})")
        return Check("media_root", True, "ok", "the media root lists")


class StorageCheck:
    """Remote storage answers at its base URL (any status below 500: a bucket root may well say 403 or 404)."""

    def __init__(self, storage: Any, ttl: float = STORAGE_TTL, timeout: float = STORAGE_TIMEOUT) -> None:
        self.storage = storage
        self.ttl = ttl
        self.timeout = timeout
        parts = urlsplit(storage.base_url)
        self.target = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
        self._last: tuple[float, Check] | None = None
        self._running: asyncio.Task | None = None

    async def __call__(self) -> Check:
        last = self._last
        if last is not None and time.monotonic() - last[0] < self.ttl:
            return last[1]
        task = self._running
        if task is None or task.done():
            task = self._running = asyncio.ensure_future(self._probe())
        return await asyncio.shield(task)

    async def _probe(self) -> Check:
        storage = self.storage
        try:
            response = await storage.client.request("HEAD", f"{storage.base_url}/", headers=storage.headers,
                                                    timeout=httpx.Timeout(self.timeout))
        except httpx.TimeoutException:
            check = _fail("storage", "timeout", f"the storage did not answer within {self.timeout:g} s", self.target)
        except httpx.HTTPError as exc:
            check = _fail("storage", "unreachable", f"the storage cannot be reached ({type(exc).__name__})", self.target)
        else:
            if response.status_code >= 500:
                check = _fail("storage", f"http_{response.status_code}", f"the storage answers HTTP {response.status_code}", self.target)
            else:
                check = Check("storage", True, "ok", f"the storage answers (HTTP {response.status_code})", self.target)
        self._last = (time.monotonic(), check)
        return check


def geoip_check(access: Any) -> CheckFn:
    """The configured GeoIP database is loaded and readable (no check while none is configured; read per call,
    as a reload may swap the database)."""

    async def check() -> Check | list[Check]:
        if access is None or access.config.geoip_database is None:
            return []
        countries = access.countries
        if countries is None:
            return _fail("geoip", "not_loaded", "a GeoIP database is configured and none is loaded")
        try:
            # CountryLookup.country() answers None for any address a closed or failing reader cannot look up
            # (and never asks it about a non-global one): ask the reader itself for its metadata, in memory
            reader = getattr(countries, "_reader", None)
            if reader is not None:
                reader.metadata()
            else:  # another CountrySource: one lookup
                countries.country(GEOIP_PROBE_ADDRESS)
        except Exception as exc:  # a closed or broken reader: every country rule would fail
            said = str(exc).replace(str(access.config.geoip_database), "<database>") or type(exc).__name__
            return _fail("geoip", "not_loaded", f"the GeoIP database cannot be read ({said})")
        return Check("geoip", True, "ok", "the GeoIP database is loaded")

    return check


def upstream_checks(pool: Any) -> CheckFn:
    """One check per upstream from the pool's probe verdicts (probing now only when it has none to give)."""

    async def check() -> list[Check]:
        await pool.probed(None if pool.probing else ON_DEMAND_MAX_AGE)
        return [Check("upstream", ready, code, reason, url) for url, ready, code, reason in pool.readiness()]

    return check


def origin_readiness(settings: Any, storage: Any, access: Any) -> Readiness:
    """Roles all and origin: the media (local folder or remote storage) and the GeoIP database."""
    checks: list[CheckFn] = []
    if hasattr(storage, "base_url") and hasattr(storage, "client"):  # origin.http_storage.HttpStorage
        checks.append(StorageCheck(storage))
    else:
        checks.append(MediaRootCheck(Path(settings.media_root)))
    checks.append(geoip_check(access))
    return Readiness(None, checks)


def edge_readiness(pool: Any, access: Any, ready_when: str = "all") -> Readiness:
    """Role edge: its upstreams reachable and accepting our shield secret (every one, or with ``ready_when =
    "any"`` at least one: the edge fails over to it), and the GeoIP database."""
    return Readiness("edge", [upstream_checks(pool), geoip_check(access)], any_upstream=ready_when == "any")


def shield_check_refused(scope: Any, header: str, secrets: Sequence[str]) -> bool:
    """Whether a ``/healthz`` request asks for the shield check (an edge's probe: SHIELD_CHECK_HEADER) and lacks
    one of this node's shield secrets: it is then answered ``403 shield_required``, as a shielded route would."""
    if not secrets:
        return False
    wanted = SHIELD_CHECK_HEADER.lower().encode("latin-1")
    if not any(name == wanted for name, _ in scope["headers"]):
        return False
    return not ShieldGuard(header, secrets).passes(scope)


def shield_refusal() -> JSONResponse:
    """The shield's own answer (edge/cdn.refuse_unshielded), from a route."""
    return JSONResponse({"error": "shield_required", "detail": "this node serves its CDN only: send the shield header"},
                        status_code=403, headers={"Cache-Control": "no-store"})


def _retrieved(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


def _fail(name: str, code: str, reason: str, target: str | None = None) -> Check:
    return Check(name, False, code, reason, target)
