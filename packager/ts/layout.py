"""Where every byte of a TS segment goes, from sample sizes alone.

This is the one place the segment layout is decided; :func:`segment_size`
reads its total and :func:`mux_segment` fills it in, so the two cannot
disagree.

A segment is the PAT packet, the PMT packet, then one PES per video access
unit (or per group of AAC frames) on the stream's PID. A PES of ``L`` bytes
(header + payload) takes ``n`` packets; the first carries the adaptation field
(PCR and/or stuffing) and the rest carry exactly 184 payload bytes each::

    first packet: header(4) | adaptation field(af) | PES bytes [0, 184 - af)
    others:       header(4) | 184 PES bytes

Laid end to end, the payload areas (everything after the 4-byte headers) of a
PES's packets are thus ``adaptation field + PES bytes``, exactly ``n * 184``
bytes -- which the muxer builds with one ``bytes.join`` and copies into the
packets with one numpy assignment.

A PES with a PCR needs at least PCR_ADAPTATION_SIZE bytes of adaptation
field. When its length would then leave 1..8 bytes for a packet of their own,
the PES header takes that many extra stuffing bytes (allowed there, up to 32)
so that one stuffed first packet still absorbs the remainder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import pes
from .adts import HEADER_SIZE as ADTS_HEADER_SIZE
from .packets import PACKET_SIZE, PAYLOAD_SIZE, PCR_ADAPTATION_SIZE
from .streams import ElementaryStream

PSI_PACKETS = 2  # PAT + PMT open every segment

# Audio frames are grouped into PES packets: a PES header and the stuffing of
# its first packet cost up to ~200 bytes, as much as an AAC frame. As ffmpeg
# does, a PES takes frames until its payload would pass ffmpeg's default
# pes_payload_size (2930 bytes = 15 * 184 + 170, i.e. 16 packets with the PES
# header); and at most 5 frames (~107 ms at 48 kHz), so a player that joins or
# seeks mid-segment never waits long for a timestamp.
AUDIO_PES_PAYLOAD_TARGET = 2930
AUDIO_MAX_FRAMES_PER_PES = 5


@dataclass(frozen=True)
class SegmentLayout:
    bounds: np.ndarray  # int64 (n_pes + 1,): PES k holds samples [bounds[k], bounds[k+1])
    payload_size: np.ndarray  # int64, ES bytes (Annex B access units / ADTS frames) of each PES
    header_stuffing: np.ndarray  # int64, extra stuffing bytes in each PES header
    header_size: np.ndarray  # int64, PES header bytes (stuffing included)
    pcr: np.ndarray  # bool, whether the PES's first packet carries a PCR
    adaptation_size: np.ndarray  # int64, adaptation field bytes in the PES's first packet (0 = none)
    packet_count: np.ndarray  # int64, TS packets of each PES
    first_packet: np.ndarray  # int64, index of each PES's first packet among the stream's packets
    stream_packets: int  # packets on the elementary stream PID

    @property
    def pes_count(self) -> int:
        return int(self.payload_size.shape[0])

    @property
    def packet_total(self) -> int:
        return PSI_PACKETS + self.stream_packets

    @property
    def size(self) -> int:
        return self.packet_total * PACKET_SIZE


def audio_pes_bounds(frame_sizes: np.ndarray) -> np.ndarray:
    """Group consecutive ADTS frames into PES packets (see AUDIO_PES_PAYLOAD_TARGET)."""
    bounds = [0]
    count = total = 0
    for i, size in enumerate(frame_sizes.tolist()):
        if count and (count == AUDIO_MAX_FRAMES_PER_PES or total + size > AUDIO_PES_PAYLOAD_TARGET):
            bounds.append(i)
            count = total = 0
        count += 1
        total += size
    if count:
        bounds.append(len(frame_sizes))
    return np.asarray(bounds, dtype=np.int64)


def compute_layout(
    stream: ElementaryStream,
    sizes: np.ndarray,
    keyframes: np.ndarray,
    nal_counts: np.ndarray | None = None,
) -> SegmentLayout:
    """Lay out one segment of ``stream`` whose samples have ``sizes``.

    ``nal_counts`` (NAL units per sample) is needed only for video whose NAL
    length prefix is not 4 bytes; without it such a layout raises
    UnsupportedMedia, because its size depends on the sample content.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    keyframes = np.asarray(keyframes, dtype=bool)
    if sizes.shape != keyframes.shape:
        raise ValueError("sizes and keyframes differ in length")
    n = sizes.shape[0]

    if stream.is_video:
        assert stream.annexb is not None
        payload = stream.annexb.access_unit_sizes(sizes, keyframes, nal_counts)
        bounds = np.arange(n + 1, dtype=np.int64)  # one access unit per PES
    else:
        frames = sizes + ADTS_HEADER_SIZE
        bounds = audio_pes_bounds(frames)
        cumulative = np.concatenate(([0], np.cumsum(frames)))
        payload = cumulative[bounds[1:]] - cumulative[bounds[:-1]]
    starts = bounds[:-1]

    # PCR on the first PES, and on every video PES opening at a keyframe (where
    # a player may join the stream).
    pcr = np.zeros(starts.shape[0], dtype=bool)
    if pcr.size:
        pcr[0] = True
        if stream.is_video:
            pcr |= keyframes[starts]
    min_adaptation = np.where(pcr, PCR_ADAPTATION_SIZE, 0)

    base_header = pes.header_size(reserve_dts=stream.is_video)
    first_capacity = PAYLOAD_SIZE - min_adaptation
    excess = base_header + payload - first_capacity  # bytes beyond a minimally adapted first packet
    remainder = excess % PAYLOAD_SIZE  # what a stuffed first packet would have to carry
    stuffing = np.where((excess > 0) & (remainder >= 1) & (remainder <= min_adaptation), min_adaptation + 1 - remainder, 0)

    header = base_header + stuffing
    length = header + payload
    packets = 1 + np.maximum(0, -(-(length - first_capacity) // PAYLOAD_SIZE))
    adaptation = PAYLOAD_SIZE - (length - (packets - 1) * PAYLOAD_SIZE)

    first_packet = np.cumsum(packets) - packets
    return SegmentLayout(
        bounds=bounds,
        payload_size=payload,
        header_stuffing=stuffing,
        header_size=header,
        pcr=pcr,
        adaptation_size=adaptation,
        packet_count=packets,
        first_packet=first_packet,
        stream_packets=int(packets.sum()),
    )
