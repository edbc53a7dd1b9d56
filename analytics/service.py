"""The analytics service of one app: event builder + queue + sink, and the media-time resolver.

    analytics = Analytics.from_config(config, media=app.state.media)
    analytics.capture(...)             # request path (the middleware calls it): queue references, no I/O
    await analytics.startup()          # lifespan startup: starts the flush task
    await analytics.shutdown()         # lifespan shutdown: flushes everything queued, closes the sink
"""

from __future__ import annotations

import logging
from typing import Any

from config.analytics import AnalyticsConfig
from .events import RESOLVE_KEY, EventBuilder, Observation
from .queue import EventQueue
from .sinks import DelayedSink, JsonlSink, MultiSink, RedisStreamSink

log = logging.getLogger("vodgate.analytics")


def build_sink(config: AnalyticsConfig, delay: float = 0.0) -> Any:
    sinks: list[Any] = []
    for name in config.sinks:
        if name == "jsonl":
            sinks.append(JsonlSink(config.path, config.node, config.rotate_mb * 1024 * 1024, config.rotate_seconds))
        elif name == "redis":
            sinks.append(RedisStreamSink(config.redis_url, config.stream, config.maxlen))
    sink = sinks[0] if len(sinks) == 1 else MultiSink(sinks)
    return DelayedSink(sink, delay) if delay > 0 else sink


class Analytics:
    def __init__(self, sink: Any, node: str, *, store_ip: bool = False, queue_size: int = 20_000,
                 batch_size: int = 500, flush_interval: float = 1.0, shutdown_timeout: float = 15.0,
                 bucket_seconds: int = 1800, salt: bytes = b"", media: Any = None, relay: bool = False) -> None:
        self.builder = EventBuilder(node, store_ip=store_ip, bucket_seconds=bucket_seconds, salt=salt)
        # relay: a worker of several (analytics/relay.py) hands observations on unbuilt, as tuples
        self.queue = EventQueue(sink, maxsize=queue_size, batch_size=batch_size, flush_interval=flush_interval,
                                shutdown_timeout=shutdown_timeout, prepare=_as_tuples if relay else self._prepare)
        self.media = media
        self.build_errors = 0

    @classmethod
    def from_config(cls, config: AnalyticsConfig, media: Any = None, sink: Any = None, relay: bool = False) -> "Analytics":
        return cls(
            sink if sink is not None else build_sink(config), config.node, store_ip=config.store_ip,
            queue_size=config.queue_size, batch_size=config.batch_size, flush_interval=config.flush_interval,
            shutdown_timeout=config.shutdown_timeout, bucket_seconds=config.session_bucket_seconds,
            salt=config.session_salt.encode(), media=media, relay=relay,
        )

    def bind(self, media: Any) -> None:
        """The MediaService whose (cached) indexes give progressive ranges their media time."""
        self.media = media

    def capture(self, item: tuple) -> None:
        """Request path: queue what the middleware saw (the fields of :class:`Observation`, as a tuple).

        Nothing is built here. Events are built in batches by the flush task (:meth:`_prepare`), where the
        builder's code and caches stay warm: measured, a fraction of the cost of building each request's
        events as it ends (docs/ANALYTICS.md, "Overhead").
        """
        self.queue.put(item)

    def observe(self, obs: Observation) -> None:
        """Queue one ready-made Observation (callers other than the middleware)."""
        self.queue.put(obs)

    async def startup(self) -> None:
        await self.queue.start()

    async def shutdown(self) -> None:
        queued = self.queue.size
        await self.queue.close()
        log.info("analytics: flushed at shutdown (%d queued then; %d written in total, %d dropped, %d lost)",
                 queued, self.queue.written, self.queue.dropped, self.queue.lost)

    async def _prepare(self, batch: list[Any]) -> list[dict[str, Any]]:
        """Flush task, before each sink write: observations -> events, in request order.

        Progressive ranges get their media time from the flavor's (cached) index here.
        """
        build = self.builder.build
        events: list[dict[str, Any]] = []
        pending = False
        for item in batch:
            if type(item) is tuple:
                item = Observation(*item)
            try:
                built = build(item)
            except Exception:  # noqa: BLE001 - one odd request must not cost the batch
                self.build_errors += 1
                log.exception("analytics: building the events of %s failed", getattr(item, "path", "?"))
                continue
            for event in built:
                events.append(event)
                if RESOLVE_KEY in event:
                    pending = True
        if not pending:
            return events
        out: list[dict[str, Any]] = []
        for event in events:
            out.append(event)
            if RESOLVE_KEY in event:
                index = await self._index(event.get("partner"), event.get("entry"), event.get("flavor"))
                out.extend(self.builder.complete_progressive(event, index))
        return out

    async def _index(self, partner: str | None, entry: str | None, flavor: str | None) -> Any:
        media = self.media
        if media is None or not (partner and entry and flavor):
            return None
        try:
            found = await media.catalog.entry(partner, entry)
            return await media.index(found.flavor(flavor))
        except Exception as exc:  # noqa: BLE001 - unknown media time is an answer, not a failure
            log.debug("analytics: no index for %s/%s/%s: %s", partner, entry, flavor, exc)
            return None


_FIELDS = Observation.__slots__


async def _as_tuples(batch: list[Any]) -> list[Any]:
    """A relaying worker's batch: every item as the tuple :meth:`Analytics.capture` takes (picklable)."""
    return [item if type(item) is tuple else tuple(getattr(item, name) for name in _FIELDS) for item in batch]
