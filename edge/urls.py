"""Our URL scheme, parsed and built in one place (a public contract: docs/URLS.md).

    /p/{partner}/e/{entry}/hls/master.m3u8                 MPEG-TS variant set
    /p/{partner}/e/{entry}/hls/{flavor}/index.m3u8         media playlist (video, or the flavor's only audio)
    /p/{partner}/e/{entry}/hls/{flavor}/iframes.m3u8       I-frame playlist
    /p/{partner}/e/{entry}/hls/{flavor}/seg-{n}.ts         segment n (1-based)
    /p/{partner}/e/{entry}/hls/{flavor}/a{k}/index.m3u8    audio track k of the flavor (an EXT-X-MEDIA rendition)
    /p/{partner}/e/{entry}/hls/{flavor}/a{k}/seg-{n}.ts
    /p/{partner}/e/{entry}/cmaf/...                        the same with init.mp4 and seg-{n}.m4s
    /p/{partner}/e/{entry}/mp4/{flavor}.mp4                progressive download
    /p/{partner}/e/{entry}/dash/manifest.mpd               DASH MPD over the /cmaf/ init and segments
    /p/{partner}/e/{entry}/keys/{kid}.key                  content key (docs/CONTENT_PROTECTION.md)
    /p/{partner}/e/{entry}/clip-{from}-{to}/keys/{kid}.key  a clip's own content key

Free previews (docs/ACCESS_CONTROL.md) mark what they clip with ``-p{seconds}``:
``index-p30.m3u8``, ``iframes-p30.m3u8``, ``seg-5-p30.ts`` (the segment cut at the
preview end) and ``{flavor}-p30.mp4``. A marked URL names different bytes than
the unmarked one, so no cache can mix a preview with the full media.

Clips by URL put a folder in front of the format: ``/p/{partner}/e/{entry}/clip-10-20.5/hls/...``
(seconds, spelled as markers are; packager/clip.py): every relative URI stays inside the clip.
A ``-p{M}`` marker inside a clip's folder is still in entry seconds.

Playlists link with relative URIs, so the builders here return paths
relative to the playlist that contains them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Literal

from auth.tokens import TokenError, clip_claim
from origin.catalog import valid_id
from packager.media_set import RenditionId

Format = Literal["hls", "cmaf", "mp4", "dash", "thumb", "keys"]
Resource = Literal["master", "index", "iframes", "segment", "init", "progressive", "key", "mpd", "thumbnail", "sprite", "thumbs",
                   "subs_index", "subs_segment", "subs_file"]

MAX_SEGMENT_DIGITS = 9  # beyond a 30-year playlist of 1 s segments: treat as not found, not a crash


class BadRequest(Exception):
    code = "bad_request"


class NoSuchResource(Exception):
    code = "not_found"


@dataclass(frozen=True)
class Clip:
    """A clip by URL: entry seconds [first, last), each a whole number of milliseconds, first < last."""

    first: Fraction
    last: Fraction

    def within(self, other: Clip) -> bool:
        return other.first <= self.first and self.last <= other.last

    @property
    def name(self) -> str:
        """``clip-10-20.5``: the one spelling of a clip in paths (and in the token claim, without ``clip-``)."""
        return f"clip-{seconds_text(self.first)}-{seconds_text(self.last)}"


@dataclass(frozen=True)
class MediaRequest:
    partner: str
    entry: str
    format: Format
    resource: Resource
    rendition: RenditionId | None = None
    number: int | None = None  # segment number
    preview: Fraction | None = None  # seconds, from a -p{seconds} marker
    clip: Clip | None = None  # from a clip-{from}-{to} folder
    kid: str | None = None  # key id of a content key request (format "keys")
    keying: str | None = None  # an encrypted segment's -k marker: which encryption its bytes are under
    width: int | None = None  # a thumbnail's width in pixels (None: the flavor's own)
    subtitle: str | None = None  # a subtitle track's id (origin/catalog.SubtitleFile.track)


_SEGMENT_EXT = {"hls": "ts", "cmaf": "m4s"}
_ID = r"[^/]+"
_ENTRY = re.compile(rf"/p/(?P<partner>{_ID})/e/(?P<entry>{_ID})/(?:(?P<clip>clip-[^/]*)/)?(?P<format>hls|cmaf|mp4|dash|thumb)/(?P<rest>.*)")
# [0-9], not \d: \d also matches other scripts' digits ("seg-٢.ts"), a second spelling of every URL
_RENDITION_FILE = re.compile(rf"(?P<flavor>{_ID})/(?:a(?P<audio>[0-9]{{1,2}})/)?(?P<file>[^/]+)")
_PREVIEW = r"(?:-p(?P<preview>[0-9]{1,6}(?:\.[0-9]{1,3})?))?"
_KEYING = r"(?:-k(?P<keying>[0-9a-f]{8}))?"  # an encrypted partner's protection marker (protection_marker)
_SEGMENT = re.compile(rf"seg-(?P<n>[0-9]+){_PREVIEW}{_KEYING}\.(?P<ext>ts|m4s)")
_INIT = re.compile(rf"init{_KEYING}\.mp4")
# thumb/<flavor>/<ms>.jpg: milliseconds as written (no leading zeros: one spelling), at most 9 digits (27 h)
_THUMBNAIL = re.compile(r"(?P<flavor>[^/]+)/(?P<ms>0|[1-9][0-9]{0,8})(?:-w(?P<width>[1-9][0-9]{1,3}))?\.jpg")
MIN_THUMBNAIL_WIDTH, MAX_THUMBNAIL_WIDTH = 16, 3840
# subtitle tracks live beside the flavors under a folder no flavor id can name (ids never start with "_")
SUBS_DIR = "_subs"
_SUBS = re.compile(rf"{SUBS_DIR}/(?P<track>[A-Za-z0-9_-]{{2,40}})/(?P<file>[^/]+)")
_SUBS_SEGMENT = re.compile(rf"seg-(?P<n>[0-9]+){_PREVIEW}\.vtt")
_SUBS_FILE = re.compile(rf"all{_PREVIEW}\.vtt")  # the whole track in one file (DASH MPDs name it)
SPRITE_FILES = {"sprite.jpg": "sprite", "thumbs.vtt": "thumbs"}  # a scrubbing sprite sheet and its WebVTT track
_SPRITE = re.compile(r"(?P<flavor>[^/]+)/(?P<file>sprite\.jpg|thumbs\.vtt)")
_PLAYLIST = re.compile(rf"(?P<kind>index|iframes){_PREVIEW}\.m3u8")
_PROGRESSIVE = re.compile(rf"(?P<flavor>[^/]+?){_PREVIEW}\.mp4")
_KEY = re.compile(rf"/p/(?P<partner>{_ID})/e/(?P<entry>{_ID})/(?:(?P<clip>clip-[^/]*)/)?keys/(?P<kid>[^/]*)")
_KID = re.compile(r"(?P<kid>[0-9a-f]{16})\.key")  # auth/content_keys.KID_BYTES as lower-case hex


def parse_path(path: str) -> MediaRequest:
    """Turn a request path into a MediaRequest; BadRequest for malformed ids, NoSuchResource otherwise."""
    if "\\" in path or "\x00" in path or any(part in (".", "..") for part in path.split("/")):
        raise BadRequest("path traversal is not allowed")
    match = _ENTRY.fullmatch(path)
    if match is None:
        key = _KEY.fullmatch(path)
        if key is not None:
            return _key_request(key)
        raise NoSuchResource(f"no such resource: {path}")
    partner, entry, fmt, rest = match["partner"], match["entry"], match["format"], match["rest"]
    _check_ids(partner=partner, entry=entry)
    if match["clip"] is not None:
        return replace(_parse_media(partner, entry, fmt, rest, path), clip=parse_clip(match["clip"].removeprefix("clip-")))
    return _parse_media(partner, entry, fmt, rest, path)


def parse_clip(text: str) -> Clip:
    """``10-20.5`` (seconds, at most 3 decimals) -> Clip; BadRequest naming what is wrong (URLs and `token sign --clip`)."""
    try:
        first, last = clip_claim(text)
    except TokenError as exc:
        shown = text[:40].encode("ascii", "backslashreplace").decode()
        raise BadRequest(f"malformed clip {shown!r}: {exc}; in URLs clip-<from>-<to>, e.g. clip-10-20.5") from None
    return Clip(first, last)


def _parse_media(partner: str, entry: str, fmt: str, rest: str, path: str) -> MediaRequest:
    if fmt == "thumb":
        return _thumbnail_request(partner, entry, rest, path)
    if fmt == "dash":  # one MPD; its media are the /cmaf/ files (packager/dash)
        if rest != MPD_NAME:
            raise NoSuchResource(f"no such resource: {path} (DASH has {MPD_NAME} only; its segments are under /cmaf/)")
        return MediaRequest(partner, entry, "dash", "mpd")
    if fmt == "mp4":
        found = _PROGRESSIVE.fullmatch(rest)
        if found is None:
            raise NoSuchResource(f"no such resource: {path}")
        _check_ids(flavor=found["flavor"])
        return MediaRequest(partner, entry, "mp4", "progressive", RenditionId(found["flavor"]), preview=_preview(found))
    if rest == "master.m3u8":
        return MediaRequest(partner, entry, fmt, "master")  # type: ignore[arg-type]
    subs = _SUBS.fullmatch(rest)
    if subs is not None:
        return _subtitle_request(partner, entry, fmt, subs, path)
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
    init = _INIT.fullmatch(name) if fmt == "cmaf" else None
    if init is not None:
        return MediaRequest(partner, entry, fmt, "init", rendition, keying=init["keying"])
    number, preview, keying = _segment_name(name, fmt)
    return MediaRequest(partner, entry, fmt, "segment", rendition, number, preview, keying=keying)  # type: ignore[arg-type]


def _subtitle_request(partner: str, entry: str, fmt: str, found: re.Match[str], path: str) -> MediaRequest:
    track, name = found["track"], found["file"]
    playlist = _PLAYLIST.fullmatch(name)
    if playlist is not None and playlist["kind"] == "index":
        return MediaRequest(partner, entry, fmt, "subs_index", preview=_preview(playlist), subtitle=track)  # type: ignore[arg-type]
    whole = _SUBS_FILE.fullmatch(name)
    if whole is not None:
        return MediaRequest(partner, entry, fmt, "subs_file", preview=_preview(whole), subtitle=track)  # type: ignore[arg-type]
    segment = _SUBS_SEGMENT.fullmatch(name)
    if segment is None:
        raise NoSuchResource(f"no such resource: {path} (a subtitle track has index.m3u8 and seg-<n>.vtt)")
    digits = segment["n"].lstrip("0")
    if not digits or len(digits) > MAX_SEGMENT_DIGITS or digits != segment["n"]:
        raise NoSuchResource(f"no such subtitle segment: {name}")
    return MediaRequest(partner, entry, fmt, "subs_segment", number=int(digits), preview=_preview(segment), subtitle=track)  # type: ignore[arg-type]


def subtitles_dir(track: str) -> str:
    return f"{SUBS_DIR}/{track}"


def subtitle_file_name(preview: Fraction | None = None) -> str:
    return f"all{preview_marker(preview)}.vtt"


def _thumbnail_request(partner: str, entry: str, rest: str, path: str) -> MediaRequest:
    sheet = _SPRITE.fullmatch(rest)
    if sheet is not None:
        _check_ids(flavor=sheet["flavor"])
        return MediaRequest(partner, entry, "thumb", SPRITE_FILES[sheet["file"]], RenditionId(sheet["flavor"]))  # type: ignore[arg-type]
    found = _THUMBNAIL.fullmatch(rest)
    if found is None:
        raise NoSuchResource(f"no such resource: {path} (thumbnails are thumb/<flavor>/<ms>.jpg or <ms>-w<width>.jpg)")
    _check_ids(flavor=found["flavor"])
    width = int(found["width"]) if found["width"] else None
    if width is not None and not MIN_THUMBNAIL_WIDTH <= width <= MAX_THUMBNAIL_WIDTH:
        raise BadRequest(f"thumbnail width {width} outside {MIN_THUMBNAIL_WIDTH}-{MAX_THUMBNAIL_WIDTH} pixels")
    return MediaRequest(partner, entry, "thumb", "thumbnail", RenditionId(found["flavor"]), number=int(found["ms"]), width=width)


def thumbnail_path(partner: str, entry: str, flavor: str, ms: int, width: int | None = None) -> str:
    return f"{entry_path(partner, entry, 'thumb')}/{flavor}/{ms}{f'-w{width}' if width else ''}.jpg"


def _key_request(match: re.Match[str]) -> MediaRequest:
    _check_ids(partner=match["partner"], entry=match["entry"])
    name = _KID.fullmatch(match["kid"])
    if name is None:
        raise NoSuchResource(f"no such key: {match['kid'][:40]!r}")
    clip = parse_clip(match["clip"].removeprefix("clip-")) if match["clip"] is not None else None
    return MediaRequest(match["partner"], match["entry"], "keys", "key", clip=clip, kid=name["kid"])


def _segment_name(name: str, fmt: str) -> tuple[int, Fraction | None, str | None]:
    if name.startswith("seg-"):
        match = _SEGMENT.fullmatch(name)
        if match is None or match["ext"] != _SEGMENT_EXT[fmt]:
            raise BadRequest(f"malformed segment name {name!r}: expected seg-<n>.{_SEGMENT_EXT[fmt]} with n >= 1")
        digits = match["n"].lstrip("0")
        if not digits:
            raise BadRequest("segment numbers start at 1")
        if len(digits) > MAX_SEGMENT_DIGITS:
            raise NoSuchResource(f"segment {match['n'][:12]}... does not exist")
        return int(digits), _preview(match), match["keying"]
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


def mpd_path(partner: str, entry: str) -> str:
    return f"{entry_path(partner, entry, 'dash')}/{MPD_NAME}"


def progressive_path(partner: str, entry: str, flavor: str, preview: Fraction | None = None) -> str:
    return f"{entry_path(partner, entry, 'mp4')}/{flavor}{preview_marker(preview)}.mp4"


def preview_marker(preview: Fraction | None) -> str:
    """``-p30`` / ``-p12.5``: the one spelling of a preview length in URLs."""
    if preview is None:
        return ""
    return f"-p{seconds_text(preview)}"


def seconds_text(seconds: Fraction) -> str:
    """``30`` / ``12.5``: seconds (whole milliseconds) as markers and clips spell them."""
    whole, rest = divmod(seconds * 1000, 1000)
    millis = int(rest)
    return f"{int(whole)}" if millis == 0 else f"{int(whole)}.{millis:03d}".rstrip("0")


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


def segment_uri(fmt: Format, number: int, preview: Fraction | None = None, keying: str | None = None) -> str:
    """Relative to the rendition's media playlist; ``preview`` only for a segment the preview cuts; ``keying``
    (auth/content_keys.Protection.marker) for an encrypted partner's: the bytes of a segment change with the
    encryption, so its URL does too, and no edge or CDN copy made under other settings is ever named again."""
    return f"seg-{number}{preview_marker(preview)}{'-k' + keying if keying else ''}.{_SEGMENT_EXT[fmt]}"


MPD_NAME = "manifest.mpd"


def init_uri(keying: str | None = None) -> str:
    """An fMP4 rendition's init segment, relative to its media playlist; ``keying`` as for segment_uri (with
    SAMPLE-AES the init declares the encryption and the first key id)."""
    return f"init{'-k' + keying if keying else ''}.mp4"


def key_path(partner: str, entry: str, kid: str) -> str:
    return f"/p/{partner}/e/{entry}/keys/{kid}.key"


def key_uri(rid: RenditionId, kid: str) -> str:
    """A content key's URI relative to a media playlist of rendition ``rid`` (in {fmt}/{flavor}[/a{k}]/): the
    entry's ``keys/``, or inside a clip's folder the clip's own (auth/content_keys.key_scope)."""
    up = "../" * (len(rendition_dir(rid).split("/")) + 1)
    return f"{up}keys/{kid}.key"


