"""Which elementary stream a track becomes: PID, stream type, stream id and
the per-sample rewriting (Annex B for video, ADTS for AAC; AC-3, E-AC-3 and
MP3 frames carry their own sync headers and go into PES as they are)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from ..errors import OpusNeedsFmp4, UnsupportedMedia
from ..media import AudioInfo, Track
from . import pes, psi
from .adts import HEADER_SIZE as ADTS_HEADER_SIZE
from .adts import AdtsConfig
from .annexb import H264, HEVC, AnnexB

_VIDEO_CODECS = {"avc1": H264, "avc3": H264, "hvc1": HEVC, "hev1": HEVC}
_STREAM_TYPES = {H264: psi.STREAM_TYPE_H264, HEVC: psi.STREAM_TYPE_HEVC}
# Passed-through audio: (stream type, stream id, registration descriptor's format_identifier)
_DOLBY = {
    "ac3": (psi.STREAM_TYPE_AC3, pes.STREAM_ID_PRIVATE_1, psi.FORMAT_AC3),
    "eac3": (psi.STREAM_TYPE_EAC3, pes.STREAM_ID_PRIVATE_1, psi.FORMAT_EAC3),
}
MPEG1_AUDIO_MIN_RATE = 32000  # MPEG-1 audio's lowest rate; below it is MPEG-2's half-rate extension


@dataclass(frozen=True)
class ElementaryStream:
    kind: str  # "video" or "audio"
    pid: int
    stream_type: int
    stream_id: int
    language: str | None
    annexb: AnnexB | None = None
    adts: AdtsConfig | None = None
    registration: bytes | None = None  # the PMT registration descriptor's format_identifier, if any

    @property
    def is_video(self) -> bool:
        return self.kind == "video"

    @property
    def frame_header_size(self) -> int:
        """Bytes each audio frame grows by in the stream: an ADTS header, or nothing when passed through."""
        return ADTS_HEADER_SIZE if self.adts is not None else 0

    def audio_frames(self, data, sizes: np.ndarray):
        """The audio samples in ``data`` (back to back) as the stream carries them."""
        return self.adts.frames(data, sizes) if self.adts is not None else data


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
    if track.kind == "audio" and track.audio is not None:
        return _audio_stream(track.audio, track.language, track.fourcc)
    raise UnsupportedMedia(f"{track.kind} track {track.fourcc!r} cannot be packaged as MPEG-TS")


def _audio_stream(audio: AudioInfo, language: str, fourcc: str) -> ElementaryStream:
    if audio.codec == "aac":
        if not audio.audio_specific_config:
            raise UnsupportedMedia(f"audio codec {fourcc!r} has no AudioSpecificConfig for ADTS")
        adts = AdtsConfig.from_audio_specific_config(audio.audio_specific_config)
        return ElementaryStream("audio", psi.AUDIO_PID, psi.STREAM_TYPE_AAC_ADTS, pes.STREAM_ID_AUDIO, language, adts=adts)
    if audio.codec == "mp3":
        # the same rule as ffmpeg's muxer: the stream type follows the MPEG version the rate implies
        stream_type = psi.STREAM_TYPE_MPEG1_AUDIO if audio.sample_rate >= MPEG1_AUDIO_MIN_RATE else psi.STREAM_TYPE_MPEG2_AUDIO
        return ElementaryStream("audio", psi.AUDIO_PID, stream_type, pes.STREAM_ID_AUDIO, language)
    if audio.codec in _DOLBY:
        stream_type, stream_id, registration = _DOLBY[audio.codec]
        return ElementaryStream("audio", psi.AUDIO_PID, stream_type, stream_id, language, registration=registration)
    if audio.codec == "opus":
        raise OpusNeedsFmp4("Opus audio is delivered in fMP4 only: use /cmaf/ instead of /hls/")
    raise UnsupportedMedia(f"audio codec {fourcc!r} cannot be packaged as MPEG-TS")  # pragma: no cover - AudioCodec is closed
