"""ISO BMFF box writers shared by the fMP4 init and media segment builders.

Each box is a small frozen dataclass named as ISO/IEC 14496-12 names its syntax
(``TrackRunBox`` for ``trun``...), with its ``FOURCC`` beside it and its flags as
named constants. A box describes itself once, in :meth:`Box.payload`; both its
bytes and its size come from that one description, so a size can never
disagree with what is written.

Boxes serialise to a flat list of chunks (:meth:`Box.chunks`) rather than to
nested ``bytes``: a container does not copy its children, and the caller joins
everything (a media segment's sample data included) exactly once.

Only what vodgate writes is here: no parsing, and no box that fMP4 for HLS
does not need.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Union

import numpy as np

from packager.errors import MalformedMedia, UnsupportedMedia

Chunk = Union[bytes, bytearray, memoryview]

U32_MAX = 0xFFFF_FFFF
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
U64_MAX = 2**64 - 1

_BOX_HEADER = struct.Struct(">I4s")  # size, type
_FULL_BOX_HEADER = struct.Struct(">I4sI")  # size, type, version << 24 | flags
_U32 = struct.Struct(">I")

# The unity matrix of mvhd/tkhd: {0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000}.
_UNITY_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)


def u32(value: int) -> bytes:
    return _U32.pack(value)


# --------------------------------------------------------------------------- base


class Box:
    """A box: subclasses set ``FOURCC`` and describe their body in :meth:`payload`."""

    FOURCC: ClassVar[bytes]

    def payload(self) -> Iterable[Chunk | Box]:
        """The body after the box header: byte chunks and child boxes, in order."""
        raise NotImplementedError

    def header(self, size: int) -> bytes:
        return _BOX_HEADER.pack(size, self.FOURCC)

    @property
    def header_size(self) -> int:
        return _BOX_HEADER.size

    def chunks(self) -> list[Chunk]:
        """The whole box (header included) as a flat list of byte chunks."""
        out: list[Chunk] = [b""]  # the header, once the size is known
        for part in self.payload():
            if isinstance(part, Box):
                out += part.chunks()
            else:
                out.append(part)
        size = self.header_size + sum(map(len, out))
        if size > U32_MAX:  # a 64-bit largesize would make sizes data-dependent
            raise UnsupportedMedia(f"{self.FOURCC.decode()} box of {size} bytes exceeds 4 GiB")
        out[0] = self.header(size)
        return out

    def __bytes__(self) -> bytes:
        return b"".join(self.chunks())

    def __len__(self) -> int:
        return sum(map(len, self.chunks()))


class FullBox(Box):
    """A box whose header also carries an 8-bit version and 24-bit flags."""

    def version(self) -> int:
        return 0

    def flags(self) -> int:
        return 0

    def header(self, size: int) -> bytes:
        return _FULL_BOX_HEADER.pack(size, self.FOURCC, (self.version() << 24) | self.flags())

    @property
    def header_size(self) -> int:
        return _FULL_BOX_HEADER.size


@dataclass(frozen=True)
class ContainerBox(Box):
    """A box that is only its children (moov, trak, mdia, minf, stbl, ...)."""

    children: tuple[Box, ...]

    def payload(self) -> Iterable[Box]:
        return self.children


# --------------------------------------------------------------------------- file level


@dataclass(frozen=True)
class FileTypeBox(Box):
    FOURCC = b"ftyp"
    major_brand: bytes
    minor_version: int
    compatible_brands: tuple[bytes, ...]

    def payload(self):
        yield self.major_brand
        yield u32(self.minor_version)
        yield from self.compatible_brands


@dataclass(frozen=True)
class SegmentTypeBox(FileTypeBox):
    FOURCC = b"styp"


@dataclass(frozen=True)
class MediaDataBox(Box):
    """mdat: the samples' bytes, passed through as one chunk (never copied here)."""

    FOURCC = b"mdat"
    data: Chunk

    def payload(self):
        yield self.data


# --------------------------------------------------------------------------- init segment (moov)


@dataclass(frozen=True)
class MovieBox(ContainerBox):
    FOURCC = b"moov"


@dataclass(frozen=True)
class MovieHeaderBox(FullBox):
    """mvhd; version 1 (64-bit times) only when the duration needs it. Fragmented files leave it 0."""

    FOURCC = b"mvhd"
    timescale: int
    next_track_id: int
    duration: int = 0  # 0: unknown/fragmented

    def version(self) -> int:
        return 0 if self.duration <= U32_MAX else 1

    def payload(self):
        # creation_time, modification_time, timescale, duration
        if self.version():
            yield struct.pack(">QQIQ", 0, 0, self.timescale, self.duration)
        else:
            yield struct.pack(">4I", 0, 0, self.timescale, self.duration)
        yield struct.pack(">iH10x", 0x00010000, 0x0100)  # rate 1.0, volume 1.0, reserved
        yield _UNITY_MATRIX
        yield bytes(24)  # pre_defined[6]
        yield u32(self.next_track_id)


