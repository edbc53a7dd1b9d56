"""Media routes: a parsed URL becomes a packager call and a response, nothing more.

Playlists are rendered once per entry version and cached; segments are muxed
in the thread pool (the packager is synchronous and CPU-bound) so the event
loop keeps serving other viewers meanwhile.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from origin.catalog import valid_id
from origin.media import EntryMedia, MediaService
from packager.formats import FORMATS, SegmentFormat
from packager.hls.build import MasterUris, build_iframes, build_master, build_media
from packager.fmp4 import init_segment
from packager.segmenter import find_segment

from . import urls
from .cache import SegmentCache
from .cdn import CdnPolicy
from .errors import response_for
from .request_info import MediaInfo, attach
from .http import http_date, is_not_modified, requested_range, strong_etag
from .progressive import serve_progressive
from .urls import BadRequest, MediaRequest

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"


class Delivery:
    def __init__(self, media: MediaService, cache: SegmentCache, cdn: CdnPolicy) -> None:
        self.media = media
        self.cache = cache
        self.cdn = cdn

    async def handle(self, request: Request) -> Response:
        info: MediaInfo | None = None
        try:
            req = urls.parse_path(request.url.path)
            info = attach(request.scope, _info_for(req))
            if req.format == "mp4":
                return await serve_progressive(request, req, self.media, self.cdn)
            return await self._hls(request, req, FORMATS[req.format], info)
        except Exception as exc:  # every failure becomes one JSON error; others keep being served
            response = response_for(exc)
            if info is not None:
                info.error = getattr(exc, "code", None) or getattr(getattr(exc, "error", None), "code", "error")
            return response

    async def _hls(self, request: Request, req: MediaRequest, fmt: SegmentFormat, info: MediaInfo) -> Response:
        subset = _flavor_subset(request) if req.resource == "master" else None
        em = await self.media.entry_media(req.partner, req.entry, subset)
        info.entry_duration = float(em.media_set.duration)
        if req.rendition is not None:
            em.entry.flavor(req.rendition.flavor)  # UnknownFlavor (404) for a flavor the entry does not have
            em.check_flavor(req.rendition.flavor)
        version = em.version if req.rendition is None else em.flavor_version(req.rendition.flavor)
        path = urls.canonical_path(req)
        etag = strong_etag(version, path, str(self.media.target), ",".join(sorted(subset or ())))
        last_modified = http_date(em.last_modified_ns)
        headers = {"ETag": etag, "Last-Modified": last_modified, **self.cdn.media_headers(req.partner, req.entry)}
        if is_not_modified(request.headers, etag, last_modified):
            return Response(status_code=304, headers=headers)
        key = f"{path}|{etag}"  # the parsed path, never the raw URL: query strings cannot split the cache
        if req.resource in ("master", "index", "iframes"):
            text, status = await self.cache.get_or_make(key, lambda: run_in_threadpool(_render_playlist, em, req, fmt))
            return Response(text, media_type=PLAYLIST_TYPE, headers={**headers, "X-Cache": status})
        rendition = em.media_set.rendition(req.rendition)
        if req.resource == "init":
            body, status = await self.cache.get_or_make(key, lambda: run_in_threadpool(init_segment, rendition.track))
            return _ranged(request, body, "video/mp4", {**headers, "X-Cache": status})
        segment = find_segment(rendition.segments, req.number)
        info.media_start, info.media_duration = float(segment.start), float(segment.duration)
        if request.method == "HEAD":
            size = fmt.segment_size(rendition.track, segment)
            return Response(b"", media_type=fmt.content_type, headers={**headers, "Accept-Ranges": "bytes", "Content-Length": str(size)})

        async def package() -> bytes:
            batch = await self.media.batch(em.entry, rendition, segment)
            return await run_in_threadpool(fmt.mux, batch)

        body, info.cache = await self.cache.get_or_make(key, package)
        return _ranged(request, body, fmt.content_type, {**headers, "X-Cache": info.cache})


def _ranged(request: Request, body: bytes, media_type: str, headers: dict[str, str]) -> Response:
    """Single byte ranges of a segment: I-frame playlists address segments with EXT-X-BYTERANGE."""
    headers = {**headers, "Accept-Ranges": "bytes"}
    span = requested_range(request.headers, len(body), headers["ETag"], headers["Last-Modified"])
    if span is None:
        return Response(body, media_type=media_type, headers=headers)
    headers["Content-Range"] = span.content_range(len(body))
    return Response(body[span.start : span.end + 1], status_code=206, media_type=media_type, headers=headers)


def _info_for(req: MediaRequest) -> MediaInfo:
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


def _render_playlist(em: EntryMedia, req: MediaRequest, fmt: SegmentFormat) -> bytes:
    return _playlist_text(em, req, fmt).encode()


def _playlist_text(em: EntryMedia, req: MediaRequest, fmt: SegmentFormat) -> str:
    if req.resource == "master":
        return build_master(em.media_set, fmt, MasterUris(urls.media_playlist_uri, urls.iframes_playlist_uri))
    rendition = em.media_set.rendition(req.rendition)
    segment_uri = lambda n: urls.segment_uri(fmt.name, n)  # noqa: E731
    init_uri = urls.INIT_URI if fmt.has_init else None
    if req.resource == "iframes":
        if rendition.kind != "video":
            raise BadRequest("I-frame playlists exist for video renditions only")
        return build_iframes(rendition, fmt, segment_uri, init_uri)
    return build_media(rendition, fmt, segment_uri, init_uri)


def _flavor_subset(request: Request) -> frozenset[str] | None:
    raw = request.query_params.get("flavors")
    if raw is None:
        return None
    ids = frozenset(part.strip() for part in raw.split(",") if part.strip())
    if not ids or not all(valid_id(i) for i in ids):
        raise BadRequest("flavors= takes a comma-separated list of flavor ids")
    return ids
