"""What a media request turned out to be, for observers (play events, metrics).

Routes fill a :class:`MediaInfo` in the ASGI scope as they learn things; pure
ASGI middleware reads it after the response is sent. Routes never call
analytics or metrics code themselves, so observing can never slow or fail a
response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, MutableMapping

if TYPE_CHECKING:
    from .urls import MediaRequest

SCOPE_KEY = "vodgate.media"


@dataclass
class MediaInfo:
    partner: str
    entry: str
    format: str  # hls, cmaf, mp4
    resource: str  # master, index, iframes, segment, init, progressive
    flavor: str | None = None
    audio: int | None = None  # audio track number for audio renditions
    segment: int | None = None
    media_start: float | None = None  # seconds of presentation time this response covers
    media_duration: float | None = None
    entry_duration: float | None = None
    cache: str | None = None  # HIT, MISS, COALESCED, STALE
    denied: str | None = None  # access-control reason code
    error: str | None = None  # error code of a failed request
    session_id: str | None = None  # from a token, when it carries one
    client_ip: str | None = None  # as resolved by the trusted-proxy rule
    country: str | None = None
    package_seconds: float | None = None  # time spent muxing this segment (a cache miss)


def info_for(req: "MediaRequest") -> MediaInfo:
    """What the URL alone tells about a request."""
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


def attach(scope: MutableMapping[str, Any], info: MediaInfo) -> MediaInfo:
    scope.setdefault("state", {})[SCOPE_KEY] = info
    return info


def media_info(scope: MutableMapping[str, Any]) -> MediaInfo | None:
    return scope.get("state", {}).get(SCOPE_KEY)
