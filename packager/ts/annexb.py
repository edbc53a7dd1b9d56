"""MP4 video samples -> Annex B access units (H.264 / HEVC).

MP4 stores each NAL unit behind a big-endian length prefix of
``nal_length_size`` bytes and keeps the parameter sets in the sample entry
(avcC / hvcC). MPEG-TS carries the Annex B byte stream instead
(H.264 / H.265 annex B), and HLS (RFC 8216 3.4 and Apple's authoring spec)
expects every access unit to start with an access unit delimiter and every
keyframe to carry the parameter sets in band. So each sample becomes::

    AUD | VPS/SPS/PPS (keyframes only) | 00 00 00 01 NAL | 00 00 00 01 NAL ...

Every start code is the 4-byte form. With the usual 4-byte length prefix the
conversion therefore changes no size but the prepended units, which is what
lets a segment's size be computed from sample sizes alone.

A sample whose first NAL unit is already an AUD keeps it (a second AUD would
open an empty access unit); the bytes our AUD would have taken are written as
zero bytes in front of it instead -- ``trailing_zero_8bits`` of the byte
stream (H.264 B.1.1) -- so the output size does not depend on sample content.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..errors import MalformedMedia, UnsupportedMedia

START_CODE = b"\x00\x00\x00\x01"

# H.264 access unit delimiter: nal_unit_type 9 (H.264 table 7-1), nal_ref_idc 0,
# primary_pic_type 7 ("any slice type", so it is true for every picture) and
# the rbsp stop bit: 0x09, 0b111_10000.
H264_NAL_AUD = 9
H264_AUD = START_CODE + bytes((H264_NAL_AUD, 0xF0))

# HEVC access unit delimiter: nal_unit_type 35 (H.265 table 7-1) in a 2-byte
# NAL header (forbidden bit 0, type << 1, nuh_layer_id 0, nuh_temporal_id_plus1
# 1), pic_type 2 ("I, P or B slices", true for every picture) and the stop bit:
# 0x46 0x01, 0b010_1_0000.
HEVC_NAL_AUD = 35
HEVC_AUD = START_CODE + bytes((HEVC_NAL_AUD << 1, 0x01, 0x50))

H264 = "h264"
HEVC = "hevc"


@dataclass(frozen=True)
class AnnexB:
    """The Annex B rewriting of one video track."""

    codec: str  # H264 or HEVC
    nal_length_size: int
    parameter_sets: bytes  # the track's VPS/SPS/PPS, each behind a start code

    @classmethod
    def for_track(cls, codec: str, nal_length_size: int, parameter_sets: tuple[bytes, ...]) -> "AnnexB":
        if nal_length_size not in (1, 2, 4):
            raise UnsupportedMedia(f"NAL length size {nal_length_size} is not 1, 2 or 4")
        return cls(codec, nal_length_size, b"".join(START_CODE + bytes(ps) for ps in parameter_sets))

    @property
    def aud(self) -> bytes:
        return H264_AUD if self.codec == H264 else HEVC_AUD

    def access_unit_sizes(self, sizes: np.ndarray, keyframes: np.ndarray, nal_counts: np.ndarray | None = None) -> np.ndarray:
        """Annex B size of each sample's access unit.

        Needs the NAL unit count of each sample only when the length prefix is
        not 4 bytes (start codes are, so each NAL then grows or shrinks).
        """
        au = sizes + len(self.aud) + np.where(keyframes, len(self.parameter_sets), 0)
        if self.nal_length_size != len(START_CODE):
            if nal_counts is None:
                raise UnsupportedMedia(
                    f"a {self.nal_length_size}-byte NAL length prefix makes the TS size depend on sample content"
                )
            au = au + (len(START_CODE) - self.nal_length_size) * nal_counts
        return au

    def access_units(self, data, sizes: np.ndarray, keyframes: np.ndarray) -> tuple[list[list], np.ndarray]:
        """Split ``data`` (the samples, back to back) into Annex B pieces.

        Returns, per sample, the list of pieces (the AUD and, on keyframes,
        parameter sets; start codes; memoryview slices of ``data``) whose
        ``b"".join`` is its access unit, and each sample's NAL unit count.

        Walks the length prefixes in Python, but a frame has only a handful
        of NAL units and the payload itself is never touched byte by byte.
        """
        view = memoryview(data)
        length_size = self.nal_length_size
        read_length = struct.Struct({1: ">B", 2: ">H", 4: ">I"}[length_size]).unpack_from
        is_aud = _is_h264_aud if self.codec == H264 else _is_hevc_aud
        aud, params = self.aud, self.parameter_sets
        prefix_key, prefix_delta = aud + params, aud
        padding = bytes(len(aud))
        units: list[list] = []
        nal_counts: list[int] = []
        pos = 0
        for i, (size, key) in enumerate(zip(sizes.tolist(), keyframes.tolist())):
            end = pos + size
            pieces: list = [prefix_key if key else prefix_delta]
            while pos + length_size <= end:
                (n,) = read_length(view, pos)
                pos += length_size
                stop = pos + n
                if stop > end:
                    raise MalformedMedia(f"NAL unit of sample {i} runs past the sample's end")
                pieces.append(START_CODE)
                pieces.append(view[pos:stop])
                pos = stop
            if pos != end:
                tail = view[pos:end]
                if any(tail):
                    raise MalformedMedia(f"sample {i} has stray bytes after its last NAL unit")
                pieces.append(tail)  # zero padding after the last NAL unit: legal as trailing zeros
                pos = end
            nal_counts.append((len(pieces) - 1) // 2)
            if len(pieces) >= 3 and is_aud(pieces[2]):
                # Keep the in-band AUD first; zeros stand in for ours.
                pieces[0] = padding
                if key and params:
                    pieces.insert(3, params)
            units.append(pieces)
        return units, np.array(nal_counts, dtype=np.int64)


def _is_h264_aud(nal: memoryview) -> bool:
    return len(nal) > 0 and nal[0] & 0x1F == H264_NAL_AUD


def _is_hevc_aud(nal: memoryview) -> bool:
    return len(nal) > 1 and (nal[0] >> 1) & 0x3F == HEVC_NAL_AUD
