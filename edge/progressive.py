"""Progressive MP4 with single byte ranges, streamed in chunks; clipped to the preview when that is all a viewer may play.

A preview viewer asking for ``{flavor}.mp4`` is redirected to ``{flavor}-p{N}.mp4``,
a different URL (and ETag) holding a valid MP4 of just the first N seconds,
built as a virtual file (rewritten moov + source sample ranges): no byte past
N exists in it, whatever range is asked for.
"""

from __future__ import annotations

from typing import AsyncIterator

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from origin.media import MediaService
from origin.storage import STREAM_CHUNK, Storage
from packager.media import ByteRange
from packager.mp4.writer import VirtualFile

from . import urls
from .cdn import CdnPolicy
from .http import http_date, is_not_modified, requested_range, strong_etag
from .urls import MediaRequest
from .viewer import Grant


async def serve_progressive(request: Request, req: MediaRequest, media: MediaService, cdn: CdnPolicy, grant: Grant) -> Response:
    entry = await media.catalog.entry(req.partner, req.entry)
    flavor = entry.flavor(req.rendition.flavor)
    stat = await media.stat(flavor)
    await media.index(flavor, stat)  # only playable files are served: a corrupt one gets its error
    if grant.preview is not None and req.preview is None:
        target = urls.progressive_path(req.partner, req.entry, flavor.id, grant.preview)
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(target + query, status_code=302, headers={"Cache-Control": "no-store"})
    clipped = await media.clipped_file(flavor, stat, req.preview) if req.preview is not None else None
    size = clipped.size if clipped is not None else stat.size
    etag = strong_etag(stat.version, flavor.key, str(clipped.end) if clipped is not None else "full")
    last_modified = http_date(stat.mtime_ns)
    headers = {"ETag": etag, "Last-Modified": last_modified, "Accept-Ranges": "bytes", **cdn.media_headers(req.partner, req.entry)}
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
