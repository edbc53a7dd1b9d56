"""What this viewer may have: the access decision turned into a Grant, or a Denied.

One call per media request, before any media work. The decision itself is
auth/'s pure function; this module only gathers the request facts and
states the result in the terms the routes use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from starlette.requests import Request

from auth.access import AccessCheck, AccessControl
from auth.rules import PREVIEW_ONLY, FlavorLimits

# An edge that has checked a viewer itself (and found a full grant) says so to its origin with this
# header; the origin believes it only on requests that carry the origin-shield secret.
EDGE_CHECKED_HEADER = "X-Vodgate-Edge-Checked"
EDGE_CHECKED_SCOPE_KEY = "vodgate.edge_checked"

# Forwarded into every URI of a playlist so players keep sending it; only a safe alphabet.
SESSION_PARAMETER = "playSessionId"
_SESSION_VALUE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class Denied(Exception):
    """403 with a reason code (access control) or another status the decision names."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Grant:
    preview: Fraction | None = None  # seconds the viewer may play; None = all
    limits: FlavorLimits | None = None
    query: str = ""  # per-viewer parameters to carry into playlist URIs ("token=...&playSessionId=...")
    personal: bool = False  # the answer depends on who asks: shared caches must not keep playlists

    def allows_flavor(self, height: int | None, bitrate: int | None) -> bool:
        return self.limits is None or self.limits.allows(height, bitrate)


@dataclass(frozen=True)
class Variant:
    """What a grant selects of an entry, in media terms: equal variants are equal bytes.

    A grant says "the first N seconds" and "flavors up to 270p"; the media turns
    that into the clip end E (None when N reaches the end: the full media) and
    the flavors a master playlist shows. Every cache key, ETag and URL marker is
    built from this, never from N or from how the URL spelled it, so viewers
    with the same variant share answers and viewers with different ones never do.
    """

    end: Fraction | None = None  # preview clip end E in seconds; None = not clipped
    flavors: frozenset[str] | None = None  # flavors shown (master playlists); None = not relevant

    @property
    def tag(self) -> str:
        """A stable text form for cache keys and ETags."""
        parts = [] if self.end is None else [f"end={self.end.numerator}/{self.end.denominator}"]
        if self.flavors is not None:
            parts.append("flavors=" + ",".join(sorted(self.flavors)))
        return ";".join(parts) or "full"


def grant_for(request: Request, path: str, partner: str, entry: str, access: AccessControl, now: datetime) -> tuple[Grant, AccessCheck | None]:
    """The viewer's grant; (full grant, None) for a request an edge already checked (see EDGE_CHECKED_HEADER)."""
    if request.scope.get("state", {}).get(EDGE_CHECKED_SCOPE_KEY):
        return Grant(), None
    headers = request.headers
    check = access.check(
        partner,
        entry,
        path,
        peer=request.client.host if request.client else None,
        forwarded_for=",".join(headers.getlist("x-forwarded-for")) or None,
        referer=headers.get("referer"),
        origin=headers.get("origin"),
        user_agent=headers.get("user-agent"),
        query=request.query_params,
        cookies=request.cookies,
        now=now,
    )
    decision = check.decision
    if not decision.allowed:
        raise Denied(decision.status, decision.reason, decision.detail)
    limits = decision.limits if decision.limits is not None and decision.limits.limited else None
    query = "&".join(part for part in (check.propagate, _session_query(request)) if part)
    personal = bool(query) or decision.preview_seconds is not None or limits is not None or access.restricts(partner)
    return Grant(decision.preview_seconds, limits, query, personal), check


def check_preview_marker(req_preview: Fraction | None, grant: Grant) -> None:
    """A -p{N} URL may ask for less than the grant, never more."""
    if req_preview is not None and grant.preview is not None and req_preview > grant.preview:
        raise Denied(403, PREVIEW_ONLY, f"this viewer may play the first {float(grant.preview):g} s only")


def _session_query(request: Request) -> str | None:
    value = request.query_params.get(SESSION_PARAMETER)
    if value is None or not _SESSION_VALUE.fullmatch(value):
        return None
    return f"{SESSION_PARAMETER}={value}"
