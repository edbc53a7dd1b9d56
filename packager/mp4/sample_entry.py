"""Sample descriptions (stsd): codec configuration and RFC 6381 codec strings.

Supported: avc1/avc3 (avcC), hvc1/hev1 (hvcC); audio: mp4a with an esds
carrying AAC or MP3, ac-3 (dac3), ec-3 (dec3) and Opus (dOps).
Anything else raises UnsupportedMedia naming the sample entry type (the
index leaves such an *audio* track out and keeps the rest of the file).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import MalformedMedia, TruncatedMedia, UnsupportedMedia
from ..media import AudioInfo, VideoInfo
from .boxes import BoxBudget, BoxHeader, iter_boxes, printable

VIDEO_ENTRIES = {"avc1", "avc3", "hvc1", "hev1"}
AUDIO_ENTRIES = {"mp4a", "ac-3", "ec-3", "Opus"}
SUPPORTED = "H.264, HEVC; audio AAC, MP3, AC-3, E-AC-3, Opus"

# VisualSampleEntry fields before its child boxes (ISO 14496-12 12.1.3).
VISUAL_ENTRY_FIELDS = 78
# AudioSampleEntry fields before its child boxes; QuickTime sound description
# versions 1 and 2 append 16 and 36 bytes (QTFF "Sound Sample Description").
AUDIO_ENTRY_FIELDS = 28
QT_SOUND_EXTRA = {0: 0, 1: 16, 2: 36}

# MPEG-4 descriptor tags (ISO 14496-1 7.2.2.1).
ES_DESCRIPTOR_TAG = 0x03
DECODER_CONFIG_TAG = 0x04
DECODER_SPECIFIC_INFO_TAG = 0x05
OBJECT_TYPE_AAC = 0x40  # "Audio ISO/IEC 14496-3"
# MPEG-1/2 audio in an esds (MP4RA object types): 0x69 is ISO/IEC 13818-3 (the half rates, 16-24 kHz),
# 0x6B ISO/IEC 11172-3 (32-48 kHz). Both also cover layers I and II (MP2), which only the frames' own
# headers tell apart and the index never reads a frame: such a rare file is packaged the same way (TS
# stream types 0x03/0x04 carry every layer), only its CODECS then says MP3.
OBJECT_TYPES_MP3 = (0x69, 0x6B)
# The CODECS string of MP3: Apple's HLS Authoring Specification (appendix "Values for the CODECS
# attribute") writes MP3 as MPEG-4 audio object type 34 (Layer-3), and hls.js and Shaka recognise it;
# RFC 6381's "mp4a.6B" is not what HLS players look for.
MP3_CODEC_STRING = "mp4a.40.34"

# AC-3 acmod (ATSC A/52 table 5.8): full-bandwidth channels of each audio coding mode; lfeon adds one.
AC3_ACMOD_CHANNELS = (2, 1, 2, 3, 3, 4, 4, 5)
# E-AC-3 chan_loc bits (ETSI TS 102 366 table F.6.1), bit 0 (value 1) first as Chromium's mp4 parser reads
# them: the channels each location adds to its independent substream (pairs count two).
EC3_CHAN_LOC_CHANNELS = (2, 2, 1, 1, 2, 2, 2, 1, 1)  # Lc/Rc, Lrs/Rrs, Cs, Ts, Lsd/Rsd, Lw/Rw, Lvh/Rvh, Cvh, LFE2

# HEVC NAL unit types of an hvcC array (ITU-T H.265 Table 7-1), for messages.
HEVC_PARAMETER_SETS = {32: "VPS", 33: "SPS", 34: "PPS", 39: "prefix SEI", 40: "suffix SEI"}

AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


@dataclass(frozen=True)
class SampleDescription:
    fourcc: str
    codec_string: str
    raw: bytes  # the whole sample entry box
    video: VideoInfo | None = None
    audio: AudioInfo | None = None


def parse_sample_entry(stsd_payload: memoryview, stsd_offset: int, budget: BoxBudget | None = None) -> SampleDescription:
    """Parse the first sample entry of an stsd box (payload after its box header); box walks spend ``budget``."""
    if len(stsd_payload) < 8:
        raise TruncatedMedia(f"'stsd' box at offset {stsd_offset} is cut short")
    (count,) = struct.unpack_from(">I", stsd_payload, 4)
    if count < 1:
        raise MalformedMedia(f"'stsd' box at offset {stsd_offset} holds no sample entry")
    entry = next(iter_boxes(stsd_payload, 8, len(stsd_payload), base=0, budget=budget))
    raw = bytes(stsd_payload[entry.offset : entry.end])
    if entry.type in VIDEO_ENTRIES:
        return _parse_visual(entry.type, raw, budget)
    if entry.type in AUDIO_ENTRIES:
        return _parse_audio(entry.type, raw, budget)
    raise UnsupportedMedia(f"codec '{printable(entry.type)}' is not supported (supported: {SUPPORTED})")


def _child_boxes(raw: bytes, start: int, budget: BoxBudget | None) -> dict[str, BoxHeader]:
    found: dict[str, BoxHeader] = {}
    for child in iter_boxes(raw, start, len(raw), budget=budget):
        found.setdefault(child.type, child)
    return found


def _parse_visual(entry_type: str, raw: bytes, budget: BoxBudget | None) -> SampleDescription:
    fields_end = 8 + VISUAL_ENTRY_FIELDS
    if len(raw) < fields_end:
        raise TruncatedMedia(f"'{entry_type}' sample entry is cut short")
    width, height = struct.unpack_from(">HH", raw, 8 + 24)
    boxes = _child_boxes(raw, fields_end, budget)
    if entry_type in ("avc1", "avc3"):
        config = boxes.get("avcC")
        if config is None:
            raise MalformedMedia(f"'{entry_type}' sample entry has no avcC box")
        body = raw[config.payload_offset : config.end]
        nal_length_size, parameter_sets, codec = _parse_avcc(entry_type, body)
    else:
        config = boxes.get("hvcC")
        if config is None:
            raise MalformedMedia(f"'{entry_type}' sample entry has no hvcC box")
        body = raw[config.payload_offset : config.end]
        nal_length_size, parameter_sets, codec = _parse_hvcc(entry_type, body)
    video = VideoInfo(width, height, nal_length_size, parameter_sets)
    return SampleDescription(entry_type, codec, raw, video=video)


def _parse_avcc(entry_type: str, body: bytes) -> tuple[int, tuple[bytes, ...], str]:
    """AVCDecoderConfigurationRecord, ISO 14496-15 5.3.3.1."""
    if len(body) < 7:
        raise TruncatedMedia("avcC box is cut short")
    profile, compat, level = body[1], body[2], body[3]
    nal_length_size = (body[4] & 0x03) + 1
    sets: list[bytes] = []
    pos = 5
    sps_count = body[pos] & 0x1F
    pos = _read_nal_list(body, pos + 1, sps_count, sets, "avcC SPS")
    if pos >= len(body):
        raise TruncatedMedia("avcC box ends before its PPS count")
    pos = _read_nal_list(body, pos + 1, body[pos], sets, "avcC PPS")
    # RFC 6381 3.3: avc1.PPCCLL, profile_idc, constraint flags, level_idc in hex.
    return nal_length_size, tuple(sets), f"{entry_type}.{profile:02x}{compat:02x}{level:02x}"


def _read_nal_list(body: bytes, pos: int, count: int, out: list[bytes], what: str) -> int:
    for number in range(1, count + 1):
        if pos + 2 > len(body):
            raise TruncatedMedia(f"{what} list is cut short")
        (length,) = struct.unpack_from(">H", body, pos)
        if length == 0:
            # an empty parameter set reaches the decoder as a bare start code: every segment fails to decode
            raise MalformedMedia(f"{what} {number} of {count} is empty (0 bytes)")
        if pos + 2 + length > len(body):
            raise TruncatedMedia(f"{what} NAL unit is cut short")
        out.append(bytes(body[pos + 2 : pos + 2 + length]))
        pos += 2 + length
    return pos


def _parse_hvcc(entry_type: str, body: bytes) -> tuple[int, tuple[bytes, ...], str]:
    """HEVCDecoderConfigurationRecord, ISO 14496-15 8.3.3.1."""
    if len(body) < 23:
        raise TruncatedMedia("hvcC box is cut short")
    nal_length_size = (body[21] & 0x03) + 1
    sets: list[bytes] = []
    pos = 23
    for _ in range(body[22]):
        if pos + 3 > len(body):
            raise TruncatedMedia("hvcC NAL array is cut short")
        (count,) = struct.unpack_from(">H", body, pos + 1)
        nal_type = body[pos] & 0x3F
        pos = _read_nal_list(body, pos + 3, count, sets, f"hvcC {HEVC_PARAMETER_SETS.get(nal_type, f'NAL type {nal_type}')}")
    return nal_length_size, tuple(sets), hevc_codec_string(entry_type, body)


def hevc_codec_string(entry_type: str, hvcc: bytes) -> str:
    """ISO 14496-15 Annex E.3: hvc1.<space><profile>.<compat>.<tier><level>.<constraints>."""
    space = ("", "A", "B", "C")[hvcc[1] >> 6]
    tier = "H" if hvcc[1] & 0x20 else "L"
    profile_idc = hvcc[1] & 0x1F
    (compat,) = struct.unpack_from(">I", hvcc, 2)
    reversed_compat = int(f"{compat:032b}"[::-1], 2)  # the spec writes the flags in reverse bit order
    constraints = list(hvcc[6:12])
    while constraints and constraints[-1] == 0:  # trailing zero bytes are omitted
        constraints.pop()
    parts = [entry_type, f"{space}{profile_idc}", f"{reversed_compat:X}", f"{tier}{hvcc[12]}"]
    parts += [f"{b:02X}" for b in constraints]
    return ".".join(parts)


def _parse_audio(entry_type: str, raw: bytes, budget: BoxBudget | None) -> SampleDescription:
    if len(raw) < 8 + AUDIO_ENTRY_FIELDS:
        raise TruncatedMedia(f"'{entry_type}' sample entry is cut short")
    (version,) = struct.unpack_from(">H", raw, 16)
    channels, _bits = struct.unpack_from(">HH", raw, 24)
    (rate_fixed,) = struct.unpack_from(">I", raw, 32)
    extra = QT_SOUND_EXTRA.get(version)
    if extra is None:
        raise UnsupportedMedia(f"'{entry_type}' sound description version {version} is not supported")
    boxes = _child_boxes(raw, 8 + AUDIO_ENTRY_FIELDS + extra, budget)
    rate = rate_fixed >> 16
    if entry_type == "ac-3":
        body = _config_body(raw, boxes, entry_type, "dac3")
        return SampleDescription(entry_type, "ac-3", raw, audio=AudioInfo(rate, ac3_channels(body), b"", 0, "ac3"))
    if entry_type == "ec-3":
        body = _config_body(raw, boxes, entry_type, "dec3")
        return SampleDescription(entry_type, "ec-3", raw, audio=AudioInfo(rate, ec3_channels(body), b"", 0, "eac3"))
    if entry_type == "Opus":
        body = _config_body(raw, boxes, entry_type, "dOps")
        # Opus in ISOBMFF 4.3.2: Version, OutputChannelCount, ...; Opus always decodes at 48 kHz
        if len(body) < 2:
            raise TruncatedMedia("dOps box is cut short")
        return SampleDescription(entry_type, "opus", raw, audio=AudioInfo(48000, body[1], b"", 0, "opus"))
    esds = boxes.get("esds")
    if esds is None and "wave" in boxes:  # QuickTime nests esds in a 'wave' box
        wave = boxes["wave"]
        inner = {b.type: b for b in iter_boxes(raw, wave.payload_offset, wave.end, budget=budget)}
        esds = inner.get("esds")
    if esds is None:
        raise MalformedMedia(f"'{entry_type}' sample entry has no esds box")
    object_type_indication, asc = _decoder_config(raw[esds.payload_offset + 4 : esds.end])
    if object_type_indication in OBJECT_TYPES_MP3:
        # MPEG audio frames carry their own headers: no decoder configuration to read
        return SampleDescription(entry_type, MP3_CODEC_STRING, raw, audio=AudioInfo(rate, channels, b"", 0, "mp3"))
    object_type, sample_rate, channel_config = parse_audio_specific_config(asc)
    info = AudioInfo(
        sample_rate=sample_rate or rate,
        channels=channel_config or channels,
        audio_specific_config=asc,
        object_type=object_type,
    )
    return SampleDescription(entry_type, f"mp4a.40.{object_type}", raw, audio=info)


def _config_body(raw: bytes, boxes: dict[str, BoxHeader], entry_type: str, name: str) -> bytes:
    config = boxes.get(name)
    if config is None:
        raise MalformedMedia(f"'{entry_type}' sample entry has no {name} box")
    return raw[config.payload_offset : config.end]


def ac3_channels(dac3: bytes) -> int:
    """Channels of an AC3SpecificBox (ETSI TS 102 366 F.4): fscod(2) bsid(5) bsmod(3) acmod(3) lfeon(1) ..."""
    if len(dac3) < 3:
        raise TruncatedMedia("dac3 box is cut short")
    bits = int.from_bytes(dac3[:3], "big")
    acmod, lfeon = (bits >> 11) & 0x7, (bits >> 10) & 0x1
    return AC3_ACMOD_CHANNELS[acmod] + lfeon


def ec3_channels(dec3: bytes) -> int:
    """Channels of the first independent substream of an EC3SpecificBox (ETSI TS 102 366 F.6), its dependent
    substreams' channel locations included: data_rate(13) num_ind_sub(3), then per substream fscod(2)
    bsid(5) reserved(1) asvc(1) bsmod(3) acmod(3) lfeon(1) reserved(3) num_dep_sub(4) chan_loc(9)|reserved(1).

    Further independent substreams are other programs (e.g. a commentary), not more channels of this one.
    """
    if len(dec3) < 5:
        raise TruncatedMedia("dec3 box is cut short")
    bits = int.from_bytes(dec3[2:5], "big")  # the first substream's 23 bits start at byte 2
    acmod, lfeon = (bits >> 9) & 0x7, (bits >> 8) & 0x1
    dependents = (bits >> 1) & 0xF
    channels = AC3_ACMOD_CHANNELS[acmod] + lfeon
    if dependents:
        if len(dec3) < 6:
            raise TruncatedMedia("dec3 box is cut short")
        chan_loc = ((dec3[4] & 0x1) << 8) | dec3[5]
        channels += sum(n for i, n in enumerate(EC3_CHAN_LOC_CHANNELS) if chan_loc & (1 << i))
    return channels


def _read_descriptor(data: bytes, pos: int) -> tuple[int, int, int]:
    """Return (tag, body_start, body_length) of the descriptor at ``pos``."""
    if pos >= len(data):
        raise TruncatedMedia("esds descriptor is cut short")
    tag = data[pos]
    pos += 1
    length = 0
    for _ in range(4):  # expandable size: 7 bits per byte, high bit = more
        if pos >= len(data):
            raise TruncatedMedia("esds descriptor length is cut short")
        byte = data[pos]
        pos += 1
        length = (length << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    if pos + length > len(data):
        raise TruncatedMedia(f"esds descriptor 0x{tag:02x} is cut short")
    return tag, pos, length


def _decoder_config(esds: bytes) -> tuple[int, bytes]:
    """(objectTypeIndication, AAC AudioSpecificConfig or b"" for MP3) of an esds body (after version/flags)."""
    tag, pos, _ = _read_descriptor(esds, 0)
    if tag != ES_DESCRIPTOR_TAG:
        raise MalformedMedia(f"esds does not start with an ES descriptor (tag 0x{tag:02x})")
    flags = esds[pos + 2]
    pos += 3
    if flags & 0x80:  # streamDependenceFlag
        pos += 2
    if flags & 0x40:  # URL_Flag
        pos += 1 + esds[pos]
    if flags & 0x20:  # OCRstreamFlag
        pos += 2
    tag, pos, _ = _read_descriptor(esds, pos)
    if tag != DECODER_CONFIG_TAG:
        raise MalformedMedia(f"esds has no decoder config descriptor (found tag 0x{tag:02x})")
    object_type_indication = esds[pos]
    if object_type_indication in OBJECT_TYPES_MP3:
        return object_type_indication, b""
    if object_type_indication != OBJECT_TYPE_AAC:
        raise UnsupportedMedia(
            f"mp4a object type 0x{object_type_indication:02x} is not supported (supported mp4a audio: AAC, MP3)"
        )
    tag, pos, length = _read_descriptor(esds, pos + 13)
    if tag != DECODER_SPECIFIC_INFO_TAG:
        raise MalformedMedia("AAC esds has no AudioSpecificConfig")
    return object_type_indication, bytes(esds[pos : pos + length])


def parse_audio_specific_config(asc: bytes) -> tuple[int, int, int]:
    """(audio object type, sample rate, channel configuration), ISO 14496-3 1.6.2.1."""
    if len(asc) < 2:
        raise TruncatedMedia("AudioSpecificConfig is cut short")
    bits = int.from_bytes(asc[:5].ljust(5, b"\0"), "big")
    width = 40

    def take(n: int) -> int:
        nonlocal width
        width -= n
        return (bits >> width) & ((1 << n) - 1)

    object_type = take(5)
    if object_type == 31:
        object_type = 32 + take(6)
    index = take(4)
    sample_rate = take(24) if index == 0xF else (AAC_SAMPLE_RATES[index] if index < len(AAC_SAMPLE_RATES) else 0)
    return object_type, sample_rate, take(4)
