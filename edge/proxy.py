"""Edge role: serve the URL scheme by pulling from upstream origins, through the segment cache.

    create_edge_app(settings, EdgeConfig(upstreams=("http://origin:8080",)))

Every cacheable answer is stored in the :class:`~edge.cache.SegmentCache`
(memory LRU + optional disk tier) under a *normalized* key: the canonical
path (``edge.urls.canonical_path``) plus, for a master playlist, the
normalized ``flavors=`` subset. Tokens, ``hdnts``, ``playSessionId`` and any
other query parameter never enter a key.

What goes upstream:

* playlists: the canonical path with only the parameters that change the
  body (``flavors=``), never a viewer's token. A trusted edge (it sends the
  origin-shield header) gets the token-free playlist; the edge then builds
  each viewer's copy with :func:`add_query_to_playlist`, so one cached
  playlist serves every viewer and no viewer's token reaches another.
* segments, init segments, progressive chunks: the canonical path with the
  original query string (an origin that checks tokens can), and a cached
  answer is shared by every viewer: the body does not depend on the token.
  Access control is the edge's job (its middleware runs before this).

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
1 MiB) keyed by (path, ETag, chunk index), plus a small "meta" object (size,
validators) fetched with the first chunk. A seeking player costs the chunks
its ranges touch, never the whole file; a file that changes upstream changes
its ETag and so its chunk keys.

Purge: :class:`PurgeRequest` (partner, entry or URL prefix) ->
:func:`purge_cache` on any SegmentCache (edge or embedded role, both key by
canonical path); :class:`PurgeBus` carries purges to every node over a Redis
pub/sub channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence
from urllib.parse import unquote_plus, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from origin.catalog import valid_id

from . import urls
from .cache import COALESCED, HIT, MISS, DiskTier, SegmentCache
from .errors import error_response, response_for
from .http import ByteSpan, is_not_modified, requested_range, strong_etag
from .request_info import MediaInfo, attach, media_info
from .upstream import UpstreamPool, UpstreamResponse, UpstreamUnavailable, normalize_upstream
from .urls import BadRequest, MediaRequest

log = logging.getLogger("vodgate.edge.proxy")

STALE = "STALE"
MB = 1024 * 1024
VIEWER_PARAMS = ("token", "hdnts", "playSessionId")
PLAYLISTS = frozenset({"master", "index", "iframes"})
NEGATIVE_STATUSES = frozenset({404, 410})
IMMUTABLE_TTL = 10 * 365 * 86400.0  # progressive chunks: the ETag is in the key
# response headers worth keeping with a cached object (hop-by-hop and length headers are recomputed)
STORED_HEADERS = (
    "content-type", "etag", "last-modified", "cache-control", "surrogate-key", "surrogate-control",
    "cache-tag", "vary", "content-language",
)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class EdgeConfig:
    upstreams: tuple[str, ...]
    connect_timeout: float = 2.0  # seconds to open a connection to an upstream
    read_timeout: float = 10.0  # seconds without a byte from an upstream
    health_interval: float = 5.0  # /healthz probe period; 0 = no probes
    down_seconds: float = 10.0  # a marked-down upstream is retried first after this (or its next good probe)
    ttl: float = 60.0  # seconds an object is served without asking upstream, then revalidated
    stale_if_error: float = 86400.0  # seconds past freshness a copy may be served while every upstream fails
    negative_ttl: float = 10.0  # seconds a 404/410 is remembered
    chunk_size: int = MB  # progressive MP4 cache granularity
    upstream_headers: tuple[tuple[str, str], ...] = ()  # e.g. (("X-Origin-Shield", "secret"),)
    viewer_params: tuple[str, ...] = VIEWER_PARAMS  # copied into a viewer's playlists; never in a key
    max_connections: int = 100  # pooled keep-alive connections to all upstreams
    pass_headers: tuple[str, ...] = ()  # more upstream response headers to keep (e.g. a custom surrogate header)

    def __post_init__(self) -> None:
        object.__setattr__(self, "upstreams", tuple(normalize_upstream(u) for u in self.upstreams))
        if not self.upstreams:
            raise ValueError("edge.upstreams: an edge needs at least one upstream URL")
        if self.chunk_size < 64 * 1024:
            raise ValueError("edge.chunk_size must be at least 64 KiB")


EDGE_KEYS = {
    "role", "upstreams", "connect_timeout", "read_timeout", "health_interval", "down_seconds", "ttl",
    "stale_if_error", "negative_ttl", "chunk_kb", "upstream_headers", "viewer_params", "max_connections",
}
ROLES = ("all", "origin", "edge")


def edge_config_from_table(table: Mapping[str, Any], source: str = "config", upstreams: Sequence[str] = ()) -> EdgeConfig:
    """The ``[edge]`` TOML table (``role`` is validated, not kept) -> EdgeConfig; ConfigError names key and fix.

    ``upstreams`` (e.g. from ``--upstream``) replace the table's list when given.
    """
    from config.settings import ConfigError

    unknown = set(table) - EDGE_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) edge.{sorted(unknown)}; known: {sorted(EDGE_KEYS)}")
    role = table.get("role", "all")
    if role not in ROLES:
        raise ConfigError(f"{source}: edge.role has value {role!r}; expected one of {', '.join(ROLES)}")

    def number(key: str, default: float, minimum: float = 0.0) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise ConfigError(f"{source}: edge.{key} has value {value!r}; expected a number of seconds >= {minimum:g}")
        return float(value)

    ups = list(upstreams) or table.get("upstreams", [])
    if not isinstance(ups, list) or not all(isinstance(u, str) for u in ups):
        raise ConfigError(f'{source}: edge.upstreams has value {ups!r}; expected a list like ["http://origin:8080"]')
    headers = table.get("upstream_headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f'{source}: edge.upstream_headers has value {headers!r}; expected a table like {{"X-Origin-Shield" = "secret"}}')
    viewer = table.get("viewer_params", list(VIEWER_PARAMS))
    if not isinstance(viewer, list) or not all(isinstance(v, str) and v for v in viewer):
        raise ConfigError(f"{source}: edge.viewer_params has value {viewer!r}; expected a list of query parameter names")
    chunk_kb = table.get("chunk_kb", 1024)
    if isinstance(chunk_kb, bool) or not isinstance(chunk_kb, int) or not 64 <= chunk_kb <= 16384:
        raise ConfigError(f"{source}: edge.chunk_kb has value {chunk_kb!r}; expected an integer between 64 and 16384")
    max_connections = table.get("max_connections", 100)
    if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
        raise ConfigError(f"{source}: edge.max_connections has value {max_connections!r}; expected a positive integer")
    try:
        return EdgeConfig(
            upstreams=tuple(ups),
            connect_timeout=number("connect_timeout", 2.0, 0.1),
            read_timeout=number("read_timeout", 10.0, 0.1),
            health_interval=number("health_interval", 5.0),
            down_seconds=number("down_seconds", 10.0),
            ttl=number("ttl", 60.0),
            stale_if_error=number("stale_if_error", 86400.0),
            negative_ttl=number("negative_ttl", 10.0),
            chunk_size=chunk_kb * 1024,
            upstream_headers=tuple(headers.items()),
            viewer_params=tuple(viewer),
            max_connections=max_connections,
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc} (set edge.upstreams or pass --upstream URL)") from None


def parse_edge_section(
    table: Mapping[str, Any], source: str = "config", *, role: str | None = None, upstreams: Sequence[str] = ()
) -> tuple[str, EdgeConfig | None]:
    """``[edge]`` + ``--role`` + ``--upstream`` -> (role, EdgeConfig when the role is edge, else None).

    The table's keys are checked whatever the role, so a typo never waits for the day a node turns edge.
    """
    from config.settings import ConfigError

    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: 'edge' must be a table ([edge])")
    unknown = set(table) - EDGE_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) edge.{sorted(unknown)}; known: {sorted(EDGE_KEYS)}")
    chosen = role or table.get("role") or ("edge" if upstreams else "all")  # --upstream alone means an edge
    if chosen not in ROLES:
        where = "--role" if role else "edge.role"
        raise ConfigError(f"{source}: {where} has value {chosen!r}; expected one of {', '.join(ROLES)}")
    if chosen != "edge":
        if upstreams:
            raise ConfigError(f"{source}: --upstream is for the edge role, and the role is {chosen!r} (use --role edge)")
        return chosen, None
    return chosen, edge_config_from_table({**table, "role": chosen}, source, upstreams)


# --------------------------------------------------------------------------- stored objects


@dataclass
class Stored:
    """An upstream answer as kept in the cache: status, kept headers, freshness, body."""

    status: int
    headers: dict[str, str]
    fetched: float  # wall-clock time (the disk tier survives restarts)
    ttl: float  # seconds of freshness; 0 = not cacheable, and not shared with coalesced waiters
    body: bytes | memoryview = b""
    extra: dict[str, Any] = field(default_factory=dict)
    revalidated: bool = False  # transient: this copy was refreshed by a 304

    MAGIC = b"VGE1"

    def encode(self) -> bytes:
        meta = json.dumps(
            {"s": self.status, "h": self.headers, "f": self.fetched, "t": self.ttl, "x": self.extra},
            separators=(",", ":"),
        ).encode()
        return b"".join((self.MAGIC, struct.pack(">I", len(meta)), meta, self.body))

    @classmethod
    def decode(cls, blob: bytes) -> "Stored | None":
        if len(blob) < 8 or not blob.startswith(cls.MAGIC):
            return None
        (size,) = struct.unpack_from(">I", blob, 4)
        try:
            meta = json.loads(blob[8 : 8 + size])
        except ValueError:
            return None
        return cls(meta["s"], meta["h"], meta["f"], meta["t"], memoryview(blob)[8 + size :], meta.get("x", {}))

    def fresh(self, now: float) -> bool:
        return now < self.fetched + self.ttl

    def servable_stale(self, now: float, bound: float) -> bool:
        return self.status == 200 and now <= self.fetched + self.ttl + bound


def kept_headers(headers: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The upstream headers kept with a cached object (lower-case names)."""
    return {name: headers[name] for name in (*STORED_HEADERS, *extra) if name in headers}