@dataclass(frozen=True)
class EditBox(ContainerBox):
    FOURCC = b"edts"


@dataclass(frozen=True)
class EditListBox(FullBox):
    """elst: rows of (segment_duration in movie timescale, media_time or -1 for empty, rate 1.0)."""

    FOURCC = b"elst"
    entries: tuple[tuple[int, int], ...]

    def version(self) -> int:
        small = all(0 <= d <= U32_MAX and I32_MIN <= t <= I32_MAX for d, t in self.entries)
        return 0 if small else 1

    def payload(self):
        yield u32(len(self.entries))
        row = ">Qqhh" if self.version() else ">Iihh"
        for duration, media_time in self.entries:
            yield struct.pack(row, duration, media_time, 1, 0)


@dataclass(frozen=True)
class TrackBox(ContainerBox):
    FOURCC = b"trak"


@dataclass(frozen=True)
class TrackHeaderBox(FullBox):
    FOURCC = b"tkhd"
    TRACK_ENABLED: ClassVar[int] = 0x000001
    TRACK_IN_MOVIE: ClassVar[int] = 0x000002
    TRACK_IN_PREVIEW: ClassVar[int] = 0x000004

    track_id: int
    width: int = 0  # pixels; written as 16.16 fixed point
    height: int = 0
    volume: int = 0  # 8.8 fixed point: 0x0100 for audio, 0 for video
    duration: int = 0  # movie timescale, edits included; 0 in fragmented files
    enabled: bool = True
    alternate_group: int = 0  # tracks of one group are alternatives (e.g. audio languages)

    def version(self) -> int:
        return 0 if self.duration <= U32_MAX else 1

    def flags(self) -> int:
        return (self.TRACK_ENABLED if self.enabled else 0) | self.TRACK_IN_MOVIE

    def payload(self):
        # creation_time, modification_time, track_ID, reserved, duration
        if self.version():
            yield struct.pack(">QQIIQ", 0, 0, self.track_id, 0, self.duration)
        else:
            yield struct.pack(">5I", 0, 0, self.track_id, 0, self.duration)
        # reserved[2], layer, alternate_group, volume, reserved
        yield struct.pack(">8xhhHH", 0, self.alternate_group, self.volume, 0)
        yield _UNITY_MATRIX
        yield struct.pack(">II", self.width << 16, self.height << 16)


@dataclass(frozen=True)
class MediaBox(ContainerBox):
    FOURCC = b"mdia"


def pack_language(code: str) -> int:
    """ISO 639-2/T code as mdhd packs it: three 5-bit letters (each minus 0x60)."""
    if len(code) != 3 or not all("a" <= c <= "z" for c in code):
        code = "und"
    return ((ord(code[0]) - 0x60) << 10) | ((ord(code[1]) - 0x60) << 5) | (ord(code[2]) - 0x60)


@dataclass(frozen=True)
class MediaHeaderBox(FullBox):
    FOURCC = b"mdhd"
    timescale: int
    language: str = "und"
    duration: int = 0  # track timescale; 0 in fragmented files

    def version(self) -> int:
        return 0 if self.duration <= U32_MAX else 1

    def payload(self):
        if self.version():
            yield struct.pack(">QQIQ", 0, 0, self.timescale, self.duration)
        else:
            yield struct.pack(">4I", 0, 0, self.timescale, self.duration)
        yield struct.pack(">HH", pack_language(self.language), 0)


@dataclass(frozen=True)
class HandlerBox(FullBox):
    FOURCC = b"hdlr"
    VIDEO: ClassVar[bytes] = b"vide"
    SOUND: ClassVar[bytes] = b"soun"

    handler_type: bytes
    name: str

    def payload(self):
        yield struct.pack(">I4s12x", 0, self.handler_type)  # pre_defined, handler_type, reserved[3]
        yield self.name.encode() + b"\0"


@dataclass(frozen=True)
class MediaInformationBox(ContainerBox):
    FOURCC = b"minf"


@dataclass(frozen=True)
class VideoMediaHeaderBox(FullBox):
    FOURCC = b"vmhd"

    def flags(self) -> int:
        return 0x000001  # required by the spec

    def payload(self):
        yield bytes(8)  # graphicsmode, opcolor[3]


@dataclass(frozen=True)
class SoundMediaHeaderBox(FullBox):
    FOURCC = b"smhd"

    def payload(self):
        yield bytes(4)  # balance, reserved


@dataclass(frozen=True)
class DataInformationBox(ContainerBox):
    FOURCC = b"dinf"


