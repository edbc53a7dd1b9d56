"""An entry's media set: which tracks of which flavors play as what, and their segments.

Input: the parsed index of every flavor of one entry. Output: video
renditions (one per flavor with video; each a variant of the master
playlist) and audio renditions (one per language, first flavor wins; an
EXT-X-MEDIA group), each with its segment plan. Audio is cut at the video's
boundaries so segment N of every rendition covers the same time.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Sequence

from .errors import NotFound, UnsupportedMedia
from .media import MediaIndex, Segment, Track
from .segmenter import DEFAULT_TARGET, duration_boundaries, keyframe_boundaries, plan_segments


@dataclass(frozen=True)
class RenditionId:
    """A track of a flavor: its video (audio=None), or its audio track number ``audio`` (1-based)."""

    flavor: str
    audio: int | None = None


@dataclass(frozen=True, eq=False)
class Rendition:
    id: RenditionId
    track: Track
    segments: tuple[Segment, ...]

    @property
    def kind(self) -> str:
        return self.track.kind


@dataclass(frozen=True, eq=False)
class MediaSet:
    videos: tuple[Rendition, ...]
    audios: tuple[Rendition, ...]
    target: Fraction
    boundaries: tuple[Fraction, ...]

    def rendition(self, rid: RenditionId) -> Rendition:
        """The rendition ``rid`` names; a flavor without video answers for its first audio track."""
        for rendition in self.videos + self.audios:
            if rendition.id == rid:
                return rendition
        if rid.audio is None and not any(v.id.flavor == rid.flavor for v in self.videos):
            return self.rendition(RenditionId(rid.flavor, 1))
        raise NotFound(f"no rendition {rid.flavor}" + (f" audio {rid.audio}" if rid.audio else ""))

    @property
    def audio_only(self) -> bool:
        return not self.videos

    @cached_property
    def duration(self) -> Fraction:
        """Presentation duration of the entry: where its longest rendition ends."""
        return max((r.segments[-1].start + r.segments[-1].duration for r in self.videos + self.audios if r.segments), default=Fraction(0))


def build_media_set(flavors: Sequence[tuple[str, MediaIndex]], target: Fraction = DEFAULT_TARGET) -> MediaSet:
    """Build the media set of an entry from ``(flavor_id, index)`` pairs, in catalog order."""
    if not flavors:
        raise NotFound("entry has no flavors")
    with_video = [(fid, index) for fid, index in flavors if index.video is not None]
    # A file with video is cut at its own keyframes (the same rule, so aligned
    # ladders agree); its audio at the same times; audio-only files at the
    # first video's boundaries, or on the plain grid when there is no video.
    own = {fid: keyframe_boundaries(index.video, target) for fid, index in with_video}
    if with_video:
        boundaries = own[with_video[0][0]]
    else:
        first_audio = next((i.audios[0] for _, i in flavors if i.audios), None)
        if first_audio is None:
            raise UnsupportedMedia("entry has neither video nor audio")
        boundaries = duration_boundaries(first_audio, target)
    videos = tuple(
        Rendition(RenditionId(fid), index.video, tuple(plan_segments(index.video, own[fid]))) for fid, index in with_video
    )
    audios = []
    # One rendition per language and codec: flavors of a ladder repeat their audio, but one that is the
    # only AAC of a language next to another flavor's Opus is what MPEG-TS masters and players without
    # Opus play (HLS groups audio by codec: packager.hls.build.audio_groups).
    seen: set[tuple[str, str]] = set()
    for fid, index in flavors:
        for number, track in enumerate(index.audios, start=1):
            key = (track.language, track.audio.codec if track.audio else track.fourcc)
            if key in seen:
                continue
            seen.add(key)
            cuts = own.get(fid, boundaries)
            audios.append(Rendition(RenditionId(fid, number), track, tuple(plan_segments(track, cuts))))
    return MediaSet(videos, tuple(audios), target, tuple(boundaries))


def frame_rate(track: Track) -> Fraction | None:
    if track.kind != "video" or track.sample_count < 2:
        return None
    span = int(track.dts[-1] - track.dts[0]) + int(track.durations[-1])
    return Fraction(track.sample_count * track.timescale, span) if span else None
