"""Pure HTTP helpers: single byte ranges, If-Range, conditional requests, validators.

Small functions with typed exceptions (starlette's FileResponse range parsing
and staticfiles.is_not_modified are the model); the routes only call them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.utils import format_datetime, parsedate_to_datetime
from datetime import datetime, timezone
from typing import Mapping


class MalformedRange(Exception):
    """The Range header is not a single bytes range we understand: serve the whole body (RFC 9110 14.2)."""


class RangeNotSatisfiable(Exception):
    """416: the range starts past the end. Carries the full length for Content-Range: bytes */len."""

    def __init__(self, length: int) -> None:
        super().__init__(f"range not satisfiable for {length} bytes")
        self.length = length


@dataclass(frozen=True)
class ByteSpan:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end}/{total}"


def parse_range(header: str, length: int) -> ByteSpan:
    """One ``bytes=`` range against a body of ``length`` bytes.

    Multiple ranges are answered with the whole body (we never send
    multipart/byteranges; RFC 9110 lets a server ignore Range).
    """
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        raise MalformedRange(header)
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.strip().isdigit() or first.strip() == "") or not (last.strip().isdigit() or last.strip() == ""):
        raise MalformedRange(header)
    first, last = first.strip(), last.strip()
    if first == "":
        if last == "":
            raise MalformedRange(header)
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable(length)
        return ByteSpan(max(0, length - suffix), length - 1)
    start = int(first)
    if start >= length:
        raise RangeNotSatisfiable(length)
    end = int(last) if last else length - 1
    if end < start:
        raise MalformedRange(header)
    return ByteSpan(start, min(end, length - 1))


def requested_range(request_headers: Mapping[str, str], length: int, etag: str, last_modified: str) -> ByteSpan | None:
    """The single range to serve, or None for the whole body.

    Range is honoured only when If-Range (if any) matches; a malformed Range is
    ignored (RFC 9110 14.2). A range past the end raises RangeNotSatisfiable.
    """
    header = request_headers.get("range")
    if not header or not if_range_matches(request_headers, etag, last_modified):
        return None
    try:
        return parse_range(header, length)
    except MalformedRange:
        return None


def http_date(mtime_ns: int) -> str:
    return format_datetime(datetime.fromtimestamp(mtime_ns // 1_000_000_000, tz=timezone.utc), usegmt=True)


def strong_etag(*parts: str) -> str:
    """Content- and identity-derived, so every origin node computes the same ETag."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=12).hexdigest()
    return f'"{digest}"'


def _parse_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def is_not_modified(request_headers: Mapping[str, str], etag: str, last_modified: str) -> bool:
    """RFC 9110 13.1: If-None-Match wins over If-Modified-Since."""
    if_none_match = request_headers.get("if-none-match")
    if if_none_match is not None:
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return "*" in tags or etag in tags
    if_modified_since = request_headers.get("if-modified-since")
    if if_modified_since:
        since, modified = _parse_date(if_modified_since), _parse_date(last_modified)
        return since is not None and modified is not None and modified <= since
    return False


def if_range_matches(request_headers: Mapping[str, str], etag: str, last_modified: str) -> bool:
    """RFC 9110 13.1.5: honour Range only when If-Range (if any) names the current representation."""
    value = request_headers.get("if-range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == etag  # strong comparison: a weak tag never matches
    return value == last_modified
