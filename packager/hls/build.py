"""Playlists for a MediaSet in a SegmentFormat: what the edge serves.

URIs come from the caller (edge/urls.py owns the URL scheme); everything
measured (BANDWIDTH, AVERAGE-BANDWIDTH, EXTINF, I-frame byte ranges) comes
from the real segment layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from ..formats import SegmentFormat
from ..media import Segment
from ..media_set import MediaSet, Rendition, RenditionId, frame_rate
from ..segmenter import target_duration
from .bandwidth import average_bandwidth, peak_bandwidth
from .playlists import (
    AudioRendition,
    IFrameVariant,
    InitSection,
    PlaylistSegment,
    Variant,
    master_playlist,
    media_playlist,
)

AUDIO_GROUP = "audio"


@dataclass(frozen=True)
class MasterUris:
    media: Callable[[RenditionId], str]
    iframes: Callable[[RenditionId], str]


@dataclass(frozen=True)
class Bandwidth:
    peak: int
    average: int


def rendition_bandwidth(rendition: Rendition, fmt: SegmentFormat) -> Bandwidth:
    sizes = fmt.segment_sizes(rendition.track, rendition.segments)
    durations = [s.duration for s in rendition.segments]
    target = target_duration(rendition.segments)
    return Bandwidth(peak_bandwidth(sizes, durations, target), average_bandwidth(sizes, durations))


def build_master(media_set: MediaSet, fmt: SegmentFormat, uris: MasterUris) -> str:
    audio_bw = {r.id: rendition_bandwidth(r, fmt) for r in media_set.audios}
    if media_set.audio_only:
        variants = [
            Variant(uris.media(r.id), audio_bw[r.id].peak, audio_bw[r.id].average, r.track.codec_string)
            for r in media_set.audios
        ]
        return master_playlist(variants, version=fmt.version)
    default_audio = media_set.audios[0] if media_set.audios else None
    # A variant's BANDWIDTH must cover the heaviest audio it may be played with.
    audio_peak = max((bw.peak for bw in audio_bw.values()), default=0)
    audio_average = max((bw.average for bw in audio_bw.values()), default=0)
    variants, iframes = [], []
    for video in media_set.videos:
        bw = rendition_bandwidth(video, fmt)
        codecs = video.track.codec_string + (f",{default_audio.track.codec_string}" if default_audio else "")
        info = video.track.video
        resolution = (info.width, info.height) if info else None
        rate = frame_rate(video.track)
        variants.append(
            Variant(
                uris.media(video.id),
                bw.peak + audio_peak,
                bw.average + audio_average,
                codecs,
                resolution,
                Fraction(round(rate * 1000), 1000) if rate else None,
                AUDIO_GROUP if default_audio else None,
            )
        )
        iframes.append(IFrameVariant(uris.iframes(video.id), iframe_bandwidth(video, fmt), video.track.codec_string, resolution))
    audio = [
        AudioRendition(
            AUDIO_GROUP,
            name=_audio_name(r, i),
            language=r.track.language if r.track.language != "und" else None,
            uri=uris.media(r.id),
            default=i == 0,
            channels=r.track.audio.channels if r.track.audio else None,
        )
        for i, r in enumerate(media_set.audios)
    ]
    return master_playlist(variants, audio, iframes, version=fmt.version)


def _audio_name(rendition: Rendition, position: int) -> str:
    language = rendition.track.language
    return language if language != "und" else f"audio {position + 1}"


def build_media(rendition: Rendition, fmt: SegmentFormat, segment_uri: Callable[[Segment], str], init_uri: str | None) -> str:
    segments = [PlaylistSegment(segment_uri(s), s.duration) for s in rendition.segments]
    init = InitSection(init_uri) if fmt.has_init and init_uri else None
    return media_playlist(segments, target_duration=target_duration(rendition.segments), version=fmt.version, init=init)


def build_iframes(rendition: Rendition, fmt: SegmentFormat, segment_uri: Callable[[Segment], str], init_uri: str | None) -> str:
    """One I-frame per segment (each segment starts with one), as a byte range of that segment."""
    segments = [
        PlaylistSegment(segment_uri(s), s.duration, fmt.first_frame_range(rendition.track, s))
        for s in rendition.segments
    ]
    init = InitSection(init_uri) if fmt.has_init and init_uri else None
    return media_playlist(
        segments,
        target_duration=target_duration(rendition.segments),
        version=fmt.iframes_version,
        init=init,
        iframes_only=True,
    )


def iframe_bandwidth(rendition: Rendition, fmt: SegmentFormat) -> int:
    rates = [
        fmt.first_frame_range(rendition.track, s)[0] * 8 / s.duration for s in rendition.segments if s.duration > 0
    ]
    return math.ceil(max(rates, default=0))
