"""From a segment's sample span to the byte ranges to read and back to a SampleBatch.

Adjacent samples are merged into one read, so a segment of an interleaved
file costs one read per chunk run, not one per frame.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import MalformedMedia
from .media import ByteRange, SampleBatch, SampleSpan, Track


def byte_ranges(track: Track, span: SampleSpan) -> list[ByteRange]:
    """The merged file ranges holding samples [first, stop) of ``track``, in order."""
    offsets = track.offsets[span.first : span.stop]
    sizes = track.sizes[span.first : span.stop]
    if offsets.size == 0:
        return []
    ends = offsets + sizes
    breaks = np.flatnonzero(offsets[1:] != ends[:-1]) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [offsets.size]))
    return [
        ByteRange(int(offsets[a]), int(ends[b - 1] - offsets[a]))
        for a, b in zip(starts.tolist(), stops.tolist())
    ]


def batch_times(track: Track, span: SampleSpan) -> tuple[np.ndarray, np.ndarray]:
    """(presentation-shifted decode times, durations) of the samples of ``span``, as a SampleBatch carries them."""
    dts = track.dts[span.first : span.stop] + track.presentation_shift
    durations = track.durations[span.first : span.stop]
    if span.first == 0 and track.late_start and span.stop > 0:
        # The track's first sample presents from 0 and is held over the delay (Track.late_start);
        # its longer duration keeps every later decode time where it was.
        durations = durations.copy()
        dts[0] -= track.late_start
        durations[0] += track.late_start
    return dts, durations


def make_batch(track: Track, span: SampleSpan, chunks: Sequence[bytes], sequence_number: int = 1) -> SampleBatch:
    """Assemble the bytes read for :func:`byte_ranges` into a SampleBatch."""
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    sizes = track.sizes[span.first : span.stop]
    if len(data) != int(sizes.sum()):
        raise MalformedMedia(
            f"track {track.track_id}: read {len(data)} bytes for samples {span.first}-{span.stop} "
            f"but the index says {int(sizes.sum())} (file changed or truncated?)"
        )
    dts, durations = batch_times(track, span)
    return SampleBatch(
        track=track,
        data=data,
        sizes=sizes,
        dts=dts,
        cts_offsets=track.cts_offsets[span.first : span.stop],
        durations=durations,
        keyframes=track.keyframes[span.first : span.stop],
        sequence_number=sequence_number,
    )
