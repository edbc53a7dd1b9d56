"""Prometheus metrics of one app (a dedicated CollectorRegistry: several apps may live in one process).

    metrics = Metrics()
    metrics.bind(media=app.state.media, cache=app.state.cache, queue=analytics.queue)
    app = AnalyticsMiddleware(app, analytics=..., metrics=metrics)   # observes every request
    Route("/metrics", metrics.endpoint)                               # or Mount("/metrics", metrics.asgi_app())

Exported (names as Prometheus shows them):

=============================================  ===========================================================
vodgate_http_requests_total{route,status}      every HTTP request; route = master, playlist, iframes,
                                               segment, init, progressive, key, health, metrics, admin,
                                               media_other (under /p/, not parsed), other
vodgate_http_request_duration_seconds{class}   until the last body byte; class = playlist, segment,
                                               progressive, other
vodgate_http_time_to_first_byte_seconds{class} until the response headers are sent
vodgate_http_response_bytes_total{class}       body bytes sent
vodgate_packaging_seconds{format}              muxing one segment on a cache miss (MediaInfo.package_seconds,
                                               or observe_packaging())
vodgate_denials_total{reason}                  access-control denials
vodgate_media_errors_total{code}               media requests that failed, by error code
vodgate_index_cache_{hits,misses}_total        MediaService.indexes (parsed moov) counters
vodgate_index_cache_bytes / _entries           what the index cache holds now (bounded by server.index_cache_mb
                                               and server.index_cache_entries)
vodgate_index_cache_evictions_total            indexes evicted to stay within those bounds
vodgate_media_set_cache_{hits,misses}_total    MediaService.media_sets counters; _bytes, _entries, _evictions_total too
vodgate_preview_cache_{hits,misses}_total      MediaService.previews (preview sets, clipped MP4s); _bytes, _entries,
                                               _evictions_total too
vodgate_segment_cache_lookups_total{result}    SegmentCache.stats: HIT, MISS, COALESCED; on an edge (one dict with
                                               EdgeStore.stats and the hot lane) STALE too
vodgate_segment_cache_memory_bytes / _items    the memory tier's size; _disk_bytes the disk tier's
vodgate_upstream_up{upstream}                  edge: 1 while the upstream is marked up (/healthz "up")
vodgate_upstream_{requests,failures,failovers}_total{upstream}
                                               edge: requests sent, failures that marked it down, requests that
                                               moved on from it to the next upstream (/healthz, the same numbers)
vodgate_purges_total, vodgate_purged_objects_total
                                               purges applied on this node and the objects they dropped
vodgate_purge_bus_subscribed, vodgate_purge_bus_{received,published,publish_errors}_total
                                               the Redis purge bus, when [redis] is set
vodgate_process_*                              prometheus_client's ProcessCollector (CPU seconds, memory, fds, start)
vodgate_hot_lane_answers_total                 segment cache hits answered by the hot lane (edge/hot.py; also
                                               counted in vodgate_segment_cache_lookups_total{result="HIT"})
vodgate_hot_lane_paths                         request paths the hot lane currently answers
vodgate_analytics_events_queued                events waiting in memory
vodgate_analytics_events_{accepted,dropped,written,lost}_total, vodgate_analytics_sink_errors_total
vodgate_analytics_internal_errors_total        observer failures (swallowed: requests never fail for them)
=============================================  ===========================================================
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest, make_asgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

ROUTE_OF_RESOURCE = {
    "master": "master", "index": "playlist", "iframes": "iframes", "segment": "segment", "init": "init",
    "progressive": "progressive", "key": "key", "mpd": "mpd", "thumbnail": "thumbnail",
}
CLASS_OF_ROUTE = {
    "master": "playlist", "playlist": "playlist", "iframes": "playlist", "segment": "segment", "init": "segment",
    "progressive": "progressive", "mpd": "playlist", "thumbnail": "thumbnail",
}
FOLD_EVERY = 256  # requests recorded between two folds into the series
MAX_SERIES = 1000  # label values come from a few fixed sets; a cap keeps a bug from growing memory


def route_of(path: str, info: Any) -> str:
    if info is not None:
        return ROUTE_OF_RESOURCE.get(info.resource, "other")
    if path.startswith("/p/"):
        return "media_other"
    if path in ("/healthz", "/readyz"):
        return "health"
    if path == "/metrics":
        return "metrics"
    if path.startswith("/admin"):
        return "admin"
    return "other"


class _Histogram:
    """Bucket counts and a sum: one bisect and two additions per observation, no lock.

    Every observation happens on the event loop thread (the middleware), and
    so does the scrape that reads them.
    """

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, value)] += 1
        self.sum += value

    def merge(self, other: "_Histogram") -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.sum += other.sum

    def buckets(self) -> list[tuple[str, int]]:
        total, out = 0, []
        for bound, count in zip((*(repr(b) for b in LATENCY_BUCKETS), "+Inf"), self.counts):
            total += count
            out.append((bound, total))
        return out


class Metrics:
    """Per-request accumulators (plain ints and bucket lists) exported by a collector at scrape time.

    prometheus-client's own Counter/Histogram take a lock per update; at
    thousands of requests per second on one event loop that was most of the
    observer's cost, so the hot path keeps plain numbers and the registry
    reads them when scraped (docs/ANALYTICS.md, "Overhead").
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, _Histogram] = {}
        self.ttfb: dict[str, _Histogram] = {}
        self.bytes_out: dict[str, int] = {}
        self.packaging: dict[str, _Histogram] = {}
        self.denials: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.internal_errors = 0
        self.pending: list[tuple] = []
        self.repeats: dict[int, list] = {}  # id(info) -> [info, count, bytes, _Histogram]: see record_repeat
        self.state = _StateCollector(self)
        self.registry.register(self.state)
        # CPU seconds, resident and virtual memory, open and max fds, start time: read from /proc at scrape time
        ProcessCollector(namespace="vodgate", registry=self.registry)
        # a worker of several (edge/workers.py) answers a scrape for the whole node: this worker's text in,
        # every worker's merged out (edge/siblings.py); None: one process, its own text is the node's
        self.node_scrape: Callable[[bytes], Awaitable[bytes]] | None = None

    def bind(self, media: Any = None, cache: Any = None, queue: Any = None, hot: Any = None, edge: Any = None,
             purger: Any = None) -> "Metrics":
        """Objects whose counters are read at scrape time (app.state.media, .cache, .hot, .edge, .purger, the
        event queue)."""
        if edge is not None:
            self.state.edge = edge
        if purger is not None:
            self.state.purger = purger
        if hot is not None:
            self.state.hot = hot
        if media is not None:
            self.state.media = media
        if cache is not None:
            self.state.cache = cache
        if queue is not None:
            self.state.queue = queue
        return self

    def record(self, path: str, status: int, duration: float, ttfb: float | None, nbytes: int, info: Any = None) -> None:
        """Request path: keep the numbers; they are folded into the series every FOLD_EVERY requests and at
        each scrape (a tight loop over a batch costs a fraction of updating per request)."""
        pending = self.pending
        pending.append((path, status, duration, ttfb, nbytes, info))
        if len(pending) >= FOLD_EVERY:
            self.fold()

    def record_repeat(self, info: Any, duration: float, nbytes: int) -> None:
        """A 200 that repeats an earlier answer described by the same ``info`` object (the hot lane): summed
        per object, a third of the cost of :meth:`record`. Time to first byte is counted as ``duration``."""
        totals = self.repeats.get(id(info))  # the entry holds ``info``, so its id is not reused while pending
        if totals is None:
            if len(self.repeats) >= FOLD_EVERY:
                self.fold()
            totals = self.repeats[id(info)] = [info, 0, 0, _Histogram()]
        totals[1] += 1
        totals[2] += nbytes
        totals[3].observe(duration)

    def fold(self) -> None:
        pending, self.pending = self.pending, []
        observe = self.observe
        for path, status, duration, ttfb, nbytes, info in pending:
            observe(route_of(path, info), status, duration, ttfb, nbytes, info)
        repeats, self.repeats = self.repeats, {}
        for info, count, nbytes, hist in repeats.values():
            self._fold_repeats(route_of("", info), count, nbytes, hist)

    def _fold_repeats(self, route: str, count: int, nbytes: int, hist: "_Histogram") -> None:
        key = (route, 200)
        if key in self.requests or len(self.requests) < MAX_SERIES:
            self.requests[key] = self.requests.get(key, 0) + count
        cls = CLASS_OF_ROUTE.get(route, "other")
        if cls not in self.latency:
            self.latency[cls], self.ttfb[cls], self.bytes_out[cls] = _Histogram(), _Histogram(), 0
        self.latency[cls].merge(hist)
        self.ttfb[cls].merge(hist)
        self.bytes_out[cls] += nbytes

    def observe(self, route: str, status: int, duration: float, ttfb: float | None, nbytes: int, info: Any = None) -> None:
        key = (route, status)
        requests = self.requests
        if key in requests:
            requests[key] += 1
        elif len(requests) < MAX_SERIES:
            requests[key] = 1
        cls = CLASS_OF_ROUTE.get(route, "other")
        latency = self.latency.get(cls)
        if latency is None:
            latency = self.latency[cls] = _Histogram()
            self.ttfb[cls] = _Histogram()
            self.bytes_out[cls] = 0
        latency.observe(duration)
        if ttfb is not None:
            self.ttfb[cls].observe(ttfb)
        self.bytes_out[cls] += nbytes
        if info is not None:
            denied = info.denied
            if denied:
                _count(self.denials, str(denied)[:64])
            elif status >= 400 or info.error:
                _count(self.errors, str(info.error or status)[:64])
            try:  # a MediaInfo field the lead may add; a plain attribute until then (getattr(.., None) is slow)
                seconds = info.__dict__.get("package_seconds")
            except AttributeError:
                seconds = getattr(info, "package_seconds", None)
            if seconds is not None:
                self.observe_packaging(info.format, seconds)

    def observe_packaging(self, fmt: str, seconds: float) -> None:
        """Time one segment mux (the lead may call this around ``fmt.mux`` instead of setting MediaInfo)."""
        hist = self.packaging.get(fmt)
        if hist is None:
            if len(self.packaging) >= 16:
                return
            hist = self.packaging[fmt] = _Histogram()
        hist.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def render_node(self) -> tuple[bytes, str]:
        """What a scrape answers: this process's figures, or with workers the node's (all workers')."""
        body, content_type = self.render()
        if self.node_scrape is not None:
            body = await self.node_scrape(body)
        return body, content_type

    async def endpoint(self, request: Any) -> Any:
        """Starlette route handler: ``Route("/metrics", metrics.endpoint, methods=["GET"])``."""
        from starlette.responses import Response

        body, content_type = await self.render_node()
        return Response(body, media_type=None, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

    def asgi_app(self) -> Any:
        """A bare ASGI app serving the exposition (``Mount("/metrics", metrics.asgi_app())``)."""
        return make_asgi_app(self.registry)


def _count(table: dict[str, int], key: str) -> None:
    if key in table:
        table[key] += 1
    elif len(table) < MAX_SERIES:
        table[key] = 1


class _StateCollector:
    """Reads counters the server keeps anyway, at scrape time (nothing on the request path)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.media: Any = None
        self.cache: Any = None
        self.queue: Any = None
        self.hot: Any = None
        self.edge: Any = None  # edge.proxy.EdgeProxy (role edge)
        self.purger: Any = None  # edge.purge.CachePurger (every role)

    def describe(self) -> list:
        return []

    def collect(self):
        m = self.metrics
        m.fold()
        requests = CounterMetricFamily("vodgate_http_requests", "HTTP requests by route kind and status", labels=["route", "status"])
        for (route, status), count in sorted(m.requests.items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        for name, doc, table in (
            ("vodgate_http_request_duration_seconds", "Request time until the last body byte", m.latency),
            ("vodgate_http_time_to_first_byte_seconds", "Request time until the response headers", m.ttfb),
        ):
            family = HistogramMetricFamily(name, doc, labels=["class"])
            for cls, hist in sorted(table.items()):
                family.add_metric([cls], hist.buckets(), hist.sum)
            yield family
        out = CounterMetricFamily("vodgate_http_response_bytes", "Response body bytes sent", labels=["class"])
        for cls, count in sorted(m.bytes_out.items()):
            out.add_metric([cls], count)
        yield out
        packaging = HistogramMetricFamily("vodgate_packaging_seconds", "Time muxing one segment (segment cache misses)", labels=["format"])
        for fmt, hist in sorted(m.packaging.items()):
            packaging.add_metric([fmt], hist.buckets(), hist.sum)
        yield packaging
        for name, doc, label, table in (
            ("vodgate_denials", "Access-control denials by reason", "reason", m.denials),
            ("vodgate_media_errors", "Failed media requests by error code", "code", m.errors),
        ):
            family = CounterMetricFamily(name, doc, labels=[label])
            for key, count in sorted(table.items()):
                family.add_metric([key], count)
            yield family
        yield _counter("vodgate_analytics_internal_errors", "Analytics/metrics observer failures (requests are not affected)",
                       m.internal_errors)
        media = self.media
        if media is not None:
            for attr, name in (("indexes", "index_cache"), ("media_sets", "media_set_cache"), ("previews", "preview_cache")):
                lru = getattr(media, attr, None)
                if lru is None:
                    continue
                yield _counter(f"vodgate_{name}_hits", f"{attr} cache hits (MediaService)", lru.hits)
                yield _counter(f"vodgate_{name}_misses", f"{attr} cache misses (MediaService)", lru.misses)
                if hasattr(lru, "bytes"):  # an origin.media.AsyncLRU (bounded in bytes)
                    yield GaugeMetricFamily(f"vodgate_{name}_bytes", f"Bytes the {attr} cache holds (weighed)", value=lru.bytes)
                    yield GaugeMetricFamily(f"vodgate_{name}_entries", f"Entries in the {attr} cache", value=len(lru))
                    yield _counter(f"vodgate_{name}_evictions", f"{attr} cache evictions to stay within its bounds", lru.evictions)
        cache = self.cache
        if cache is not None:
            lookups = CounterMetricFamily("vodgate_segment_cache_lookups", "Segment/playlist cache lookups by result", labels=["result"])
            for result, count in sorted(getattr(cache, "stats", {}).items()):
                lookups.add_metric([result], count)
            yield lookups
            memory = getattr(cache, "memory", None)
            if memory is not None:
                yield GaugeMetricFamily("vodgate_segment_cache_memory_bytes", "Bytes in the memory tier", value=memory.size)
                yield GaugeMetricFamily("vodgate_segment_cache_items", "Objects in the memory tier", value=len(memory))
            disk = getattr(cache, "disk", None)
            if disk is not None:
                yield GaugeMetricFamily("vodgate_segment_cache_disk_bytes", "Bytes in the disk tier", value=disk.size)
        edge = self.edge
        if edge is not None:  # pool.status() is what /healthz shows: the same numbers
            rows = edge.pool.status()
            up = GaugeMetricFamily("vodgate_upstream_up", "1 while the upstream is marked up", labels=["upstream"])
            families = {
                key: CounterMetricFamily(f"vodgate_upstream_{key}", doc, labels=["upstream"])
                for key, doc in (("requests", "Requests sent to the upstream (health probes aside)"),
                                 ("failures", "Upstream failures that marked it down (requests and probes)"),
                                 ("failovers", "Requests that moved on from this upstream to the next"))
            }
            for row in rows:
                up.add_metric([row["url"]], 1.0 if row["up"] else 0.0)
                for key, family in families.items():
                    family.add_metric([row["url"]], row[key])
            yield up
            yield from families.values()
        purger = self.purger
        if purger is not None:
            purges = purger.stats()
            yield _counter("vodgate_purges", "Purges applied on this node (its own and the bus's)", purges["applied"])
            yield _counter("vodgate_purged_objects", "Cached objects the purges dropped", purges["removed"])
            bus = purges["bus"]
            if bus is not None:
                yield GaugeMetricFamily("vodgate_purge_bus_subscribed", "1 while subscribed to the purge channel",
                                        value=1.0 if bus["subscribed"] else 0.0)
                yield _counter("vodgate_purge_bus_received", "Purges received from other nodes", bus["received"])
                yield _counter("vodgate_purge_bus_published", "Purges handed to Redis for the other nodes", bus["published"])
                yield _counter("vodgate_purge_bus_publish_errors", "Purges Redis did not take", bus["publish_errors"])
        hot = self.hot
        if hot is not None:
            yield _counter("vodgate_hot_lane_answers", "Segment cache hits answered by the hot lane", hot.served)
            yield GaugeMetricFamily("vodgate_hot_lane_paths", "Request paths the hot lane answers", value=len(hot))
        queue = self.queue
        if queue is not None:
            yield GaugeMetricFamily("vodgate_analytics_events_queued", "Play events waiting in memory", value=queue.size)
            yield _counter("vodgate_analytics_events_accepted", "Play events queued", queue.accepted)
            yield _counter("vodgate_analytics_events_dropped", "Play events dropped: queue full", queue.dropped)
            yield _counter("vodgate_analytics_events_written", "Play events written to the sink", queue.written)
            yield _counter("vodgate_analytics_events_lost", "Play events given up at shutdown (sink failing)", queue.lost)
            yield _counter("vodgate_analytics_sink_errors", "Failed sink writes (retried)", queue.sink_errors)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
