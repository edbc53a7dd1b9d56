"""ISO BMFF box headers: walking a buffer box by box.

A box is ``size:u32 type:4cc [largesize:u64 when size == 1] payload``; size 0
means "to the end of the enclosing space". Every read is bounds-checked so a
truncated file is reported as truncated, naming the box and its offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

from ..errors import MalformedMedia, TruncatedMedia

HEADER_SIZE = 8
LARGE_HEADER_SIZE = 16


@dataclass(frozen=True)
class BoxHeader:
    type: str
    offset: int  # absolute offset of the box's first byte
    size: int  # whole box, header included
    header_size: int

    @property
    def payload_offset(self) -> int:
        return self.offset + self.header_size

    @property
    def end(self) -> int:
        return self.offset + self.size


def fourcc(raw: bytes) -> str:
    return raw.decode("latin-1")


def parse_header(buf: bytes | memoryview, pos: int, base: int, limit: int) -> BoxHeader:
    """Read the header of the box at ``buf[pos]`` (absolute offset ``base + pos``).

    ``limit`` is the absolute end of the enclosing space (file size or parent
    end): size 0 extends to it, and a box running past it is truncated.
    """
    offset = base + pos
    if pos + HEADER_SIZE > len(buf):
        raise TruncatedMedia(f"box header at offset {offset} is cut short: {len(buf) - pos} of 8 bytes present")
    size, raw_type = struct.unpack_from(">I4s", buf, pos)
    box_type = fourcc(raw_type)
    header_size = HEADER_SIZE
    if size == 1:
        if pos + LARGE_HEADER_SIZE > len(buf):
            raise TruncatedMedia(f"'{box_type}' box at offset {offset}: 64-bit size is cut short")
        (size,) = struct.unpack_from(">Q", buf, pos + 8)
        header_size = LARGE_HEADER_SIZE
    elif size == 0:
        size = limit - offset
    if size < header_size:
        raise MalformedMedia(f"'{printable(box_type)}' box at offset {offset} has impossible size {size}")
    if offset + size > limit:
        raise TruncatedMedia(
            f"'{printable(box_type)}' box at offset {offset} claims {size} bytes "
            f"but its container ends at offset {limit}"
        )
    return BoxHeader(box_type, offset, size, header_size)


class BoxBudget:
    """How many more box headers one parse may read.

    A box is at least 8 bytes, so a 100 MB moov may hold 12 million of them, and walking each is
    Python work: a hostile or broken file must not buy that much of a request's time. Real moovs
    hold a few dozen boxes a track. Shared by every walk of one parse (one counter, not one per
    container: per-container caps multiply with nesting).
    """

    __slots__ = ("limit", "left", "where")

    def __init__(self, limit: int, where: str) -> None:
        self.limit = limit
        self.left = limit
        self.where = where

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise MalformedMedia(f"more than {self.limit} boxes in {self.where}: not walking them all")


def iter_boxes(
    buf: bytes | memoryview, start: int, end: int, base: int = 0, budget: BoxBudget | None = None
) -> Iterator[BoxHeader]:
    """Yield the headers of consecutive boxes in ``buf[start:end]`` (each one spends ``budget``)."""
    pos = start
    while pos < end:
        if budget is not None:
            budget.take()
        header = parse_header(buf, pos, base, base + end)
        yield header
        pos += header.size


def children(
    buf: bytes | memoryview, parent: BoxHeader, skip: int = 0, base: int = 0, budget: BoxBudget | None = None
) -> dict[str, BoxHeader]:
    """The first child of each type inside ``parent`` (``skip`` bytes of fields come first)."""
    start = parent.payload_offset - base + skip
    found: dict[str, BoxHeader] = {}
    for child in iter_boxes(buf, start, parent.end - base, base, budget):
        found.setdefault(child.type, child)
    return found


def payload(buf: bytes | memoryview, box: BoxHeader, base: int = 0) -> memoryview:
    return memoryview(buf)[box.payload_offset - base : box.end - base]


def printable(box_type: str) -> str:
    """Box types from garbage input can hold any byte: show them safely in messages."""
    return box_type if box_type.isprintable() and box_type.isascii() else box_type.encode("latin-1").hex()
