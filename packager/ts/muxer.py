"""One HLS MPEG-TS segment from one SampleBatch.

The chain: samples -> Annex B access units (annexb) or ADTS frames (adts)
-> PES packets (pes) -> 188-byte packets (packets), behind a PAT and PMT
(psi), all placed by the one layout computation (layout) that
:func:`segment_size` also answers from.

Cost: the layout, the adaptation fields, PES headers, ADTS headers and TS
headers are numpy over per-PES / per-frame / per-packet arrays. Python loops
run only per NAL unit (a length read and a slice), per PES (two list
appends) and per piece (one slice copy). Sample bytes are moved three
times: piece by piece into the packets' payload areas laid end to end, by
one strided numpy copy into the packets, and by ``tobytes`` into the
returned segment. The first two write into a scratch buffer the thread
keeps from segment to segment (packager/scratch.py), so the returned bytes are the only
full-size allocation: a fresh multi-MB buffer can cost a page fault per 4 KiB
on first write, which used to cost as much as the copies themselves.
"""

from __future__ import annotations

import numpy as np

from ..errors import MalformedMedia, PackagerError
from ..media import SampleBatch, Track
from ..scratch import scratch
from . import psi
from .layout import PSI_PACKETS, SegmentLayout, compute_layout
from .packets import HEADER_SIZE, PACKET_SIZE, PAYLOAD_SIZE, adaptation_fields, add_continuity_packets, write_packet_headers
from .pes import pes_headers
from .sample_aes import SampleEncryptor, pmt_stream
from .annexb import START_CODE
from .streams import ElementaryStream, elementary_stream
from .timing import PCR_LEAD_90K, timestamps_90k


def segment_size(batch_track: Track, sizes: np.ndarray, keyframes: np.ndarray) -> int:
    """Exact byte length :func:`mux_segment` produces for samples of ``batch_track``
    with these ``sizes`` and ``keyframes`` -- without their bytes.

    Raises UnsupportedMedia for video with a 1- or 2-byte NAL length prefix,
    whose TS size depends on how many NAL units each sample holds.
    """
    return compute_layout(elementary_stream(batch_track), sizes, keyframes).size


def segment_sizes(track: Track, segment_starts: np.ndarray, stop: int | None = None) -> np.ndarray:
    """:func:`segment_size` of many consecutive segments of ``track`` at once.

    Segment k holds samples ``[segment_starts[k], segment_starts[k+1])``, the
    last one up to ``stop`` (default: the track's end). One layout pass over
    all of them instead of one call per segment, for playlists that need
    every segment's size (a 2-hour track has over a thousand).
    """
    starts = np.asarray(segment_starts, dtype=np.int64)
    if starts.size == 0:
        return np.zeros(0, dtype=np.int64)
    first, stop = int(starts[0]), track.sample_count if stop is None else stop
    layout = compute_layout(
        elementary_stream(track), track.sizes[first:stop], track.keyframes[first:stop], segment_starts=starts - first
    )
    return layout.segment_sizes


def keyframe_ranges(track: Track, segment_starts: np.ndarray, stop: int | None = None) -> list[list[tuple[int, int, int]]]:
    """For each of consecutive segments of ``track``: (sample index, length, offset) of every keyframe's packets
    within its segment, in decode order, from the one-pass layout :func:`segment_sizes` uses (PES k carries
    sample k). A segment opens with PSI_PACKETS of PAT and PMT, which no keyframe's range includes."""
    stop = track.sample_count if stop is None else stop
    first = int(segment_starts[0])
    keyframes = np.asarray(track.keyframes[first:stop], dtype=bool)
    starts = np.asarray(segment_starts, dtype=np.int64) - first
    layout = compute_layout(elementary_stream(track), track.sizes[first:stop], keyframes, segment_starts=starts)
    # stream packets (PAT/PMT excluded) before each segment: PES packets are counted across all segments
    before = np.concatenate(([0], np.cumsum(layout.segment_packets - PSI_PACKETS)))
    bounds = [*starts.tolist(), stop - first]
    out = []
    for i in range(len(starts)):
        keys = bounds[i] + np.flatnonzero(keyframes[bounds[i] : bounds[i + 1]])
        out.append([
            (first + int(k), int(layout.packet_count[k]) * PACKET_SIZE, (PSI_PACKETS + int(layout.first_packet[k]) - int(before[i])) * PACKET_SIZE)
            for k in keys
        ])
    return out


