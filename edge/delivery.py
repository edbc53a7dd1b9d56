"""Media routes: a parsed URL becomes an access decision, a packager call and a response.

Order of work for every request: parse the URL, decide access (before any
media I/O), then answer from the cache or package. Playlists are cached
token-free and personalised per response; segments are muxed in the thread
pool (the packager is synchronous and CPU-bound) so the event loop keeps
serving other viewers.

Grants and caches (docs/ACCESS_CONTROL.md, "Caching and grants"): a grant
selects a *variant* of the entry (viewer.Variant: the preview's clip end E,
the flavors shown), and every cache key and ETag is built from the variant's
path, never from the raw URL or the preview length N. The segment E falls in
has its own ``-p{M}`` URL (M = E rounded up to the millisecond,
urls.clip_marker); a request for anything past E, or for the unmarked URL of
the clipped segment, answers 403 ``preview_only`` before a byte of media is
read and before any 304.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from fractions import Fraction
from typing import Callable, Sequence

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from auth.access import AccessControl
from auth.content_keys import SAMPLE_AES, Protection, period_count
from auth.rules import FLAVOR_NOT_ALLOWED, PREVIEW_ONLY
from origin.catalog import UnknownFlavor, valid_id
from origin.media import EntryMedia, MediaService
from packager.dash import DashText, DashUris, build_mpd, with_viewer_query
from packager.formats import FMP4, FORMATS, SegmentFormat
from packager.thumbnail import SPRITE_COLUMNS, TILE_WIDTH, keyframe_at, keyframe_seconds, sprite_plan, sprite_vtt, tile_height
from packager.ts import mux_segment as ts_mux
from packager.hls.build import (
    MasterUris, audio_refusal, build_iframes, build_master, build_media, check_format, ts_refuses, video_refusal,
)
from packager.hls.playlists import SubtitleRendition
from packager.hls.uris import fill_query, query_template, with_query
from packager.clip import ClipMediaSet
from packager.media import Segment
from packager.media_set import MediaSet, Rendition
from packager.preview import is_clipped, preview_end
from packager.segmenter import find_segment

from . import urls
from .cache import SegmentCache
from .cdn import PERSONAL_PLAYLIST_CACHE, CdnPolicy
from .errors import response_for
from .hot import mark_shareable
from .hot_playlists import PlaylistForm
from .http import http_date, is_not_modified, requested_range, strong_etag
from .progressive import serve_progressive
from .key_store import ContentKeys
from .protection import Keying
from .subtitles import listed_tracks as subtitle_tracks
from .subtitles import master_renditions as subtitle_renditions
from .subtitles import reference as subtitle_reference
from .subtitles import segment_text as subtitle_segment
from .subtitles import track_playlist as subtitle_playlist
from .subtitles import whole_text as subtitle_file
from .thumbnails import Thumbnailer
from .request_info import MediaInfo, attach, info_for
from .urls import BadRequest, MediaRequest, NoSuchResource
from .viewer import Denied, EdgeTrust, Grant, Variant, check_clip, check_preview_marker, grant_for, only_a_session_query

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
MPD_TYPE = "application/dash+xml"
JPEG_TYPE = "image/jpeg"
VTT_TYPE = "text/vtt"


class DashEncrypted(NoSuchResource):
    code = "dash_encrypted"
KEY_TYPE = "application/octet-stream"
KEY_CACHE = "no-store, private"  # a key is the viewer's grant in 16 bytes: no shared or stored copy, ever


class Delivery:
    def __init__(
        self,
        media: MediaService,
        cache: SegmentCache,
        cdn: CdnPolicy,
        access: AccessControl,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        trust: EdgeTrust | None = None,
        keys: ContentKeys | None = None,
        thumbnailer: Thumbnailer | None = None,
    ) -> None:
        self.keys = keys or ContentKeys(None)  # content keys: derived, or imported from Redis
        self.thumbnailer = thumbnailer or Thumbnailer()
        self.media = media
        self.cache = cache
        self.cdn = cdn
        self.access = access
        self.clock = clock
        self.trust = trust  # edges whose grants this origin applies (cdn.edge_secrets)

    async def handle(self, request: Request) -> Response:
        info: MediaInfo | None = None
        try:
            req = urls.parse_path(request.url.path)
            info = attach(request.scope, info_for(req))
            grant, check = grant_for(request, urls.canonical_path(req), req.partner, req.entry, self.access, self.clock(), self.trust)
            if check is not None:
                info.client_ip, info.country = str(check.facts.client_ip), check.facts.country
                if check.token is not None and check.token.claims is not None:
                    info.session_id = check.token.claims.session_id
            check_preview_marker(req.preview, grant)
            check_clip(req.clip, grant)
            if req.resource == "key":
                return await self._key(req, grant)
            if req.resource in ("sprite", "thumbs"):
                return await self._sprite(request, req, info, grant)
            if req.format == "thumb":
                return await self._thumbnail(request, req, info, grant)
            if req.format == "mp4":
                return await serve_progressive(request, req, self.media, self.cdn, grant, self.access.restricts(req.partner))
            return await self._hls(request, req, FMP4 if req.format == "dash" else FORMATS[req.format], info, grant)
        except Denied as denied:
            if info is not None:
                info.denied = denied.code
            return response_for(denied)
        except Exception as exc:  # every failure becomes one JSON error; others keep being served
            if info is not None:
                info.error = getattr(exc, "code", None) or getattr(getattr(exc, "error", None), "code", "error")
            return response_for(exc)

    async def _hls(self, request: Request, req: MediaRequest, fmt: SegmentFormat, info: MediaInfo, grant: Grant) -> Response:
        em = await self.media.entry_media(req.partner, req.entry)
        info.entry_duration = float(em.media_set.duration)
        protection = self._protection(req.partner, req.entry)
        keying = Keying(protection, await self.keys.keys_for(protection, req.partner, req.entry, _clip_name(req)))
        # every answer whose bytes depend on the encryption names it in its ETag and cache key, so a reload that
        # switches a partner's encryption (or its master secret, or imported keys) never serves bytes of the other
        ptag = keying.tag
        if req.resource in ("segment", "init") and req.keying != keying.marker:
            # a segment or init URL of other encryption settings (a playlist from before a reload): never these bytes
            raise NoSuchResource(f"{req.resource} is not served under encryption marker {req.keying or 'none'} "
                                 "(the partner's encryption changed): reload the playlist")
        if req.rendition is not None:
            em.entry.flavor(req.rendition.flavor)  # UnknownFlavor (404) for a flavor the entry does not have
            em.check_flavor(req.rendition.flavor)
        preview = req.preview if req.preview is not None else grant.preview
        if req.clip is not None:  # a clip by URL (packager/clip.py); E only where a preview cut it short of the clip's end
            media_set = await self.media.clip_set(em, req.clip.first, req.clip.last, preview)
            end = media_set.preview_end
        else:
            media_set = em.media_set if preview is None else await self.media.preview_set(em, preview)
            end = preview_end(media_set)  # the variant's clip end: N past the media's end is no clip at all
        if req.resource == "master":
            return await self._master(request, req, fmt, em, keying.playable(media_set, fmt), grant, end, protection, ptag)
        if req.resource in ("subs_index", "subs_segment", "subs_file"):
            return await self._subtitles(request, req, fmt, em, media_set, grant, end, info)
        if req.resource == "mpd":
            if keying.encrypts:  # AES-128 is HLS's own; cbcs would need DASH ContentProtection and a license route
                raise DashEncrypted(f"partner {req.partner} encrypts this entry's media ({keying.method}): DASH is offered for "
                                    "clear media only; play its HLS")
            return await self._mpd(request, req, em, media_set, grant, end)
        rendition = em.media_set.rendition(req.rendition)
        if rendition.kind == "video" and not _flavor_allowed(rendition, grant):
            raise Denied(403, FLAVOR_NOT_ALLOWED, f"flavor {req.rendition.flavor} is above this viewer's quality limit")
        check_format(rendition, fmt)  # no representation over TS (HEVC, Opus): before any conditional request
        keying.check_track(rendition.track, fmt)  # SAMPLE-AES: H.264 and AAC only (404 sample_aes_unsupported_codec)
        clipped = media_set.rendition(req.rendition)
        if req.clip is not None:
            rendition = clipped  # its track is rebased to the clip's start: segments and init are muxed from it
        version = em.flavor_version(req.rendition.flavor)
        if req.resource in ("index", "iframes"):
            if req.resource == "iframes" and protection.encrypts:
                # its byte ranges would cut CBC chains mid-segment: not offered (the master lists none)
                raise NoSuchResource("I-frame playlists are not offered for encrypted media")
            path = urls.canonical_path(replace(req, preview=urls.clip_marker(end)))
            render = lambda: _media_playlist(clipped, req, fmt, end, keying)  # noqa: E731
            return await self._playlist(request, path, em, version, grant, render, Variant(end), _location(path, req), ptag)
        if req.resource == "init":
            segment = None
            path = urls.canonical_path(req)
        else:  # a segment: refuse what the grant does not cover before anything else, 304 included
            segment = _granted_segment(clipped, req, end)
            path = urls.canonical_path(replace(req, preview=urls.clip_marker(end) if is_clipped(segment) else None))
        headers, etag = self._headers(path, em, version, *([ptag] if ptag else []), location=_location(path, req))
        if is_not_modified(request.headers, etag, headers["Last-Modified"]):
            return Response(status_code=304, headers=headers)
        key = f"{path}|{etag}"  # the variant's path, never the raw URL
        if self._shareable(req.partner, grant):
            mark_shareable(request.scope, key, fresh_for=self.media.fresh_for(em.entry))
        if segment is None:
            body, info.cache = await self.cache.get_or_make(key, lambda: run_in_threadpool(keying.init, rendition.track))
            return _ranged(request, body, "video/mp4", {**headers, "X-Cache": info.cache})
        info.media_start, info.media_duration = float(segment.start), float(segment.duration)
        size = keying.known_size(fmt, rendition.track, segment) if request.method == "HEAD" else None
        if size is not None:  # else HEAD packages the segment: its size depends on the bytes
            return Response(b"", media_type=fmt.content_type, headers={**headers, "Accept-Ranges": "bytes", "Content-Length": str(size)})

        async def package() -> bytes:
            batch = await self.media.batch(em.entry, rendition, segment, fmt)
            started = time.perf_counter()
            body = await run_in_threadpool(keying.segment, fmt, batch, segment.number)
            info.package_seconds = time.perf_counter() - started
            return body

        body, info.cache = await self.cache.get_or_make(key, package)
        if request.method == "HEAD":
            headers = {**headers, "Accept-Ranges": "bytes", "Content-Length": str(len(body)), "X-Cache": info.cache}
            return Response(b"", media_type=fmt.content_type, headers=headers)
        return _ranged(request, body, fmt.content_type, {**headers, "X-Cache": info.cache})

    def _shown(self, request: Request, media_set: MediaSet, grant: Grant) -> list[str]:
        """The flavors a master (or MPD) lists: those ``?flavors=`` asks for, within the viewer's limits."""
        requested = _flavor_subset(request)
        shown = [
            v.id.flavor
            for v in media_set.videos
            if (requested is None or v.id.flavor in requested) and _flavor_allowed(v, grant)
        ]
        if media_set.videos and not shown:
            if requested is not None and not any(v.id.flavor in requested for v in media_set.videos):
                raise UnknownFlavor(f"flavors= names none of this entry's flavors ({', '.join(v.id.flavor for v in media_set.videos)})")
            raise Denied(403, FLAVOR_NOT_ALLOWED, "no flavor of this entry is within this viewer's quality limit")
        return shown

    async def _master(self, request, req, fmt, em: EntryMedia, media_set: MediaSet, grant: Grant, end: Fraction | None,
                      protection: Protection, ptag: str | None) -> Response:
        shown = self._shown(request, media_set, grant)
        if media_set.videos and all(ts_refuses(v.track, fmt) for v in media_set.videos if v.id.flavor in shown):
            raise video_refusal([v for v in media_set.videos if v.id.flavor in shown])
        if not media_set.videos and media_set.audios and all(ts_refuses(a.track, fmt) for a in media_set.audios):
            raise audio_refusal(media_set.audios)
        visible = _only_videos(media_set, frozenset(shown))
        files, versions = await subtitle_tracks(self.media, em.entry)
        subtitles = subtitle_renditions(files, urls.clip_marker(end))
        render = lambda: _master_playlist(visible, fmt, end, not protection.encrypts, subtitles)  # noqa: E731
        return await self._playlist(request, urls.canonical_path(req), em, em.version, grant, render, Variant(end, frozenset(shown)),
                                    protection=ptag, extra=(f"subs={versions}",) if versions else ())

    async def _subtitles(self, request: Request, req: MediaRequest, fmt: SegmentFormat, em: EntryMedia, media_set: MediaSet,
                         grant: Grant, end: Fraction | None, info: MediaInfo) -> Response:
        """A subtitle track's media playlist or WebVTT segment (edge/subtitles.py), on the media set's segment grid:
        previews and clips cut it as they cut the media."""
        sub = em.entry.subtitle(req.subtitle)  # type: ignore[arg-type]  (404 unknown_subtitles)
        cues, version = await self.media.subtitles(sub)  # MalformedSubtitles: 500 malformed_subtitles
        if req.resource == "subs_index":
            path = urls.canonical_path(replace(req, preview=urls.clip_marker(end)))
            render = lambda: subtitle_playlist(media_set, fmt, end)  # noqa: E731
            return await self._playlist(request, path, em, em.version, grant, render, Variant(end), _location(path, req),
                                        extra=(f"sub={version}",))
        # times on the media set's clock: a clip's start is its 0; the preview end E is in entry seconds
        shift = getattr(media_set, "start", Fraction(0))
        full_end = (media_set.clip_end - shift) if isinstance(media_set, ClipMediaSet) else em.media_set.duration
        if req.resource == "subs_file":
            if end is not None and req.preview is None:
                raise Denied(403, PREVIEW_ONLY, "the whole track runs past the preview; its marked URL is in the MPD")
            path = urls.canonical_path(replace(req, preview=urls.clip_marker(end)))
            limit = full_end if end is None else end - shift
            make = lambda: subtitle_file(cues, limit, shift)  # noqa: E731
        else:
            segment = _granted_segment(subtitle_reference(media_set), req, end)
            path = urls.canonical_path(replace(req, preview=urls.clip_marker(end) if is_clipped(segment) else None))
            # only the segment a preview cuts (its own URL) ends cues at the preview; any other is every viewer's
            limit = end - shift if end is not None and is_clipped(segment) else full_end
            make = lambda: subtitle_segment(cues, segment, media_set, fmt, limit, shift)  # noqa: E731
        headers, etag = self._headers(path, em, em.version, version, location=_location(path, req))
        if is_not_modified(request.headers, etag, headers["Last-Modified"]):
            return Response(status_code=304, headers=headers)
        # cached like segments, built off the event loop: a long file's cues are thousands of lines
        body, info.cache = await self.cache.get_or_make(f"{path}|{etag}", lambda: run_in_threadpool(lambda: make().encode()))
        return Response(body, media_type=VTT_TYPE, headers={**headers, "X-Cache": info.cache})

    async def _mpd(self, request, req, em: EntryMedia, media_set: MediaSet, grant: Grant, end: Fraction | None) -> Response:
        """The DASH MPD (packager/dash) over the /cmaf/ files: the same flavors, grant and variant as the master."""
        shown = self._shown(request, media_set, grant)
        visible = _only_videos(media_set, frozenset(shown))
        marker = urls.clip_marker(end)
        uris = DashUris(folder=lambda rid: f"../cmaf/{urls.rendition_dir(rid)}", init=urls.init_uri(),
                        segment=lambda s: urls.segment_uri("cmaf", s.number, marker if is_clipped(s) else None))
        files, versions = await subtitle_tracks(self.media, em.entry)
        texts = [DashText(f"../cmaf/{urls.subtitles_dir(f.track)}/{urls.subtitle_file_name(marker)}", f.language, f.track, f.forced)
                 for f in files]
        render = lambda: build_mpd(visible, uris, texts)  # noqa: E731
        return await self._playlist(request, urls.canonical_path(req), em, em.version, grant, render, Variant(end, frozenset(shown)),
                                    mpd=True, extra=(f"subs={versions}",) if versions else ())

    async def _thumbnail(self, request: Request, req: MediaRequest, info: MediaInfo, grant: Grant) -> Response:
        """A JPEG of the flavor's keyframe presented at or before ``req.number`` ms (edge/thumbnails.py): the flavor
        and preview limits of the grant apply (no thumbnail at or past the end of a preview)."""
        em, rendition = await self._pictured(req, grant)
        seconds = Fraction(req.number, 1000)  # type: ignore[arg-type]
        if grant.preview is not None and seconds >= grant.preview:
            raise Denied(403, PREVIEW_ONLY, f"no thumbnail at {float(seconds):g} s: past the {float(grant.preview):g} s preview")
        span = keyframe_at(rendition.track, seconds)  # 404 no_video for an audio-only flavor
        shown = keyframe_seconds(rendition.track, span)  # later than ``seconds`` when nothing is presented before it
        if grant.preview is not None and shown >= grant.preview:
            raise Denied(403, PREVIEW_ONLY, f"the first picture comes at {float(shown):g} s: past the {float(grant.preview):g} s preview")
        # every time of one keyframe is the same picture: one decode and one cached copy per keyframe and width
        picture = f"{urls.entry_path(req.partner, req.entry, 'thumb')}/{req.rendition.flavor}/k{span.first}-w{req.width or 0}"
        return await self._image(request, req, info, grant, em, lambda: self._one_keyframe(em, rendition, span, req.width), picture)

    async def _pictured(self, req: MediaRequest, grant: Grant) -> tuple[EntryMedia, Rendition]:
        """The entry and the flavor's rendition a thumbnail, sprite or track shows, after the grant's flavor limit."""
        if req.clip is not None:
            raise NoSuchResource("thumbnails are per entry: ask for thumb/ outside a clip folder")
        em = await self.media.entry_media(req.partner, req.entry)
        em.entry.flavor(req.rendition.flavor)  # type: ignore[union-attr]  (UnknownFlavor: 404)
        em.check_flavor(req.rendition.flavor)  # type: ignore[union-attr]
        rendition = em.media_set.rendition(req.rendition)  # type: ignore[arg-type]
        if rendition.kind == "video" and not _flavor_allowed(rendition, grant):
            raise Denied(403, FLAVOR_NOT_ALLOWED, f"flavor {rendition.id.flavor} is above this viewer's quality limit")
        return em, rendition

    async def _keyframe_ts(self, em: EntryMedia, rendition: Rendition, span) -> bytes:
        """One keyframe muxed alone into MPEG-TS: what ffmpeg decodes a picture from (edge/thumbnails.py)."""
        batch = await self.media.batch(em.entry, rendition, Segment(1, span, Fraction(0), Fraction(0)))
        return await run_in_threadpool(ts_mux, batch)

    async def _one_keyframe(self, em: EntryMedia, rendition: Rendition, span, width: int | None) -> bytes:
        return await self.thumbnailer.jpeg(await self._keyframe_ts(em, rendition, span), width)

    async def _sprite(self, request: Request, req: MediaRequest, info: MediaInfo, grant: Grant) -> Response:
        """A scrubbing sprite sheet of the flavor's keyframes, or its WebVTT thumbnail track (packager/thumbnail.py).
        A preview viewer gets neither (403 preview_only): its tiles would show what lies past the preview."""
        if req.clip is None and grant.preview is not None:
            raise Denied(403, PREVIEW_ONLY, "scrubbing sprites show the whole media; a preview viewer gets single thumbnails")
        em, rendition = await self._pictured(req, grant)
        plan = sprite_plan(rendition.track, em.media_set.duration)  # 404 no_video for an audio-only flavor
        if req.resource == "thumbs":
            # the viewer's token (URL-encoded: no newline, no "-->") goes into each cue's sprite URL, as into playlists
            text = sprite_vtt(plan, tile_height(rendition.track), "sprite.jpg" + (f"?{grant.query}" if grant.query else ""))
            headers, etag = self._headers(urls.canonical_path(req), em, em.flavor_version(req.rendition.flavor), grant.query)
            if grant.personal:
                headers["Cache-Control"] = PERSONAL_PLAYLIST_CACHE
            if is_not_modified(request.headers, etag, headers["Last-Modified"]):
                return Response(status_code=304, headers=headers)
            return Response(text, media_type=VTT_TYPE, headers=headers)

        async def tiles() -> bytes:
            pieces = [await self._keyframe_ts(em, rendition, span) for span, _, _ in plan]
            return await self.thumbnailer.sprite(b"".join(pieces), TILE_WIDTH, SPRITE_COLUMNS, len(plan))

        return await self._image(request, req, info, grant, em, tiles)

    async def _image(self, request: Request, req: MediaRequest, info: MediaInfo, grant: Grant, em: EntryMedia, make,
                     picture: str | None = None) -> Response:
        """A JPEG made by ``make`` once per flavor version (cached like a segment), with the media's headers;
        ``picture``: what names the image when several URLs show the same one (its ETag and cache key)."""
        path = picture or urls.canonical_path(req)
        headers, etag = self._headers(path, em, em.flavor_version(req.rendition.flavor))  # type: ignore[union-attr]
        if is_not_modified(request.headers, etag, headers["Last-Modified"]):
            return Response(status_code=304, headers=headers)
        if self._shareable(req.partner, grant):
            mark_shareable(request.scope, f"{path}|{etag}", fresh_for=self.media.fresh_for(em.entry))
        body, info.cache = await self.cache.get_or_make(f"{path}|{etag}", make)
        return Response(body, media_type=JPEG_TYPE, headers={**headers, "X-Cache": info.cache})

    async def _key(self, req: MediaRequest, grant: Grant) -> Response:
        """A content key: 16 bytes for a viewer the entry's media is granted to (the same decision, already made).

        404 for a kid that is not one of this entry's (under any listed master secret); a preview viewer
        gets only the keys of periods that begin inside its preview (403 preview_only). Flavor limits do
        not apply: keys are per entry, and the segments of a flavor above the limit are refused anyway."""
        protection = self._protection(req.partner, req.entry)
        if not protection.encrypts:
            raise NoSuchResource(f"partner {req.partner}'s media is not encrypted: it has no keys")
        em = await self.media.entry_media(req.partner, req.entry)
        clip = req.clip
        keys = await self.keys.keys_for(protection, req.partner, req.entry, _clip_name(req))  # a clip's are its own
        media_set = em.media_set if clip is None else await self.media.clip_set(em, clip.first, clip.last, None)
        periods = period_count(_segment_count(media_set), protection.rotation_segments)
        found = keys.lookup(req.kid or "", periods)
        if found is None:
            raise NoSuchResource(f"no key {req.kid} for {'entry ' + req.entry if clip is None else clip.name}")
        period, key = found
        if grant.preview is not None and period > 0:  # period 0 holds segment 1, which every preview plays
            clipped = (await self.media.preview_set(em, grant.preview) if clip is None
                       else await self.media.clip_set(em, clip.first, clip.last, grant.preview))
            if period * protection.rotation_segments + 1 > _segment_count(clipped):
                raise Denied(403, PREVIEW_ONLY, f"key {req.kid} is for segments past the {float(grant.preview):g} s preview")
        return Response(key, media_type=KEY_TYPE, headers={"Cache-Control": KEY_CACHE})

    def _protection(self, partner: str, entry: str) -> Protection:
        found = self.access.partner(partner)
        return found.protection_for(entry) if found is not None else Protection()

    async def _playlist(self, request, path: str, em: EntryMedia, version: str, grant: Grant, render, variant: Variant,
                        location: str | None = None, protection: str | None = None, mpd: bool = False,
                        extra: tuple[str, ...] = ()) -> Response:
        """A playlist of ``variant`` (an HLS playlist, or with ``mpd`` a DASH MPD): cached token-free under it; the
        viewer's query is added per response. ``protection``: the encryption tag its body depends on
        (auth/content_keys.Protection.tag), None when clear."""
        extra = ((protection,) if protection else ()) + extra  # what else the body depends on: encryption, subtitle files
        headers, etag = self._headers(path, em, version, variant.tag, *extra, grant.query, location=location)
        shared_cache = headers["Cache-Control"]
        if grant.personal:
            headers["Cache-Control"] = PERSONAL_PLAYLIST_CACHE
        if is_not_modified(request.headers, etag, headers["Last-Modified"]):
            return Response(status_code=304, headers=headers)
        # cached as a template: a slot wherever a viewer's query goes, so a response is one replace, not a pass over
        # every line ("|tpl|": entries of an older layout, on a disk tier, are never read as templates; the key still
        # starts with the path, as purges by partner or entry match)
        key = f"{path}|tpl|{strong_etag(version, variant.tag, *extra, str(self.media.target))}"
        if mpd:  # the MPD writer puts its own slots (XML-escaped when filled)
            body, status = await self.cache.get_or_make(key, lambda: run_in_threadpool(lambda: render().encode()))
            return Response(with_viewer_query(body.decode(), grant.query), media_type=MPD_TYPE, headers={**headers, "X-Cache": status})
        template, status = await self.cache.get_or_make(key, lambda: run_in_threadpool(lambda: _template_of(render())))
        hot = self._hot_form(request, em.entry.partner, grant, template, key, self._etag_parts(path, version, variant.tag, *extra),
                             shared_cache)
        if hot is not None or not grant.query:
            # the query-free playlist is cached as bytes too: the hot lane answers it as it answers segments (and,
            # from the template, a lone session id), when no rule of the partner can tell viewers apart (edge/hot.py)
            plain = self.cache.derived(f"{key}|plain", lambda: _plain_playlist(template))  # one bytes.replace
            if hot is not None:
                mark_shareable(request.scope, f"{key}|plain", fresh_for=self.media.fresh_for(em.entry), playlist=hot)
            if not grant.query:
                return Response(plain, media_type=PLAYLIST_TYPE, headers={**headers, "X-Cache": status})
        if template.startswith(VERBATIM):  # no template could say it (query_template): the per-line rewrite, as before
            body = with_query(template[len(VERBATIM):].decode(), grant.query).encode()
            return Response(body, media_type=PLAYLIST_TYPE, headers={**headers, "X-Cache": status})
        return Response(fill_query(template, grant.query), media_type=PLAYLIST_TYPE, headers={**headers, "X-Cache": status})

    def _hot_form(self, request: Request, partner: str, grant: Grant, template: bytes, key: str, etag_parts: tuple[str, ...],
                  shared_cache: str) -> PlaylistForm | None:
        """What lets the hot lane answer this playlist (edge/hot_playlists.py), when it may: a partner without
        rules, a request with no query or a lone session id, a playlist cached as a template (a text playlist's
        per-line rewrite is not the hot lane's to do: only its query-free answer is)."""
        query = request.url.query
        if not self._shareable(partner, grant) or (query and (only_a_session_query(query.encode()) is None or grant.query != query)):
            return None
        if template.startswith(VERBATIM):
            return None if query else PlaylistForm(key, etag_parts, shared_cache)
        return PlaylistForm(key, etag_parts, shared_cache, PERSONAL_PLAYLIST_CACHE)

    def _shareable(self, partner: str, grant: Grant) -> bool:
        """The same bytes for every viewer: no rule of the partner can tell viewers apart (edge/hot.py)."""
        return grant.preview is None and grant.limits is None and not self.access.restricts(partner)

    def _etag_parts(self, path: str, version: str, *extra: str) -> tuple[str, ...]:
        """What the ETag of the resource ``path`` names: its version, the path, the segment target, ``extra``."""
        return (version, path, str(self.media.target), *extra)

    def _headers(self, path: str, em: EntryMedia, version: str, *extra: str, location: str | None = None) -> tuple[dict[str, str], str]:
        """Validators and cache headers of the resource ``path`` names (a variant's path, see urls.clip_marker);
        ``location``: the URL that names these bytes, when the request spelled it otherwise (RFC 9110 8.7)."""
        etag = strong_etag(*self._etag_parts(path, version, *extra))
        headers = {"ETag": etag, "Last-Modified": http_date(em.last_modified_ns), **self.cdn.media_headers(em.entry.partner, em.entry.id, self.access.restricts(em.entry.partner))}
        if location is not None:
            headers["Content-Location"] = location
        return headers, etag


