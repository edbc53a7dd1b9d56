"""Multivariant, media and I-frame playlists from typed descriptions.

The writer knows HLS, not our URL scheme: callers pass the (relative) URIs.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from . import tags as t

# EXT-X-VERSION by feature (RFC 8216 section 7): decimal EXTINF needs 3,
# EXT-X-BYTERANGE / I-FRAMES-ONLY need 4, EXT-X-MAP in an I-frame playlist 5
# (our TS I-frame playlists name the PAT/PMT with it: each keyframe's range is
# its PES alone, packager/hls/iframes.py), EXT-X-MAP for ordinary segments 6.
# We announce 7 for fMP4 as Apple's authoring spec does for CMAF.
VERSION_TS = 3
VERSION_TS_IFRAMES = 5
VERSION_FMP4 = 7
VERSION_KEYFORMAT = 5  # an EXT-X-KEY with KEYFORMAT (our SAMPLE-AES playlists) needs 5 (RFC 8216 section 7)

EXTINF_PLACES = 6  # microseconds: the sum of EXTINF stays within a frame of the real duration


@dataclass(frozen=True)
class PlaylistSegment:
    uri: str
    duration: Fraction
    byterange: tuple[int, int] | None = None  # (length, offset)
    key_uri: str | None = None  # AES-128 key of this segment (None: clear); EXT-X-KEY is written where it changes
    key_iv: int | None = None  # an explicit IV for the EXT-X-KEY (None: the media sequence number, RFC 8216 5.2)


@dataclass(frozen=True)
class InitSection:
    uri: str
    byterange: tuple[int, int] | None = None


def media_playlist(
    segments: Sequence[PlaylistSegment],
    *,
    target_duration: int,
    version: int,
    init: InitSection | None = None,
    iframes_only: bool = False,
    key_method: str = "AES-128",
) -> str:
    """``key_method``: METHOD of the EXT-X-KEY tags, "AES-128" or "SAMPLE-AES" (written with
    KEYFORMAT="identity", and EXT-X-VERSION 5 at least)."""
    sample_aes = key_method == "SAMPLE-AES" and any(s.key_uri for s in segments)
    if sample_aes:
        version = max(version, VERSION_KEYFORMAT)
    lines = [t.EXTM3U, t.value_tag(t.EXT_X_VERSION, version)]
    lines.append(t.value_tag(t.EXT_X_TARGETDURATION, target_duration))
    lines.append(t.value_tag(t.EXT_X_MEDIA_SEQUENCE, 1))  # our segment numbers start at 1
    lines.append(t.value_tag(t.EXT_X_PLAYLIST_TYPE, "VOD"))
    lines.append(t.EXT_X_INDEPENDENT_SEGMENTS)  # every segment starts with a keyframe
    if iframes_only:
        lines.append(t.EXT_X_I_FRAMES_ONLY)
    if init is not None:
        attrs: dict[str, t.AttributeValue | None] = {"URI": t.Quoted(init.uri)}
        if init.byterange:
            attrs["BYTERANGE"] = t.Quoted(t.byterange(*init.byterange))
        lines.append(t.tag(t.EXT_X_MAP, attrs))
    key: str | None = None
    for segment in segments:
        # after EXT-X-MAP: a key applies to the init sections declared after it (RFC 8216 4.3.2.4), so the
        # init stays clear and needs no IV attribute (4.3.2.5); segments use the sequence-number IV (5.2)
        if segment.key_uri != key:
            if segment.key_uri is None:
                lines.append(t.tag(t.EXT_X_KEY, {"METHOD": t.Enum("NONE")}))
            else:
                attrs = {"METHOD": t.Enum(key_method), "URI": t.Quoted(segment.key_uri)}
                if segment.key_iv is not None:
                    attrs["IV"] = t.Enum(f"0x{segment.key_iv:032x}")
                if sample_aes:
                    attrs["KEYFORMAT"] = t.Quoted("identity")
                lines.append(t.tag(t.EXT_X_KEY, attrs))
            key = segment.key_uri
        lines.append(f"{t.EXTINF}:{t.decimal(segment.duration, EXTINF_PLACES)},")
        if segment.byterange:
            lines.append(t.value_tag(t.EXT_X_BYTERANGE, t.byterange(*segment.byterange)))
        lines.append(segment.uri)
    lines.append(t.EXT_X_ENDLIST)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Variant:
    uri: str
    bandwidth: int  # peak, bits/s, audio included
    average_bandwidth: int
    codecs: str
    resolution: tuple[int, int] | None = None
    frame_rate: Fraction | None = None
    audio_group: str | None = None


@dataclass(frozen=True)
class AudioRendition:
    group_id: str
    name: str
    language: str | None
    uri: str
    default: bool
    channels: int | None = None


@dataclass(frozen=True)
class SubtitleRendition:
    """An EXT-X-MEDIA TYPE=SUBTITLES rendition (RFC 8216 4.3.4.1): every variant names its group."""

    name: str
    language: str
    uri: str
    default: bool
    forced: bool
    group_id: str = "subs"


@dataclass(frozen=True)
class IFrameVariant:
    uri: str
    bandwidth: int
    codecs: str
    resolution: tuple[int, int] | None = None


def master_playlist(
    variants: Sequence[Variant],
    audio: Sequence[AudioRendition] = (),
    iframes: Sequence[IFrameVariant] = (),
    *,
    version: int,
    subtitles: Sequence[SubtitleRendition] = (),
) -> str:
    lines = [t.EXTM3U, t.value_tag(t.EXT_X_VERSION, version), t.EXT_X_INDEPENDENT_SEGMENTS]
    for sub in subtitles:
        lines.append(
            t.tag(
                t.EXT_X_MEDIA,
                {
                    "TYPE": t.Enum("SUBTITLES"),
                    "GROUP-ID": t.Quoted(sub.group_id),
                    "NAME": t.Quoted(sub.name),
                    "LANGUAGE": t.Quoted(sub.language),
                    "DEFAULT": t.Enum("YES" if sub.default else "NO"),
                    # a forced track shows only what the audio does not say: chosen with the audio, not by a viewer
                    "AUTOSELECT": t.Enum("YES"),
                    "FORCED": t.Enum("YES" if sub.forced else "NO"),
                    "URI": t.Quoted(sub.uri),
                },
            )
        )
    groups = {sub.group_id for sub in subtitles}
    for rendition in audio:
        lines.append(
            t.tag(
                t.EXT_X_MEDIA,
                {
                    "TYPE": t.Enum("AUDIO"),
                    "GROUP-ID": t.Quoted(rendition.group_id),
                    "NAME": t.Quoted(rendition.name),
                    "LANGUAGE": t.Quoted(rendition.language) if rendition.language else None,
                    "DEFAULT": t.Enum("YES" if rendition.default else "NO"),
                    "AUTOSELECT": t.Enum("YES"),
                    "CHANNELS": t.Quoted(str(rendition.channels)) if rendition.channels else None,
                    "URI": t.Quoted(rendition.uri),
                },
            )
        )
    for variant in variants:
        lines.append(
            t.tag(
                t.EXT_X_STREAM_INF,
                {
                    "BANDWIDTH": variant.bandwidth,
                    "AVERAGE-BANDWIDTH": variant.average_bandwidth,
                    "CODECS": t.Quoted(variant.codecs),
                    "RESOLUTION": t.Resolution(*variant.resolution) if variant.resolution else None,
                    "FRAME-RATE": variant.frame_rate,
                    "AUDIO": t.Quoted(variant.audio_group) if variant.audio_group else None,
                    "SUBTITLES": t.Quoted(next(iter(groups))) if len(groups) == 1 else None,
                },
            )
        )
        lines.append(variant.uri)
    for iframe in iframes:
        lines.append(
            t.tag(
                t.EXT_X_I_FRAME_STREAM_INF,
                {
                    "BANDWIDTH": iframe.bandwidth,
                    "CODECS": t.Quoted(iframe.codecs),
                    "RESOLUTION": t.Resolution(*iframe.resolution) if iframe.resolution else None,
                    "URI": t.Quoted(iframe.uri),
                },
            )
        )
    return "\n".join(lines) + "\n"
