"""The ASGI application: routes, CORS, health. Built from Settings, nothing global."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from auth.access import AccessControl
from config.partners import AccessConfig
from config.settings import ConfigError, Settings
from origin.catalog import Catalog, FileCatalog, StaticCatalog
from origin.media import MediaService
from origin.storage import LocalStorage, Storage

from .admin import Admin
from .admin_store import AdminChanges
from config.edge import EdgeConfig
from .proxy import create_edge_app, segment_cache
from .purge import CachePurger
from .readiness import origin_readiness, shield_check_refused, shield_refusal
from .cdn import CdnPolicy, ShieldMiddleware
from .cors import CorsMiddleware
from .delivery import Delivery
from .key_store import ContentKeys
from .thumbnails import Thumbnailer
from .viewer import EdgeTrust
from .errors import error_response
from .hot import HotPaths, HotRecorder
from .hot_protocol import hot_protocol
from .http_limits import limits_protocol



def create_app(
    settings: Settings, catalog: Catalog | None = None, storage: Storage | None = None, redis_url: str | None = None
) -> Starlette:
    """Roles all and origin: package from the catalog's files, cache, and serve."""
    catalog = catalog or (
        StaticCatalog(settings.catalog) if settings.catalog is not None
        else FileCatalog(settings.media_root, follow_symlinks=settings.follow_symlinks)
    )
    storage = storage or _storage(settings)
    media = MediaService(catalog, storage, settings.segment_duration, settings.index_cache_entries, index_cache_bytes=settings.index_cache_mb * 2**20)
    cache = segment_cache(settings)
    cdn = CdnPolicy(
        s_maxage=settings.s_maxage,
        stale_while_revalidate=settings.stale_while_revalidate,
        stale_if_error=settings.stale_if_error,
        surrogate_header=settings.surrogate_header,
    )
    access = AccessControl.from_config(settings.access or AccessConfig())
    keys = ContentKeys(redis_url or settings.redis_url, settings.key_ttl)
    thumbnailer = Thumbnailer(slots_dir=settings.run_dir / "thumbnail-slots" if settings.run_dir else None)
    delivery = Delivery(media, cache, cdn, access, trust=EdgeTrust(settings.edge_secrets), keys=keys, thumbnailer=thumbnailer)
    hot = HotPaths(cache, access.restricts, settings.shield_header, settings.shield_secrets, ttl=media.stat_ttl,
                   generation=lambda: access.generation) if settings.hot_lane else None
    purger = CachePurger(cache, redis_url or settings.redis_url, channel=settings.redis_channel)
    admin_changes = AdminChanges.from_settings(access, settings, redis_url)
    admin = Admin(access, purger, _report_routes(settings), admin_changes)
    readiness = origin_readiness(settings, storage, access)

    async def healthz(request: Request) -> JSONResponse:
        if shield_check_refused(request.scope, settings.shield_header, settings.shield_secrets):
            return shield_refusal()  # an edge's probe without our secret: every request of it would be refused
        body: dict = {"status": "ok"}
        skipped = media.skipped_report()
        if skipped["count"]:  # tracks of parsed files left out (unsupported audio codecs): still healthy
            body["skipped_tracks"] = skipped
        changes = admin_changes.stats()
        if changes["version"] or changes["skipped"]:  # like skipped_tracks: an untouched node says only "ok"
            body["admin_changes"] = changes
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error_response(404, "not_found", f"no such resource: {request.url.path}")

    async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
        return error_response(405, "method_not_allowed", f"{request.method} is not allowed here")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await purger.start()
        await admin_changes.start()  # the stored admin changes over the file's profiles, before serving
        try:
            yield
        finally:
            await admin_changes.close()
            await purger.close()
            await keys.close()
            access.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readiness.endpoint, methods=["GET", "HEAD"]),
            Route("/p/{path:path}", delivery.handle, methods=["GET", "HEAD"]),
            *admin.routes(),
        ],
        middleware=[
            Middleware(CorsMiddleware, allow_origins=settings.cors_origins),  # outermost: errors get CORS too
            Middleware(ShieldMiddleware, header=settings.shield_header, secrets=settings.shield_secrets),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
        lifespan=lifespan,
    )
    app.state.media = media
    app.state.cache = cache
    app.state.hot = hot
    app.state.access = access
    app.state.purger = purger
    app.state.admin_changes = admin_changes
    app.state.readiness = readiness
    app.state.settings = settings
    return app


def _with_admin_changes(lifespan: Any, admin_changes: AdminChanges) -> Any:
    """The edge app's ``lifespan``, with the store of admin changes started inside it and closed before it."""

    @contextlib.asynccontextmanager
    async def both(app: Starlette) -> AsyncIterator[None]:
        async with lifespan(app):
            await admin_changes.start()
            try:
                yield
            finally:
                await admin_changes.close()

    return both


