"""Where every byte of a TS segment goes, from sample sizes alone.

This is the one place the segment layout is decided; :func:`segment_size`
reads its total and :func:`mux_segment` fills it in, so the two cannot
disagree.

A segment is the PAT packet, the PMT packet, then one PES per video access
unit (or per group of audio frames) on the stream's PID. A PES of ``L`` bytes
(header + payload) takes ``n`` packets; the first carries the adaptation field
(PCR and/or stuffing) and the rest carry exactly 184 payload bytes each::

    first packet: header(4) | adaptation field(af) | PES bytes [0, 184 - af)
    others:       header(4) | 184 PES bytes

Laid end to end, the payload areas (everything after the 4-byte headers) of a
PES's packets are thus ``adaptation field + PES bytes``, exactly ``n * 184``
bytes -- which the muxer lays end to end in one buffer and copies into the
packets with one numpy assignment.

When the first packet's share of a PES is smaller than the PES header, the
header continues in the second packet; 13818-1 allows that, and demuxers
(ffmpeg, hls.js, ExoPlayer) reassemble the header across packets.

A PES with a PCR needs at least PCR_ADAPTATION_SIZE bytes of adaptation
field. When its length would then leave 1..8 bytes for a packet of their own,
the PES header takes that many extra stuffing bytes (allowed there, up to 32)
so that one stuffed first packet still absorbs the remainder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedMedia
from . import pes
from .packets import PACKET_SIZE, PAYLOAD_SIZE, PCR_ADAPTATION_SIZE
from .streams import ElementaryStream

PSI_PACKETS = 2  # PAT + PMT open every segment

# Audio frames are grouped into PES packets: a PES header and the stuffing of
# its first packet cost up to ~200 bytes, as much as an AAC frame. A PES takes
# 5 consecutive frames (~107 ms at 48 kHz, so a player joining mid-segment
# never waits long for a timestamp), counted from the segment's start; when
# those are large, it is cut further so that its frames all *start* within
# 2930 bytes of its own start -- ffmpeg's default pes_payload_size (15 * 184 +
# 170: 16 packets with the PES header), which a PES then passes by less than
# one frame. Unlike a greedy "fill until full" loop this is computable with
# array operations, for one segment or for all of a track's segments at once.
AUDIO_PES_PAYLOAD_TARGET = 2930
AUDIO_MAX_FRAMES_PER_PES = 5


@dataclass(frozen=True)
class SegmentLayout:
    """The layout of one or more consecutive segments of a stream."""

    bounds: np.ndarray  # int64 (n_pes + 1,): PES k holds samples [bounds[k], bounds[k+1])
    payload_size: np.ndarray  # int64, ES bytes (Annex B access units / ADTS frames) of each PES
    header_stuffing: np.ndarray  # int64, extra stuffing bytes in each PES header
    header_size: np.ndarray  # int64, PES header bytes (stuffing included)
    pcr: np.ndarray  # bool, whether the PES's first packet carries a PCR
    adaptation_size: np.ndarray  # int64, adaptation field bytes in the PES's first packet (0 = none)
    packet_count: np.ndarray  # int64, TS packets of each PES
    first_packet: np.ndarray  # int64, index of each PES's first packet among the stream's packets
    segment_packets: np.ndarray  # int64, packets of each segment, PAT and PMT included

    @property
    def pes_count(self) -> int:
        return int(self.payload_size.shape[0])

    @property
    def stream_packets(self) -> int:
        """Packets on the elementary stream PID (all segments)."""
        return int(self.segment_packets.sum()) - PSI_PACKETS * self.segment_packets.shape[0]

    @property
    def segment_sizes(self) -> np.ndarray:
        return self.segment_packets * PACKET_SIZE

    @property
    def size(self) -> int:
        """Bytes of all the segments laid out (of the segment, for one)."""
        return int(self.segment_packets.sum()) * PACKET_SIZE


def audio_pes_bounds(frame_sizes: np.ndarray, segment_start: np.ndarray) -> np.ndarray:
    """Group consecutive ADTS frames of ``frame_sizes`` bytes into PES packets
    (see AUDIO_PES_PAYLOAD_TARGET); ``segment_start`` marks each frame that
    opens a segment, where grouping starts afresh. Returns PES bounds."""
    n = frame_sizes.shape[0]
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    index = np.arange(n, dtype=np.int64)
    opening = np.maximum.accumulate(np.where(segment_start, index, 0))  # first frame of its segment
    opens_group = (index - opening) % AUDIO_MAX_FRAMES_PER_PES == 0
    group_first = np.maximum.accumulate(np.where(opens_group, index, 0))
    before = np.cumsum(frame_sizes) - frame_sizes  # ADTS bytes before each frame
    stretch = (before - before[group_first]) // AUDIO_PES_PAYLOAD_TARGET
    opens_pes = opens_group
    opens_pes[1:] |= stretch[1:] != stretch[:-1]
    return np.append(np.flatnonzero(opens_pes), n)


def compute_layout(
    stream: ElementaryStream,
    sizes: np.ndarray,
    keyframes: np.ndarray,
    nal_counts: np.ndarray | None = None,
    segment_starts: np.ndarray | None = None,
) -> SegmentLayout:
    """Lay out the segment(s) of ``stream`` whose samples have ``sizes``.

    ``segment_starts`` (default ``[0]``: one segment) are the sample indexes
    where consecutive segments begin; each gets its PAT and PMT, its own PES
    grouping and a PCR on its first PES. ``nal_counts`` (NAL units per
    sample) is needed only for video whose NAL length prefix is not 4 bytes;
    without it such a layout raises UnsupportedMedia, because its size then
    depends on the sample content.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    keyframes = np.asarray(keyframes, dtype=bool)
    if sizes.shape != keyframes.shape:
        raise ValueError("sizes and keyframes differ in length")
    n = sizes.shape[0]
    if segment_starts is None:
        segment_starts = np.zeros(1, dtype=np.int64)
    else:
        segment_starts = np.asarray(segment_starts, dtype=np.int64)
        if segment_starts.size == 0 or segment_starts[0] != 0 or (np.diff(segment_starts) < 0).any() or segment_starts[-1] > n:
            raise ValueError("segment starts must begin at 0, not decrease and stay within the samples")
    opens_segment = np.zeros(n + 1, dtype=bool)
    opens_segment[segment_starts] = True
    opens_segment = opens_segment[:n]

    if stream.is_video:
        assert stream.annexb is not None
        payload = stream.annexb.access_unit_sizes(sizes, keyframes, nal_counts)
        bounds = np.arange(n + 1, dtype=np.int64)  # one access unit per PES
    else:
        frames = sizes + stream.frame_header_size  # ADTS frames, or AC-3/E-AC-3/MP3 frames as they are
        bounds = audio_pes_bounds(frames, opens_segment)
        cumulative = np.concatenate(([0], np.cumsum(frames)))
        payload = cumulative[bounds[1:]] - cumulative[bounds[:-1]]
    starts = bounds[:-1]

    # PCR on each segment's first PES, and on every video PES opening at a
    # keyframe (where a player may join the stream).
    pcr = opens_segment[starts]
    if stream.is_video:
        pcr = pcr | keyframes[starts]
    min_adaptation = np.where(pcr, PCR_ADAPTATION_SIZE, 0)

    base_header = pes.header_size(reserve_dts=stream.is_video)
    first_capacity = PAYLOAD_SIZE - min_adaptation
    excess = base_header + payload - first_capacity  # bytes beyond a minimally adapted first packet
    remainder = excess % PAYLOAD_SIZE  # what a stuffed first packet would have to carry
    stuffing = np.where((excess > 0) & (remainder >= 1) & (remainder <= min_adaptation), min_adaptation + 1 - remainder, 0)

    header = base_header + stuffing
    length = header + payload
    if not stream.is_video and n and int(length.max()) - pes.UNCOUNTED_SIZE > pes.MAX_PES_PACKET_LENGTH:
        # audio PES packets state their 16-bit length; no real frame comes near it (AC-3's largest is 3840
        # bytes), a sample table can claim any size: refused here, where playlists and the muxer both look
        raise UnsupportedMedia(
            f"audio samples of up to {int(sizes.max())} bytes make a PES packet longer than MPEG-TS allows "
            f"({pes.MAX_PES_PACKET_LENGTH} bytes)"
        )
    packets = 1 + np.maximum(0, -(-(length - first_capacity) // PAYLOAD_SIZE))
    adaptation = PAYLOAD_SIZE - (length - (packets - 1) * PAYLOAD_SIZE)

    if segment_starts.shape[0] == 1:
        per_segment = np.array([packets.sum()], dtype=np.int64)
    else:
        segment_of_pes = np.searchsorted(segment_starts, starts, side="right") - 1
        per_segment = np.bincount(segment_of_pes, weights=packets, minlength=segment_starts.shape[0]).astype(np.int64)
    return SegmentLayout(
        bounds=bounds,
        payload_size=payload,
        header_stuffing=stuffing,
        header_size=header,
        pcr=pcr,
        adaptation_size=adaptation,
        packet_count=packets,
        first_packet=np.cumsum(packets) - packets,
        segment_packets=per_segment + PSI_PACKETS,
    )
