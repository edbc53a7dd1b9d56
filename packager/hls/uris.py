"""Per-viewer query parameters carried into every URI of a cached playlist.

Players do not copy a playlist's query string to the URIs inside it, so a
token in ``master.m3u8?token=...`` must be written into each child URI.
Playlists are cached token-free and this runs per response: it touches only
URI lines and ``URI="..."`` attributes (EXT-X-MEDIA, EXT-X-I-FRAME-STREAM-INF,
EXT-X-MAP, EXT-X-KEY...). A parameter of the same name already on a URI is
replaced, never duplicated; ``data:``/``skd:`` URIs are left alone; line
endings are kept.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

_URI_ATTRIBUTE = re.compile(r'(URI=")([^"]*)(")')


def with_query(playlist: str, query: str) -> str:
    """Append ``query`` (already URL-encoded, without ``?``, e.g. ``token=abc``) to every URI of ``playlist``."""
    if not query:
        return playlist
    names = _param_names(query)
    out = []
    for line in playlist.splitlines(keepends=True):
        content = line.rstrip("\r\n")
        ending = line[len(content) :]
        stripped = content.strip()
        if not stripped:
            out.append(line)
        elif stripped.startswith("#"):
            if 'URI="' in content:
                content = _URI_ATTRIBUTE.sub(lambda m: m[1] + _with_query(m[2], query, names) + m[3], content)
            out.append(content + ending)
        else:
            out.append(_with_query(stripped, query, names) + ending)
    return "".join(out)


def _param_names(query: str) -> set[str]:
    return {unquote_plus(part.partition("=")[0]) for part in query.split("&") if part}


def _with_query(uri: str, query: str, names: set[str]) -> str:
    if not uri or uri.startswith(("data:", "skd:")):
        return uri
    base, hash_mark, fragment = uri.partition("#")
    path, _, existing = base.partition("?")
    kept = [p for p in existing.split("&") if p and unquote_plus(p.partition("=")[0]) not in names]
    return f"{path}?{'&'.join([*kept, query])}{hash_mark}{fragment}"


QUERY_SLOT = "\x01"  # never in a playlist (a control character): marks where a viewer's query goes
_SLOT = QUERY_SLOT.encode()


def query_template(playlist: str) -> str | None:
    """``playlist`` with a slot wherever :func:`with_query` would write a query: made once when a playlist is cached,
    so each response is one :func:`fill_query` (a bytes replace) instead of a pass over every line. None where a
    template would not say what with_query does (a URI that already has a query, whose parameters with_query
    merges; a slot character in the text): such a playlist is written per response by with_query, as before."""
    if QUERY_SLOT in playlist:
        return None
    template = with_query(playlist, QUERY_SLOT)
    if "&" + QUERY_SLOT in template or fill_query(template.encode(), "").decode() != playlist:
        return None
    return template


def fill_query(template: bytes, query: str) -> bytes:
    """The playlist for one viewer: ``query`` in every slot, or with no query the slots and their separators gone.
    Equal to ``with_query(playlist, query)`` (tests/test_playlist_template.py checks it on every kind of playlist)."""
    if query:
        return template.replace(_SLOT, query.encode())
    return template.replace(b"?" + _SLOT, b"").replace(b"&" + _SLOT, b"")
