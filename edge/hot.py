"""The hot lane: cached segments answered before any ASGI work.

A warm segment is the same bytes for every viewer when its partner has no
access rule: then the only per-request work left is HTTP framing, and in
Python the ASGI machinery (scope, task, middleware, routing, Response)
costs more than copying the bytes does. So:

1. :class:`HotRecorder` (outermost ASGI middleware) watches responses the
   routes mark shareable (:func:`mark_shareable`; the origin's Delivery and
   the edge's EdgeProxy): a 200 segment or init segment, whole, for an
   unrestricted partner, asked for by a *plain* request (GET, no
   conditional/range/Origin/Cookie header). It remembers
   the response headers exactly as the app sent them, by path: a query
   string (``playSessionId``) does not change a segment of an unrestricted
   partner, only what play events record. A playlist is different: the
   viewer's query goes into its URIs, so a playlist is remembered only as
   the answer to a request *without* a query (``query_free``), and any
   request with one takes the full path, except a query that is one valid
   ``playSessionId`` and nothing else on the origin: players send one on
   every request, and for a partner without rules it changes only the
   slots of the playlist's cached template, its ETag and its Cache-Control
   (edge/hot_playlists.py). A request carrying a token
   (``?token=``, ``?hdnts=``) always takes the full path
   (edge/hot_protocol.py): a token may narrow what it grants (a clip claim).
2. The server's protocol (edge/hot_protocol.py) asks :meth:`HotPaths.answer`
   with the raw request path and headers before building an ASGI request.
   An answer is the remembered headers plus the body taken from the very
   cache object it was recorded from, so a purge, an eviction, a refreshed
   edge copy or a profile change makes the next request take the full path.

What keeps it equal to the full path: answers expire after ``ttl`` (the
origin's own media freshness window, ``origin.media.STAT_TTL``), or sooner,
when the file stats the answer was built on are due again (the route's
``fresh_for``, taken when it marks the answer; on an edge, when the cached
copy goes stale), so the full path re-validates as often as it would alone; the partner's restrictions and the origin
shield are checked on every answer; anything unusual in a request falls
through to the full path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, MutableMapping, Sequence

from .cache import HIT, SegmentCache
from .cdn import shield_passes
from .hot_playlists import PlaylistAnswer, PlaylistForm
from .request_info import SCOPE_KEY, MediaInfo
from .viewer import EDGE_GRANT_HEADER

MARK_SCOPE_KEY = "vodgate.shareable"  # value: the segment cache key of the body

# A request with any of these may get a different answer than the remembered one.
_DIFFERENT_ANSWER = frozenset({
    b"range", b"if-range", b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since",
    b"origin",  # CORS headers depend on it
    b"cookie", b"authorization",  # credentials are the full path's business
    EDGE_GRANT_HEADER.lower().encode(),  # an edge's vouched preview or limits: the full path applies it
    b"content-length", b"transfer-encoding", b"expect",  # a GET with a body is unusual enough
})


@dataclass(frozen=True, slots=True)
class Shareable:
    cache_key: str  # the segment cache holds the body under it: whole, or as its tail (the edge's records)
    fresh_for: float | None = None  # seconds the cached copy stays fresh, when it can go stale (edge role)
    # the answer holds only for requests without a query: a playlist carries a viewer's query into its URIs
    # (a playSessionId, ?flavors= picks the variants), so only the query-free request is every viewer's
    query_free: bool = False
    playlist: PlaylistForm | None = None  # with query_free: how a lone session id changes the answer


def mark_shareable(scope: MutableMapping[str, Any], cache_key: str, fresh_for: float | None = None,
                   query_free: bool = False, playlist: PlaylistForm | None = None) -> None:
    """A route's statement: this response is the same bytes for anyone who sends this plain request
    (``query_free``: this plain request without a query string; ``playlist``: a playlist whose answer to
    the plain request, without a query or with a lone session id, is made from its form)."""
    scope.setdefault("state", {})[MARK_SCOPE_KEY] = Shareable(cache_key, fresh_for, query_free or playlist is not None, playlist)


@dataclass(frozen=True, slots=True)
class HotAnswer:
    header_lines: bytes  # b"name: value\r\n" for each header the app sent, in its order
    cache_key: str
    cached: bytes  # the very object the cache held: a replaced or purged one ends the answer
    offset: int  # where the body starts in it
    partner: str
    path: str
    info: MediaInfo  # what observers (metrics, play events) see for every answer
    expires: float
    generation: int = 0  # the configuration it was remembered under (AccessControl.generation)
    query_free: bool = False  # answered only to a request without a query (Shareable.query_free)...
    playlist: PlaylistAnswer | None = None  # ...or as its form says (a lone session id), made from this


class HotPaths:
    """Remembered answers by raw request path, bounded in number; bodies stay in the segment cache."""

    def __init__(
        self,
        cache: SegmentCache,
        restricts: Callable[[str], bool],
        shield_header: str = "",
        shield_secrets: Sequence[str] = (),
        ttl: float = 1.0,
        max_paths: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        generation: Callable[[], int] = lambda: 0,
    ) -> None:
        self.cache = cache
        # a SIGHUP reload can switch a partner's encryption: the same URL then names other bytes, so nothing
        # remembered before a reload is answered after it
        self.generation = generation
        self.restricts = restricts
        self.shield_header = shield_header.lower().encode("latin-1")
        self.shield_secrets = [s.encode() for s in shield_secrets]
        self.ttl = ttl
        self.max_paths = max_paths
        self.clock = clock
        self.served = 0
        self._remembered = 0
        self._answers: dict[bytes, HotAnswer] = {}
        # cache key -> paths whose answer holds its body: when the cache lets a body go, so do they, or evicted
        # bodies would live on here beyond cache.memory_mb
        self._holding: dict[str, set[bytes]] = {}
        cache.memory.on_drop = self._let_go

    def answer(self, raw_path: bytes, headers: Iterable[tuple[bytes, bytes]], query: bytes = b"") -> tuple[HotAnswer, bytes] | None:
        """The remembered answer and its body for a plain GET of ``raw_path`` (``query``: the request's query
        string, raw), or None (take the full path)."""
        hot = self._answers.get(raw_path)
        if hot is None or (query and hot.query_free and (hot.playlist is None or not hot.playlist.form.answers(query))):
            return None
        if self.clock() >= hot.expires or self.restricts(hot.partner) or hot.generation != self.generation():
            self._forget(raw_path)
            return None
        if not self._plain(headers):
            return None
        cached = self.cache.memory.get(hot.cache_key)
        if cached is not hot.cached:
            self._forget(raw_path)
            return None
        if query and hot.query_free:
            return self._personal(hot, hot.playlist, query)  # type: ignore[arg-type]
        self.served += 1
        self.cache.stats[HIT] += 1
        return hot, (cached if not hot.offset else memoryview(cached)[hot.offset :])

    def _personal(self, hot: HotAnswer, playlist: PlaylistAnswer, query: bytes) -> tuple[HotAnswer, bytes] | None:
        """The full path's answer to the remembered playlist's path with ``query``, a lone session id."""
        if self.cache.memory.get(playlist.form.template_key) is not playlist.template:
            return None  # the template went (evicted, purged): the full path makes it again
        body = playlist.body(query, hot.cached)
        self.served += 1
        self.cache.stats[HIT] += 1
        return replace(hot, header_lines=playlist.header_lines(query, len(body))), body

    def remember(self, raw_path: bytes, headers: Iterable[tuple[bytes, bytes]], body: bytes | memoryview,
                 mark: Shareable, info: MediaInfo | None, query: bytes = b"") -> None:
        """Remember the answer the full path gave to a plain GET of ``raw_path`` (``query``: its query string)."""
        cached = self.cache.memory.get(mark.cache_key)
        lifetime = self.ttl if mark.fresh_for is None else min(self.ttl, mark.fresh_for)
        if info is None or cached is None or lifetime <= 0:
            return
        pairs = [(name, HIT.encode() if name.lower() == b"x-cache" else value) for name, value in headers]
        playlist = None
        if mark.playlist is not None:  # recorded from a query-free or a session request: remembered query-free
            playlist = PlaylistAnswer.recorded(mark.playlist, self.cache.memory.get(mark.playlist.template_key), pairs,
                                               body, cached, query)
            if playlist is None:
                return
            header_lines = playlist.header_lines(b"", len(cached))
        elif (query and mark.query_free) or not _ends_with(cached, body):
            return  # only what the cache holds, byte for byte, can be answered from it
        else:
            header_lines = b"".join(b"%s: %s\r\n" % pair for pair in pairs)
        self._remembered += 1
        if self._remembered % 256 == 0 or (len(self._answers) >= self.max_paths and raw_path not in self._answers):
            self._drop_expired()  # also lets go of cached objects the cache itself no longer holds
        if len(self._answers) >= self.max_paths and raw_path not in self._answers:
            self._forget(next(iter(self._answers)))  # the oldest remembered
        self._forget(raw_path)
        self._answers[raw_path] = answer = HotAnswer(
            header_lines, mark.cache_key, cached, len(cached) - len(body) if playlist is None else 0, info.partner,
            raw_path.decode("latin-1"),
            # what observers see for every answer: nothing of the viewer who happened to be recorded
            replace(info, cache=HIT, package_seconds=None, client_ip=None, country=None, session_id=None),
            self.clock() + lifetime,
            self.generation(),
            mark.query_free,
            playlist,
        )
        for key in _held_keys(answer):
            self._holding.setdefault(key, set()).add(raw_path)

    def __len__(self) -> int:
        return len(self._answers)

    def plain_request(self, method: str, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        return method == "GET" and self._plain(headers)

    def _plain(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        presented: bytes | None = None
        for name, value in headers:
            if name in _DIFFERENT_ANSWER:
                return False
            if name == self.shield_header and presented is None:
                presented = value  # the first one, as ShieldGuard (edge/cdn.py) reads it on the full path
        return not self.shield_secrets or shield_passes(presented or b"", self.shield_secrets)

    def _drop_expired(self) -> None:
        now = self.clock()
        for path in [p for p, a in self._answers.items() if now >= a.expires]:
            self._forget(path)

    def _forget(self, raw_path: bytes) -> None:
        answer = self._answers.pop(raw_path, None)
        if answer is None:
            return
        for key in _held_keys(answer):
            paths = self._holding.get(key)
            if paths is not None:
                paths.discard(raw_path)
                if not paths:
                    del self._holding[key]

    def _let_go(self, cache_key: str) -> None:
        """The cache let ``cache_key``'s body go: forget every answer holding it (MemoryLRU.on_drop)."""
        for path in list(self._holding.get(cache_key, ())):
            self._forget(path)