def with_clip(path: str, clip: Clip | None) -> str:
    """An entry path (``/p/{partner}/e/{entry}/{fmt}/...``) inside the clip's folder: ``.../e/{entry}/clip-10-20/{fmt}/...``."""
    if clip is None:
        return path
    head = path.split("/", 5)  # "", "p", partner, "e", entry, rest
    return "/".join(head[:5] + [clip.name, head[5]])


def canonical_path(req: MediaRequest) -> str:
    """The one spelling of a request's path (``seg-01.ts`` -> ``seg-1.ts``): cache keys and ETags use it."""
    if req.clip is not None:
        return with_clip(canonical_path(replace(req, clip=None)), req.clip)
    base = entry_path(req.partner, req.entry, req.format)
    if req.resource == "key":
        return key_path(req.partner, req.entry, req.kid)  # type: ignore[arg-type]
    if req.resource == "progressive":
        return progressive_path(req.partner, req.entry, req.rendition.flavor, req.preview)
    if req.resource == "master":
        return f"{base}/master.m3u8"
    if req.resource == "mpd":
        return mpd_path(req.partner, req.entry)
    if req.resource == "subs_index":
        return f"{base}/{subtitles_dir(req.subtitle)}/{playlist_name('index', req.preview)}"  # type: ignore[arg-type]
    if req.resource == "subs_file":
        return f"{base}/{subtitles_dir(req.subtitle)}/{subtitle_file_name(req.preview)}"  # type: ignore[arg-type]
    if req.resource == "subs_segment":
        return f"{base}/{subtitles_dir(req.subtitle)}/seg-{req.number}{preview_marker(req.preview)}.vtt"  # type: ignore[arg-type]
    if req.resource in ("sprite", "thumbs"):
        file = next(name for name, resource in SPRITE_FILES.items() if resource == req.resource)
        return f"{entry_path(req.partner, req.entry, 'thumb')}/{req.rendition.flavor}/{file}"  # type: ignore[union-attr]
    if req.resource == "thumbnail":
        return thumbnail_path(req.partner, req.entry, req.rendition.flavor, req.number, req.width)  # type: ignore[arg-type,union-attr]
    folder = f"{base}/{rendition_dir(req.rendition)}"
    if req.resource in ("index", "iframes"):
        return f"{folder}/{playlist_name(req.resource, req.preview)}"  # type: ignore[arg-type]
    if req.resource == "init":
        return f"{folder}/{init_uri(req.keying)}"
    return f"{folder}/{segment_uri(req.format, req.number, req.preview, req.keying)}"


def cache_prefix(partner: str, entry: str | None = None) -> str:
    """Cache keys start with this, so a purge by partner or entry is a prefix match."""
    return f"/p/{partner}/" if entry is None else f"/p/{partner}/e/{entry}/"
