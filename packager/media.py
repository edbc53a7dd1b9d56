"""The media model every packager stage shares: tracks, their sample tables and
the samples of one segment.

Sample tables are numpy arrays (one row per sample, decode order) so a 6-hour
flavor costs a few arrays, not a Python object per frame. Times are integers
in the track's own timescale; conversions to other clocks (90 kHz for MPEG-TS,
seconds for playlists) happen at the edge of each muxer with an explicit
rounding rule (see :func:`rescale`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Literal

import numpy as np

TrackKind = Literal["video", "audio"]
# What an audio track's samples are, whatever its sample entry says (mp4a carries both AAC and MP3).
AudioCodec = Literal["aac", "mp3", "ac3", "eac3", "opus"]


def rescale(value: int | np.ndarray, src_timescale: int, dst_timescale: int):
    """Convert times between timescales, rounding half up (floor(x + 1/2)).

    Works on Python ints and on int64 numpy arrays alike. Intermediate products
    stay in int64: a 6-hour track at timescale 10^6 times 90000 is ~2e15 < 2^63.
    """
    return (value * dst_timescale + src_timescale // 2) // src_timescale


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    nal_length_size: int  # bytes of each NAL unit's length prefix (1, 2 or 4)
    parameter_sets: tuple[bytes, ...]  # VPS/SPS/PPS NAL units, without length prefix or start code


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    audio_specific_config: bytes  # from esds DecoderSpecificInfo (AAC only; empty for other codecs)
    object_type: int  # AAC audio object type (2 = AAC-LC, 5 = HE-AAC); 0 for other codecs
    codec: AudioCodec = "aac"


@dataclass(frozen=True, eq=False)
class Track:
    """One track of an MP4 with its whole sample table.

    ``pts = dts + cts_offsets + presentation_shift``: the shift folds in the edit
    list (empty edits delay the track, a media edit's media_time trims its start)
    so presentation time 0 is the start of the movie timeline.
    """

    track_id: int
    kind: TrackKind
    fourcc: str  # sample entry type: avc1, avc3, hvc1, hev1, mp4a
    codec_string: str  # RFC 6381, e.g. avc1.64001f, hvc1.1.6.L93.B0, mp4a.40.2
    timescale: int
    language: str  # ISO 639-2/T from mdhd, "und" when unset
    sample_entry: bytes  # the raw stsd child box (header included), copied into fMP4 init segments
    video: VideoInfo | None
    audio: AudioInfo | None
    dts: np.ndarray  # int64, decode time of each sample
    cts_offsets: np.ndarray  # int64, pts - dts (ctts; may be negative)
    durations: np.ndarray  # int64, decode duration of each sample
    sizes: np.ndarray  # int64, bytes
    offsets: np.ndarray  # int64, absolute file offset of each sample
    keyframes: np.ndarray  # bool, sync samples (all True when stss is absent)
    presentation_shift: int  # added to dts + cts_offsets to get presentation time
    edit_end: int | None = None  # presentation time where the edit list ends the track, if it does

    @property
    def sample_count(self) -> int:
        return int(self.sizes.shape[0])

    @property
    def pts(self) -> np.ndarray:
        return self.dts + self.cts_offsets + self.presentation_shift

    @cached_property
    def end_time(self) -> int:
        """Presentation end of the track in its timescale (end of its last frame).

        Cached, like the other whole-track reductions below: the sample table never changes.
        """
        if self.sample_count == 0:
            return 0
        end = int((self.pts + self.durations).max())
        return min(end, self.edit_end) if self.edit_end is not None else end

    @cached_property
    def pre_roll(self) -> int:
        """How long before presentation time 0 the earliest sample presents (track timescale; 0 if none does).

        These samples are decoded but not shown: the frames from the keyframe a start-trimmed file
        (``ffmpeg -ss T -c copy``) had to keep up to the first frame of its edit, or the AAC priming
        frame. fMP4 hides them with an edit list; MPEG-TS has none (see docs/URLS.md, "Edit lists").
        """
        if self.sample_count == 0:
            return 0
        return max(0, -int(self.pts.min()))

    @cached_property
    def late_start(self) -> int:
        """How long after presentation time 0 the track's earliest sample presents (0 if at or before).

        A leading empty edit delays a track (video behind its audio). HLS players place a rendition
        by its first segment's first timestamp, so HLS segments present the first sample from 0
        instead (:func:`packager.samples.make_batch`): it is held over the delay, and no player
        sees a hole or shifts the rendition by the delay.
        """
        if self.sample_count == 0:
            return 0
        return max(0, int(self.pts.min()))

    @cached_property
    def duration_seconds(self) -> Fraction:
        return Fraction(self.end_time, self.timescale)

    @cached_property
    def bitrate(self) -> int:
        """Average bits per second over the track's duration."""
        seconds = self.duration_seconds
        return int(int(self.sizes.sum()) * 8 / seconds) if seconds else 0


@dataclass(frozen=True)
class SkippedTrack:
    """A track of the file left out of packaging, and why (an audio codec we cannot package)."""

    track_id: int
    kind: TrackKind
    codec: str  # its sample entry type (e.g. alac, ipcm; mp4a when the esds names another object type)
    reason: str

    def describe(self) -> str:
        return f"{self.kind} track {self.track_id} ({self.codec}) left out: {self.reason}"


@dataclass(frozen=True, eq=False)
class MediaIndex:
    """What parsing a file's moov tells: its tracks, in file order, and the tracks it left out."""

    tracks: tuple[Track, ...]
    movie_timescale: int
    brand: str = "isom"
    moov_offset: int = 0
    moov_size: int = 0
    file_size: int = 0
    skipped: tuple[SkippedTrack, ...] = ()

    @property
    def video(self) -> Track | None:
        return next((t for t in self.tracks if t.kind == "video"), None)

    @property
    def audios(self) -> tuple[Track, ...]:
        return tuple(t for t in self.tracks if t.kind == "audio")

    @property
    def duration_seconds(self) -> Fraction:
        return max((t.duration_seconds for t in self.tracks), default=Fraction(0))


@dataclass(frozen=True, eq=False)
class SampleBatch:
    """The samples of one track for one segment, in decode order.

    ``data`` is the concatenation of the samples' bytes; ``sizes`` splits it.
    Times are in ``track.timescale``; ``pts = dts + cts_offsets`` is already
    presentation time (edit list applied).
    """

    track: Track
    data: bytes | bytearray | memoryview
    sizes: np.ndarray  # int64
    dts: np.ndarray  # int64, presentation-shifted decode times
    cts_offsets: np.ndarray  # int64
    durations: np.ndarray  # int64
    keyframes: np.ndarray  # bool
    sequence_number: int = 1  # 1-based fragment number (fMP4 mfhd)
    continuity_start: int = 0  # TS: the stream PID's continuity counter at the segment's start (SegmentFormat.continuity)

    @property
    def sample_count(self) -> int:
        return int(self.sizes.shape[0])

    @property
    def pts(self) -> np.ndarray:
        return self.dts + self.cts_offsets


@dataclass(frozen=True)
class ByteRange:
    offset: int
    size: int


@dataclass(frozen=True)
class SampleSpan:
    """Samples [first, stop) of a track, as a segment plan names them."""

    first: int
    stop: int

    @property
    def count(self) -> int:
        return self.stop - self.first


@dataclass(frozen=True)
class Segment:
    """One media segment of one track: its sample span and presentation window."""

    number: int  # 1-based, as in the URL seg-{n}
    span: SampleSpan
    start: Fraction  # seconds, presentation
    duration: Fraction  # seconds, what EXTINF says
    keyframe_count: int = field(default=1)
