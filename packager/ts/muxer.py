"""One HLS MPEG-TS segment from one SampleBatch.

The chain: samples -> Annex B access units (annexb) or ADTS frames (adts)
-> PES packets (pes) -> 188-byte packets (packets), behind a PAT and PMT
(psi), all placed by the one layout computation (layout) that
:func:`segment_size` also answers from.

Cost: the layout is numpy over per-PES arrays; Python runs once per PES (its
adaptation field and header) and once per NAL unit / AAC frame (a slice);
sample bytes are moved by one ``bytes.join`` and one strided numpy copy.
"""

from __future__ import annotations

import numpy as np

from ..errors import MalformedMedia, PackagerError
from ..media import SampleBatch, Track
from . import psi
from .layout import SegmentLayout, compute_layout
from .packets import HEADER_SIZE, PACKET_SIZE, PAYLOAD_SIZE, adaptation_field, write_headers
from .pes import pes_header
from .streams import ElementaryStream, elementary_stream
from .timing import PCR_LEAD_90K, timestamps_90k


def segment_size(batch_track: Track, sizes: np.ndarray, keyframes: np.ndarray) -> int:
    """Exact byte length :func:`mux_segment` produces for samples of ``batch_track``
    with these ``sizes`` and ``keyframes`` -- without their bytes.

    Raises UnsupportedMedia for video with a 1- or 2-byte NAL length prefix,
    whose TS size depends on how many NAL units each sample holds.
    """
    return compute_layout(elementary_stream(batch_track), sizes, keyframes).size


def mux_segment(batch: SampleBatch, continuity_start: int = 0) -> bytes:
    """The MPEG-TS segment carrying ``batch``: PAT, PMT, then one PES stream.

    ``continuity_start`` is the continuity counter of the segment's first
    elementary-stream packet. 0 is fine for HLS, where each segment is fetched
    on its own; a caller that wants counters continuous across consecutive
    segments passes, for segment k+1, ``(continuity_start_k +
    segment_size_k // 188 - 2) % 16`` (the stream's packets are all but the
    PAT and PMT). The PAT and PMT counters are ``batch.sequence_number - 1``
    modulo 16, which is continuous when sequence numbers are.
    """
    stream = elementary_stream(batch.track)
    sizes = np.asarray(batch.sizes, dtype=np.int64)
    keyframes = np.asarray(batch.keyframes, dtype=bool)
    view = memoryview(batch.data).cast("B")
    if int(sizes.sum()) != view.nbytes:
        raise MalformedMedia(f"batch holds {view.nbytes} bytes but its samples add up to {int(sizes.sum())}")
    pts, dts = timestamps_90k(batch)

    if stream.is_video:
        assert stream.annexb is not None
        prefixes, units, nal_counts = stream.annexb.access_units(view, sizes, keyframes)
        layout = compute_layout(stream, sizes, keyframes, nal_counts)
        pieces = _video_pieces(stream, layout, pts, dts, keyframes, prefixes, units)
    else:
        layout = compute_layout(stream, sizes, keyframes)
        pieces = _audio_pieces(stream, layout, pts, keyframes, sizes, view)

    payload = b"".join(pieces)
    if len(payload) != layout.stream_packets * PAYLOAD_SIZE:  # pragma: no cover - a layout bug
        raise PackagerError(f"TS layout mismatch: {len(payload)} bytes for {layout.stream_packets} packets")

    out = np.empty(layout.size, dtype=np.uint8)
    psi_cc = (batch.sequence_number - 1) & 0x0F
    out[:PACKET_SIZE] = np.frombuffer(psi.psi_packet(psi.PAT_PID, psi.pat_section(), psi_cc), dtype=np.uint8)
    pmt = psi.pmt_section(stream.stream_type, stream.pid, stream.language)
    out[PACKET_SIZE : 2 * PACKET_SIZE] = np.frombuffer(psi.psi_packet(psi.PMT_PID, pmt, psi_cc), dtype=np.uint8)
    packets = out[2 * PACKET_SIZE :].reshape(-1, PACKET_SIZE)
    write_headers(packets, stream.pid, layout.first_packet, layout.adaptation_size, continuity_start)
    packets[:, HEADER_SIZE:] = np.frombuffer(payload, dtype=np.uint8).reshape(-1, PAYLOAD_SIZE)
    return out.tobytes()


def _pes_head(stream: ElementaryStream, cols: "_Columns", k: int, start: int) -> bytes:
    """Adaptation field of PES ``k``'s first packet followed by the PES header;
    ``start`` is the PES's first sample."""
    field = adaptation_field(
        cols.adaptation_size[k],
        pcr_base=cols.dts[start] - PCR_LEAD_90K if cols.pcr[k] else None,
        random_access=cols.keyframes[start],
    )
    header = pes_header(
        stream.stream_id,
        cols.pts[start],
        cols.dts[start] if stream.is_video else None,
        cols.payload_size[k],
        reserve_dts=stream.is_video,
        stuffing=cols.header_stuffing[k],
        bounded=not stream.is_video,
    )
    return field + header


class _Columns:
    """The per-PES layout columns and per-sample columns as Python lists:
    indexing a list is far cheaper than indexing a numpy array element-wise."""

    def __init__(self, layout: SegmentLayout, pts, dts, keyframes) -> None:
        self.adaptation_size = layout.adaptation_size.tolist()
        self.pcr = layout.pcr.tolist()
        self.payload_size = layout.payload_size.tolist()
        self.header_stuffing = layout.header_stuffing.tolist()
        self.bounds = layout.bounds.tolist()
        self.pts, self.dts, self.keyframes = pts.tolist(), dts.tolist(), keyframes.tolist()


def _video_pieces(stream, layout, pts, dts, keyframes, prefixes, units) -> list:
    cols = _Columns(layout, pts, dts, keyframes)
    pieces: list = []
    for k in range(layout.pes_count):  # one access unit per PES: PES k is sample k
        pieces.append(_pes_head(stream, cols, k, k) + prefixes[k])
        pieces.extend(units[k])
    return pieces


def _audio_pieces(stream, layout, pts, keyframes, sizes, view) -> list:
    assert stream.adts is not None
    cols = _Columns(layout, pts, pts, keyframes)
    headers = stream.adts.headers(sizes).tobytes()
    offsets = np.concatenate(([0], np.cumsum(sizes))).tolist()
    bounds = cols.bounds
    pieces: list = []
    for k in range(layout.pes_count):
        start, stop = bounds[k], bounds[k + 1]
        pieces.append(_pes_head(stream, cols, k, start))
        for j in range(start, stop):
            pieces.append(headers[7 * j : 7 * j + 7])
            pieces.append(view[offsets[j] : offsets[j + 1]])
    return pieces
