"""Play events: what a finished request means for analytics.

The middleware turns each finished request into an :class:`Observation`
(status, bytes sent, time to first byte, the route's ``MediaInfo``);
:class:`EventBuilder` turns observations into events, plain JSON-ready dicts:

    {"v": 1, "kind": "segment_served", "t": "2025-01-31T12:00:00.123Z", "node": "edge-1",
     "partner": "demo", "entry": "ladder", "flavor": "hi", "session": "abc", "format": "hls",
     "country": null, "referrer": "example.com", "ua": "chrome",
     "segment": 3, "audio": null, "media_start": 8.0, "media_duration": 4.0, "entry_duration": 12.0,
     "bytes": 51324, "ttfb_ms": 0.41, "cache": "HIT", "status": 200, "delivered": true, "media_new": 4.0}

Kinds and their own fields (the common ones above are on every event):

==================  ===========================================================================
play_requested      once per play session on this node: its first master playlist (HLS/CMAF),
                    or its first progressive response that starts at byte 0 (a session that
                    reaches several nodes has one per node; the reports count one play)
segment_served      segment, audio (track number or null for the flavor's main rendition),
                    media_start, media_duration, entry_duration, bytes, ttfb_ms, cache, status,
                    delivered (the whole segment was sent: a 200, or a 206 whose range is the
                    whole body), media_new (media time of a delivered main-rendition segment
                    the session had not been delivered before, in any rendition; else 0)
reached_25/50/75/100  pct, media_end, entry_duration: once per session, when the largest media end
                    served reaches that share of the entry's duration
flavor_switch       from_flavor (flavor is the new one): the session's main rendition changed
progressive_range   range_start, range_end (bytes actually sent), bytes, media_start,
                    media_duration (null when the flavor's sample table is not available),
                    media_new (media time of these bytes the session had not been sent before),
                    entry_duration, ttfb_ms, status
key_served          kid, clip (the clip folder, or null): a content key a session was given (HLS encryption;
                    refused ones are denied events)
denied              reason, status (the access-control decision)
error               status, code
==================  ===========================================================================

What is never in an event: tokens, query strings, full referrer URLs, raw IP
addresses (unless ``store_ip``), any header but the two classified ones.

Progress rule (shared with the report and the aggregator): a session reaches
``p`` percent of an entry when its largest media end served (delivered segments
of any rendition, progressive ranges) is at least ``p`` % of the entry's duration,
less :func:`tolerance` (a rendition may end a frame before the longest one).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import OrderedDict
from typing import Any, Iterable
from urllib.parse import unquote_plus

from .classify import referrer_domain, safe_session_id, ua_family
from .mediatime import DeliveredBytes, DeliveredTime, MediaSpan, byte_range_media_time, index_duration

SCHEMA_VERSION = 1

PLAY_REQUESTED = "play_requested"
SEGMENT_SERVED = "segment_served"
FLAVOR_SWITCH = "flavor_switch"
PROGRESSIVE_RANGE = "progressive_range"
KEY_SERVED = "key_served"
DENIED = "denied"
ERROR = "error"
MILESTONES = (25, 50, 75, 100)
REACHED = {pct: f"reached_{pct}" for pct in MILESTONES}
KINDS = (PLAY_REQUESTED, SEGMENT_SERVED, *REACHED.values(), FLAVOR_SWITCH, PROGRESSIVE_RANGE, DENIED, ERROR)

RESOLVE_KEY = "_resolve"
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1001))  # 1001: a float's fraction can round up to 1000  # progressive events waiting for their media time (filled off the request path)


# --------------------------------------------------------------------------- progress rule

def tolerance(duration: float) -> float:
    """Slack of the progress rule: 0.1 s, or 0.5 % of very short entries."""
    return min(0.1, duration * 0.005)


def reached(max_end: float, duration: float | None, pct: float) -> bool:
    if not duration or duration <= 0:
        return False
    return max_end + tolerance(duration) >= duration * pct / 100.0


def decile(max_end: float, duration: float | None) -> int:
    """How many tenths of the entry a session reached (0..10)."""
    if not duration or duration <= 0:
        return 0
    d = 0
    while d < 10 and reached(max_end, duration, (d + 1) * 10):
        d += 1
    return d


def media_ms(seconds: float | None) -> int:
    """Seconds -> integer milliseconds, the unit every sum of media time uses (exact across sources)."""
    return int(round(seconds * 1000)) if seconds else 0


# --------------------------------------------------------------------------- observation

class Observation:
    """One finished request as the middleware saw it. Holds references, copies nothing."""

    __slots__ = (
        "wall", "method", "path", "query", "headers", "peer", "status", "bytes_sent", "ttfb", "duration",
        "content_range", "error_body", "info",
    )

    def __init__(self, wall: float, method: str, path: str, query: bytes, headers: Iterable[tuple[bytes, bytes]],
                 peer: str | None, status: int, bytes_sent: int, ttfb: float | None, duration: float,
                 content_range: bytes | None = None, error_body: bytes | None = None, info: Any = None) -> None:
        self.wall = wall
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.peer = peer
        self.status = status
        self.bytes_sent = bytes_sent
        self.ttfb = ttfb
        self.duration = duration
        self.content_range = content_range
        self.error_body = error_body
        self.info = info


def request_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """(User-Agent, Referer) from ASGI headers."""
    ua = ref = None
    for name, value in headers:
        if name == b"user-agent":
            ua = value.decode("latin-1")
        elif name == b"referer":
            ref = value.decode("latin-1")
    return ua, ref


_PARAM_B = b"playSessionId="


def play_session_param(query: bytes) -> str | None:
    """The ``playSessionId`` query parameter (sanitised), reading nothing else of the query."""
    if not query:
        return None
    at = query.find(_PARAM_B)
    if at < 0:
        return None
    if at > 0 and query[at - 1] != 0x26:  # "&": not a parameter whose name merely ends with ours
        for part in query.split(b"&"):
            if part.startswith(_PARAM_B):
                return _param_value(part[len(_PARAM_B):])
        return None
    end = query.find(b"&", at)
    return _param_value(query[at + len(_PARAM_B): end if end >= 0 else len(query)])


def _param_value(raw: bytes) -> str | None:
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        text = unquote_plus(text)
    return safe_session_id(text)


_CONTENT_RANGE = re.compile(rb"bytes (\d+)-(\d+)/(\d+|\*)")
_ERROR_CODE = re.compile(rb'"error"\s*:\s*"([A-Za-z0-9_.-]{1,64})"')


def range_start(content_range: bytes | None) -> int:
    if content_range:
        m = _CONTENT_RANGE.match(content_range)
        if m:
            return int(m.group(1))
    return 0


def whole_body(status: int, content_range: bytes | None) -> bool:
    """The response carried the resource's whole body: a 200, or a 206 whose range is all of it.

    ffmpeg (and some players) ask for every segment with ``Range: bytes=0-``:
    the 206 they get delivers exactly what a 200 would, so it counts the same.
    A 206 of part of a segment (I-frame scrubbing reads byte ranges) does not.
    """
    if status == 200:
        return True
    if status != 206 or not content_range:
        return False
    m = _CONTENT_RANGE.match(content_range)
    return m is not None and m.group(1) == b"0" and m.group(3) != b"*" and int(m.group(2)) + 1 == int(m.group(3))


def error_code(body: bytes | None) -> str | None:
    """The ``error`` code of the JSON error body every vodgate error carries (docs/URLS.md)."""
    if body:
        m = _ERROR_CODE.search(body)
        if m:
            return m.group(1).decode()
    return None


# --------------------------------------------------------------------------- sessions

class SessionIds:
    """The play session of a request: ``playSessionId`` param, else the token's session, else a hash.

    The hash is a keyed BLAKE2b of client IP, User-Agent, partner, entry and the
    time bucket of the session's first request; a session keeps its id while it
    is active (gaps shorter than a bucket), so a viewer watching across a bucket
    boundary stays one session on this node.

    Players rarely repeat ``playSessionId`` on child playlists and segments
    (playlist URIs are relative), so the id seen on a master playlist is
    remembered for the same client, UA and entry, and for the token's session
    id, and applied to their requests that lack it.
    """

    def __init__(self, bucket_seconds: int = 1800, salt: bytes = b"", capacity: int = 100_000) -> None:
        self.bucket = bucket_seconds
        self.salt = salt[:64] or os.urandom(32)
        self.capacity = capacity
        self._affinity: dict[tuple, list] = {}  # (ip, ua, partner, entry) -> [sid, last seen]
        self._aliases: OrderedDict[str, str] = OrderedDict()  # token session -> playSessionId

    def resolve(self, param: str | None, token_sid: str | None, ip: str | None, ua: bytes | str | None,
                partner: str, entry: str, now: float) -> str:
        if param is not None:
            if token_sid is not None:
                self._remember(self._aliases, token_sid, param)
            self._touch((ip, ua, partner, entry), now, param)
            return param
        if token_sid is not None:
            alias = self._aliases.get(token_sid)
            return alias if alias is not None else token_sid
        return self._touch((ip, ua, partner, entry), now, None)

    def _touch(self, key: tuple, now: float, sid: str | None) -> str:
        slot = self._affinity.get(key)
        if slot is not None and (sid is not None or now - slot[1] <= self.bucket):
            if sid is not None:
                slot[0] = sid
            slot[1] = now
            return slot[0]
        if sid is None:
            sid = self.hashed(key, now)
        self._affinity[key] = [sid, now]
        if len(self._affinity) > self.capacity:
            _prune(self._affinity, self.capacity)
        return sid

    def hashed(self, key: tuple, now: float) -> str:
        ip, ua, partner, entry = key
        if isinstance(ua, bytes):
            ua = ua.decode("latin-1")
        text = f"{ip}\x00{ua}\x00{partner}\x00{entry}\x00{int(now // self.bucket)}"
        return "h" + hashlib.blake2b(text.encode("utf-8", "replace"), key=self.salt, digest_size=8).hexdigest()

    def _remember(self, table: OrderedDict, key: Any, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        if len(table) > self.capacity:
            table.popitem(last=False)


class _Session:
    __slots__ = ("flavor", "max_end", "media_delivered", "milestones", "played", "progressive_sent", "seen")

    def __init__(self) -> None:
        self.seen = 0
        self.flavor: str | None = None
        self.max_end = 0.0
        self.milestones = 0  # how many of MILESTONES were emitted
        self.played = False  # play_requested emitted: one play per session, however many masters it fetches
        self.progressive_sent: dict[str, DeliveredBytes] | None = None  # per flavor, made on first use
        self.media_delivered: DeliveredTime | None = None  # segments' media time, all renditions; made on first use


class SessionTracker:
    """Per-session state on this node: played yet, current main flavor, largest media end, milestones
    emitted, segment media time delivered, progressive bytes sent.

    Bounded: past ``capacity`` sessions, the least recently active tenth is
    forgotten (a forgotten session that comes back starts over: it may emit a
    milestone again, which the report does not use for its numbers).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._sessions: dict[tuple[str, str, str], _Session] = {}
        self._tick = 0

    def get(self, key: tuple[str, str, str]) -> _Session:
        self._tick += 1
        state = self._sessions.get(key)
        if state is None:
            state = self._sessions[key] = _Session()
            if len(self._sessions) > self.capacity:
                _prune(self._sessions, self.capacity)
        state.seen = self._tick
        return state

    def __len__(self) -> int:
        return len(self._sessions)