def freshness(headers: Mapping[str, str], default_ttl: float) -> float:
    """Seconds of freshness: ours, capped by the origin's s-maxage/max-age; 0 when it says not to cache."""
    directives: dict[str, str | None] = {}
    for part in headers.get("cache-control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip().strip('"') or None
    if {"no-store", "private", "no-cache"} & directives.keys():
        return 0.0
    for name in ("s-maxage", "max-age"):
        value = directives.get(name)
        if value is not None and value.isdigit():
            return min(default_ttl, float(value))
    return default_ttl


class EdgeStore:
    """Freshness-aware layer over SegmentCache's tiers, with single flight per key.

    SegmentCache.get_or_make serves whatever it holds, which is right for the
    embedded role (keys carry the media version) but not for an edge, whose
    keys cannot know the upstream version: an expired object must be refetched
    while staying servable as a stale copy. So this class uses the cache's
    memory LRU and disk tier for storage (and its purge_prefix) and runs its
    own single flight, in which the fetch is a task of its own.
    """

    def __init__(self, cache: SegmentCache, stale_if_error: float, clock: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.stale_if_error = stale_if_error
        self.clock = clock
        self.epoch = 0  # bumped by every purge: a fetch that started before one is not stored
        self.stats = {HIT: 0, MISS: 0, COALESCED: 0, STALE: 0}
        self._inflight: dict[str, asyncio.Task] = {}

    async def peek(self, key: str) -> Stored | None:
        blob = self.cache.memory.get(key)
        if blob is None and self.cache.disk is not None:
            blob = await asyncio.to_thread(self.cache.disk.get, key)
            if blob is not None:
                self.cache.memory.put(key, blob)
        return Stored.decode(blob) if blob is not None else None

    async def put(self, key: str, stored: Stored) -> None:
        blob = stored.encode()
        self.cache.memory.put(key, blob)
        if self.cache.disk is not None and stored.status == 200:
            await asyncio.to_thread(self.cache.disk.put, key, blob)

    def drop(self, key: str) -> None:
        self.cache.purge_prefix(key)  # keys are unique prefixes of themselves here (see _key users)

    async def get(self, key: str, fetch: Callable[[Stored | None], Awaitable[Stored]], all_down: Callable[[], bool]) -> tuple[Stored, str]:
        while True:
            current = await self.peek(key)
            now = self.clock()
            if current is not None and current.fresh(now):
                return self._count(current, HIT)
            stale = current if current is not None and current.servable_stale(now, self.stale_if_error) else None
            task = self._inflight.get(key)
            if task is not None and task.done():
                task = None
            leader = task is None
            if leader:
                if stale is not None and all_down():
                    return self._count(stale, STALE)  # no point waiting for a connect timeout
                task = asyncio.get_running_loop().create_task(self._fill(key, current, fetch))
                self._inflight[key] = task
                task.add_done_callback(lambda t, k=key: self._done(k, t))
            try:
                stored = await asyncio.shield(task)
            except UpstreamUnavailable:
                if stale is not None:
                    return self._count(stale, STALE)
                raise
            if not leader and stored.ttl <= 0:
                continue  # an answer for that request only (403, 5xx relay...): ask for ourselves
            if leader:
                return self._count(stored, HIT if stored.revalidated else MISS)
            return self._count(stored, COALESCED)

    async def _fill(self, key: str, current: Stored | None, fetch: Callable[[Stored | None], Awaitable[Stored]]) -> Stored:
        epoch = self.epoch
        stored = await fetch(current)
        if stored.ttl > 0 and epoch == self.epoch:
            await self.put(key, stored)
        return stored

    def _done(self, key: str, task: asyncio.Task) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: waiters re-raise it; no "exception never retrieved" noise

    def _count(self, stored: Stored, status: str) -> tuple[Stored, str]:
        self.stats[status] += 1
        return stored, status


# --------------------------------------------------------------------------- playlists per viewer

_URI_ATTRIBUTE = re.compile(r'(URI=")([^"]*)(")')


def _param_names(query: str) -> set[str]:
    return {unquote_plus(part.partition("=")[0]) for part in query.split("&") if part}


def _with_query(uri: str, query: str, names: set[str]) -> str:
    if not uri or uri.startswith(("data:", "skd:")):
        return uri
    base, hash_mark, fragment = uri.partition("#")
    path, _, existing = base.partition("?")
    kept = [p for p in existing.split("&") if p and unquote_plus(p.partition("=")[0]) not in names]
    return f"{path}?{'&'.join([*kept, query])}{hash_mark}{fragment}"


def add_query_to_playlist(text: str, query: str) -> str:
    """Append ``query`` (already URL-encoded, e.g. ``token=abc``) to every URI of an HLS playlist.

    URI lines and ``URI="..."`` attributes (EXT-X-MEDIA, EXT-X-I-FRAME-STREAM-INF,
    EXT-X-MAP, EXT-X-KEY...) get it; a parameter of the same name already on a
    URI is replaced, never duplicated; ``data:``/``skd:`` URIs are left alone.
    Everything else, line endings included, is unchanged.
    """
    if not query:
        return text
    names = _param_names(query)
    out = []
    for line in text.splitlines(keepends=True):
        content = line.rstrip("\r\n")
        ending = line[len(content) :]
        stripped = content.strip()
        if not stripped:
            out.append(line)
        elif stripped.startswith("#"):
            if 'URI="' in content:
                content = _URI_ATTRIBUTE.sub(lambda m: m[1] + _with_query(m[2], query, names) + m[3], content)
            out.append(content + ending)
        else:
            out.append(_with_query(stripped, query, names) + ending)
    return "".join(out)


def viewer_query(raw_query: str, names: Iterable[str]) -> str:
    """The request's per-viewer parameters, as they were encoded (``token=..&playSessionId=..``)."""
    wanted = set(names)
    return "&".join(p for p in raw_query.split("&") if p and unquote_plus(p.partition("=")[0]) in wanted)


def flavor_subset_query(raw: str | None) -> str:
    """``flavors=`` normalized (sorted, deduplicated) for keys and upstream; BadRequest when malformed."""
    if raw is None:
        return ""
    ids = sorted({part.strip() for part in raw.split(",") if part.strip()})
    if not ids or not all(valid_id(i) for i in ids):
        raise BadRequest("flavors= takes a comma-separated list of flavor ids")
    return "flavors=" + ",".join(ids)


# --------------------------------------------------------------------------- purge


class PurgeError(ValueError):
    code = "bad_request"


@dataclass(frozen=True)
class PurgeRequest:
    """What to drop: a partner, an entry of a partner, or a URL prefix (``/p/demo/e/x/hls/``)."""

    partner: str | None = None
    entry: str | None = None
    prefix: str | None = None

    def key_prefix(self) -> str:
        if self.prefix is not None:
            if self.partner is not None or self.entry is not None:
                raise PurgeError("purge by prefix, or by partner (and entry), not both")
            path = urlsplit(self.prefix).path if "://" in self.prefix else self.prefix.split("?", 1)[0]
            if not path.startswith("/p/") or len(path) <= len("/p/"):
                raise PurgeError(f"purge prefix {self.prefix!r} must be a media path such as /p/<partner>/e/<entry>/")
            if any(part in (".", "..") for part in path.split("/")) or "\\" in path or "\x00" in path:
                raise PurgeError("purge prefix must not contain '.' or '..' segments")
            partner, slash, _ = path[len("/p/") :].partition("/")
            if not slash or not valid_id(partner):  # "/p/de" would reach partners demo and dev alike
                raise PurgeError(f"purge prefix {self.prefix!r} must name a whole partner: /p/<partner>/...")
            return path
        if self.partner is None:
            if self.entry is not None:
                raise PurgeError("purge by entry needs its partner")
            raise PurgeError("say what to purge: partner (and entry), or prefix")
        for kind, value in (("partner", self.partner), ("entry", self.entry)):
            if value is not None and not valid_id(value):
                raise PurgeError(f"malformed {kind} id {value[:40]!r}")
        return urls.cache_prefix(self.partner, self.entry)

    @property
    def scope_partner(self) -> str:
        """The one partner this purge touches (check the caller's admin rights against it)."""
        return self.key_prefix().split("/")[2]

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("partner", self.partner), ("entry", self.entry), ("prefix", self.prefix)) if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PurgeRequest":
        if not isinstance(data, Mapping):
            raise PurgeError("a purge is a JSON object with partner, entry or prefix")
        unknown = set(data) - {"partner", "entry", "prefix"}
        if unknown:
            raise PurgeError(f"unknown purge field(s) {sorted(unknown)}; known: partner, entry, prefix")
        values = {k: data.get(k) for k in ("partner", "entry", "prefix")}
        if not all(v is None or isinstance(v, str) for v in values.values()):
            raise PurgeError("purge fields are strings")
        request = cls(**values)
        request.key_prefix()  # validate now
        return request


def purge_cache(cache: SegmentCache, request: PurgeRequest) -> int:
    """Drop every object of ``request`` from a SegmentCache (memory and disk); returns how many.

    Works for the edge role and the embedded one: both key objects by canonical path first.
    """
    return cache.purge_prefix(request.key_prefix())


@dataclass(frozen=True)
class PurgeResult:
    removed: int  # objects dropped on this node
    notified: int | None  # other nodes that received it over Redis (None: no bus)
    bus_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"removed": self.removed, "notified": self.notified, "bus_error": self.bus_error}


