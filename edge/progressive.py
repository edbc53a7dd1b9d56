"""Progressive MP4: the flavor file itself, with single byte ranges, streamed in chunks."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from origin.media import MediaService

from .cdn import CdnPolicy
from .http import http_date, is_not_modified, requested_range, strong_etag
from .urls import MediaRequest



async def serve_progressive(request: Request, req: MediaRequest, media: MediaService, cdn: CdnPolicy) -> Response:
    entry = await media.catalog.entry(req.partner, req.entry)
    flavor = entry.flavor(req.rendition.flavor)
    stat = await media.stat(flavor)
    await media.index(flavor, stat)  # only playable files are served: a corrupt one gets its error
    etag = strong_etag(stat.version, flavor.key)
    last_modified = http_date(stat.mtime_ns)
    headers = {
        "ETag": etag,
        "Last-Modified": last_modified,
        "Accept-Ranges": "bytes",
        **cdn.media_headers(req.partner, req.entry),
    }
    if is_not_modified(request.headers, etag, last_modified):
        return Response(status_code=304, headers=headers)
    start, length, status = 0, stat.size, 200
    span = requested_range(request.headers, stat.size, etag, last_modified)
    if span is not None:
        start, length, status = span.start, span.length, 206
        headers["Content-Range"] = span.content_range(stat.size)
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(b"", status_code=status, media_type="video/mp4", headers=headers)
    body = media.storage.stream(flavor.key, start, length)
    return StreamingResponse(body, status_code=status, media_type="video/mp4", headers=headers)