def continuity_starts(track: Track, segment_starts: np.ndarray, stop: int | None = None) -> np.ndarray:
    """The continuity counter each of consecutive segments of ``track`` opens its stream PID with, so that
    the counters run on across segment boundaries as if the segments were one stream.

    Segments are packaged one at a time (and cached), so segment k's counter cannot come from muxing
    segments 1..k-1: it is the stream packets of those segments mod 16, from the same one-pass layout
    :func:`segment_sizes` uses (no sample bytes). Computed once per rendition, it is O(1) a segment.
    """
    packets = segment_sizes(track, segment_starts, stop) // PACKET_SIZE - PSI_PACKETS
    before = np.zeros(packets.shape[0], dtype=np.int64)
    np.cumsum(packets[:-1], out=before[1:])
    return (before & 0x0F).astype(np.uint8)


def mux_segment(batch: SampleBatch, continuity_start: int | None = None, encryptor: SampleEncryptor | None = None) -> bytes:
    """The MPEG-TS segment carrying ``batch``: PAT, PMT, then one PES stream.

    ``continuity_start`` is the continuity counter of the segment's first
    elementary-stream packet; by default the batch's own (``SampleBatch.continuity_start``).
    For counters continuous across a rendition's segments (13818-1 2.4.3.3; some
    demuxers log every restart as a discontinuity) segment k starts where
    segment k-1 left off: :func:`continuity_starts`. The PAT and PMT counters are
    ``batch.sequence_number - 1`` modulo 16, which is continuous when sequence
    numbers are (one PAT and one PMT a segment).

    Raises UnsupportedMedia for codecs TS/HLS cannot carry here (anything but
    H.264, HEVC, ADTS-expressible AAC, MP3, AC-3 and E-AC-3; Opus raises
    OpusNeedsFmp4) and MalformedMedia when the batch's
    bytes do not match its sizes or a video sample's NAL units do not parse.

    ``encryptor``: HLS SAMPLE-AES (packager/ts/sample_aes.py): the samples are encrypted before PES
    packetisation and the PMT signals it. Emulation prevention of the encrypted NAL units can change a
    video segment's size by a few bytes, so its layout is computed from the encrypted sizes.
    """
    if continuity_start is None:
        continuity_start = batch.continuity_start
    stream = elementary_stream(batch.track)
    sizes = np.asarray(batch.sizes, dtype=np.int64)
    keyframes = np.asarray(batch.keyframes, dtype=bool)
    view = memoryview(batch.data).cast("B")
    if int(sizes.sum()) != view.nbytes:
        raise MalformedMedia(f"batch holds {view.nbytes} bytes but its samples add up to {int(sizes.sum())}")
    pts, dts = timestamps_90k(batch)

    grown = 0  # stream packets SAMPLE-AES's emulation prevention added to the clear layout
    if stream.is_video:
        assert stream.annexb is not None
        units, nal_counts = stream.annexb.access_units(view, sizes, keyframes)
        if encryptor is not None:
            clear_packets = compute_layout(stream, sizes, keyframes, nal_counts).stream_packets
            sizes = sizes + _encrypt_units(units, encryptor)
        layout = compute_layout(stream, sizes, keyframes, nal_counts)
        if encryptor is not None:
            grown = layout.stream_packets - clear_packets
    else:
        layout = compute_layout(stream, sizes, keyframes)
        frames = stream.audio_frames(view, sizes)
        if encryptor is not None:
            frames = encryptor.adts_frames(frames, sizes, stream.frame_header_size)
        frames = memoryview(frames)
        ends = np.cumsum(layout.payload_size).tolist()  # PES k holds frame bytes [ends[k-1], ends[k])
        units = [[frames[a:b]] for a, b in zip([0] + ends[:-1], ends)]
    pieces = _pes_pieces(stream, layout, pts, dts, keyframes, units)
    stream_bytes = layout.stream_packets * PAYLOAD_SIZE
    buffer = scratch(stream_bytes + layout.size)
    payload, out = buffer[:stream_bytes], buffer[stream_bytes : stream_bytes + layout.size]
    if _fill(payload, pieces) != stream_bytes:  # pragma: no cover - a layout bug
        raise PackagerError(f"TS layout mismatch: PES bytes do not fill {layout.stream_packets} packets")

    psi_cc = (batch.sequence_number - 1) & 0x0F
    out[:PACKET_SIZE] = np.frombuffer(psi.psi_packet(psi.PAT_PID, psi.pat_section(), psi_cc), dtype=np.uint8)
    if encryptor is None:
        pmt = psi.pmt_section(stream.stream_type, stream.pid, stream.language, stream.registration)
    else:
        asc = batch.track.audio.audio_specific_config if batch.track.audio is not None else None
        stream_type, descriptors = pmt_stream(stream.stream_type, asc)
        pmt = psi.pmt_section(stream_type, stream.pid, stream.language, stream.registration, descriptors)
    out[PACKET_SIZE : 2 * PACKET_SIZE] = np.frombuffer(psi.psi_packet(psi.PMT_PID, pmt, psi_cc), dtype=np.uint8)
    packets = out[2 * PACKET_SIZE :].reshape(-1, PACKET_SIZE)
    write_packet_headers(packets, stream.pid, layout.first_packet, layout.adaptation_size, continuity_start & 0x0F)
    packets[:, HEADER_SIZE:] = payload.reshape(-1, PAYLOAD_SIZE)
    if grown % 16:
        # continuity_starts() counts the clear layout's packets: the next segment opens where a clear one would
        # have ended, so this one ends there too, a multiple of 16 packets later (counters are mod 16)
        return add_continuity_packets(memoryview(out), stream.pid, 16 - grown % 16)
    return out.tobytes()  # the only full-size allocation: the scratch stays with the thread