class PurgeBusError(Exception):
    """Redis could not carry a purge to the other nodes (this node's purge happened anyway)."""


class PurgeBus:
    """Purges to every node over a Redis pub/sub channel.

    ``publish`` sends a purge; a background subscriber applies the purges of
    other nodes with ``apply``. Pub/sub is at-most-once: a node that is
    disconnected at that moment misses it (its ``ttl`` still bounds how long
    it serves the old object before revalidating). The subscriber reconnects
    with backoff and never stops the server.
    """

    def __init__(
        self,
        url: str,
        apply: Callable[[PurgeRequest], int],
        *,
        channel: str = "vodgate:purge",
        node_id: str | None = None,
    ) -> None:
        self.url = url
        self.apply = apply
        self.channel = channel
        self.node_id = node_id or uuid.uuid4().hex
        self.received = 0
        self._redis: Any = None
        self._task: asyncio.Task | None = None
        self._subscribed = asyncio.Event()

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def _client(self) -> Any:
        if self._redis is None:
            import redis.asyncio as aioredis  # only nodes with [redis] configured need the package

            self._redis = aioredis.Redis.from_url(self.url, socket_connect_timeout=2.0, socket_keepalive=True)
        return self._redis

    async def start(self, wait: float = 5.0) -> bool:
        """Start the subscriber; wait up to ``wait`` s for the subscription (False: still retrying)."""
        self._client()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._subscribe_forever(), name="vodgate-purge-bus")
        if wait <= 0:
            return self.subscribed
        try:
            await asyncio.wait_for(self._subscribed.wait(), wait)
        except asyncio.TimeoutError:
            log.warning("purge bus: not subscribed to %s yet; purges from other nodes wait for Redis", self.channel)
            return False
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def publish(self, request: PurgeRequest) -> int:
        """Send ``request`` to the other nodes; returns how many received it. PurgeBusError when Redis fails."""
        message = json.dumps({"v": 1, "node": self.node_id, **request.to_dict()})
        try:
            receivers = int(await self._client().publish(self.channel, message))
        except Exception as exc:  # redis.exceptions.* and OSError: report, never crash the purge route
            raise PurgeBusError(f"Redis at {self._redacted_url()} did not take the purge: {exc}") from exc
        return max(0, receivers - (1 if self.subscribed else 0))

    def _redacted_url(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"

    async def _subscribe_forever(self) -> None:
        backoff = 0.5
        while True:
            pubsub = None
            try:
                pubsub = self._client().pubsub()
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    kind = message.get("type")
                    if kind == "subscribe":
                        self._subscribed.set()
                        backoff = 0.5
                        log.info("purge bus: subscribed to %s", self.channel)
                    elif kind == "message":
                        self._handle(message.get("data"))
                raise ConnectionError("subscription ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._subscribed.clear()
                log.warning("purge bus: %s; reconnecting in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                if pubsub is not None:
                    try:
                        await pubsub.aclose()
                    except Exception:
                        pass

    def _handle(self, data: Any) -> None:
        try:
            payload = json.loads(data)
            if payload.get("node") == self.node_id:
                return  # our own purge: applied before publishing
            request = PurgeRequest.from_dict({k: v for k, v in payload.items() if k in ("partner", "entry", "prefix")})
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("purge bus: ignoring malformed message: %s", exc)
            return
        self.received += 1
        removed = self.apply(request)
        log.info("purge bus: %s from another node removed %d objects", request.to_dict(), removed)


class CachePurger:
    """Purge for one node's SegmentCache, and (with Redis) for every node: what ``/admin/purge`` calls.

    The edge role has one (``app.state.edge.purger``); the embedded role builds
    one over its cache: ``CachePurger(app.state.cache, redis_url)``, started and
    closed with the app (``await purger.start()`` / ``await purger.close()``).
    """

    def __init__(
        self,
        cache: SegmentCache,
        redis_url: str | None = None,
        *,
        channel: str = "vodgate:purge",
        on_purge: Callable[[], None] | None = None,
    ) -> None:
        self.cache = cache
        self.on_purge = on_purge
        self.bus = PurgeBus(redis_url, self.purge_local, channel=channel) if redis_url else None

    def purge_local(self, request: PurgeRequest) -> int:
        if self.on_purge is not None:
            self.on_purge()
        return purge_cache(self.cache, request)

    async def purge(self, request: PurgeRequest) -> PurgeResult:
        """Purge this node, then every node listening on the bus (if configured)."""
        removed = self.purge_local(request)
        if self.bus is None:
            return PurgeResult(removed, None)
        try:
            return PurgeResult(removed, await self.bus.publish(request))
        except PurgeBusError as exc:
            log.warning("purge: %s", exc)
            return PurgeResult(removed, None, str(exc))

    async def start(self, wait: float = 5.0) -> None:
        if self.bus is not None:
            await self.bus.start(wait)

    async def close(self) -> None:
        if self.bus is not None:
            await self.bus.close()


# --------------------------------------------------------------------------- the proxy


class ObjectChanged(Exception):
    """The progressive file changed upstream between its metadata and a chunk."""


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
        viewer_query_for: Callable[[Request], str | None] | None = None,
    ) -> None:
        self.config = config
        self._pass = tuple(h.lower() for h in config.pass_headers)
        # what to copy into a viewer's playlists: by default the viewer_params of the request's query;
        # access control can supply its own (e.g. auth.access's AccessCheck.propagate)
        self.viewer_query_for = viewer_query_for or (lambda request: viewer_query(request.url.query, config.viewer_params))
        self.cache = cache
        self.pool = pool or UpstreamPool(
            config.upstreams,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            health_interval=config.health_interval,
            down_seconds=config.down_seconds,
            headers=dict(config.upstream_headers),
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
            info = attach(request.scope, _media_info(req))
            if not self._started:
                await self.start(bus_wait=0)  # the app runs without lifespan events: start, never stall
            if req.format == "mp4":
                try:
                    return await self._progressive(request, req, info)
                except ObjectChanged:
                    return await self._progressive(request, req, info)  # once more, with fresh metadata
            return await self._object(request, req, info)
        except Exception as exc:
            response = self._error(exc)
            response.headers["X-Cache"] = (info.cache if info is not None else None) or MISS
            if info is not None:
                info.cache = response.headers["X-Cache"]
                info.error = getattr(exc, "code", None) or "error"
            return response

    def _error(self, exc: Exception) -> Response:
        if isinstance(exc, UpstreamUnavailable):
            relay = exc.relayable
            if relay is not None:  # the origin's own 500 (a broken file): tell the client what it said
                return Response(relay.content, status_code=relay.status, headers={**kept_headers(relay.headers, self._pass), "Cache-Control": "no-store"})
            log.warning("%s", exc)
            return error_response(exc.status, exc.code, exc.detail)
        if isinstance(exc, ObjectChanged):
            return error_response(502, "upstream_changed", str(exc))
        return response_for(exc)

    async def _object(self, request: Request, req: MediaRequest, info: MediaInfo) -> Response:
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
        headers = {**stored.headers, "X-Cache": status}
        body: bytes | memoryview = stored.body
        if playlist:
            query = self.viewer_query_for(request)
            if query:
                text = bytes(body).decode("utf-8", "surrogateescape")  # lossless round trip
                body = add_query_to_playlist(text, query).encode("utf-8", "surrogateescape")
                headers["etag"] = strong_etag(stored.headers.get("etag", ""), query)
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
        return self._body(request, body, code, headers)

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
        version = meta.headers.get("etag") or meta.headers.get("last-modified") or ""
        return f"{path}|chunk|{version}|{index}"

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


def _conditional(headers: Mapping[str, str]) -> dict[str, str]:
    keep = ("etag", "last-modified", "cache-control", "x-cache", "vary", "surrogate-key", "cache-tag")
    return {k: v for k, v in headers.items() if k.lower() in keep}


def _media_info(req: MediaRequest) -> MediaInfo:
    rendition = req.rendition
    return MediaInfo(
        partner=req.partner,
        entry=req.entry,
        format=req.format,
        resource=req.resource,
        flavor=rendition.flavor if rendition else None,
        audio=rendition.audio if rendition else None,
        segment=req.number,
    )


# --------------------------------------------------------------------------- the app


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
    viewer_query_for: Callable[[Request], str | None] | None = None,
) -> Starlette:
    """The edge's ASGI app: ``/healthz`` and the media routes, served from upstream through the cache.

    ``settings`` needs ``cache_memory_mb``, ``cache_disk_path``, ``cache_disk_mb``
    and ``cors_origins`` (config.settings.Settings has them). ``routes`` are
    mounted before the media routes (the lead's ``/admin/purge``); the proxy
    is ``app.state.edge`` (``await app.state.edge.purge(PurgeRequest(...))``).
    ``middleware`` runs inside CORS (access control, observers);
    ``viewer_query_for(request)`` overrides what is copied into a viewer's
    playlists (default: the request's ``viewer_params``).
    """
    disk = DiskTier(settings.cache_disk_path, settings.cache_disk_mb * MB) if settings.cache_disk_path else None
    cache = SegmentCache(settings.cache_memory_mb * MB, disk)
    proxy = EdgeProxy(edge, cache, client=client, bus_url=redis_url, bus_channel=redis_channel, clock=clock,
                      viewer_query_for=viewer_query_for)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await proxy.start()
        try:
            yield
        finally:
            await proxy.close()

    async def healthz(request: Request) -> JSONResponse:
        body = {
            "status": "ok",
            "role": "edge",
            "upstreams": proxy.pool.status(),
            "cache": {**proxy.store.stats, "memory_bytes": cache.memory.size, "objects": len(cache.memory)},
            "purge_bus": None if proxy.bus is None else {"subscribed": proxy.bus.subscribed, "received": proxy.bus.received},
        }
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
            *routes,
            Route("/p/{path:path}", proxy.handle, methods=["GET", "HEAD"]),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "HEAD", "OPTIONS"],
                allow_headers=["Range", "If-Range", "If-None-Match", "If-Modified-Since"],
                expose_headers=["Content-Length", "Content-Range", "ETag", "Accept-Ranges", "X-Cache"],
                max_age=86400,
            ),
            *middleware,
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
        lifespan=lifespan,
    )
    app.state.edge = proxy
    app.state.purger = proxy.purger  # what /admin/purge calls, in every role
    app.state.cache = cache
    app.state.settings = settings
    return app
