"""Media time covered by a byte range of a progressive MP4: a pure function of the sample table.

A progressive viewer receives bytes, not seconds. The samples whose bytes lie
entirely inside the bytes actually sent are the ones the player could decode;
their presentation window is the media time that response delivered.
"""

from __future__ import annotations

from dataclasses import dataclass

from packager.media import MediaIndex, Track


@dataclass(frozen=True)
class MediaSpan:
    start: float  # seconds of presentation time
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def reference_track(index: MediaIndex) -> Track | None:
    """The track whose samples stand for the file's media time: the video, else the first audio."""
    video = index.video
    if video is not None and video.sample_count:
        return video
    return next((t for t in index.audios if t.sample_count), None)


def byte_range_media_time(index: MediaIndex, first_byte: int, last_byte: int) -> MediaSpan | None:
    """Presentation window of the reference track's samples fully inside ``[first_byte, last_byte]``.

    ``None`` when no whole sample is inside (a range over the moov box only, or
    smaller than one frame). Times are seconds on the movie timeline (edit list
    applied, clamped at the edit list's end).
    """
    track = reference_track(index)
    if track is None or last_byte < first_byte:
        return None
    offsets = track.offsets
    inside = (offsets >= first_byte) & (offsets + track.sizes - 1 <= last_byte)
    if not inside.any():
        return None
    pts = track.pts[inside]
    ends = pts + track.durations[inside]
    start = int(pts.min())
    end = int(ends.max())
    if track.edit_end is not None:
        end = min(end, track.edit_end)
    start = max(start, 0)
    if end <= start:
        return None
    scale = track.timescale
    return MediaSpan(start / scale, end / scale)


def index_duration(index: MediaIndex) -> float:
    return float(index.duration_seconds)


__all__ = ["MediaSpan", "byte_range_media_time", "index_duration", "reference_track"]
