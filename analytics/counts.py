"""What one event adds to the report: the one counting rule shared by the JSONL report and the aggregator.

:func:`contribution` turns an event into named counters (``"plays|demo|ladder"``
+1, ``"ms|demo|ladder"`` +4000, ...), the play session it belongs to and the
decile of the entry that event shows the session reached. The JSONL report
sums contributions over the events in range; the Redis aggregator sums the
same contributions into hourly hashes. Both then go through
:func:`analytics.report.summarize`, so the two sources give the same numbers
for the same events.

Counter fields (``p`` partner, ``e`` entry; ``-`` when unknown):

==========================  ===========================================================
plays|p|e                   play sessions: the reader counts the fields of a session's
                            first play_requested only (:attr:`Contribution.play`)
ms|p|e                      media milliseconds delivered: what delivered segments (200, or
                            a 206 of the whole body) of a flavor's main rendition (not its
                            a{k} audio renditions, which play alongside) added to their
                            session's union of media time (:attr:`Contribution.window`,
                            summed by the reader; segments written before media_new: their
                            media_duration) + the media time progressive ranges added to
                            their session (media_new)
sw|p|e                      flavor_switch events
bytes|p|e|flavor            body bytes of segment_served + progressive_range
country|p|e|CC              plays by country (``unknown`` without GeoIP); like ref and ua,
                            in the fields of the play_requested
ref|p|e|domain              plays by referrer domain (``(none)`` without Referer)
ua|p|e|family               plays by user-agent family
denied|p|e|reason           denied events
error|p|e|status|code       error events
reach|p|e|d                 sessions that reached d tenths of the entry (d = 0..10;
                            d = 0 counts every play session of the entry). Derived from
                            sessions by the JSONL report, counted by the aggregator.
==========================  ===========================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .classify import field_part
from .events import (
    DENIED, ERROR, FLAVOR_SWITCH, PLAY_REQUESTED, PROGRESSIVE_RANGE, SEGMENT_SERVED, decile, media_ms,
)

TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):\d{2}:\d{2}(?:\.\d+)?Z")
NO_COUNTRY = "unknown"
NO_REFERRER = "(none)"


class Malformed(ValueError):
    """An event that cannot be counted (wrong shape or types)."""


@dataclass
class Contribution:
    hour: str  # "YYYYMMDDHH", UTC
    pe: str = "-|-"  # "partner|entry"
    fields: list[tuple[str, int]] = field(default_factory=list)
    session: str | None = None  # "p|e|session" for play-session events (population of the drop-off curve)
    decile: int = 0  # tenths of the entry this event shows the session reached
    # A play_requested of a session: its fields count once per session, those of the session's first
    # play_requested (earliest ``at``), however many nodes emitted one. The reader decides (JSONL report,
    # aggregator); without a session id they count as they come.
    play: bool = False
    at: str = ""  # the event's time, "YYYY-MM-DDTHH:MM:SS.mmmZ" (comparable as strings)
    # A delivered main-rendition segment: its [start, end) media milliseconds. The reader adds to ms|p|e
    # what this window adds to the session's union (mediatime.DeliveredTime), so time delivered twice, by
    # one node or by two, counts once.
    window: tuple[int, int] | None = None


def hour_of(t: Any) -> str:
    if not isinstance(t, str):
        raise Malformed("t is not a string")
    m = TIME.fullmatch(t)
    if m is None:
        raise Malformed(f"t {t[:40]!r} is not YYYY-MM-DDTHH:MM:SS[.mmm]Z")
    return "".join(m.groups())


def _str(event: dict, key: str) -> str | None:
    value = event.get(key)
    if value is not None and not isinstance(value, str):
        raise Malformed(f"{key} is not a string")
    return value


def _num(event: dict, key: str) -> float | None:
    value = event.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        raise Malformed(f"{key} is not a non-negative number")
    return float(value)


def _int(event: dict, key: str) -> int:
    value = event.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Malformed(f"{key} is not a non-negative integer")
    return value


def contribution(event: Any) -> Contribution | None:
    """The counters one event adds; None for kinds the report does not count (milestones, unknown kinds)."""
    if not isinstance(event, dict):
        raise Malformed("not a JSON object")
    kind = event.get("kind")
    if not isinstance(kind, str):
        raise Malformed("no kind")
    hour = hour_of(event.get("t"))
    pe = f"{field_part(_str(event, 'partner'))}|{field_part(_str(event, 'entry'))}"
    c = Contribution(hour, pe)
    session = _str(event, "session")
    if kind == PLAY_REQUESTED:
        country = _str(event, "country") or NO_COUNTRY
        referrer = _str(event, "referrer") or NO_REFERRER
        c.fields += [
            (f"plays|{pe}", 1), (f"country|{pe}|{field_part(country)}", 1), (f"ref|{pe}|{field_part(referrer)}", 1),
            (f"ua|{pe}|{field_part(_str(event, 'ua') or 'other')}", 1),
        ]
        c.session = f"{pe}|{field_part(session)}"
        c.play = True
        c.at = comparable_time(event["t"])
    elif kind == SEGMENT_SERVED:
        nbytes = _int(event, "bytes")
        status = _int(event, "status")
        start, duration, total = _num(event, "media_start"), _num(event, "media_duration"), _num(event, "entry_duration")
        audio = event.get("audio")
        if nbytes:
            c.fields.append((f"bytes|{pe}|{field_part(_str(event, 'flavor'))}", nbytes))
        if segment_delivered(event, status) and start is not None and duration is not None:
            if audio is None:
                if "media_new" in event:
                    c.window = (media_ms(start), media_ms(start + duration))
                else:  # written before media_new: each delivered segment counts its own duration, as it did
                    c.fields.append((f"ms|{pe}", media_ms(duration)))
            c.decile = decile(start + duration, total)
        c.session = f"{pe}|{field_part(session)}"
    elif kind == PROGRESSIVE_RANGE:
        nbytes = _int(event, "bytes")
        start, duration, total = _num(event, "media_start"), _num(event, "media_duration"), _num(event, "entry_duration")
        if nbytes:
            c.fields.append((f"bytes|{pe}|{field_part(_str(event, 'flavor'))}", nbytes))
        if start is not None and duration is not None:
            added = _num(event, "media_new")
            c.fields.append((f"ms|{pe}", media_ms(added if added is not None else duration)))  # older events: the range's own
            c.decile = decile(start + duration, total)
        c.session = f"{pe}|{field_part(session)}"
    elif kind == FLAVOR_SWITCH:
        c.fields.append((f"sw|{pe}", 1))
    elif kind == DENIED:
        c.fields.append((f"denied|{pe}|{field_part(_str(event, 'reason') or 'denied')}", 1))
    elif kind == ERROR:
        status = _int(event, "status")
        c.fields.append((f"error|{pe}|{status}|{field_part(_str(event, 'code') or 'error')}", 1))
    else:
        return None  # reached_*, and kinds added later: not counted, not malformed
    if c.session is not None and session is None:
        # An event without a session id cannot join a session: it counts on its own, as it comes.
        c.session = None
        c.play = False
        if c.window is not None:
            c.fields.append((f"ms|{pe}", c.window[1] - c.window[0]))
            c.window = None
    return c


def comparable_time(t: str) -> str:
    """``t`` in the one format whose string order is time order (``...:SS.mmmZ``)."""
    return t[:-1] + ".000Z" if len(t) == 20 else t


def segment_delivered(event: dict, status: int) -> bool:
    """The whole segment was sent (``delivered``); events written before that field: a 200."""
    delivered = event.get("delivered")
    if delivered is None:
        return status == 200
    if not isinstance(delivered, bool):
        raise Malformed("delivered is not a boolean")
    return delivered


def reach_fields(session: str, top: int) -> list[tuple[str, int]]:
    """``reach|p|e|0..top`` +1 for a session ``p|e|s`` that reached ``top`` tenths."""
    partner, entry, _ = session.split("|", 2)
    return [(f"reach|{partner}|{entry}|{d}", 1) for d in range(top + 1)]
