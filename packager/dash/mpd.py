"""A static DASH MPD (ISO/IEC 23009-1) over the fMP4 init and media segments the HLS ``/cmaf/`` URLs serve.

No second muxer: every Representation points at a rendition's ``cmaf`` init and segments, and its
SegmentTimeline lists the fragments' own times (packager.fmp4.fragment_timeline: each ``S@t`` is the
fragment's tfdt, in the track's timescale). ``presentationTimeOffset`` is the track's pre-roll, which the
init's edit list removes for players that read it (packager/fmp4/init.py), so both kinds of player place a
segment where the other tracks' are.

One AdaptationSet holds the video flavors (their segments align: packager/segmenter.py), one per audio
rendition follows. Segments are named by a SegmentTemplate (``seg-$Number$.m4s``); where a segment has
another name (a preview's clipped last segment, ``seg-N-p{E}.m4s``) the Representation lists them with a
SegmentList instead, on the same timeline.

Every URL ends with :data:`QUERY_SLOT`: the MPD is cached without any viewer's query, and
:func:`with_viewer_query` fills each slot per response (token propagation, as HLS playlists get).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence
from xml.sax.saxutils import escape

from ..fmp4.fragment import fragment_timeline
from ..formats import FMP4
from ..hls.build import rendition_bandwidth
from ..hls.language import language_tag
from ..hls.uris import QUERY_SLOT  # one slot for a viewer's query, in playlists and MPDs (never in XML text either)
from ..media import Segment
from ..media_set import MediaSet, Rendition, RenditionId, frame_rate

PROFILE = "urn:mpeg:dash:profile:isoff-live:2011"
CHANNELS_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"
ROLE_SCHEME = "urn:mpeg:dash:role:2011"


@dataclass(frozen=True)
class DashText:
    """A subtitle track as one WebVTT file (relative to the MPD), its BCP 47 language and id."""

    url: str
    language: str
    track: str
    forced: bool = False


@dataclass(frozen=True)
class DashUris:
    """Where a rendition's files are, relative to the MPD: its folder (``../cmaf/hi``, ``../cmaf/hi/a1``),
    its init's name, and each segment's name (``seg-3.m4s``, or a preview's ``seg-3-p12.5.m4s``)."""

    folder: Callable[[RenditionId], str]
    init: str
    segment: Callable[[Segment], str]


def build_mpd(media_set: MediaSet, uris: DashUris, texts: Sequence[DashText] = ()) -> str:
    seconds = media_set.duration
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" profiles="{PROFILE}" '
        f'mediaPresentationDuration="{_duration(seconds)}" minBufferTime="{_duration(2 * media_set.target)}">',
        '  <Period id="1" start="PT0S">',
    ]
    set_id = 1
    if media_set.videos:
        widest = max(media_set.videos, key=lambda r: r.track.video.width if r.track.video else 0)
        info = widest.track.video
        size = f' maxWidth="{info.width}" maxHeight="{info.height}"' if info else ""
        # flavors cut at keyframes of their own align only when their encoder placed them alike (a ladder does)
        grids = {tuple(s.start for s in v.segments) for v in media_set.videos}
        lines.append(f'    <AdaptationSet id="{set_id}" contentType="video" mimeType="video/mp4" '
                     f'segmentAlignment="{"true" if len(grids) == 1 else "false"}" startWithSAP="1"{size}>')
        for video in media_set.videos:
            lines += _representation(video, uris, _video_attributes(video))
        lines.append("    </AdaptationSet>")
        set_id += 1
    for i, audio in enumerate(media_set.audios):
        language = language_tag(audio.track.language)
        lang = f' lang="{escape(language)}"' if language else ""
        lines.append(f'    <AdaptationSet id="{set_id}" contentType="audio" mimeType="audio/mp4" segmentAlignment="true"{lang}>')
        if i == 0:
            lines.append(f'      <Role schemeIdUri="{ROLE_SCHEME}" value="main"/>')
        info = audio.track.audio
        extra = f' audioSamplingRate="{info.sample_rate}"' if info else ""
        children = [f'        <AudioChannelConfiguration schemeIdUri="{CHANNELS_SCHEME}" value="{info.channels}"/>'] if info else []
        lines += _representation(audio, uris, extra, children)
        lines.append("    </AdaptationSet>")
        set_id += 1
    for text in texts:  # a whole WebVTT file each: its times are the presentation's
        role = "forced-subtitle" if text.forced else "subtitle"
        lines += [
            f'    <AdaptationSet id="{set_id}" contentType="text" mimeType="text/vtt" lang="{escape(text.language)}">',
            f'      <Role schemeIdUri="{ROLE_SCHEME}" value="{role}"/>',
            f'      <Representation id="sub:{escape(text.track)}" bandwidth="256">',
            f"        <BaseURL>{escape(text.url)}{QUERY_SLOT}</BaseURL>",
            "      </Representation>",
            "    </AdaptationSet>",
        ]
        set_id += 1
    lines += ["  </Period>", "</MPD>", ""]
    return "\n".join(lines)