@dataclass(frozen=True)
class DataEntryUrlBox(FullBox):
    FOURCC = b"url "
    SELF_CONTAINED: ClassVar[int] = 0x000001  # media data is in this file: no location string

    def flags(self) -> int:
        return self.SELF_CONTAINED

    def payload(self):
        return ()


@dataclass(frozen=True)
class DataReferenceBox(FullBox):
    FOURCC = b"dref"
    entries: tuple[Box, ...]

    def payload(self):
        yield u32(len(self.entries))
        yield from self.entries


@dataclass(frozen=True)
class SampleTableBox(ContainerBox):
    FOURCC = b"stbl"


@dataclass(frozen=True)
class SampleDescriptionBox(FullBox):
    """stsd with sample entries copied verbatim (avc1/hvc1/mp4a... with their children)."""

    FOURCC = b"stsd"
    entries: tuple[bytes, ...]

    def payload(self):
        yield u32(len(self.entries))
        yield from self.entries


@dataclass(frozen=True)
class _EmptyTableBox(FullBox):
    """A sample table box with no entries: fragmented files carry samples in moofs."""

    def payload(self):
        yield u32(0)  # entry_count


@dataclass(frozen=True)
class TimeToSampleBox(_EmptyTableBox):
    FOURCC = b"stts"


@dataclass(frozen=True)
class SampleToChunkBox(_EmptyTableBox):
    FOURCC = b"stsc"


@dataclass(frozen=True)
class ChunkOffsetBox(_EmptyTableBox):
    FOURCC = b"stco"


@dataclass(frozen=True)
class SampleSizeBox(FullBox):
    FOURCC = b"stsz"

    def payload(self):
        yield struct.pack(">II", 0, 0)  # sample_size, sample_count


@dataclass(frozen=True)
class MovieExtendsBox(ContainerBox):
    FOURCC = b"mvex"


@dataclass(frozen=True)
class TrackExtendsBox(FullBox):
    FOURCC = b"trex"
    track_id: int
    default_sample_description_index: int = 1
    default_sample_duration: int = 0
    default_sample_size: int = 0
    default_sample_flags: int = 0

    def payload(self):
        yield struct.pack(
            ">5I",
            self.track_id,
            self.default_sample_description_index,
            self.default_sample_duration,
            self.default_sample_size,
            self.default_sample_flags,
        )


# --------------------------------------------------------------------------- media segment (moof)


class SampleFlags:
    """The 32-bit sample_flags of trun/tfhd/trex (ISO/IEC 14496-12 8.8.3.1).

    bit(4) reserved, is_leading(2), sample_depends_on(2), sample_is_depended_on(2),
    sample_has_redundancy(2), sample_padding_value(3), sample_is_non_sync_sample(1),
    sample_degradation_priority(16).
    """

    IS_LEADING_SHIFT = 26
    DEPENDS_ON_SHIFT = 24
    IS_DEPENDED_ON_SHIFT = 22
    HAS_REDUNDANCY_SHIFT = 20
    PADDING_SHIFT = 17
    NON_SYNC_SAMPLE = 1 << 16

    DEPENDS_ON_UNKNOWN = 0
    DEPENDS_ON_OTHERS = 1  # not an I picture
    DEPENDS_ON_NONE = 2  # an I picture

    #: a sync sample (keyframe): depends on no other sample
    SYNC = DEPENDS_ON_NONE << DEPENDS_ON_SHIFT  # 0x02000000
    #: a non-sync sample: depends on others, not a random access point
    NON_SYNC = (DEPENDS_ON_OTHERS << DEPENDS_ON_SHIFT) | NON_SYNC_SAMPLE  # 0x01010000


@dataclass(frozen=True)
class MovieFragmentBox(ContainerBox):
    FOURCC = b"moof"


@dataclass(frozen=True)
class MovieFragmentHeaderBox(FullBox):
    FOURCC = b"mfhd"
    sequence_number: int

    def payload(self):
        yield u32(self.sequence_number)


@dataclass(frozen=True)
class TrackFragmentBox(ContainerBox):
    FOURCC = b"traf"


class TfhdFlags(enum.IntFlag):
    BASE_DATA_OFFSET_PRESENT = 0x000001
    SAMPLE_DESCRIPTION_INDEX_PRESENT = 0x000002
    DEFAULT_SAMPLE_DURATION_PRESENT = 0x000008
    DEFAULT_SAMPLE_SIZE_PRESENT = 0x000010
    DEFAULT_SAMPLE_FLAGS_PRESENT = 0x000020
    DURATION_IS_EMPTY = 0x010000
    DEFAULT_BASE_IS_MOOF = 0x020000


