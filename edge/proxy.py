"""Edge role: serve the URL scheme by pulling from upstream origins, through the segment cache.

    create_edge_app(settings, EdgeConfig(upstreams=("http://origin:8080",)))

Every cacheable answer is stored in the :class:`~edge.cache.SegmentCache`
(memory LRU + optional disk tier) under a *normalized* key: the canonical
path (``edge.urls.canonical_path``) plus, for a master playlist, the
normalized ``flavors=`` subset. Tokens, ``hdnts``, ``playSessionId`` and any
other query parameter never enter a key.

What goes upstream:

* playlists: the canonical path with only the parameters that change the
  body (``flavors=``), never a viewer's token. An edge that vouches for its
  viewers (``cdn.edge_secrets``) gets the token-free playlist; it then writes
  each viewer's propagated query into its copy (packager.hls.uris.with_query),
  so one cached playlist serves every viewer and no viewer's token reaches
  another.
* segments, init segments, progressive chunks: the canonical path with the
  original query string (an origin that checks tokens can), and a cached
  answer is shared by every viewer: the body does not depend on the token.
  Access control is the edge's job: :meth:`EdgeProxy.handle` decides it
  (edge/viewer.grant_for) before the cache; a grant that needs the media (a
  preview on an unmarked URL, flavor limits) goes to the origin with the
  edge's grant (edge/viewer.edge_grant_header), streamed and uncached.

Storage, freshness and single flight live in edge/edge_store.py.

Freshness: an object is served from the cache for ``ttl`` seconds (capped by
the origin's ``s-maxage``/``max-age``; ``no-store``/``private``/``no-cache``
are not cached), then revalidated with ``If-None-Match`` (a 304 costs no
body). Stale-if-error: when every upstream fails (refused, timeout, 5xx) an
object up to ``stale_if_error`` seconds past its freshness is served with
``X-Cache: STALE``; without one the answer is 502 ``upstream_unavailable`` or
504 ``upstream_timeout`` naming each upstream. A 404/410 is cached for
``negative_ttl`` seconds. Concurrent misses for one key share one upstream
fetch (``X-Cache: COALESCED``); the fetch runs in its own task, so a viewer
who hangs up does not cancel it for the others.

Progressive MP4 is cached as fixed-size aligned chunks (``chunk_size``,
1 MiB) keyed by (entry, strong ETag, chunk index), plus a small "meta" object (size,
validators) fetched with the first chunk. A seeking player costs the chunks
its ranges touch, never the whole file; a file that changes upstream changes
its ETag and so its chunk keys.

Purge: edge/purge.py (partner, entry or URL prefix, on every node over a
Redis pub/sub channel).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

import httpx

from auth.access import AccessControl
from config.partners import AccessConfig
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from origin.catalog import valid_id
from packager.hls.uris import with_query

from . import urls
from .cors import CorsMiddleware
from .cache import HIT, MISS, DiskTier, SegmentCache
from .errors import error_response, response_for
from .hot import mark_shareable
from .http import ByteSpan, is_not_modified, requested_range, strong_etag
from .cdn import ACCESS_HEADER, PERSONAL_PLAYLIST_CACHE
from .viewer import EDGE_CHECKED_HEADER, EDGE_GRANT_HEADER, Grant, check_clip, check_preview_marker, edge_grant_header, grant_for
from .request_info import MediaInfo, attach, info_for, media_info
from config.edge import MB, EdgeConfig
from .edge_store import STALE, EdgeStore, Stored, freshness, kept_headers
from .progressive import check_progressive
from .purge import CachePurger, PurgeBus, PurgeRequest, PurgeResult
from .readiness import edge_readiness, shield_check_refused, shield_refusal
from .upstream import UpstreamPool, UpstreamResponse, UpstreamUnavailable
from .urls import BadRequest, MediaRequest

log = logging.getLogger("vodgate.edge.proxy")

PLAYLISTS = frozenset({"master", "index", "iframes", "subs_index"})
FORWARDED_VIEWER_HEADERS = ("referer", "origin", "user-agent", "cookie", "range", "if-range", "if-none-match", "if-modified-since")
NEGATIVE_STATUSES = frozenset({404, 410})
IMMUTABLE_TTL = 10 * 365 * 86400.0  # progressive chunks: the ETag is in the key

# --------------------------------------------------------------------------- playlists per viewer


def flavor_subset_query(raw: str | None) -> str:
    """``flavors=`` normalized (sorted, deduplicated) for keys and upstream; BadRequest when malformed."""
    if raw is None:
        return ""
    ids = sorted({part.strip() for part in raw.split(",") if part.strip()})
    if not ids or not all(valid_id(i) for i in ids):
        raise BadRequest("flavors= takes a comma-separated list of flavor ids")
    return "flavors=" + ",".join(ids)


# --------------------------------------------------------------------------- the proxy


class ObjectChanged(Exception):
    """The progressive file changed upstream between its metadata and a chunk."""


class EdgeMisconfigured(Exception):
    """The origin says the partner has access rules and this edge has none for it: sharing the answer would
    hand one viewer's grant to everyone, so it is refused (502) and logged."""

    code = "edge_misconfigured"