def _fill(dest: np.ndarray, pieces: list) -> int:
    """Copy ``pieces`` end to end into ``dest`` (what ``b"".join`` would build, without a fresh buffer);
    returns the bytes written. Raises PackagerError rather than write past ``dest``."""
    view = memoryview(dest)
    pos = 0
    try:
        for piece in pieces:
            end = pos + len(piece)
            view[pos:end] = piece
            pos = end
    except ValueError as e:  # pragma: no cover - a layout bug: slice shorter than the piece
        raise PackagerError(f"TS layout mismatch: PES bytes overflow the packets ({e})") from e
    return pos


def _encrypt_units(units: list[list], encryptor: SampleEncryptor) -> np.ndarray:
    """Encrypt, in place, every NAL unit of ``units`` (the pieces after a start code; SampleEncryptor.nal_unit
    leaves all but slices as they are); returns each sample's change in size (emulation prevention)."""
    growth = np.zeros(len(units), dtype=np.int64)
    for i, pieces in enumerate(units):
        for j in range(1, len(pieces)):
            if pieces[j - 1] is START_CODE:
                before = len(pieces[j])
                pieces[j] = encryptor.nal_unit(pieces[j])
                growth[i] += len(pieces[j]) - before
    return growth


def _pes_pieces(stream: ElementaryStream, layout: SegmentLayout, pts, dts, keyframes, bodies: list[list]) -> list:
    """The payload areas of the stream's packets as pieces to lay end to end
    (:func:`_fill`): per PES, its first packet's adaptation field and the PES
    header, then ``bodies[k]``, the pieces of its payload.

    The fields and headers of all PES are built as two small matrices and
    scattered into one 0xFF-filled buffer (0xFF is what both stuff with),
    which is then sliced per PES.
    """
    starts = layout.bounds[:-1]
    adaptation = layout.adaptation_size
    head_size = adaptation + layout.header_size
    head_end = np.cumsum(head_size)
    head_at = head_end - head_size
    heads = np.full(int(head_end[-1]) if head_end.size else 0, 0xFF, dtype=np.uint8)

    fields = adaptation_fields(adaptation, dts[starts] - PCR_LEAD_90K, layout.pcr, keyframes[starts])
    columns = np.arange(fields.shape[1])
    used = columns < adaptation[:, None]  # a field shorter than its row
    heads[(head_at[:, None] + columns)[used]] = fields[used]

    headers = pes_headers(
        stream.stream_id,
        pts[starts],
        dts[starts] if stream.is_video else None,
        layout.payload_size,
        layout.header_stuffing,
        reserve_dts=stream.is_video,
        bounded=not stream.is_video,
    )
    heads[(head_at + adaptation)[:, None] + np.arange(headers.shape[1])] = headers

    view = memoryview(heads)
    pieces: list = []
    append, extend = pieces.append, pieces.extend
    for a, e, body in zip(head_at.tolist(), head_end.tolist(), bodies):
        append(view[a:e])
        extend(body)
    return pieces