@dataclass(frozen=True)
class TrackFragmentHeaderBox(FullBox):
    """tfhd, always default-base-is-moof: trun data offsets count from the moof's first byte."""

    FOURCC = b"tfhd"
    track_id: int
    default_sample_flags: int | None = None

    def flags(self) -> int:
        flags = TfhdFlags.DEFAULT_BASE_IS_MOOF.value
        if self.default_sample_flags is not None:
            flags |= TfhdFlags.DEFAULT_SAMPLE_FLAGS_PRESENT.value
        return flags

    def payload(self):
        yield u32(self.track_id)
        if self.default_sample_flags is not None:
            yield u32(self.default_sample_flags)


@dataclass(frozen=True)
class TrackFragmentBaseMediaDecodeTimeBox(FullBox):
    """tfdt, always version 1 (64-bit): a long track at a fine timescale passes 2^32."""

    FOURCC = b"tfdt"
    base_media_decode_time: int

    def version(self) -> int:
        return 1

    def payload(self):
        if not 0 <= self.base_media_decode_time <= U64_MAX:
            raise MalformedMedia(f"tfdt decode time {self.base_media_decode_time} is not a u64")
        yield struct.pack(">Q", self.base_media_decode_time)


class TrunFlags(enum.IntFlag):
    DATA_OFFSET_PRESENT = 0x000001
    FIRST_SAMPLE_FLAGS_PRESENT = 0x000004
    SAMPLE_DURATION_PRESENT = 0x000100
    SAMPLE_SIZE_PRESENT = 0x000200
    SAMPLE_FLAGS_PRESENT = 0x000400
    SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT = 0x000800


def _check_range(name: str, values: np.ndarray, low: int, high: int) -> None:
    if values.size and (int(values.min()) < low or int(values.max()) > high):
        raise UnsupportedMedia(f"trun {name} outside [{low}, {high}]: {values.min()}..{values.max()}")


@dataclass(frozen=True)
class TrackRunBox(FullBox):
    """trun with a per-sample table packed in one numpy call (no loop per sample).

    Build it with :meth:`from_columns`; ``samples`` is the packed table, rows of
    the present fields in the spec's order: duration, size, flags, composition
    offset. Version 1 (signed composition offsets) only when an offset is negative.
    """

    FOURCC = b"trun"
    sample_count: int
    trun_flags: TrunFlags
    data_offset: int  # from the first byte of the moof (tfhd default-base-is-moof)
    samples: bytes
    signed_offsets: bool = False

    def version(self) -> int:
        return 1 if self.signed_offsets else 0

    def flags(self) -> int:
        return self.trun_flags.value | TrunFlags.DATA_OFFSET_PRESENT.value

    def payload(self):
        if not I32_MIN <= self.data_offset <= I32_MAX:
            raise UnsupportedMedia(f"trun data_offset {self.data_offset} does not fit 32 bits")
        yield struct.pack(">Ii", self.sample_count, self.data_offset)
        yield self.samples

    @classmethod
    def from_columns(
        cls,
        *,
        durations: np.ndarray | None = None,
        sizes: np.ndarray | None = None,
        sample_flags: np.ndarray | None = None,
        composition_offsets: np.ndarray | None = None,
        data_offset: int = 0,
    ) -> TrackRunBox:
        """Pack the given per-sample columns (None = field absent) into a trun."""
        fields = [
            (flag, column)
            for flag, column in (
                (TrunFlags.SAMPLE_DURATION_PRESENT, durations),
                (TrunFlags.SAMPLE_SIZE_PRESENT, sizes),
                (TrunFlags.SAMPLE_FLAGS_PRESENT, sample_flags),
                (TrunFlags.SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT, composition_offsets),
            )
            if column is not None
        ]
        if not fields:
            raise ValueError("a trun needs at least one per-sample field")
        count = len(fields[0][1])
        if any(len(column) != count for _, column in fields):
            raise MalformedMedia("trun columns differ in length")
        flags = sum(flag.value for flag, _ in fields)  # plain int: IntFlag arithmetic is slow
        table = np.column_stack([column for _, column in fields]).astype(np.int64, copy=False)  # (count, fields)
        has_offsets = composition_offsets is not None
        _check_range("duration/size/flags", table[:, :-1] if has_offsets else table, 0, U32_MAX)
        signed = False
        if has_offsets:
            offsets = table[:, -1]
            signed = bool(count) and int(offsets.min()) < 0
            low, high = (I32_MIN, I32_MAX) if signed else (0, U32_MAX)
            _check_range("sample_composition_time_offset", offsets, low, high)
        # int64 -> '>u4' keeps the low 32 bits: two's complement for negative offsets (v1)
        return cls(count, TrunFlags(flags), data_offset, table.astype(">u4").tobytes(), signed)
