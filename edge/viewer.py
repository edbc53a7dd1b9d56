"""What this viewer may have: the access decision turned into a Grant, or a Denied.

One call per media request, before any media work. The decision itself is
auth/'s pure function; this module only gathers the request facts and
states the result in the terms the routes use.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Sequence

from starlette.requests import Request

from auth.access import AccessCheck, AccessControl, propagation_query
from auth.rules import PREVIEW_ONLY, FlavorLimits
from auth.tokens import extract_token

from .cdn import shield_passes
from .urls import BadRequest, Clip

# An edge that has checked a viewer itself says so to its origin with these headers: the proof is one
# of the [cdn] edge_secrets that only edges and origins hold (never a CDN, which would forward a viewer's
# headers beside its own shield secret), and the grant is what the edge decided ("full" when absent).
EDGE_CHECKED_HEADER = "X-Vodgate-Edge-Checked"
EDGE_GRANT_HEADER = "X-Vodgate-Edge-Grant"

# Forwarded into every URI of a playlist so players keep sending it; only a safe alphabet.
SESSION_PARAMETER = "playSessionId"
_SESSION_VALUE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

log = logging.getLogger("vodgate.edge")

CLIP_NOT_ALLOWED = "clip_not_allowed"  # a clip-pinned token asked for another clip or the whole entry


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
    clip: Clip | None = None  # a token's clip claim: only clip URLs within it

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


class EdgeTrust:
    """The origin's side of vouching: which requests come from an edge that decided the viewer's grant."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = [s.encode() for s in secrets]
        self._warned = False

    def vouched(self, request: Request) -> tuple[Fraction | None, FlavorLimits | None] | None:
        """The edge's (preview, limits) for a request carrying a valid edge secret; None for anyone else."""
        presented = request.headers.get(EDGE_CHECKED_HEADER)
        if presented is None:
            return None
        if not shield_passes(presented.encode("latin-1"), self._secrets):
            if not self._warned:  # a viewer may send it too: say it once, never the value
                self._warned = True
                log.warning("a request carried %s with no valid [cdn] edge_secrets value: decided as an ordinary viewer "
                            "(give edges and origins the same cdn.edge_secrets)", EDGE_CHECKED_HEADER)
            return None
        return parse_edge_grant(request.headers.get(EDGE_GRANT_HEADER, "full"))


def edge_grant_header(grant: Grant) -> str:
    """What an edge tells its origin it granted: ``full``, or ``preview=126/25;max_height=270``."""
    parts = [] if grant.preview is None else [f"preview={grant.preview.numerator}/{grant.preview.denominator}"]
    if grant.limits is not None:
        parts += [f"{name}={value}" for name, value in (("max_height", grant.limits.max_height), ("max_bitrate", grant.limits.max_bitrate)) if value is not None]
    return ";".join(parts) or "full"


def parse_edge_grant(value: str) -> tuple[Fraction | None, FlavorLimits | None]:
    """The inverse of :func:`edge_grant_header`; BadRequest for anything else (only our edges send it)."""
    if value.strip() == "full":
        return None, None
    fields: dict[str, str] = {}
    for part in value.split(";"):
        name, eq, number = part.strip().partition("=")
        if not eq or name not in ("preview", "max_height", "max_bitrate") or name in fields:
            raise BadRequest(f"malformed {EDGE_GRANT_HEADER} header")
        fields[name] = number
    try:
        preview = Fraction(fields["preview"]) if "preview" in fields else None
        height = int(fields["max_height"]) if "max_height" in fields else None
        bitrate = int(fields["max_bitrate"]) if "max_bitrate" in fields else None
    except (ValueError, ZeroDivisionError):
        raise BadRequest(f"malformed {EDGE_GRANT_HEADER} header") from None
    if (preview is not None and preview <= 0) or any(v is not None and v < 1 for v in (height, bitrate)):
        raise BadRequest(f"malformed {EDGE_GRANT_HEADER} header")
    limits = FlavorLimits(height, bitrate) if height is not None or bitrate is not None else None
    return preview, limits


def grant_for(request: Request, path: str, partner: str, entry: str, access: AccessControl, now: datetime,
              trust: EdgeTrust | None = None) -> tuple[Grant, AccessCheck | None]:
    """The viewer's grant, decided here; or, for a request an edge vouches for (``trust``), the edge's grant."""
    vouched = trust.vouched(request) if trust is not None else None
    if vouched is not None:
        preview, limits = vouched
        # the edge forwards only what it would propagate itself (a valid token, a checked session id)
        query = _viewer_query(propagation_query(extract_token(request.query_params, {})), request)
        return Grant(preview, limits, query, _personal(query, preview, limits, access, partner)), None
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
    query = _viewer_query(check.propagate, request)
    claims = check.token.claims if check.token is not None and check.token.valid else None
    pinned = Clip(*claims.clip) if claims is not None and claims.clip is not None else None
    personal = _personal(query, decision.preview_seconds, limits, access, partner) or pinned is not None
    return Grant(decision.preview_seconds, limits, query, personal, pinned), check


def _viewer_query(propagate: str | None, request: Request) -> str:
    """What playlists carry into their URIs for this viewer: the token query, then a checked session id."""
    return "&".join(part for part in (propagate, _session_query(request)) if part)


def _personal(query: str, preview: Fraction | None, limits: FlavorLimits | None, access: AccessControl, partner: str) -> bool:
    return bool(query) or preview is not None or limits is not None or access.restricts(partner)


def check_preview_marker(req_preview: Fraction | None, grant: Grant) -> None:
    """A -p{N} URL may ask for less than the grant, never more."""
    if req_preview is not None and grant.preview is not None and req_preview > grant.preview:
        raise Denied(403, PREVIEW_ONLY, f"this viewer may play the first {float(grant.preview):g} s only")


def check_clip(clip: Clip | None, grant: Grant) -> None:
    """A token pinned to a clip plays clip URLs within it only; a preview viewer's clip must start inside the preview."""
    if grant.clip is not None and (clip is None or not clip.within(grant.clip)):
        asked = "the whole entry" if clip is None else clip.name
        raise Denied(403, CLIP_NOT_ALLOWED, f"this token plays {grant.clip.name} only, not {asked}")
    if clip is not None and grant.preview is not None and clip.first >= grant.preview:
        raise Denied(403, PREVIEW_ONLY, f"this viewer may play the first {float(grant.preview):g} s only; {clip.name} starts after that")


def _session_query(request: Request) -> str | None:
    value = request.query_params.get(SESSION_PARAMETER)
    if value is None or not _SESSION_VALUE.fullmatch(value):
        return None
    return f"{SESSION_PARAMETER}={value}"


_ONLY_A_SESSION = re.compile(rf"{SESSION_PARAMETER}=({_SESSION_VALUE.pattern})".encode())


def only_a_session_query(raw_query: bytes) -> bytes | None:
    """``raw_query`` itself when it is one valid session id and nothing else (``playSessionId=<id>``, whose
    alphabet needs no decoding): then a viewer without a token gets exactly it as :attr:`Grant.query`, as
    :func:`_session_query` would say. None for any other query (the hot lane, edge/hot.py, then declines)."""
    return raw_query if _ONLY_A_SESSION.fullmatch(raw_query) else None
