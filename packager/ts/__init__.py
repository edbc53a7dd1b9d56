"""MPEG-TS segments for HLS: one elementary stream (a video track, or an audio
track served as its own rendition) behind a PAT and PMT.

    mux_segment(batch, continuity_start=None, encryptor=None) -> bytes  # encryptor: HLS SAMPLE-AES (sample_aes)
    continuity_starts(track, starts, stop=None) -> ndarray  # each segment's first stream counter (continuous)
    keyframe_ranges(track, starts, stop=None) -> lists     # each keyframe's (sample, length, offset) in its segment
    PSI_BYTES                                             # the PAT and PMT that open every segment
    segment_size(track, sizes, keyframes) -> int         # == len(mux_segment(...)), no sample bytes needed
    segment_sizes(track, starts, stop=None) -> ndarray   # segment_size of many consecutive segments in one pass

Modules, one concept each: annexb (AVC/HEVC samples -> Annex B access
units), adts (AAC frames -> ADTS; MP3, AC-3 and E-AC-3 frames pass as they
are), pes (PES headers), psi (PAT/PMT, CRC32),
packets (188-byte packets, adaptation field, PCR), timing (90 kHz clock),
streams (track -> PID/stream type), layout (where every byte goes), muxer,
sample_aes (HLS SAMPLE-AES: slices and ADTS frames encrypted before PES, the PMT's signalling).

Choices, with the reasons in the modules that make them:

* PIDs, table ids, program and stream numbers are ffmpeg's defaults (PMT
  0x1000, video 0x100, audio 0x101); the PAT/PMT bytes equal ffmpeg's.
* Timestamps come from each sample's absolute time plus a fixed 10 s, so
  segments are deterministic and continuous; PCR = DTS - 700 ms on each
  segment's first PES and on every video keyframe.
* A video PES is one access unit: AUD, parameter sets on keyframes, 4-byte
  start codes; its header always has room for a DTS. An audio PES holds up to
  5 audio frames. Both keep a segment's size a function of sample sizes.
* Only a PES's first packet has an adaptation field, so all later packets
  are header + 184 bytes and the packetisation is a few numpy operations.
"""

from .layout import PSI_PACKETS
from .muxer import continuity_starts, keyframe_ranges, mux_segment, segment_size, segment_sizes
from .packets import PACKET_SIZE

PSI_BYTES = PSI_PACKETS * PACKET_SIZE

__all__ = ["PSI_BYTES", "continuity_starts", "keyframe_ranges", "mux_segment", "segment_size", "segment_sizes"]
