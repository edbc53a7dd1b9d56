"""Per-viewer query parameters carried into every URI of a cached playlist.

Players do not copy a playlist's query string to the URIs inside it, so a
token in ``master.m3u8?token=...`` must be written into each child URI.
Playlists are cached token-free and this runs per response: it touches only
URI lines and ``URI="..."`` attributes.
"""

from __future__ import annotations

import re

_URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')


def with_query(playlist: str, query: str) -> str:
    """Append ``query`` (already encoded, without ``?``) to every URI of ``playlist``."""
    if not query:
        return playlist
    lines = playlist.split("\n")
    for i, line in enumerate(lines):
        if not line:
            continue
        if line.startswith("#"):
            if 'URI="' in line:
                lines[i] = _URI_ATTRIBUTE.sub(lambda m: f'URI="{_append(m.group(1), query)}"', line)
        else:
            lines[i] = _append(line, query)
    return "\n".join(lines)


def _append(uri: str, query: str) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{query}"
