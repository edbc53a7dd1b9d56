"""Playlists for a MediaSet in a SegmentFormat: what the edge serves.

URIs come from the caller (edge/urls.py owns the URL scheme); everything
measured (BANDWIDTH, AVERAGE-BANDWIDTH, EXTINF, I-frame byte ranges) comes
from the real segment layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable, Sequence

from ..errors import NeedsFmp4, OpusNeedsFmp4, PreRollNeedsFmp4
from ..formats import SegmentFormat
from ..media import Segment, Track
from ..media_set import MediaSet, Rendition, RenditionId, frame_rate
from ..segmenter import target_duration
from ..ts import timing as ts_timing
from .bandwidth import average_bandwidth, peak_bandwidth
from .iframes import PSI_RANGE, iframes as iframe_entries
from .language import language_tag, rendition_names
from .playlists import (
    AudioRendition,
    IFrameVariant,
    InitSection,
    PlaylistSegment,
    SubtitleRendition,
    Variant,
    master_playlist,
    media_playlist,
)

AUDIO_GROUP = "audio"


def ts_refuses(track: Track, fmt: SegmentFormat) -> bool:
    """HEVC video, Opus audio and a pre-roll longer than TS timestamps hold are delivered in fMP4 only
    (see :class:`NeedsFmp4`, :class:`OpusNeedsFmp4`, :class:`PreRollNeedsFmp4`)."""
    if fmt.has_init:
        return False
    return _hevc(track) or _opus(track) or not ts_timing.clock_fits(track)


def _hevc(track: Track) -> bool:
    return track.kind == "video" and track.codec_string.startswith(("hvc1", "hev1"))


def _opus(track: Track) -> bool:
    return track.audio is not None and track.audio.codec == "opus"


def video_refusal(videos: Sequence[Rendition]) -> NeedsFmp4:
    """The 404 for a master over TS none of whose ``videos`` TS offers (:func:`ts_refuses`)."""
    return _refusal(videos, _hevc, NeedsFmp4, "video", "HEVC")


def audio_refusal(audios: Sequence[Rendition]) -> NeedsFmp4:
    """The 404 for an audio-only master over TS none of whose ``audios`` TS offers (:func:`ts_refuses`)."""
    return _refusal(audios, _opus, OpusNeedsFmp4, "audio", "Opus")


def _refusal(renditions: Sequence[Rendition], is_codec: Callable[[Track], bool], codec_error: type[NeedsFmp4],
             kind: str, codec: str) -> NeedsFmp4:
    """The codec's own error when the codec alone is why; else the pre-roll one (either reason may apply)."""
    if all(is_codec(r.track) for r in renditions):
        return codec_error(f"this entry's {kind} is {codec} only, which HLS delivers in fMP4: use /cmaf/master.m3u8 instead of /hls/")
    return PreRollNeedsFmp4(
        f"this entry's {kind} is {codec} or starts with a pre-roll longer than MPEG-TS timestamps hold, which HLS "
        "delivers in fMP4: use /cmaf/master.m3u8 instead of /hls/"
    )


def check_format(rendition: Rendition, fmt: SegmentFormat) -> None:
    """Raise the 404 naming /cmaf/ for a rendition ``fmt`` does not offer (:func:`ts_refuses`)."""
    if not ts_refuses(rendition.track, fmt):
        return
    if not (_hevc(rendition.track) or _opus(rendition.track)):
        raise PreRollNeedsFmp4(f"{rendition.id.flavor}: {ts_timing.pre_roll_message(rendition.track)}")
    if rendition.kind == "audio":
        raise OpusNeedsFmp4(
            f"{rendition.id.flavor} audio {rendition.id.audio} is Opus, which HLS delivers in fMP4 only: use /cmaf/ instead of /hls/"
        )
    raise NeedsFmp4(f"{rendition.id.flavor} is HEVC, which HLS delivers in fMP4 only: use /cmaf/ instead of /hls/")


@dataclass(frozen=True)
class MasterUris:
    media: Callable[[RenditionId], str]
    iframes: Callable[[RenditionId], str] | None  # None: no I-frame playlists (encrypted media)


@dataclass(frozen=True)
class Bandwidth:
    peak: int
    average: int


def rendition_bandwidth(rendition: Rendition, fmt: SegmentFormat) -> Bandwidth:
    sizes = fmt.segment_sizes(rendition.track, rendition.segments)
    durations = [s.duration for s in rendition.segments]
    target = target_duration(rendition.segments)
    return Bandwidth(peak_bandwidth(sizes, durations, target), average_bandwidth(sizes, durations))