VERBATIM = b"\x02"  # the first byte of a cached playlist kept as text (never a playlist's: they start "#EXTM3U")


def _template_of(playlist: str) -> bytes:
    """What _playlist caches: the playlist's query template, or the playlist itself marked VERBATIM."""
    template = query_template(playlist)
    return template.encode() if template is not None else VERBATIM + playlist.encode()


def _plain_playlist(template: bytes) -> bytes:
    """The playlist a viewer without a query gets, from what _playlist caches (a template or VERBATIM text)."""
    return template[len(VERBATIM):] if template.startswith(VERBATIM) else fill_query(template, "")


def _location(variant_path: str, req: MediaRequest) -> str | None:
    """Content-Location for a marked URL whose variant has another spelling (``seg-2-p99.ts`` is ``seg-2.ts``)."""
    return variant_path if req.preview is not None and variant_path != urls.canonical_path(req) else None


def _granted_segment(rendition: Rendition, req: MediaRequest, end: Fraction | None) -> Segment:
    """The segment to serve, or 403 preview_only for anything the clip (ending at ``end``) does not include whole."""
    count = len(rendition.segments)
    if end is not None and req.number > count:
        raise Denied(403, PREVIEW_ONLY, f"segment {req.number} lies past the {float(end):.3f} s preview")
    segment = find_segment(rendition.segments, req.number)
    if end is not None and is_clipped(segment) and req.preview is None:  # a clip's own end (end None) is no marker
        raise Denied(403, PREVIEW_ONLY, f"segment {req.number} runs past the preview; its clipped URL is in the playlist")
    return segment


