"""Small pure classifiers for event fields: user-agent family, referrer domain, safe ids.

All of them are total (never raise) and cheap; the user-agent and referrer
answers are memoised because a few strings make up almost all traffic.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from urllib.parse import urlsplit

UA_FAMILIES = (
    "chrome", "safari", "firefox", "edge", "ffmpeg", "curl", "exoplayer", "applecoremedia", "other",
)


@lru_cache(maxsize=4096)
def ua_family(user_agent: str | None) -> str:
    """The client family of a User-Agent header, one of :data:`UA_FAMILIES`.

    Players first (they are what a video service wants to see), then browsers
    in the order that resolves their overlapping tokens: Edge and Opera say
    "Chrome", Chrome says "Safari", only Safari says "Version/... Safari".

    hls.js, Shaka, video.js and other MSE players run inside a browser and
    send the browser's User-Agent: they are counted as that browser. The
    header cannot tell them apart from a page that plays natively.
    """
    if not user_agent:
        return "other"
    ua = user_agent[:512]
    if "Lavf/" in ua or ua.startswith("Lavf") or "FFmpeg" in ua:
        return "ffmpeg"
    if ua.startswith("curl/"):
        return "curl"
    if "ExoPlayer" in ua:  # "ExoPlayerLib/2.19.1", "<app>/1.0 (Linux; Android 13) ExoPlayerLib/..."
        return "exoplayer"
    if "AppleCoreMedia" in ua:  # iOS/tvOS/macOS native HLS (AVPlayer, Safari's media stack)
        return "applecoremedia"
    if "Edg/" in ua or "EdgA/" in ua or "EdgiOS/" in ua or "Edge/" in ua:
        return "edge"
    if "OPR/" in ua or "Opera" in ua or "SamsungBrowser/" in ua or "YaBrowser/" in ua:
        return "other"  # Chromium-based, but not Chrome: do not inflate Chrome's share
    if "Firefox/" in ua or "FxiOS/" in ua:
        return "firefox"
    if "Chrome/" in ua or "CriOS/" in ua or "Chromium/" in ua:
        return "chrome"
    if "Safari/" in ua and "Version/" in ua:
        return "safari"
    return "other"


_HOST = re.compile(r"[a-z0-9.-]{1,253}")


@lru_cache(maxsize=4096)
def referrer_domain(referer: str | None) -> str | None:
    """The host of a Referer header, lower case, without port, user info, path or query.

    ``None`` when there is no header or it is not an absolute http(s) URL with
    a plausible host: the path and query may carry tokens and are never kept.
    """
    if not referer:
        return None
    try:
        parts = urlsplit(referer.strip()[:2048])
        if parts.scheme not in ("http", "https"):
            return None
        host = parts.hostname  # lower case, no port, no user info, IPv6 brackets removed
    except ValueError:
        return None
    if not host or not _HOST.fullmatch(host):
        return None
    return host


_SAFE_ID = re.compile(r"[A-Za-z0-9._~:-]{1,64}")


def safe_session_id(raw: str | None) -> str | None:
    """A session id fit for event fields and Redis hash fields.

    An id of 1-64 ``A-Z a-z 0-9 . _ ~ : -`` characters is kept as is; any other
    non-empty value (too long, separators, non-ASCII) becomes a stable digest,
    so it still groups the session's events without carrying odd bytes.
    """
    if not raw:
        return None
    if _SAFE_ID.fullmatch(raw):
        return raw
    return "x" + hashlib.blake2b(raw.encode("utf-8", "replace"), digest_size=8).hexdigest()


def field_part(value: object) -> str:
    """One component of a ``|``-separated aggregate key: never contains ``|``; ``-`` for none."""
    if value is None or value == "":
        return "-"
    return str(value).replace("|", "_")[:256]
