"""Progressive MP4 with single byte ranges, streamed in chunks; clipped to the preview when that is all a viewer may play.

A preview viewer asking for ``{flavor}.mp4`` is redirected to ``{flavor}-p{M}.mp4``
(M: the clip end E rounded up to the millisecond, edge/urls.clip_marker), a
different URL (and ETag) holding a valid MP4 of just the first E seconds,
built as a virtual file (rewritten moov + source sample ranges): no byte past
E exists in it, whatever range is asked for. A preview that reaches the end of
the file is no clip: the file itself is served, under its own ETag. A viewer
whose flavor limits exclude the file gets 403 ``flavor_not_allowed``, as for
its HLS segments.

A partner that encrypts its HLS (``encryption != "none"``, docs/CONTENT_PROTECTION.md) gets 403
``progressive_clear`` for every progressive file, clips included: the file is the clear media, so serving
it would undo the encryption for anyone with a token. ``clear_progressive = true`` on the partner serves it
anyway. Origins check it here; edges check it in edge/proxy.py with the same function (and an edge whose
config lacks the partner's ``encryption`` relays the origin's 403).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from auth.rules import FLAVOR_NOT_ALLOWED
from origin.media import MediaService
from origin.storage import STREAM_CHUNK, Storage
from packager.media import ByteRange
from packager.mp4.writer import VirtualFile

from . import urls
from .cdn import CdnPolicy
from .http import http_date, is_not_modified, requested_range, strong_etag
from .urls import MediaRequest
from .viewer import Denied, Grant

if TYPE_CHECKING:
    from config.partners import Partner

PROGRESSIVE_CLEAR = "progressive_clear"


def check_progressive(partner: "Partner | None", entry: str) -> None:
    """403 ``progressive_clear`` when ``partner`` encrypts the entry's HLS (its own setting, or the entry's
    profile's) and has not set ``clear_progressive = true``."""
    if partner is None or partner.clear_progressive:
        return
    protection = partner.protection_for(entry)
    if not protection.encrypts:
        return
    raise Denied(403, PROGRESSIVE_CLEAR,
                 f"partner {partner.id} encrypts this entry's HLS ({protection.method}); progressive MP4 would be the "
                 "clear file, so it is not served (set clear_progressive = true on the partner to serve it anyway)")


async def serve_progressive(request: Request, req: MediaRequest, media: MediaService, cdn: CdnPolicy, grant: Grant,
                            restricted: bool = False) -> Response:
    access = getattr(request.app.state, "access", None)  # the node's AccessControl (edge/app.py create_app)
    if access is not None:
        check_progressive(access.partner(req.partner), req.entry)  # before any media I/O, 304 included
    entry = await media.catalog.entry(req.partner, req.entry)
    flavor = entry.flavor(req.rendition.flavor)
    stat = await media.stat(flavor)
    index = await media.index(flavor, stat)  # only playable files are served: a corrupt one gets its error
    video = index.video
    if video is not None and not grant.allows_flavor(video.video.height if video.video else None, video.bitrate):
        raise Denied(403, FLAVOR_NOT_ALLOWED, f"flavor {flavor.id} is above this viewer's quality limit")
    preview = req.preview if req.preview is not None else grant.preview
    if req.clip is not None:  # a clip by URL: always a virtual file; E (entry seconds) only where a preview cut it
        clipped, cut_at = await media.clip_file(flavor, stat, req.clip.first, req.clip.last, preview)
        variant = f"{req.clip.name};{cut_at}"
    else:  # the variant: a clip ending at E, or the file itself when the preview reaches its end
        clipped = await media.clipped_file(flavor, stat, preview) if preview is not None else None
        cut_at = clipped.end if clipped is not None else None
        variant = str(clipped.end) if clipped is not None else "full"
    if cut_at is not None and req.preview is None:
        target = urls.with_clip(urls.progressive_path(req.partner, req.entry, flavor.id, urls.clip_marker(cut_at)), req.clip)
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(target + query, status_code=302, headers={"Cache-Control": "no-store"})
    size = clipped.size if clipped is not None else stat.size
    etag = strong_etag(stat.version, flavor.key, variant)
    last_modified = http_date(stat.mtime_ns)
    headers = {"ETag": etag, "Last-Modified": last_modified, "Accept-Ranges": "bytes", **cdn.media_headers(req.partner, req.entry, restricted)}
    if req.preview is not None:  # the one spelling of these bytes (edges and CDNs may key on it)
        named = urls.with_clip(urls.progressive_path(req.partner, req.entry, flavor.id, urls.clip_marker(cut_at)), req.clip)
        if named != urls.canonical_path(req):
            headers["Content-Location"] = named
    if is_not_modified(request.headers, etag, last_modified):
        return Response(status_code=304, headers=headers)
    start, length, status = 0, size, 200
    span = requested_range(request.headers, size, etag, last_modified)
    if span is not None:
        start, length, status = span.start, span.length, 206
        headers["Content-Range"] = span.content_range(size)
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(b"", status_code=status, media_type="video/mp4", headers=headers)
    if clipped is None:
        body = media.storage.stream(flavor.key, start, length)
    else:
        body = _stream_virtual(media.storage, flavor.key, clipped, start, length)
    return StreamingResponse(body, status_code=status, media_type="video/mp4", headers=headers)


async def _stream_virtual(storage: Storage, key: str, file: VirtualFile, start: int, length: int) -> AsyncIterator[bytes]:
    """Bytes [start, start+length) of a virtual file: literal parts as they are, source ranges read in chunks."""
    for part in file.slice(start, start + length):
        if isinstance(part, bytes):
            yield part
            continue
        for at in range(part.offset, part.offset + part.size, STREAM_CHUNK):
            size = min(STREAM_CHUNK, part.offset + part.size - at)
            (chunk,) = await storage.read(key, [ByteRange(at, size)])
            yield chunk