class EdgeProxy:
    def __init__(
        self,
        config: EdgeConfig,
        cache: SegmentCache,
        *,
        pool: UpstreamPool | None = None,
        client: httpx.AsyncClient | None = None,
        bus_url: str | None = None,
        bus_channel: str = "vodgate:purge",
        clock: Callable[[], float] = time.time,
        access: AccessControl | None = None,
        vouch_secret: str | None = None,
    ) -> None:
        self.config = config
        self.access = access or AccessControl(AccessConfig())  # none configured: every partner is open
        self.vouch_secret = vouch_secret  # one of cdn.edge_secrets: the origin then applies our grants
        self._misconfigured: set[str] = set()  # partners already logged by _check_rules_known
        self._pass = tuple(h.lower() for h in config.pass_headers)
        self.cache = cache
        self.pool = pool or UpstreamPool(
            config.upstreams,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            health_interval=config.health_interval,
            down_seconds=config.down_seconds,
            headers={**dict(config.upstream_headers), **({EDGE_CHECKED_HEADER: vouch_secret} if vouch_secret else {})},
            max_connections=config.max_connections,
            client=client,
        )
        self.store = EdgeStore(cache, config.stale_if_error, clock)
        self.clock = clock
        self.purger = CachePurger(cache, bus_url, channel=bus_channel, on_purge=self._purged)
        self._started = False
        self._background: set[asyncio.Task] = set()

    # --- lifecycle ---------------------------------------------------------------

    async def start(self, bus_wait: float = 5.0) -> None:
        """Health probes and the purge subscriber; waits up to ``bus_wait`` s for the Redis subscription."""
        if self._started:
            return
        self._started = True
        self.pool.start()
        await self.purger.start(bus_wait)

    async def close(self) -> None:
        await self.purger.close()
        await self.pool.close()
        self._started = False

    # --- purge -----------------------------------------------------------------

    @property
    def bus(self) -> PurgeBus | None:
        return self.purger.bus

    def _purged(self) -> None:
        self.store.epoch += 1  # fetches in flight now must not store what they bring back

    def purge_local(self, request: PurgeRequest) -> int:
        return self.purger.purge_local(request)

    async def purge(self, request: PurgeRequest) -> PurgeResult:
        """Purge this node, then every node listening on the bus (if configured)."""
        return await self.purger.purge(request)

    # --- requests --------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        info: MediaInfo | None = None
        try:
            req = urls.parse_path(request.url.path)
            info = attach(request.scope, info_for(req))
            if not self._started:
                await self.start(bus_wait=0)  # the app runs without lifespan events: start, never stall
            grant = self._grant(request, req)
            if req.format == "mp4":  # the clear file of an encrypting partner: refused here as on the origin
                check_progressive(self.access.partner(req.partner), req.entry)
            if _needs_origin(req, grant):
                return await self._pass_through(request, req, info, grant)
            if req.format == "mp4":
                try:
                    return await self._progressive(request, req, info)
                except ObjectChanged:
                    return await self._progressive(request, req, info)  # once more, with fresh metadata
            return await self._object(request, req, info, grant)
        except Exception as exc:
            response = self._error(exc)
            response.headers["X-Cache"] = (info.cache if info is not None else None) or MISS
            if info is not None:
                info.cache = response.headers["X-Cache"]
                info.error = getattr(exc, "code", None) or "error"
            return response

    def _grant(self, request: Request, req: MediaRequest) -> Grant:
        """Access decided here, before the shared cache, by the same function as on an origin; Denied at once."""
        grant, check = grant_for(request, urls.canonical_path(req), req.partner, req.entry, self.access, _utc_now())
        info = media_info(request.scope)
        if check is not None and info is not None:
            info.client_ip, info.country = str(check.facts.client_ip), check.facts.country
        check_preview_marker(req.preview, grant)
        check_clip(req.clip, grant)  # a clip-pinned token is enforced here: the origin sees only the edge's grant
        return grant

    async def _pass_through(self, request: Request, req: MediaRequest, info: MediaInfo, grant: Grant) -> Response:
        """Ask the origin with this viewer's grant (the edge's decision, vouched for with the edge secret).

        The viewer's own headers go along for the origin's logs and analytics; the query carries only
        what the origin needs: ``flavors=`` and what playlists propagate (a valid token, a checked
        session id), so no raw viewer value reaches a playlist. Streamed: the body is relayed as it
        arrives (bounded memory), and a HEAD stays a HEAD."""
        headers: dict[str, bytes | str] = {}
        for name, value in request.scope["headers"]:  # raw bytes: relayed exactly as the viewer sent them
            key = name.decode("latin-1")
            if key in FORWARDED_VIEWER_HEADERS and key not in headers:
                headers[key] = value
        client = request.client.host if request.client else None
        if client:
            prior = ", ".join(request.headers.getlist("x-forwarded-for"))  # every line, as the edge itself read them
            headers["x-forwarded-for"] = (f"{prior}, {client}" if prior else client).encode("latin-1")
        query = request.url.query
        if self.vouch_secret is not None:
            headers[EDGE_GRANT_HEADER] = edge_grant_header(grant)
            subset = flavor_subset_query(request.query_params.get("flavors")) if req.resource in ("master", "mpd") else ""
            query = "&".join(part for part in (subset, grant.query) if part)
        answer = await self.pool.open(urls.canonical_path(req), query, headers, method=request.method)
        info.cache = MISS
        kept = kept_headers(answer.headers, self._pass)
        for name in ("content-range", "location", "accept-ranges", "content-length"):
            if name in answer.headers:
                kept[name] = answer.headers[name]
        kept["X-Cache"] = MISS
        if request.method == "HEAD":
            await answer.aclose()
            return Response(b"", status_code=answer.status_code, headers=kept)
        return StreamingResponse(_relay(answer), status_code=answer.status_code, headers=kept)

    def _error(self, exc: Exception) -> Response:
        if isinstance(exc, UpstreamUnavailable):
            relay = exc.relayable
            if relay is not None:  # the origin's own 500 (a broken file): tell the client what it said
                return Response(relay.content, status_code=relay.status, headers={**kept_headers(relay.headers, self._pass), "Cache-Control": "no-store"})
            log.warning("%s", exc)
            return error_response(exc.status, exc.code, exc.detail)
        if isinstance(exc, ObjectChanged):
            return error_response(502, "upstream_changed", str(exc))
        if isinstance(exc, EdgeMisconfigured):
            return error_response(502, exc.code, str(exc))
        return response_for(exc)

    async def _object(self, request: Request, req: MediaRequest, info: MediaInfo, grant: Grant) -> Response:
        path = urls.canonical_path(req)
        key_query = flavor_subset_query(request.query_params.get("flavors")) if req.resource == "master" else ""
        key = f"{path}?{key_query}" if key_query else path
        playlist = req.resource in PLAYLISTS
        # playlists: only what changes the body (never a token); the rest: the viewer's query as sent
        upstream_query = key_query if playlist else request.url.query

        async def fetch(current: Stored | None) -> Stored:
            return await self._fetch(path, upstream_query, current)

        stored, status = await self.store.get(key, fetch, self.pool.all_down)
        info.cache = status
        if stored.status != 200:
            return self._stored_error(request, stored, status)
        self._check_rules_known(req, stored.headers)
        headers = {**stored.headers, "X-Cache": status}
        body: bytes | memoryview = stored.body
        if playlist:
            if grant.personal:  # as on an origin: it carries this viewer's token, or a rule may tell viewers apart
                headers["cache-control"] = PERSONAL_PLAYLIST_CACHE
            if grant.query:  # the origin's propagation (quoted token, checked playSessionId), never raw query values
                text = bytes(body).decode("utf-8", "surrogateescape")  # lossless round trip
                body = with_query(text, grant.query).encode("utf-8", "surrogateescape")
                headers["etag"] = strong_etag(stored.headers.get("etag", ""), grant.query)
        else:
            headers["Accept-Ranges"] = "bytes"
        etag, last_modified = headers.get("etag", ""), headers.get("last-modified", "")
        if etag and is_not_modified(request.headers, etag, last_modified):
            return Response(status_code=304, headers=_conditional(headers))
        span = None if playlist else requested_range(request.headers, len(body), etag, last_modified)
        code = 200
        if span is not None:
            headers["Content-Range"] = span.content_range(len(body))
            body, code = body[span.start : span.end + 1], 206
        elif status != STALE and self._shareable(req) and not (playlist and request.url.query):
            # a playlist only as the answer to a query-free request: a query goes into its URIs (edge/hot.py)
            mark_shareable(request.scope, key, fresh_for=stored.fetched + stored.ttl - self.store.clock(), query_free=playlist)
        return self._body(request, body, code, headers)

    def _check_rules_known(self, req: MediaRequest, headers: Mapping[str, str]) -> None:
        if headers.get(ACCESS_HEADER.lower()) == "restricted" and not self.access.restricts(req.partner):
            if req.partner not in self._misconfigured:
                self._misconfigured.add(req.partner)
                log.error("partner %s has access rules on the origin and none on this edge: its media is refused "
                          "(give this edge the origin's [partners.%s] tables and cdn.edge_secrets)", req.partner, req.partner)
            raise EdgeMisconfigured(f"partner {req.partner} has access rules this edge does not have; it serves none of its media")

    def _shareable(self, req: MediaRequest) -> bool:
        """The same bytes for every viewer (edge/hot.py): no rule of the partner can tell viewers apart."""
        return not self.access.restricts(req.partner)

    def _body(self, request: Request, body: bytes | memoryview, status: int, headers: dict[str, str]) -> Response:
        if request.method == "HEAD":
            return Response(b"", status_code=status, headers={**headers, "Content-Length": str(len(body))})
        return Response(body, status_code=status, headers=headers)

    def _stored_error(self, request: Request, stored: Stored, status: str) -> Response:
        info = media_info(request.scope)
        if info is not None:
            try:
                info.error = str(json.loads(bytes(stored.body)).get("error") or stored.status)
            except (ValueError, AttributeError):
                info.error = str(stored.status)
        headers = {**stored.headers, "X-Cache": status}
        return self._body(request, stored.body, stored.status, headers)

    async def _fetch(self, path: str, query: str, current: Stored | None, headers: Mapping[str, str] | None = None) -> Stored:
        """One upstream GET -> Stored (conditional when we hold a copy)."""
        send = dict(headers or {})
        if current is not None and current.status == 200:
            if current.headers.get("etag"):
                send["If-None-Match"] = current.headers["etag"]
            elif current.headers.get("last-modified"):
                send["If-Modified-Since"] = current.headers["last-modified"]
        answer = await self.pool.fetch(path, query, send)
        return self._stored(answer, current)

    def _stored(self, answer: UpstreamResponse, current: Stored | None) -> Stored:
        now = self.clock()
        if answer.status == 304 and current is not None:
            headers = {**current.headers, **kept_headers(answer.headers, self._pass)}
            return replace(current, headers=headers, fetched=now, ttl=freshness(headers, self.config.ttl), revalidated=True)
        if answer.status in (200, 206):
            return Stored(200, kept_headers(answer.headers, self._pass), now, freshness(answer.headers, self.config.ttl), answer.content)
        # a 404/410 briefly, unless the origin says the answer is personal (no-store: access control)
        ttl = freshness(answer.headers, self.config.negative_ttl) if answer.status in NEGATIVE_STATUSES else 0.0
        return Stored(answer.status, kept_headers(answer.headers, self._pass), now, ttl, answer.content)

    # --- progressive MP4 in chunks ------------------------------------------------------

    def _chunk_key(self, path: str, meta: Stored, index: int) -> str:
        """By strong ETag when there is one: an origin's ETag names the bytes (``lo-p13.mp4`` is ``lo.mp4``), so
        every spelling of a file shares its chunks. Keys stay under the entry's mp4/ folder (purges); a purge of
        one file drops its meta record, and a file that changed gets a new ETag, so no stale chunk is served."""
        etag = meta.headers.get("etag")
        if etag and not etag.startswith("W/"):
            req = urls.parse_path(path)
            return f"{urls.entry_path(req.partner, req.entry, 'mp4')}/|chunk|{etag}|{index}"
        return f"{path}|chunk|{meta.headers.get('last-modified', '')}|{index}"

    async def _progressive(self, request: Request, req: MediaRequest, info: MediaInfo) -> Response:
        path = urls.canonical_path(req)
        query = request.url.query
        size_c = self.config.chunk_size
        meta_key = f"{path}|meta"

        async def fetch_meta(current: Stored | None) -> Stored:
            send = {"Range": f"bytes=0-{size_c - 1}"}
            if current is not None and current.status == 200 and current.headers.get("etag"):
                send["If-None-Match"] = current.headers["etag"]
            answer = await self.pool.fetch(path, query, send)
            if answer.status in (200, 206):
                return await self._meta_from_first_chunk(path, answer)
            return self._stored(answer, current)

        meta, meta_status = await self.store.get(meta_key, fetch_meta, self.pool.all_down)
        info.cache = meta_status
        if meta.status != 200:
            return self._stored_error(request, meta, meta_status)
        self._check_rules_known(req, meta.headers)
        size = int(meta.extra["size"])
        headers = {**meta.headers, "Accept-Ranges": "bytes"}
        headers.setdefault("content-type", "video/mp4")
        etag, last_modified = headers.get("etag", ""), headers.get("last-modified", "")
        if etag and is_not_modified(request.headers, etag, last_modified):
            return Response(status_code=304, headers={**_conditional(headers), "X-Cache": meta_status})
        span = requested_range(request.headers, size, etag, last_modified) if size else None
        status = 200
        if span is not None:
            status = 206
            headers["Content-Range"] = span.content_range(size)
        else:
            span = ByteSpan(0, size - 1)
        headers["Content-Length"] = str(span.length if size else 0)
        if request.method == "HEAD" or size == 0:
            return Response(b"", status_code=status, headers={**headers, "X-Cache": meta_status})
        first, last = span.start // size_c, span.end // size_c
        chunk, chunk_status = await self._chunk(path, query, meta, first)
        if chunk.status != 200:
            return self._stored_error(request, chunk, chunk_status)
        info.cache = meta_status if meta_status != HIT else chunk_status
        headers["X-Cache"] = info.cache
        base = first * size_c
        if first == last:
            return Response(chunk.body[span.start - base : span.end - base + 1], status_code=status, headers=headers)

        async def chunks():
            yield chunk.body[span.start - base :]
            for index in range(first + 1, last + 1):
                if index + 1 <= last:
                    self._prefetch(path, query, meta, index + 1)
                piece, _ = await self._chunk(path, query, meta, index)
                if piece.status != 200:  # headers are gone: all we can do is cut the body short
                    raise ObjectChanged(f"{path}: upstream answered {piece.status} for chunk {index}")
                offset = index * size_c
                yield piece.body[: span.end - offset + 1]

        return StreamingResponse(chunks(), status_code=status, headers=headers)

    async def _meta_from_first_chunk(self, path: str, answer: UpstreamResponse) -> Stored:
        """The first-chunk answer (206, or 200 from an origin that ignores Range) -> meta; caches the chunk(s)."""
        size_c = self.config.chunk_size
        body = answer.content
        if answer.status == 206:
            total = answer.headers.get("content-range", "").rpartition("/")[2]
            if not total.isdigit() or not answer.headers.get("content-range", "").startswith("bytes 0-"):
                raise ObjectChanged(f"{path}: upstream answered a range without a usable Content-Range")
            size = int(total)
            body = body[:size_c]
        else:
            size = len(body)
        now = self.clock()
        meta = Stored(200, kept_headers(answer.headers, self._pass), now, freshness(answer.headers, self.config.ttl), b"", {"size": size})
        epoch = self.store.epoch
        for index in range(-(-len(body) // size_c)):
            if epoch != self.store.epoch:
                break
            piece = body[index * size_c : (index + 1) * size_c]
            await self.store.put(self._chunk_key(path, meta, index), Stored(200, {}, now, IMMUTABLE_TTL, piece))
        return meta

    async def _chunk(self, path: str, query: str, meta: Stored, index: int) -> tuple[Stored, str]:
        size = int(meta.extra["size"])
        size_c = self.config.chunk_size
        low, high = index * size_c, min(size, (index + 1) * size_c) - 1
        etag = meta.headers.get("etag")

        async def fetch(current: Stored | None) -> Stored:
            answer = await self.pool.fetch(path, query, {"Range": f"bytes={low}-{high}"})
            if answer.status in (200, 206, 416):
                same = not etag or answer.headers.get("etag") in (None, etag)
                if same and answer.status == 206 and answer.headers.get("content-range") == f"bytes {low}-{high}/{size}":
                    return Stored(200, {}, self.clock(), IMMUTABLE_TTL, answer.content)
                if same and answer.status == 200 and len(answer.content) == size:  # an upstream that ignores Range
                    return Stored(200, {}, self.clock(), IMMUTABLE_TTL, answer.content[low : high + 1])
                self.store.drop(f"{path}|meta")
                raise ObjectChanged(f"{path} changed upstream while it was being served; retry")
            return self._stored(answer, None)  # a 4xx: for this request only (a 404 briefly for everyone)

        stored, status = await self.store.get(self._chunk_key(path, meta, index), fetch, self.pool.all_down)
        return stored, status

    def _prefetch(self, path: str, query: str, meta: Stored, index: int) -> None:
        task = asyncio.get_running_loop().create_task(self._chunk(path, query, meta, index))
        self._background.add(task)
        task.add_done_callback(lambda t: (self._background.discard(t), t.cancelled() or t.exception()))


def _needs_origin(req: MediaRequest, grant: Grant) -> bool:
    """Whether only the origin can answer this viewer: its grant is not the full media and the URL does not say which part.

    A preview or flavor limits need the media (which segment the preview cuts, which flavor
    is how tall), so those requests go to the origin as the viewer, uncached, except ``-p{N}``
    URLs, whose bytes depend on the URL alone and so are shared like any other object.
    """
    if req.resource in ("key", "mpd", "thumbs"):
        # a content key is never stored at the edge; a DASH MPD and a thumbnail track carry the viewer's token and
        # session in every URL, which the edge does not write into them (HLS playlists it personalises): the origin
        # answers those, uncached
        return True
    return grant.limits is not None or (grant.preview is not None and req.preview is None)


async def _relay(answer: httpx.Response) -> AsyncIterator[bytes]:
    try:
        if answer.is_stream_consumed:  # a small answer the pool read to look at (a 403: edge/upstream.py)
            yield answer.content
            return
        async for chunk in answer.aiter_raw():
            yield chunk
    finally:
        await answer.aclose()


def _conditional(headers: Mapping[str, str]) -> dict[str, str]:
    keep = ("etag", "last-modified", "cache-control", "x-cache", "vary", "surrogate-key", "cache-tag")
    return {k: v for k, v in headers.items() if k.lower() in keep}


# --------------------------------------------------------------------------- the app


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def segment_cache(settings: Any) -> SegmentCache:
    """The response cache per ``[cache]`` (every role). ``enabled = false``: a cache of 0 bytes, which keeps
    no body (MemoryLRU refuses anything over a quarter of its capacity) and has no disk tier."""
    if not settings.cache_enabled:
        return SegmentCache(0)
    workers = max(1, getattr(settings, "workers", 1))  # the node's workers share the folder, each its share
    shard = (getattr(settings, "worker", 0), workers)
    disk = DiskTier(settings.cache_disk_path, settings.cache_disk_mb * MB // workers, shard) if settings.cache_disk_path else None
    return SegmentCache(settings.cache_memory_mb * MB, disk)


def create_edge_app(
    settings: Any,
    edge: EdgeConfig,
    *,
    redis_url: str | None = None,
    redis_channel: str = "vodgate:purge",
    client: httpx.AsyncClient | None = None,
    routes: Sequence[BaseRoute] = (),
    middleware: Sequence[Middleware] = (),
    clock: Callable[[], float] = time.time,
    access: AccessControl | None = None,
    vouch_secret: str | None = None,
) -> Starlette:
    """The edge's ASGI app: ``/healthz``, ``/readyz`` (edge/readiness.py) and the media routes, served from
    upstream through the cache.

    ``settings`` needs ``cache_enabled``, ``cache_memory_mb``, ``cache_disk_path``, ``cache_disk_mb``
    and ``cors_origins`` (config.settings.Settings has them). ``routes`` are
    mounted before the media routes (the lead's ``/admin/purge``); the proxy
    is ``app.state.edge`` (``await app.state.edge.purge(PurgeRequest(...))``).
    ``middleware`` runs inside CORS (access control, observers);
    ``access`` decides every request (no access control: every partner open).
    """
    cache = segment_cache(settings)
    proxy = EdgeProxy(edge, cache, client=client, bus_url=redis_url, bus_channel=redis_channel, clock=clock,
                      access=access, vouch_secret=vouch_secret)
    readiness = edge_readiness(proxy.pool, proxy.access, edge.ready_when)
    shield_header = getattr(settings, "shield_header", "")
    shield_secrets = tuple(getattr(settings, "shield_secrets", ()) or ())

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await proxy.start()
        try:
            yield
        finally:
            await proxy.close()

    async def healthz(request: Request) -> JSONResponse:
        if shield_check_refused(request.scope, shield_header, shield_secrets):
            return shield_refusal()  # a downstream edge's probe without our secret
        purges = proxy.purger.stats()
        cache_stats = {**proxy.store.stats, "memory_bytes": cache.memory.size, "objects": len(cache.memory)}
        if cache.disk is not None:
            cache_stats["disk_bytes"] = cache.disk.size
        body = {
            "status": "ok",
            "role": "edge",
            "upstreams": proxy.pool.status(),
            "cache": cache_stats,
            "purges": {"applied": purges["applied"], "removed": purges["removed"]},
            "purge_bus": purges["bus"],
        }
        admin_changes = getattr(request.app.state, "admin_changes", None)  # set by edge.app.create_edge
        if admin_changes is not None:
            body["admin_changes"] = admin_changes.stats()
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def not_found(request: Request, exc: Exception) -> Response:
        response = error_response(404, "not_found", f"no such resource: {request.url.path}")
        response.headers["X-Cache"] = MISS
        return response

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        response = error_response(405, "method_not_allowed", f"{request.method} is not allowed here")
        response.headers["X-Cache"] = MISS
        return response

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readiness.endpoint, methods=["GET", "HEAD"]),
            *routes,
            Route("/p/{path:path}", proxy.handle, methods=["GET", "HEAD"]),
        ],
        middleware=[
            Middleware(CorsMiddleware, allow_origins=settings.cors_origins),
            *middleware,
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
        lifespan=lifespan,
    )
    app.state.edge = proxy
    app.state.readiness = readiness
    app.state.purger = proxy.purger  # what /admin/purge calls, in every role
    app.state.cache = cache
    app.state.settings = settings
    return app
