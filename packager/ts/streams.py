"""Which elementary stream a track becomes: PID, stream type, stream id and
the per-sample rewriting (Annex B for video, ADTS for audio)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from ..errors import UnsupportedMedia
from ..media import Track
from . import pes, psi
from .adts import AdtsConfig
from .annexb import H264, HEVC, AnnexB

_VIDEO_CODECS = {"avc1": H264, "avc3": H264, "hvc1": HEVC, "hev1": HEVC}
_STREAM_TYPES = {H264: psi.STREAM_TYPE_H264, HEVC: psi.STREAM_TYPE_HEVC}


@dataclass(frozen=True)
class ElementaryStream:
    kind: str  # "video" or "audio"
    pid: int
    stream_type: int
    stream_id: int
    language: str | None
    annexb: AnnexB | None = None
    adts: AdtsConfig | None = None

    @property
    def is_video(self) -> bool:
        return self.kind == "video"


_cache: "weakref.WeakKeyDictionary[Track, ElementaryStream]" = weakref.WeakKeyDictionary()


def elementary_stream(track: Track) -> ElementaryStream:
    """The stream description of ``track`` (cached per track)."""
    stream = _cache.get(track)
    if stream is None:
        stream = _cache[track] = _describe(track)
    return stream


def _describe(track: Track) -> ElementaryStream:
    if track.kind == "video":
        codec = _VIDEO_CODECS.get(track.fourcc)
        if codec is None or track.video is None:
            raise UnsupportedMedia(f"video codec {track.fourcc!r} cannot be packaged as MPEG-TS")
        annexb = AnnexB.for_track(codec, track.video.nal_length_size, track.video.parameter_sets)
        return ElementaryStream("video", psi.VIDEO_PID, _STREAM_TYPES[codec], pes.STREAM_ID_VIDEO, None, annexb=annexb)
    if track.kind == "audio":
        if track.fourcc != "mp4a" or track.audio is None or not track.audio.audio_specific_config:
            raise UnsupportedMedia(f"audio codec {track.fourcc!r} cannot be packaged as MPEG-TS")
        adts = AdtsConfig.from_audio_specific_config(track.audio.audio_specific_config)
        return ElementaryStream("audio", psi.AUDIO_PID, psi.STREAM_TYPE_AAC_ADTS, pes.STREAM_ID_AUDIO, track.language, adts=adts)
    raise UnsupportedMedia(f"{track.kind} tracks cannot be packaged as MPEG-TS")