def _held_keys(answer: HotAnswer) -> tuple[str, ...]:
    """The cache keys whose bodies ``answer`` keeps alive."""
    return (answer.cache_key,) if answer.playlist is None else (answer.cache_key, answer.playlist.form.template_key)


def _ends_with(cached: bytes, body: bytes | memoryview) -> bool:
    """Whether ``body`` is the tail of ``cached`` (memcmp speed: memoryview == compares item by item)."""
    if cached is body:
        return True
    size = len(body)
    if not 0 < size <= len(cached):
        return False
    if isinstance(body, memoryview):
        if body.obj is cached:  # a view into the cached record (the edge's Stored.decode): check its end
            return cached.endswith(body[-64:].tobytes())
        body = body.tobytes()
    return cached.endswith(body)


class HotRecorder:
    """Outermost ASGI middleware: remembers shareable answers to plain requests for the hot lane."""

    def __init__(self, app: Any, hot: HotPaths) -> None:
        self.app = app
        self.hot = hot

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.hot.plain_request(scope["method"], scope["headers"]):
            await self.app(scope, receive, send)
            return
        sent: list[dict] = []

        def keep(message: dict) -> Any:
            if len(sent) < 3:  # a shareable answer is two messages; a third means a stream, never kept whole
                sent.append(message)
            return send(message)

        await self.app(scope, receive, keep)
        state = scope.get("state") or {}
        mark = state.get(MARK_SCOPE_KEY)
        if mark is None or len(sent) != 2:
            return
        start, body = sent
        if start.get("status") == 200 and not body.get("more_body", False):
            self.hot.remember(scope["raw_path"], start.get("headers", ()), body.get("body", b""), mark, state.get(SCOPE_KEY),
                              scope.get("query_string", b""))
