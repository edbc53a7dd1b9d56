"""HLS tag names and attribute formatting (RFC 8216 section 4).

Quoting is decided by the attribute's type, here and only here: callers hand
typed values (:class:`Quoted`, :class:`Enum`, :class:`Resolution`, ints,
Fractions) and never build attribute strings themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

EXTM3U = "#EXTM3U"
EXT_X_VERSION = "#EXT-X-VERSION"
EXT_X_INDEPENDENT_SEGMENTS = "#EXT-X-INDEPENDENT-SEGMENTS"
EXT_X_TARGETDURATION = "#EXT-X-TARGETDURATION"
EXT_X_MEDIA_SEQUENCE = "#EXT-X-MEDIA-SEQUENCE"
EXT_X_PLAYLIST_TYPE = "#EXT-X-PLAYLIST-TYPE"
EXT_X_I_FRAMES_ONLY = "#EXT-X-I-FRAMES-ONLY"
EXT_X_MAP = "#EXT-X-MAP"
EXT_X_KEY = "#EXT-X-KEY"
EXTINF = "#EXTINF"
EXT_X_BYTERANGE = "#EXT-X-BYTERANGE"
EXT_X_ENDLIST = "#EXT-X-ENDLIST"
EXT_X_MEDIA = "#EXT-X-MEDIA"
EXT_X_STREAM_INF = "#EXT-X-STREAM-INF"
EXT_X_I_FRAME_STREAM_INF = "#EXT-X-I-FRAME-STREAM-INF"


@dataclass(frozen=True)
class Quoted:
    """quoted-string (4.2): must not contain a double quote, CR or LF."""

    value: str

    def __post_init__(self) -> None:
        if any(c in self.value for c in '"\r\n'):
            raise ValueError(f"HLS quoted-string cannot hold {self.value!r}")


@dataclass(frozen=True)
class Enum:
    """enumerated-string (4.2): unquoted token such as YES, AUDIO."""

    value: str


@dataclass(frozen=True)
class Resolution:
    width: int
    height: int


AttributeValue = Quoted | Enum | Resolution | int | Fraction | float


def format_value(value: AttributeValue) -> str:
    if isinstance(value, Quoted):
        return f'"{value.value}"'
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Resolution):
        return f"{value.width}x{value.height}"
    if isinstance(value, bool):
        raise TypeError("use Enum('YES'/'NO') for HLS booleans")
    if isinstance(value, int):
        return str(value)
    return decimal(value, 3)


def decimal(value: Fraction | float, places: int) -> str:
    """decimal-floating-point with a fixed number of places (no exponent, 4.2)."""
    return f"{float(value):.{places}f}"


def tag(name: str, attributes: dict[str, AttributeValue | None] | None = None) -> str:
    if not attributes:
        return name
    parts = ",".join(f"{key}={format_value(v)}" for key, v in attributes.items() if v is not None)
    return f"{name}:{parts}"


def value_tag(name: str, value: int | str) -> str:
    return f"{name}:{value}"


def byterange(length: int, offset: int) -> str:
    return f"{length}@{offset}"
