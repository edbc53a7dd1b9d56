"""Sidecar subtitles as HLS renditions (docs/URLS.md, "Subtitles"): what a master lists, and the media playlists
and WebVTT segments of a track, on the segment grid of the entry's media (packager/subtitles.py writes them).

A subtitle track has no samples of its own to cut at keyframes, so its segments are the entry's: segment n of a
track covers what segment n of the first video (or, for audio only, the first audio) rendition covers, preview
and clip cuts included. Nothing here knows HTTP.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

from origin.catalog import Entry, SubtitleFile
from origin.media import MediaService
from packager.formats import SegmentFormat
from packager.segmenter import target_duration
from packager.hls.language import subtitle_name
from packager.hls.playlists import PlaylistSegment, SubtitleRendition, media_playlist
from packager.media import Segment, rescale
from packager.media_set import MediaSet, Rendition
from packager.preview import is_clipped
from packager.subtitles import Cue, MalformedSubtitles, webvtt_segment
from packager.ts.timing import CLOCK_HZ, TIMESTAMP_OFFSET_90K

from . import urls


async def listed_tracks(media: MediaService, entry: Entry) -> tuple[list[SubtitleFile], str]:
    """The entry's subtitle files a master or MPD lists (those that parse: a malformed file is left out, logged
    once), and a tag of their file versions for the listing's ETag and cache key."""
    listed, versions = [], []
    for sub in entry.subtitles:
        try:
            _, version = await media.subtitles(sub)
        except MalformedSubtitles:
            continue
        versions.append(f"{sub.track}:{version}")
        listed.append(sub)
    return listed, ",".join(versions)


def master_renditions(files: Sequence[SubtitleFile], marker: Fraction | None) -> list[SubtitleRendition]:
    """The EXT-X-MEDIA TYPE=SUBTITLES renditions of a master (``marker``: a preview's end, in the playlist names).
    RFC 8216 4.3.4.1.1: NAMEs unique within the group, at most one DEFAULT=YES (the first file that asks)."""
    out, names, default_given = [], set(), False
    for sub in files:
        base = name = subtitle_name(sub.language, sub.forced)
        n = 2
        while name in names:
            name, n = f"{base} {n}", n + 1
        names.add(name)
        default = sub.default and not default_given
        default_given |= default
        uri = f"{urls.subtitles_dir(sub.track)}/{urls.playlist_name('index', marker)}"
        out.append(SubtitleRendition(name, sub.language, uri, default, sub.forced))
    return out


def reference(media_set: MediaSet) -> Rendition:
    """The rendition whose segment grid subtitle segments follow."""
    return (media_set.videos or media_set.audios)[0]


def track_playlist(media_set: MediaSet, fmt: SegmentFormat, end: Fraction | None) -> str:
    """A subtitle track's media playlist: the reference rendition's segments as ``seg-{n}.vtt`` (the one a preview
    cuts marked ``-p{E}``, as media segments are)."""
    grid = reference(media_set).segments
    marker = urls.clip_marker(end)
    segments = [PlaylistSegment(f"seg-{s.number}{urls.preview_marker(marker if is_clipped(s) else None)}.vtt", s.duration)
                for s in grid]
    return media_playlist(segments, target_duration=target_duration(grid), version=fmt.version)


def segment_text(cues: Sequence[Cue], segment: Segment, media_set: MediaSet, fmt: SegmentFormat, limit: Fraction,
                 shift: Fraction = Fraction(0)) -> str:
    """Segment ``segment``'s WebVTT: the cues overlapping it, ended at ``limit`` at the latest (in the media set's
    time: the end of the entry or clip, or for the segment a preview cuts, the preview's), on the media set's clock
    (``shift``: a clip's start in entry seconds, subtracted from cue times)."""
    return webvtt_segment(_on_clock(cues, shift), segment.start, segment.start + segment.duration, _mpegts(media_set, fmt), limit)


def whole_text(cues: Sequence[Cue], limit: Fraction, shift: Fraction = Fraction(0)) -> str:
    """The whole track as one WebVTT file on the presentation's clock (no X-TIMESTAMP-MAP), up to ``limit`` (the
    media set's time): what a DASH MPD names."""
    return webvtt_segment(_on_clock(cues, shift), Fraction(0), limit, None, limit)


def _on_clock(cues: Sequence[Cue], shift: Fraction) -> list[Cue]:
    """Cues on a clip's clock (``shift``: its start in entry seconds): those ending before it dropped, starts from 0."""
    return [Cue(max(c.start - shift, Fraction(0)), c.end - shift, c.text, c.settings) for c in cues if c.end > shift]


def _mpegts(media_set: MediaSet, fmt: SegmentFormat) -> int:
    """The 90 kHz timestamp of presentation time 0 in the media the cues play with: over TS the muxer's offset
    (packager/ts/timing.py); over fMP4 the reference track's decode time of time 0, its pre-roll."""
    if not fmt.has_init:
        return TIMESTAMP_OFFSET_90K
    track = reference(media_set).track
    return rescale(track.pre_roll, track.timescale, CLOCK_HZ)
