"""MP4 AAC samples -> ADTS frames (ISO/IEC 13818-7 6.2 / 14496-3 1.A.2).

MP4 stores raw AAC frames and the decoder configuration once, as the
AudioSpecificConfig in the esds box. MPEG-TS (stream_type 0x0F) carries ADTS
instead: every frame behind a 7-byte header (no CRC) repeating the profile,
sampling frequency index and channel configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MalformedMedia, UnsupportedMedia

HEADER_SIZE = 7  # protection_absent=1: no CRC
MAX_FRAME_LENGTH = (1 << 13) - 1  # aac_frame_length is 13 bits and includes the header
MAX_RAW_FRAME = MAX_FRAME_LENGTH - HEADER_SIZE

# 14496-3 table 1.18: samplingFrequencyIndex -> Hz
SAMPLING_FREQUENCIES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_EXPLICIT_FREQUENCY = 0xF  # the index that says "a 24-bit rate follows"

# 14496-3 table 4.82 ("sampling frequency mapping"): a decoder for an explicit
# rate uses the tables of the nearest standard rate; ADTS can only carry an
# index, so that nearest index is what we write. (lower bound Hz, index)
_RATE_MAPPING = (
    (92017, 0),
    (75132, 1),
    (55426, 2),
    (46009, 3),
    (37566, 4),
    (27713, 5),
    (23004, 6),
    (18783, 7),
    (13856, 8),
    (11502, 9),
    (9391, 10),
    (0, 11),
)

# Audio object types (14496-3 table 1.17)
AOT_ESCAPE = 31
AOT_SBR = 5  # HE-AAC with explicit SBR signalling: the core object type follows
AOT_PS = 29  # HE-AAC v2
# ADTS's 2-bit profile field is object type - 1, so only these fit:
_ADTS_OBJECT_TYPES = (1, 2, 3, 4)  # AAC Main, LC, SSR, LTP


def index_for_rate(rate: int) -> int:
    """The samplingFrequencyIndex for a rate: exact when standard, else per table 4.82."""
    if rate in SAMPLING_FREQUENCIES:
        return SAMPLING_FREQUENCIES.index(rate)
    for lower, index in _RATE_MAPPING:
        if rate >= lower:
            return index
    return 11  # pragma: no cover - the last row's lower bound is 0


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = len(data) * 8

    def read(self, n: int) -> int:
        if n > self.left:
            raise MalformedMedia("AudioSpecificConfig is truncated")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)


@dataclass(frozen=True)
class AdtsConfig:
    profile: int  # object type - 1
    sampling_index: int
    channel_config: int

    @classmethod
    def from_audio_specific_config(cls, asc: bytes) -> "AdtsConfig":
        """Parse what ADTS needs out of an AudioSpecificConfig (14496-3 1.6.2.1).

        HE-AAC (v1/v2) with explicit signalling is written the way ffmpeg
        writes it: as its AAC-LC core at the core sampling rate, leaving SBR
        and PS to implicit signalling, which every HE-AAC decoder supports.
        """
        bits = _Bits(bytes(asc))

        def object_type() -> int:
            aot = bits.read(5)
            return 32 + bits.read(6) if aot == AOT_ESCAPE else aot

        def sampling_index() -> int:
            index = bits.read(4)
            return index_for_rate(bits.read(24)) if index == _EXPLICIT_FREQUENCY else index

        aot = object_type()
        index = sampling_index()
        channels = bits.read(4)
        if aot in (AOT_SBR, AOT_PS):
            sampling_index()  # extensionSamplingFrequencyIndex: the SBR output rate
            aot = object_type()
        if aot not in _ADTS_OBJECT_TYPES:
            raise UnsupportedMedia(f"AAC object type {aot} cannot be carried in ADTS")
        if index >= len(SAMPLING_FREQUENCIES):
            raise MalformedMedia(f"reserved sampling frequency index {index}")
        if not 1 <= channels <= 7:
            # 0 = layout given by a program_config_element, which ADTS would have
            # to carry in band; 8+ are not expressible in ADTS's 3 bits.
            raise UnsupportedMedia(f"AAC channel configuration {channels} is not supported in ADTS")
        return cls(aot - 1, index, channels)

    def headers(self, sizes: np.ndarray) -> np.ndarray:
        """The 7-byte ADTS header of each raw frame size, as an (n, 7) uint8 array."""
        sizes = np.asarray(sizes, dtype=np.int64)
        if sizes.size and int(sizes.max()) > MAX_RAW_FRAME:
            raise UnsupportedMedia(f"AAC frame of {int(sizes.max())} bytes is too large for ADTS")
        length = sizes + HEADER_SIZE
        out = np.empty((sizes.shape[0], HEADER_SIZE), dtype=np.uint8)
        out[:, 0] = 0xFF  # syncword 0xFFF ...
        out[:, 1] = 0xF1  # ... MPEG-4 (ID 0), layer 00, protection_absent 1
        # profile, sampling_frequency_index, private bit 0, channel config high bit
        out[:, 2] = (self.profile << 6) | (self.sampling_index << 2) | (self.channel_config >> 2)
        # channel config low bits, original/home/copyright bits 0, frame length bits 12-11
        out[:, 3] = ((self.channel_config & 0x3) << 6) | (length >> 11)
        out[:, 4] = (length >> 3) & 0xFF
        # frame length bits 2-0, then adts_buffer_fullness 0x7FF ("variable bit rate")
        out[:, 5] = ((length & 0x7) << 5) | 0x1F
        out[:, 6] = 0xFC  # buffer fullness low bits, number_of_raw_data_blocks_in_frame 0
        return out

    def frames(self, data, sizes: np.ndarray) -> np.ndarray:
        """The raw frames in ``data`` (back to back, ``sizes`` bytes each) as
        one ADTS stream: every frame behind its header, built with two masked
        numpy copies instead of a Python loop over frames."""
        sizes = np.asarray(sizes, dtype=np.int64)
        headers = self.headers(sizes)
        n = sizes.shape[0]
        out = np.empty(int(sizes.sum()) + HEADER_SIZE * n, dtype=np.uint8)
        header_at = np.cumsum(sizes + HEADER_SIZE) - (sizes + HEADER_SIZE)
        is_header = np.zeros(out.shape[0], dtype=bool)
        is_header[(header_at[:, None] + np.arange(HEADER_SIZE)).ravel()] = True
        out[is_header] = headers.ravel()
        out[~is_header] = np.frombuffer(data, dtype=np.uint8)
        return out