def _prune(table: dict, capacity: int) -> None:
    """Drop the least recently seen entries (``.seen``, or ``[1]`` of a list) down to 90 % of capacity."""
    def seen(item):
        value = item[1]
        return value[1] if isinstance(value, list) else value.seen

    keep = sorted(table.items(), key=seen)[len(table) - capacity * 9 // 10:]
    table.clear()
    table.update(keep)


# --------------------------------------------------------------------------- builder

class EventBuilder:
    """Observations -> events. Runs on the request path: written for speed (docs/ANALYTICS.md, "Overhead")."""

    CACHE_LIMIT = 4096

    def __init__(self, node: str, store_ip: bool = False, bucket_seconds: int = 1800, salt: bytes = b"",
                 capacity: int = 100_000) -> None:
        self.node = node
        self.store_ip = store_ip
        self.sessions = SessionIds(bucket_seconds, salt, capacity)
        self.tracker = SessionTracker(capacity)
        self._iso_second = -1
        self._iso_prefix = ""
        self._ua: dict[bytes | None, str] = {}
        self._ref: dict[bytes | None, str | None] = {}
        self._params: dict[bytes, str | None] = {}

    # -- helpers

    def iso(self, ts: float) -> str:
        sec = int(ts)
        if sec != self._iso_second:
            self._iso_second = sec
            self._iso_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return self._iso_prefix + _MILLIS[int((ts - sec) * 1000)]

    def _family(self, ua: bytes | None) -> str:
        family = self._ua.get(ua)
        if family is None:
            if len(self._ua) >= self.CACHE_LIMIT:
                self._ua.clear()
            family = self._ua[ua] = ua_family(ua.decode("latin-1") if ua else None)
        return family

    def _domain(self, ref: bytes | None) -> str | None:
        try:
            return self._ref[ref]
        except KeyError:
            if len(self._ref) >= self.CACHE_LIMIT:
                self._ref.clear()
            domain = self._ref[ref] = referrer_domain(ref.decode("latin-1") if ref else None)
            return domain

    def _event(self, kind: str, obs: Observation, info: Any, session: str | None, flavor: str | None,
               ua: bytes | None, ref: bytes | None, ip: str | None) -> dict[str, Any]:
        if info is None:
            return self._bare_event(kind, obs, ua, ref, ip)
        event = {
            "v": SCHEMA_VERSION,
            "kind": kind,
            "t": self.iso(obs.wall),
            "node": self.node,
            "partner": info.partner,
            "entry": info.entry,
            "flavor": flavor,
            "session": session,
            "format": info.format,
            "country": info.country,
            "referrer": self._domain(ref),
            "ua": self._family(ua),
        }
        if self.store_ip:
            event["ip"] = ip
        return event

    def _bare_event(self, kind: str, obs: Observation, ua: bytes | None, ref: bytes | None, ip: str | None) -> dict[str, Any]:
        event = {
            "v": SCHEMA_VERSION, "kind": kind, "t": self.iso(obs.wall), "node": self.node, "partner": None, "entry": None,
            "flavor": None, "session": None, "format": None, "country": None, "referrer": self._domain(ref),
            "ua": self._family(ua),
        }
        if self.store_ip:
            event["ip"] = ip
        return event

    # -- the one entry point of the request path

    def build(self, obs: Observation) -> list[dict[str, Any]]:
        info = obs.info
        ua = ref = None
        for name, value in obs.headers:
            if name == b"user-agent":
                ua = value
            elif name == b"referer":
                ref = value
        if info is None:
            if obs.status >= 400 and obs.path.startswith("/p/"):
                event = self._event(ERROR, obs, None, None, None, ua, ref, obs.peer)
                event["status"] = obs.status
                event["code"] = error_code(obs.error_body) or "error"
                return [event]
            return []
        ip = info.client_ip or obs.peer
        token_sid = info.session_id
        if token_sid is not None:
            token_sid = safe_session_id(token_sid)
        query = obs.query
        if query:
            try:
                param = self._params[query]
            except KeyError:
                if len(self._params) >= self.CACHE_LIMIT:
                    self._params.clear()
                param = self._params[query] = play_session_param(query)
        else:
            param = None
        session = self.sessions.resolve(param, token_sid, ip, ua, info.partner, info.entry, obs.wall)
        flavor = info.flavor
        status = obs.status
        if info.denied:
            event = self._event(DENIED, obs, info, session, flavor, ua, ref, ip)
            event["reason"] = info.denied
            event["status"] = status
            return [event]
        if status >= 400 or info.error:
            event = self._event(ERROR, obs, info, session, flavor, ua, ref, ip)
            event["status"] = status
            event["code"] = info.error or error_code(obs.error_body) or "error"
            return [event]
        if obs.method != "GET" or (status != 200 and status != 206):
            return []  # HEAD, 304 revalidations: nothing was delivered
        resource = info.resource
        if resource == "segment":
            event = self._event(SEGMENT_SERVED, obs, info, session, flavor, ua, ref, ip)
            event["segment"] = info.segment
            event["audio"] = info.audio
            event["media_start"] = start = info.media_start
            event["media_duration"] = duration = info.media_duration
            event["entry_duration"] = info.entry_duration
            event["bytes"] = obs.bytes_sent
            event["ttfb_ms"] = int(obs.ttfb * 1_000_000) / 1000 if obs.ttfb is not None else None
            event["cache"] = info.cache
            event["status"] = status
            event["delivered"] = delivered = whole_body(status, obs.content_range)
            event["media_new"] = 0.0
            out = [event]
            if delivered and start is not None and duration is not None:
                state = self.tracker.get((info.partner, info.entry, session))
                if info.audio is None:
                    # Minutes count media time newly delivered to the session: a retry, a seek back or the
                    # same time in another rendition after an ABR switch adds nothing (docs/ANALYTICS.md).
                    # round(x * 1000) is media_ms(x), inlined: the reports recompute the same milliseconds
                    first, end = round(start * 1000), round((start + duration) * 1000)
                    timeline = state.media_delivered
                    if timeline is None:  # the session's first segment: all of it is new
                        state.media_delivered = DeliveredTime([first], [end]) if end > first else DeliveredTime()
                        event["media_new"] = max(end - first, 0) / 1000
                    else:
                        event["media_new"] = timeline.add(first, end) / 1000
                if info.audio is None and flavor is not None:
                    if state.flavor != flavor:
                        if state.flavor is not None:
                            switch = self._event(FLAVOR_SWITCH, obs, info, session, flavor, ua, ref, ip)
                            switch["from_flavor"] = state.flavor
                            out.append(switch)
                        state.flavor = flavor
                self._progress(out, event, state, start + duration, info.entry_duration)
            return out
        if resource in ("master", "mpd"):  # an HLS master or a DASH MPD starts a play
            # Players fetch the master again within one play (retries, reloads, AVPlayer after a stall or a
            # network change): a play is a session, not a fetch (docs/ANALYTICS.md, "Play sessions").
            state = self.tracker.get((info.partner, info.entry, session))
            if state.played:
                return []
            state.played = True
            return [self._event(PLAY_REQUESTED, obs, info, session, None, ua, ref, ip)]
        if resource == "key":
            # a content key handed to the session (docs/CONTENT_PROTECTION.md): its kid, never its bytes
            event = self._event(KEY_SERVED, obs, info, session, None, ua, ref, ip)
            event["kid"] = obs.path.rsplit("/", 1)[-1].removesuffix(".key")
            event["clip"] = next((part for part in obs.path.split("/") if part.startswith("clip-")), None)
            return [event]
        if resource == "progressive":
            if obs.bytes_sent <= 0:
                return []
            first = range_start(obs.content_range) if status == 206 else 0
            out = []
            state = self.tracker.get((info.partner, info.entry, session))
            if first == 0 and not state.played:
                state.played = True
                out.append(self._event(PLAY_REQUESTED, obs, info, session, flavor, ua, ref, ip))
            event = self._event(PROGRESSIVE_RANGE, obs, info, session, flavor, ua, ref, ip)
            event.update(
                range_start=first, range_end=first + obs.bytes_sent - 1, bytes=obs.bytes_sent,
                media_start=None, media_duration=None, media_new=None, entry_duration=None,
                ttfb_ms=int(obs.ttfb * 1_000_000) / 1000 if obs.ttfb is not None else None, status=status,
            )
            event[RESOLVE_KEY] = True
            out.append(event)
            return out
        return []  # media playlists, I-frame playlists, init segments: requested, not watched

    # -- off the request path: progressive media time

    def complete_progressive(self, event: dict[str, Any], index: Any) -> list[dict[str, Any]]:
        """Fill a progressive_range event's media time from the flavor's MediaIndex (None: unknown).

        ``media_start``/``media_duration``: the window these bytes hold; ``media_new``: the media time
        they add to what the session was sent of this file before (what minutes count). Returns the
        milestone events the range triggers.
        """
        event.pop(RESOLVE_KEY, None)
        if index is None:
            return []
        duration = index_duration(index)
        event["entry_duration"] = duration
        state = self.tracker.get((event["partner"], event["entry"], event["session"]))
        if state.progressive_sent is None:
            state.progressive_sent = {}
        sent = state.progressive_sent.setdefault(event["flavor"], DeliveredBytes())
        event["media_new"] = round(sent.add(index, event["range_start"], event["range_end"]), 6)
        span: MediaSpan | None = byte_range_media_time(index, event["range_start"], event["range_end"])
        if span is None:
            event["media_duration"] = 0.0  # known: no whole frame in these bytes (moov, or a tiny range)
            return []
        event["media_start"] = round(span.start, 6)
        event["media_duration"] = round(span.duration, 6)
        out: list[dict[str, Any]] = []
        self._progress(out, event, state, span.end, duration)
        return out

    def _progress(self, out: list, source: dict[str, Any], state: _Session, end: float, duration: float | None) -> None:
        if end > state.max_end:
            state.max_end = end
        while state.milestones < len(MILESTONES) and reached(state.max_end, duration, MILESTONES[state.milestones]):
            pct = MILESTONES[state.milestones]
            milestone = {k: source[k] for k in _COMMON if k in source}
            milestone["kind"] = REACHED[pct]
            milestone.update(pct=pct, media_end=round(state.max_end, 6), entry_duration=duration)
            out.append(milestone)
            state.milestones += 1


_COMMON = ("v", "kind", "t", "node", "partner", "entry", "flavor", "session", "format", "country", "referrer", "ua", "ip")
