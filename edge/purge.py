"""Purge: drop cached objects by partner, entry or URL prefix, on this node and (over Redis pub/sub) on every node.

    PurgeRequest.from_dict({"entry": "ladder", "partner": "demo"}) -> .key_prefix()
    purge_cache(cache, request)            this node
    CachePurger(cache, redis_url).purge()  this node, then every node listening on the channel
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import urlsplit


from origin.catalog import valid_id

from . import urls
from .cache import SegmentCache
from .redis_channel import follow, redacted_url, stop

log = logging.getLogger("vodgate.edge.purge")



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
        self.node_id = node_id or uuid.uuid4().hex  # the workers of one node share it (edge/workers.py)
        self.local_subscribers = 1  # processes of this node on the channel: its workers
        self.received = 0  # purges from other nodes applied here
        self.published = 0  # purges of this node handed to Redis
        self.publish_errors = 0  # purges Redis did not take (the local purge happened anyway)
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
        await stop(self._task)
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
            self.publish_errors += 1
            raise PurgeBusError(f"Redis at {self._redacted_url()} did not take the purge: {exc}") from exc
        self.published += 1
        return max(0, receivers - (self.local_subscribers if self.subscribed else 0))

    def _redacted_url(self) -> str:
        return redacted_url(self.url)

    async def _subscribe_forever(self) -> None:
        async def subscribed() -> None:
            self._subscribed.set()
            log.info("purge bus: subscribed to %s", self.channel)

        async def received(data: Any) -> None:
            self._handle(data)

        def lost(exc: Exception, backoff: float) -> None:
            self._subscribed.clear()
            log.warning("purge bus: %s; reconnecting in %.1f s", exc, backoff)

        await follow(self._client, self.channel, on_subscribed=subscribed, on_message=received, on_lost=lost)

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
        self.bus = PurgeBus(redis_url, self._apply_from_bus, channel=channel) if redis_url else None
        self.purges = 0  # purges applied on this node: its own (admin API) and those the bus brought
        # the other workers of this node (edge/workers.py): purged with this one, before the bus reaches other nodes
        self.siblings: Callable[[PurgeRequest], Awaitable[int]] | None = None
        self.sweeps_bus_purges = False  # one worker per node also sweeps the disk folders for the bus's purges
        self._sweeps: set[asyncio.Task] = set()
        self.removed = 0  # objects they dropped (memory and disk tier entries)

    def purge_local(self, request: PurgeRequest) -> int:
        if self.on_purge is not None:
            self.on_purge()
        removed = purge_cache(self.cache, request)
        self.purges += 1
        self.removed += removed
        return removed

    def stats(self) -> dict[str, Any]:
        """The purge counters as /healthz shows them and /metrics exports them (the same numbers)."""
        bus = self.bus
        return {
            "applied": self.purges,
            "removed": self.removed,
            "bus": None if bus is None else {
                "subscribed": bus.subscribed, "received": bus.received, "published": bus.published,
                "publish_errors": bus.publish_errors,
            },
        }

    async def purge(self, request: PurgeRequest) -> PurgeResult:
        """Purge this node (each of its workers), then every node listening on the bus (if configured)."""
        removed = self.purge_local(request)
        if self.siblings is not None:
            removed += await self.siblings(request)
        removed += await self.sweep_disk(request)
        if self.bus is None:
            return PurgeResult(removed, None)
        try:
            return PurgeResult(removed, await self.bus.publish(request))
        except PurgeBusError as exc:
            log.warning("purge: %s", exc)
            return PurgeResult(removed, None, str(exc))

    async def sweep_disk(self, request: PurgeRequest) -> int:
        """Files of ``request`` in sibling workers' disk folders that no live worker dropped (one was down)."""
        disk = self.cache.disk
        if disk is None or not disk.siblings:
            return 0
        removed = await asyncio.to_thread(disk.sweep_prefix, request.key_prefix())
        self.removed += removed
        return removed

    def _apply_from_bus(self, request: PurgeRequest) -> int:
        removed = self.purge_local(request)
        if self.sweeps_bus_purges:  # every live worker got the message; this one also covers those that are down
            task = asyncio.get_running_loop().create_task(self.sweep_disk(request))
            self._sweeps.add(task)
            task.add_done_callback(self._sweeps.discard)
        return removed

    async def start(self, wait: float = 5.0) -> None:
        if self.bus is not None:
            await self.bus.start(wait)

    async def close(self) -> None:
        if self.bus is not None:
            await self.bus.close()


