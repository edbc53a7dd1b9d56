"""MPEG-TS segments for HLS: one elementary stream (a video track, or an audio
track served as its own rendition) behind a PAT and PMT.

    mux_segment(batch, continuity_start=0) -> bytes
    segment_size(track, sizes, keyframes) -> int   # == len(mux_segment(...)), no sample bytes needed

Modules, one concept each: annexb (AVC/HEVC samples -> Annex B access
units), adts (AAC frames -> ADTS), pes (PES headers), psi (PAT/PMT, CRC32),
packets (188-byte packets, adaptation field, PCR), timing (90 kHz clock),
streams (track -> PID/stream type), layout (where every byte goes), muxer.
"""

from .muxer import mux_segment, segment_size

__all__ = ["mux_segment", "segment_size"]
