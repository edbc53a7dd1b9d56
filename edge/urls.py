"""Our URL scheme, parsed and built in one place (a public contract: docs/URLS.md).

    /p/{partner}/e/{entry}/hls/master.m3u8                 MPEG-TS variant set
    /p/{partner}/e/{entry}/hls/{flavor}/index.m3u8         media playlist (video, or the flavor's only audio)
    /p/{partner}/e/{entry}/hls/{flavor}/iframes.m3u8       I-frame playlist
    /p/{partner}/e/{entry}/hls/{flavor}/seg-{n}.ts         segment n (1-based)
    /p/{partner}/e/{entry}/hls/{flavor}/a{k}/index.m3u8    audio track k of the flavor (an EXT-X-MEDIA rendition)
    /p/{partner}/e/{entry}/hls/{flavor}/a{k}/seg-{n}.ts
    /p/{partner}/e/{entry}/cmaf/...                        the same with init.mp4 and seg-{n}.m4s
    /p/{partner}/e/{entry}/mp4/{flavor}.mp4                progressive download

Free previews (docs/ACCESS_CONTROL.md) mark what they clip with ``-p{seconds}``:
``index-p30.m3u8``, ``iframes-p30.m3u8``, ``seg-5-p30.ts`` (the segment cut at the
preview end) and ``{flavor}-p30.mp4``. A marked URL names different bytes than
the unmarked one, so no cache can mix a preview with the full media.

Playlists link with relative URIs, so the builders here return paths
relative to the playlist that contains them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from origin.catalog import valid_id
from packager.media_set import RenditionId

Format = Literal["hls", "cmaf", "mp4"]
Resource = Literal["master", "index", "iframes", "segment", "init", "progressive"]

MAX_SEGMENT_DIGITS = 9  # beyond a 30-year playlist of 1 s segments: treat as not found, not a crash


class BadRequest(Exception):
    code = "bad_request"


class NoSuchResource(Exception):
    code = "not_found"


@dataclass(frozen=True)
class MediaRequest:
    partner: str
    entry: str
    format: Format
    resource: Resource
    rendition: RenditionId | None = None
    number: int | None = None  # segment number
    preview: Fraction | None = None  # seconds, from a -p{seconds} marker


_SEGMENT_EXT = {"hls": "ts", "cmaf": "m4s"}
_ID = r"[^/]+"
_ENTRY = re.compile(rf"/p/(?P<partner>{_ID})/e/(?P<entry>{_ID})/(?P<format>hls|cmaf|mp4)/(?P<rest>.*)")
# [0-9], not \d: \d also matches other scripts' digits ("seg-٢.ts"), a second spelling of every URL
_RENDITION_FILE = re.compile(rf"(?P<flavor>{_ID})/(?:a(?P<audio>[0-9]{{1,2}})/)?(?P<file>[^/]+)")
_PREVIEW = r"(?:-p(?P<preview>[0-9]{1,6}(?:\.[0-9]{1,3})?))?"
_SEGMENT = re.compile(rf"seg-(?P<n>[0-9]+){_PREVIEW}\.(?P<ext>ts|m4s)")
_PLAYLIST = re.compile(rf"(?P<kind>index|iframes){_PREVIEW}\.m3u8")
_PROGRESSIVE = re.compile(rf"(?P<flavor>[^/]+?){_PREVIEW}\.mp4")


def parse_path(path: str) -> MediaRequest:
    """Turn a request path into a MediaRequest; BadRequest for malformed ids, NoSuchResource otherwise."""
    if "\\" in path or "\x00" in path or any(part in (".", "..") for part in path.split("/")):
        raise BadRequest("path traversal is not allowed")
    match = _ENTRY.fullmatch(path)
    if match is None:
        raise NoSuchResource(f"no such resource: {path}")
    partner, entry, fmt, rest = match["partner"], match["entry"], match["format"], match["rest"]
    _check_ids(partner=partner, entry=entry)
    if fmt == "mp4":
        found = _PROGRESSIVE.fullmatch(rest)
        if found is None:
            raise NoSuchResource(f"no such resource: {path}")
        _check_ids(flavor=found["flavor"])
        return MediaRequest(partner, entry, "mp4", "progressive", RenditionId(found["flavor"]), preview=_preview(found))
    if rest == "master.m3u8":
        return MediaRequest(partner, entry, fmt, "master")  # type: ignore[arg-type]
    found = _RENDITION_FILE.fullmatch(rest)
    if found is None:
        raise NoSuchResource(f"no such resource: {path}")
    _check_ids(flavor=found["flavor"])
    audio = int(found["audio"]) if found["audio"] else None
    if audio == 0:
        raise BadRequest("audio track numbers start at 1")
    rendition = RenditionId(found["flavor"], audio)
    name = found["file"]
    playlist = _PLAYLIST.fullmatch(name)
    if playlist is not None and not (playlist["kind"] == "iframes" and audio is not None):
        return MediaRequest(partner, entry, fmt, playlist["kind"], rendition, preview=_preview(playlist))  # type: ignore[arg-type]
    if name == "init.mp4" and fmt == "cmaf":
        return MediaRequest(partner, entry, fmt, "init", rendition)
    number, preview = _segment_name(name, fmt)
    return MediaRequest(partner, entry, fmt, "segment", rendition, number, preview)  # type: ignore[arg-type]


def _segment_name(name: str, fmt: str) -> tuple[int, Fraction | None]:
    if name.startswith("seg-"):
        match = _SEGMENT.fullmatch(name)
        if match is None or match["ext"] != _SEGMENT_EXT[fmt]:
            raise BadRequest(f"malformed segment name {name!r}: expected seg-<n>.{_SEGMENT_EXT[fmt]} with n >= 1")
        digits = match["n"].lstrip("0")
        if not digits:
            raise BadRequest("segment numbers start at 1")
        if len(digits) > MAX_SEGMENT_DIGITS:
            raise NoSuchResource(f"segment {match['n'][:12]}... does not exist")
        return int(digits), _preview(match)
    raise NoSuchResource(f"no such resource: {name}")


def _preview(match: re.Match[str]) -> Fraction | None:
    value = match["preview"]
    if value is None:
        return None
    seconds = Fraction(value)
    if seconds <= 0:
        raise BadRequest("a preview marker needs a positive number of seconds")
    return seconds


def _check_ids(**ids: str) -> None:
    for kind, value in ids.items():
        if not valid_id(value):
            shown = value[:40].encode("ascii", "backslashreplace").decode()
            raise BadRequest(f"malformed {kind} id {shown!r}: use letters, digits, '-' and '_' (max 64)")


# --- builders -------------------------------------------------------------


def entry_path(partner: str, entry: str, fmt: Format) -> str:
    return f"/p/{partner}/e/{entry}/{fmt}"


def master_path(partner: str, entry: str, fmt: Format) -> str:
    return f"{entry_path(partner, entry, fmt)}/master.m3u8"


def progressive_path(partner: str, entry: str, flavor: str, preview: Fraction | None = None) -> str:
    return f"{entry_path(partner, entry, 'mp4')}/{flavor}{preview_marker(preview)}.mp4"


def preview_marker(preview: Fraction | None) -> str:
    """``-p30`` / ``-p12.5``: the one spelling of a preview length in URLs."""
    if preview is None:
        return ""
    whole, rest = divmod(preview * 1000, 1000)
    millis = int(rest)
    return f"-p{int(whole)}" if millis == 0 else f"-p{int(whole)}.{millis:03d}".rstrip("0")


def clip_marker(end: Fraction | None) -> Fraction | None:
    """The marker that names a clip ending at ``end`` (E): E rounded *up* to the millisecond.

    Markers have millisecond precision and E (a frame boundary) usually has
    not. Rounding up keeps the clip: E <= marker <= N for every preview N of at
    least E that is itself a whole number of milliseconds (config/partners.py
    insists on that), and clipping at any such length ends at E again. So every
    URL a preview's playlists list names exactly the clip, and different N with
    one E share one set of URLs.
    """
    if end is None:
        return None
    return Fraction(math.ceil(end * 1000), 1000)


def rendition_dir(rid: RenditionId) -> str:
    """Relative to the master playlist."""
    return f"{rid.flavor}/a{rid.audio}" if rid.audio else rid.flavor


def playlist_name(kind: Literal["index", "iframes"], preview: Fraction | None = None) -> str:
    return f"{kind}{preview_marker(preview)}.m3u8"


def media_playlist_uri(rid: RenditionId, preview: Fraction | None = None) -> str:
    return f"{rendition_dir(rid)}/{playlist_name('index', preview)}"


def iframes_playlist_uri(rid: RenditionId, preview: Fraction | None = None) -> str:
    return f"{rendition_dir(rid)}/{playlist_name('iframes', preview)}"


def segment_uri(fmt: Format, number: int, preview: Fraction | None = None) -> str:
    """Relative to the rendition's media playlist; ``preview`` only for a segment the preview cuts."""
    return f"seg-{number}{preview_marker(preview)}.{_SEGMENT_EXT[fmt]}"


INIT_URI = "init.mp4"


def canonical_path(req: MediaRequest) -> str:
    """The one spelling of a request's path (``seg-01.ts`` -> ``seg-1.ts``): cache keys and ETags use it."""
    base = entry_path(req.partner, req.entry, req.format)
    if req.resource == "progressive":
        return progressive_path(req.partner, req.entry, req.rendition.flavor, req.preview)
    if req.resource == "master":
        return f"{base}/master.m3u8"
    folder = f"{base}/{rendition_dir(req.rendition)}"
    if req.resource in ("index", "iframes"):
        return f"{folder}/{playlist_name(req.resource, req.preview)}"  # type: ignore[arg-type]
    if req.resource == "init":
        return f"{folder}/{INIT_URI}"
    return f"{folder}/{segment_uri(req.format, req.number, req.preview)}"


def cache_prefix(partner: str, entry: str | None = None) -> str:
    """Cache keys start with this, so a purge by partner or entry is a prefix match."""
    return f"/p/{partner}/" if entry is None else f"/p/{partner}/e/{entry}/"
