"""Playlists on the hot lane (edge/hot.py): one remembered answer, every viewer's query-free or session form.

A playlist carries the viewer's query into its URIs, so unlike a segment it is
not the same bytes whatever the query says. For a partner without rules the
full path's answer depends on the query in one way only when that query is a
lone ``playSessionId`` (players send one on every request, edge/viewer.py
``only_a_session_query``): the id goes into the slots of the playlist's
cached template (packager/hls/uris.fill_query), the ETag names it and
Cache-Control turns private. So the origin's route (edge/delivery.py
``_playlist``) describes its playlist with a :class:`PlaylistForm`, and the
hot lane remembers one :class:`PlaylistAnswer` per path, recorded from
whichever of the two kinds of request came first, and rewrites those three
headers (and Content-Length) per answer. Any other query takes the full path.
"""

from __future__ import annotations

from dataclasses import dataclass

from packager.hls.uris import fill_query

from .http import strong_etag
from .viewer import only_a_session_query

_REWRITTEN = (b"etag", b"cache-control", b"content-length")


@dataclass(frozen=True, slots=True)
class PlaylistForm:
    """A route's description of its playlist (edge/delivery.py ``_playlist``).

    The query-free body is the mark's cache entry itself; ``template_key`` names the cached template a
    session id fills; the ETag is ``strong_etag(*etag_parts, query)``; Cache-Control is
    ``shared_cache_control`` without a query and ``personal_cache_control`` with one. A playlist kept as text
    (no template could say it) has no session form: ``personal_cache_control`` None.
    """

    template_key: str
    etag_parts: tuple[str, ...]
    shared_cache_control: str
    personal_cache_control: str | None = None

    def answers(self, query: bytes) -> bool:
        """Whether a hot answer made from this form is the full path's answer to a request with ``query``."""
        return not query or (self.personal_cache_control is not None and only_a_session_query(query) is not None)


@dataclass(frozen=True, slots=True)
class PlaylistAnswer:
    form: PlaylistForm
    template: bytes  # the very object the cache held under form.template_key: a replaced or purged one ends it
    headers: tuple[tuple[bytes, bytes], ...]  # as the app sent them, in order; _REWRITTEN change per answer

    @classmethod
    def recorded(cls, form: PlaylistForm, template: bytes | None, headers: list[tuple[bytes, bytes]],
                 body: bytes | memoryview, plain: bytes, query: bytes) -> "PlaylistAnswer | None":
        """The answer from a response the full path gave to ``query`` (none, or a lone session id), when that
        response is what this form says it is: its body ``plain`` or the template filled with the query."""
        names = [name.lower() for name, _ in headers]
        if template is None or not form.answers(query) or any(names.count(n) != 1 for n in _REWRITTEN):
            return None  # nothing to make it from, or headers whose rewrite would be a guess
        expected = fill_query(template, query.decode("ascii")) if query else plain
        return cls(form, template, tuple(headers)) if body == expected else None

    def body(self, query: bytes, plain: bytes) -> bytes:
        return fill_query(self.template, query.decode("ascii")) if query else plain

    def header_lines(self, query: bytes, size: int) -> bytes:
        """``b"name: value\\r\\n"`` for each header, those the query changes as the full path writes them."""
        text = query.decode("ascii")
        changed = {
            b"etag": strong_etag(*self.form.etag_parts, text).encode(),
            b"cache-control": (self.form.personal_cache_control if query else self.form.shared_cache_control).encode(),  # type: ignore[union-attr]
            b"content-length": b"%d" % size,
        }
        return b"".join(b"%s: %s\r\n" % (name, changed.get(name.lower(), value)) for name, value in self.headers)