def _flavor_allowed(rendition: Rendition, grant: Grant) -> bool:
    info = rendition.track.video
    return grant.allows_flavor(info.height if info else None, rendition.track.bitrate)


def _only_videos(media_set: MediaSet, flavors: frozenset[str]) -> MediaSet:
    return replace(media_set, videos=tuple(v for v in media_set.videos if v.id.flavor in flavors))


def _segment_count(media_set: MediaSet) -> int:
    """Segment n of every rendition covers the same time, so the entry's count is its longest rendition's."""
    return max((len(r.segments) for r in media_set.videos + media_set.audios), default=0)


def _master_playlist(media_set: MediaSet, fmt: SegmentFormat, end: Fraction | None, with_iframes: bool = True,
                     subtitles: Sequence[SubtitleRendition] = ()) -> str:
    marker = urls.clip_marker(end)
    iframes = (lambda rid: urls.iframes_playlist_uri(rid, marker)) if with_iframes else None
    uris = MasterUris(lambda rid: urls.media_playlist_uri(rid, marker), iframes)
    return build_master(media_set, fmt, uris, subtitles)


def _media_playlist(rendition: Rendition, req: MediaRequest, fmt: SegmentFormat, end: Fraction | None, keying: Keying) -> str:
    """Only the clipped segment carries a marker; it names the clip end, so the body depends on E alone."""
    marker, keyed = urls.clip_marker(end), keying.marker  # the latter hashes the key set: once a playlist

    def segment_uri(segment: Segment) -> str:
        return urls.segment_uri(fmt.name, segment.number, marker if is_clipped(segment) else None, keyed)

    init_uri = urls.init_uri(keyed) if fmt.has_init else None
    if req.resource == "iframes":
        if rendition.kind != "video":
            raise BadRequest("I-frame playlists exist for video renditions only")
        return build_iframes(rendition, fmt, segment_uri, init_uri)
    if not keying.encrypts:
        return build_media(rendition, fmt, segment_uri, init_uri)
    key_uri = lambda segment: urls.key_uri(req.rendition, keying.kid(segment.number))  # noqa: E731
    if keying.method == SAMPLE_AES:  # the IV written out, one per key (Keying.explicit_iv)
        return build_media(rendition, fmt, segment_uri, init_uri, key_uri, "SAMPLE-AES", lambda s: keying.explicit_iv(s.number, fmt))
    return build_media(rendition, fmt, segment_uri, init_uri, key_uri)


def _clip_name(req: MediaRequest) -> str | None:
    """The clip whose keys a request's are (auth/content_keys.key_scope), None for the entry's."""
    return req.clip.name if req.clip else None


def _ranged(request: Request, body: bytes, media_type: str, headers: dict[str, str]) -> Response:
    """Single byte ranges of a segment: I-frame playlists address segments with EXT-X-BYTERANGE."""
    headers = {**headers, "Accept-Ranges": "bytes"}
    span = requested_range(request.headers, len(body), headers["ETag"], headers["Last-Modified"])
    if span is None:
        return Response(body, media_type=media_type, headers=headers)
    headers["Content-Range"] = span.content_range(len(body))
    return Response(body[span.start : span.end + 1], status_code=206, media_type=media_type, headers=headers)


def _flavor_subset(request: Request) -> frozenset[str] | None:
    raw = request.query_params.get("flavors")
    if raw is None:
        return None
    ids = frozenset(part.strip() for part in raw.split(",") if part.strip())
    if not ids or not all(valid_id(i) for i in ids):
        raise BadRequest("flavors= takes a comma-separated list of flavor ids")
    return ids
