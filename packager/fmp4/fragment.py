"""fMP4 media segments (.m4s): styp + moof + mdat for one track.

Timing. A :class:`~packager.media.SampleBatch` gives decode times already shifted
by the track's ``presentation_shift`` (the edit list), so ``dts + cts_offsets``
is presentation time and early samples may present before 0 (the track's
``pre_roll``: frames a start trim keeps before its edit, AAC priming). Written
times are presentation time plus that pre-roll, which the init segment's edit
list removes again (as in the source file), so every written time is >= 0. The
decode clock is chosen by :func:`decode_base`; the composition offset written
is whatever makes ``tfdt + sum(earlier durations) + offset`` equal the written
presentation time exactly (negative offsets -> trun version 1).

Layout. The moof is the same shape for every segment of a track: one traf with
tfhd (default-base-is-moof), tfdt v1 and a trun with per-sample duration, size,
composition offset and -- for video -- flags (audio samples are all sync: one
default_sample_flags in tfhd). Its size therefore depends only on the track's
kind and the sample count, and :func:`media_segment_size` gets it by running
the very code that writes it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from packager.errors import MalformedMedia
from packager.media import SampleBatch, Track
from packager.samples import batch_times

from .cbcs import CbcsKey

from . import cbcs
from .boxes import (
    Box,
    Chunk,
    MediaDataBox,
    MovieFragmentBox,
    MovieFragmentHeaderBox,
    SampleFlags,
    SegmentTypeBox,
    TrackFragmentBaseMediaDecodeTimeBox,
    TrackFragmentBox,
    TrackFragmentHeaderBox,
    TrackRunBox,
)

#: styp of every media segment: a media segment conforming to the DASH/ISO BMFF media segment rules.
SEGMENT_TYPE = SegmentTypeBox(major_brand=b"msdh", minor_version=0, compatible_brands=(b"msdh",))


def decode_base(track: Track) -> int:
    """What to add to a batch's (presentation-shifted) dts to get the written decode time.

    Two rules fix it. The track's first sample -- a keyframe -- is written with decode time
    equal to its presentation time (its composition offset moves onto the decode clock), so
    every segment's tfdt is the presentation time its keyframe starts at: players that place a
    segment by its tfdt (shaka, hls.js) put it where the playlist does, even behind an empty
    edit. And the earliest sample is written at time 0 or later: the track's ``pre_roll`` (the
    frames a start trim keeps before the edit, AAC priming) is added, and the init segment's
    edit list (:func:`packager.fmp4.init.edit_list`) takes it off again.
    """
    if track.sample_count == 0:
        return 0
    return int(track.cts_offsets[0]) + track.pre_roll


def fragment_timeline(track: Track, spans) -> list[tuple[int, int]]:
    """(tfdt, duration) of the fragment :func:`media_segment` writes for each of ``spans``, in the track's
    timescale, without reading a sample: what a DASH SegmentTimeline lists (packager/dash)."""
    base = decode_base(track)
    out = []
    for span in spans:
        dts, durations = batch_times(track, span)
        out.append((int(dts[0]) + base, int(durations.sum())))
    return out


def _as_bytes_view(data: bytes | bytearray | memoryview) -> Chunk:
    if isinstance(data, memoryview) and (data.ndim != 1 or data.itemsize != 1):
        return data.cast("B")
    return data


def _movie_fragment(
    *,
    track_id: int,
    video: bool,
    sequence_number: int,
    base_decode_time: int,
    durations: np.ndarray,
    sizes: np.ndarray,
    keyframes: np.ndarray,
    composition_offsets: np.ndarray,
    data_offset: int,
    protection: tuple[Box, ...] = (),
) -> MovieFragmentBox:
    """The moof: mfhd + traf(tfhd, tfdt, trun[, protection]). Without ``protection`` (cbcs boxes, which end
    the traf) its shape depends only on ``video`` and the sample count."""
    return MovieFragmentBox(
        (
            MovieFragmentHeaderBox(sequence_number),
            TrackFragmentBox(
                (
                    TrackFragmentHeaderBox(track_id, default_sample_flags=None if video else SampleFlags.SYNC),
                    TrackFragmentBaseMediaDecodeTimeBox(base_decode_time),
                    TrackRunBox.from_columns(
                        durations=durations,
                        sizes=sizes,
                        sample_flags=np.where(keyframes, SampleFlags.SYNC, SampleFlags.NON_SYNC) if video else None,
                        composition_offsets=composition_offsets,
                        data_offset=data_offset,
                    ),
                    *protection,
                )
            ),
        )
    )


def _zeros_fragment(video: bool, count: int) -> dict:
    zeros = np.zeros(count, dtype=np.int64)
    return dict(
        track_id=1,
        video=video,
        sequence_number=1,
        base_decode_time=0,
        durations=zeros,
        sizes=zeros,
        keyframes=zeros.astype(bool),
        composition_offsets=zeros,
    )


@lru_cache(maxsize=4096)
def _moof_size(video: bool, count: int) -> int:
    """Bytes of the moof of ``count`` samples, by writing one (no field has a data-dependent width)."""
    return len(_movie_fragment(**_zeros_fragment(video, count), data_offset=0))


def _segment_chunks(*, data: Chunk, protection: tuple[Box, ...] = (), **fragment) -> list[Chunk]:
    """styp + moof + mdat as a flat chunk list; ``data`` is the last chunk, uncopied."""
    media_data = MediaDataBox(data).chunks()  # [mdat header, data]
    # data_offset counts from the moof's first byte to the first sample byte.
    data_offset = _moof_size(fragment["video"], len(fragment["durations"])) + sum(map(len, protection)) + len(media_data[0])
    moof = _movie_fragment(**fragment, data_offset=data_offset, protection=protection).chunks()
    if sum(map(len, moof)) + len(media_data[0]) != data_offset:  # cheap: ~20 small chunks
        raise AssertionError("moof size depends on sample values: data_offset would be wrong")
    return SEGMENT_TYPE.chunks() + moof + media_data


def media_segment(batch: SampleBatch, key: CbcsKey | None = None) -> bytes:
    """The .m4s bytes of one batch: styp, moof (sequence = batch.sequence_number), mdat; with ``key``, the
    samples encrypted with 'cbcs' and the moof saying how (packager/fmp4/cbcs.py)."""
    track = batch.track
    count = batch.sample_count
    if count == 0:
        raise MalformedMedia(f"track {track.track_id}: empty media segment")
    columns = (batch.dts, batch.cts_offsets, batch.durations, batch.keyframes)
    if any(column.shape != (count,) for column in columns):
        raise MalformedMedia(f"track {track.track_id}: sample batch columns differ in length")
    data = _as_bytes_view(batch.data)
    if int(batch.sizes.sum()) != len(data):
        raise MalformedMedia(
            f"track {track.track_id}: sample sizes add up to {int(batch.sizes.sum())}, data has {len(data)}"
        )

    durations = batch.durations.astype(np.int64, copy=False)
    base_decode_time = int(batch.dts[0]) + decode_base(track)
    if base_decode_time < 0:
        raise MalformedMedia(f"track {track.track_id}: negative decode time {base_decode_time}")
    # Decode times as a reader of this trun derives them (tfdt + earlier durations);
    # offsets relative to those make every sample's presentation time exact even
    # if a duration disagreed with the next dts.
    implied_dts = np.empty(count, dtype=np.int64)
    implied_dts[0] = base_decode_time
    np.cumsum(durations[:-1], out=implied_dts[1:])
    implied_dts[1:] += base_decode_time
    # Presentation times are written as they are plus the pre-roll the init's edit list
    # takes off again (tfdt + offset = batch.pts + pre_roll): only the decode clock moves.
    offsets = batch.dts + batch.cts_offsets + track.pre_roll - implied_dts

    protection: tuple[Box, ...] = ()
    if key is not None:
        encrypted = cbcs.encrypt_samples(track, data, batch.sizes, key)
        data = encrypted.data
        protection = cbcs.fragment_boxes(track, encrypted, key, _moof_size(track.kind == "video", count))
    chunks = _segment_chunks(
        track_id=track.track_id,
        video=track.kind == "video",
        sequence_number=batch.sequence_number,
        base_decode_time=base_decode_time,
        durations=durations,
        sizes=batch.sizes,
        keyframes=batch.keyframes,
        composition_offsets=offsets,
        data=data,
        protection=protection,
    )
    return b"".join(chunks)  # the one copy of the sample data


@lru_cache(maxsize=4096)
def _header_size(video: bool, sample_count: int) -> int:
    """Bytes of a segment of ``sample_count`` empty samples, by writing one.

    Nothing in styp/moof/mdat headers has a data-dependent width (tfdt is
    always 64-bit, trun v0 and v1 rows are the same size), so this is exact
    for any segment of that shape.
    """
    return sum(map(len, _segment_chunks(**_zeros_fragment(video, sample_count), data=b"")))


def media_segment_size(track: Track, samples: np.ndarray | int) -> int:
    """``len(media_segment(batch))`` without muxing, from sample sizes alone.

    ``samples`` is either the segment's sample sizes (an array: the result is
    the exact segment length) or just a sample count (an int: the result is the
    segment length minus the sample bytes, i.e. styp + moof + mdat header).
    """
    if isinstance(samples, (int, np.integer)):
        count, payload = int(samples), 0
    else:
        sizes = np.asarray(samples)
        count, payload = int(sizes.shape[0]), int(sizes.sum())
    if count < 0:
        raise ValueError(f"sample count {count} < 0")
    return _header_size(track.kind == "video", count) + payload