def with_viewer_query(mpd: str, query: str) -> str:
    """The cached MPD for one viewer: ``?query`` (URL-encoded, XML-escaped here) on every URL, or nothing."""
    return mpd.replace(QUERY_SLOT, escape("?" + query, {'"': "&quot;"}) if query else "")


def _video_attributes(video: Rendition) -> str:
    info = video.track.video
    out = f' width="{info.width}" height="{info.height}"' if info else ""
    rate = frame_rate(video.track)
    if rate:
        rate = Fraction(round(rate * 1000), 1000)
        out += f' frameRate="{rate.numerator}"' if rate.denominator == 1 else f' frameRate="{rate.numerator}/{rate.denominator}"'
    return out


def _representation(rendition: Rendition, uris: DashUris, attributes: str, children: Sequence[str] = ()) -> list[str]:
    track = rendition.track
    rid = rendition.id
    name = rid.flavor if rid.audio is None else f"{rid.flavor}:a{rid.audio}"  # ":" is in no flavor id: ids never collide
    bandwidth = rendition_bandwidth(rendition, FMP4).peak
    folder = uris.folder(rid)
    lines = [f'      <Representation id="{escape(name)}" bandwidth="{bandwidth}" codecs="{escape(track.codec_string)}"{attributes}>',
             *children]
    times = fragment_timeline(track, [s.span for s in rendition.segments])
    names = [uris.segment(s) for s in rendition.segments]
    init = f"{escape(folder)}/{escape(uris.init)}{QUERY_SLOT}"
    timing = f'timescale="{track.timescale}" presentationTimeOffset="{track.pre_roll}"'
    if all(n == f"seg-{s.number}.m4s" for n, s in zip(names, rendition.segments)):
        media = f"{escape(folder)}/seg-$Number$.m4s{QUERY_SLOT}"
        lines.append(f'        <SegmentTemplate {timing} initialization="{init}" media="{media}" startNumber="1">')
        lines += _timeline(times)
        lines.append("        </SegmentTemplate>")
    else:  # a segment named otherwise (a preview's clipped last one): each named, on the same timeline
        lines.append(f"        <SegmentList {timing}>")
        lines.append(f'          <Initialization sourceURL="{init}"/>')
        lines += _timeline(times)
        lines += [f'          <SegmentURL media="{escape(folder)}/{escape(n)}{QUERY_SLOT}"/>' for n in names]
        lines.append("        </SegmentList>")
    lines.append("      </Representation>")
    return lines


def _timeline(times: list[tuple[int, int]]) -> list[str]:
    """S elements: a run of equal, back-to-back durations is one ``S`` with ``r``; ``t`` where a run starts."""
    out = ["          <SegmentTimeline>"]
    expected = None
    run: list = []  # [t or None, d, r]
    for t, d in times:
        if run and t == expected and d == run[1]:
            run[2] += 1
        else:
            if run:
                out.append(_s(*run))
            run = [t if t != expected else None, d, 0]
        expected = t + d
    if run:
        out.append(_s(*run))
    out.append("          </SegmentTimeline>")
    return out


def _s(t: int | None, d: int, r: int) -> str:
    return "            <S" + (f' t="{t}"' if t is not None else "") + f' d="{d}"' + (f' r="{r}"' if r else "") + "/>"


def _duration(seconds: Fraction) -> str:
    return f"PT{float(seconds):.3f}S"