def build_master(media_set: MediaSet, fmt: SegmentFormat, uris: MasterUris, subtitles: Sequence[SubtitleRendition] = ()) -> str:
    offered = tuple(v for v in media_set.videos if not ts_refuses(v.track, fmt))
    if media_set.videos and not offered:
        raise video_refusal(media_set.videos)
    # Opus renditions (and any with too long a pre-roll) are left out of a TS master (the video plays with the other audio, or none)
    audios = tuple(a for a in media_set.audios if not ts_refuses(a.track, fmt))
    if media_set.audios and not audios and not offered:
        raise audio_refusal(media_set.audios)
    media_set = replace(media_set, videos=offered, audios=audios)
    audio_bw = {r.id: rendition_bandwidth(r, fmt) for r in media_set.audios}
    if media_set.audio_only:
        variants = [
            Variant(uris.media(r.id), audio_bw[r.id].peak, audio_bw[r.id].average, r.track.codec_string)
            for r in media_set.audios
        ]
        return master_playlist(variants, version=fmt.version, subtitles=subtitles)
    groups = audio_groups(media_set.audios)
    variant_groups: list[tuple[str | None, tuple[Rendition, ...]]] = list(groups.items()) or [(None, ())]
    variants, iframes = [], []
    for video in media_set.videos:
        bw = rendition_bandwidth(video, fmt)
        info = video.track.video
        resolution = (info.width, info.height) if info else None
        rate = frame_rate(video.track)
        # one variant per audio group: the same video playlist, with the codecs and BANDWIDTH of that
        # group's audio (a BANDWIDTH must cover the heaviest rendition it may be played with)
        for group_id, renditions in variant_groups:
            peak = max((audio_bw[r.id].peak for r in renditions), default=0)
            average = max((audio_bw[r.id].average for r in renditions), default=0)
            codecs = video.track.codec_string + (f",{renditions[0].track.codec_string}" if renditions else "")
            variants.append(
                Variant(
                    uris.media(video.id),
                    bw.peak + peak,
                    bw.average + average,
                    codecs,
                    resolution,
                    Fraction(round(rate * 1000), 1000) if rate else None,
                    group_id,
                )
            )
        if uris.iframes is not None:
            iframes.append(IFrameVariant(uris.iframes(video.id), iframe_bandwidth(video, fmt), video.track.codec_string, resolution))
    names = rendition_names([r.track.language for r in media_set.audios])
    name_of = {r.id: names[i] for i, r in enumerate(media_set.audios)}
    audio = [
        AudioRendition(
            group_id,
            name=name_of[r.id],
            language=language_tag(r.track.language),
            uri=uris.media(r.id),
            default=i == 0,
            channels=r.track.audio.channels if r.track.audio else None,
        )
        for group_id, renditions in groups.items()
        for i, r in enumerate(renditions)
    ]
    return master_playlist(variants, audio, iframes, version=fmt.version, subtitles=subtitles)


def audio_groups(audios: Sequence[Rendition]) -> dict[str, tuple[Rendition, ...]]:
    """The EXT-X-MEDIA groups of ``audios``: one per codec. Apple ("Adding alternate media to a playlist":
    the elements of a group have the same codecs) and Dolby's multi-codec HLS guide give each codec its
    group and each video a variant per group, so a variant's CODECS names exactly what it plays and a
    player that cannot decode AC-3, say, still takes the AAC variant. The first codec's group is
    ``audio``, the others ``audio-<codec>``, in the order the renditions come."""
    by_codec: dict[str, list[Rendition]] = {}
    for rendition in audios:
        by_codec.setdefault(rendition.track.codec_string, []).append(rendition)
    return {
        AUDIO_GROUP if i == 0 else f"{AUDIO_GROUP}-{codec}": tuple(renditions)
        for i, (codec, renditions) in enumerate(by_codec.items())
    }


def build_media(rendition: Rendition, fmt: SegmentFormat, segment_uri: Callable[[Segment], str], init_uri: str | None,
                key_uri: Callable[[Segment], str | None] | None = None, key_method: str = "AES-128",
                key_iv: Callable[[Segment], int] | None = None) -> str:
    """``key_uri``: the key URI of each segment (packager/encryption.py); None for clear media. ``key_method``:
    "AES-128" or "SAMPLE-AES" (packager/ts/sample_aes.py); ``key_iv``: each segment's explicit IV, written on
    the EXT-X-KEY tags (None: the media sequence number, unwritten)."""
    check_format(rendition, fmt)
    segments = [PlaylistSegment(segment_uri(s), s.duration, key_uri=key_uri(s) if key_uri else None,
                                key_iv=key_iv(s) if key_iv and key_uri else None) for s in rendition.segments]
    init = InitSection(init_uri) if fmt.has_init and init_uri else None
    return media_playlist(segments, target_duration=target_duration(rendition.segments), version=fmt.version, init=init,
                          key_method=key_method)


def build_iframes(rendition: Rendition, fmt: SegmentFormat, segment_uri: Callable[[Segment], str], init_uri: str | None) -> str:
    """Every keyframe over TS, each a byte range of its segment behind the PAT/PMT of EXT-X-MAP; one per
    segment over fMP4 (packager/hls/iframes.py says why)."""
    check_format(rendition, fmt)
    entries = iframe_entries(rendition.track, rendition.segments, fmt)
    segments = [PlaylistSegment(segment_uri(f.segment), f.duration, f.byterange) for f in entries]
    if fmt.has_init:
        init = InitSection(init_uri) if init_uri else None
    else:
        init = InitSection(segment_uri(rendition.segments[0]), PSI_RANGE) if rendition.segments else None
    return media_playlist(
        segments,
        target_duration=target_duration(rendition.segments),
        version=fmt.iframes_version,
        init=init,
        iframes_only=True,
    )


def iframe_bandwidth(rendition: Rendition, fmt: SegmentFormat) -> int:
    """Peak bits/s of an I-frame playlist: the largest I-frame over its duration (its EXT-X-MAP aside)."""
    rates = [f.byterange[0] * 8 / f.duration for f in iframe_entries(rendition.track, rendition.segments, fmt) if f.duration > 0]
    return math.ceil(max(rates, default=0))