def with_hot_lane(app: Starlette, served: Any) -> tuple[Any, type[asyncio.Protocol] | None]:
    """What to run: ``served`` (the app as wrapped for serving) and uvicorn's protocol class.

    The protocol always enforces the request-head limits of ``[server]`` (edge/http_limits.py). The hot lane
    (edge/hot.py) goes in front when ``app`` has one (every role, unless ``cache.hot_lane = false``); it reports
    its answers to the same metrics and play events as the middleware in ``served`` does. None for the protocol:
    httptools is missing, uvicorn picks its own.
    """
    settings: Settings = getattr(app.state, "settings", None) or Settings()
    protocol = limits_protocol(settings.header_timeout, settings.max_header_bytes, settings.body_timeout)
    hot = getattr(app.state, "hot", None)
    if hot is None or protocol is None:
        return served, protocol
    # always the access control's rule, read per request: a reload (edge/reload.py) may add trusted proxies to a
    # node that started without, and the hot lane's play events must then name the viewer as the full path's do
    viewer_ip = app.state.access.viewer_ip
    protocol = hot_protocol(hot, protocol, getattr(served, "metrics", None), getattr(served, "analytics", None), viewer_ip)
    return HotRecorder(served, hot), protocol


def _report_routes(settings: Settings) -> list[Route]:
    """The analytics report endpoints over the configured event sink (none when analytics is off)."""
    config = settings.analytics
    if config is None or not config.enabled:
        return []
    from analytics.report import report_routes

    if "jsonl" in config.sinks:
        config.path.mkdir(parents=True, exist_ok=True)  # before the first flush, a report is empty, not an error
    source = f"jsonl:{config.path}" if "jsonl" in config.sinks else f"redis:{config.redis_url}"
    return report_routes(source)


def _storage(settings: Settings) -> Storage:
    config = settings.storage
    if config is None or config.type == "local":
        return LocalStorage(settings.media_root, follow_symlinks=settings.follow_symlinks)
    import httpx

    from origin.http_storage import HttpStorage

    timeout = httpx.Timeout(config.read_timeout, connect=config.connect_timeout)
    return HttpStorage(config.base_url, httpx.AsyncClient(timeout=timeout), headers=config.headers, stat_ttl=config.stat_ttl)


def require_edge_secrets(settings: Settings, access: AccessControl) -> None:
    """An edge that decides grants for partners with rules must be able to vouch for them to its origins."""
    restricted = sorted(p for p in access.config.partners if access.restricts(p))
    if restricted and not settings.edge_secrets:
        raise ConfigError(
            f"{settings.source}: partner(s) {', '.join(restricted)} have access rules, so this edge must vouch to its "
            "origins for the grants it decides: set cdn.edge_secrets (the same list on edges and origins; never give it "
            "to a CDN)"
        )


def create_edge(settings: Settings, edge: EdgeConfig, redis_url: str | None = None) -> Starlette:
    """Role edge: the same URL scheme pulled from upstream origins, with access control decided here."""
    access = AccessControl.from_config(settings.access or AccessConfig())
    upstream_headers = dict(edge.upstream_headers)
    if settings.shield_secrets:  # an edge of a shielded origin proves itself with the first secret
        upstream_headers.setdefault(settings.shield_header, settings.shield_secrets[0])
    edge = replace(edge, upstream_headers=tuple(upstream_headers.items()), pass_headers=(settings.surrogate_header,))
    require_edge_secrets(settings, access)
    # as strict as an origin: [cdn] shield_secrets also guard this node (its CDN must send one)
    shield = Middleware(ShieldMiddleware, header=settings.shield_header, secrets=settings.shield_secrets)
    app = create_edge_app(settings, edge, redis_url=redis_url or settings.redis_url, redis_channel=settings.redis_channel,
                          access=access, middleware=[shield], vouch_secret=settings.edge_secrets[0] if settings.edge_secrets else None)
    admin_changes = AdminChanges.from_settings(access, settings, redis_url)
    admin = Admin(access, app.state.purger, changes=admin_changes)
    app.router.routes[2:2] = admin.routes()  # after /healthz and /readyz, before the media catch-all
    app.router.lifespan_context = _with_admin_changes(app.router.lifespan_context, admin_changes)
    app.state.access = access
    app.state.admin_changes = admin_changes  # /healthz shows its stats (edge/proxy.py)
    app.state.hot = (
        HotPaths(app.state.cache, access.restricts, settings.shield_header, settings.shield_secrets,
                 generation=lambda: access.generation) if settings.hot_lane else None
    )
    return app
