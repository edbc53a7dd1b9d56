"""The catalog: partners own entries, entries own flavors.

:class:`FileCatalog` is the embedded default: every
``ROOT/<partner>/<entry>/<flavor>.mp4`` is a flavor. A database- or
Redis-backed catalog implements the same :class:`Catalog` protocol.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Ids are path components and cache-key parts: a strict alphabet keeps
# traversal ("..", "/", NUL) and header injection out by construction.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class CatalogError(Exception):
    code = "not_found"


class UnknownPartner(CatalogError):
    code = "unknown_partner"


class UnknownEntry(CatalogError):
    code = "unknown_entry"


class UnknownFlavor(CatalogError):
    code = "unknown_flavor"


class UnknownSubtitles(CatalogError):
    code = "unknown_subtitles"


class SymlinkNotFollowed(CatalogError):
    """A partner or entry folder, or a flavor file, is a symbolic link and ``[server] follow_symlinks = false``."""

    code = "symlink_not_followed"


NOT_FOLLOWED = "is a symbolic link and [server] follow_symlinks = false"


def valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


@dataclass(frozen=True)
class Flavor:
    id: str
    key: str  # storage key, e.g. "demo/ladder/hi.mp4"


@dataclass(frozen=True)
class SubtitleFile:
    """A sidecar subtitle file of an entry: ``<name>.<language>[.default][.forced].vtt`` (or ``.srt``)."""

    track: str  # its id in URLs: the language, "_forced" added for a forced track ("en", "pt-BR", "fr_forced")
    language: str  # BCP 47, as the file name spells it
    default: bool
    forced: bool
    key: str  # storage key, e.g. "demo/ladder/subs.en.vtt"
    format: str  # "vtt" or "srt"


# <name>.<language>[.default][.forced].(vtt|srt): the language a BCP 47 tag (letters, digits, hyphens)
SUBTITLE_NAME = re.compile(r"[^.]+\.(?P<lang>[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,3})(?P<flags>(?:\.(?:default|forced)){0,2})\.(?P<ext>vtt|srt)")


def subtitle_file(partner: str, entry: str, name: str) -> SubtitleFile | None:
    """The sidecar a file name in an entry folder is, or None."""
    found = SUBTITLE_NAME.fullmatch(name)
    if found is None:
        return None
    flags = found["flags"].split(".")
    forced = "forced" in flags
    language = canonical_tag(found["lang"])
    track = language + ("_forced" if forced else "")  # "_" is in no language tag: no tag spells a forced track's id
    return SubtitleFile(track, language, "default" in flags, forced, f"{partner}/{entry}/{name}", found["ext"])


def canonical_tag(tag: str) -> str:
    """BCP 47 case (RFC 5646 2.1.1): tags are case-insensitive, so "EN" and "en" are one language: "en", "pt-BR",
    "zh-Hant"."""
    primary, *rest = tag.split("-")
    parts = [primary.lower()]
    for sub in rest:
        parts.append(sub.upper() if len(sub) == 2 else sub.title() if len(sub) == 4 else sub.lower())
    return "-".join(parts)


@dataclass(frozen=True)
class Entry:
    partner: str
    id: str
    flavors: tuple[Flavor, ...]
    refused: tuple[tuple[str, str], ...] = ()  # (flavor id, why it is not served): symlinks not followed
    subtitles: tuple[SubtitleFile, ...] = ()  # sidecar subtitle files, one per track id (the first in name order)

    def subtitle(self, track: str) -> SubtitleFile:
        for sub in self.subtitles:
            if sub.track == track:
                return sub
        raise UnknownSubtitles(f"entry {self.id} has no subtitle track {track}")

    def flavor(self, flavor_id: str) -> Flavor:
        for flavor in self.flavors:
            if flavor.id == flavor_id:
                return flavor
        for refused_id, reason in self.refused:
            if refused_id == flavor_id:
                raise SymlinkNotFollowed(reason)
        raise UnknownFlavor(f"entry {self.id} has no flavor {flavor_id}")


class Catalog(Protocol):
    async def entry(self, partner: str, entry: str) -> Entry: ...

    async def entries(self, partner: str) -> list[str]: ...

    async def partners(self) -> list[str]: ...


class FileCatalog:
    """Folders as catalog. Flavors are listed in name order, which is the variant order.

    ``follow_symlinks`` (``[server] follow_symlinks``, default true, as nginx):
    partner and entry folders and flavor files that are symbolic links are
    served like any other. URLs still cannot reach outside the root: ids are
    validated (no "/", no ".."), so a request only ever follows a link the
    operator placed. When false, such links are refused with
    :class:`SymlinkNotFollowed` (404 with the reason), never read.
    """

    def __init__(self, root: Path, follow_symlinks: bool = True) -> None:
        self.root = root
        self.follow_symlinks = follow_symlinks
        self._listings: dict[tuple[str, str], tuple[int, Entry]] = {}  # by folder mtime

    def entry_sync(self, partner: str, entry: str) -> Entry:
        if not (valid_id(partner) and valid_id(entry)):
            raise UnknownEntry(f"no entry {entry!r} for partner {partner!r}")
        entry_dir = os.path.join(self.root, partner, entry)
        try:
            mtime = os.stat(entry_dir).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            if not (self.root / partner).is_dir():
                raise UnknownPartner(f"no partner {partner}") from None
            raise UnknownEntry(f"partner {partner} has no entry {entry}") from None
        if not self.follow_symlinks:
            for name, path in ((f"partner folder {partner}", self.root / partner), (f"entry folder {partner}/{entry}", Path(entry_dir))):
                if path.is_symlink():
                    raise SymlinkNotFollowed(f"{name} {NOT_FOLLOWED}")
        cached = self._listings.get((partner, entry))
        if cached is not None and cached[0] == mtime:  # adding or removing a flavor changes the folder's mtime
            return cached[1]
        found = self._list(partner, entry, entry_dir)
        if len(self._listings) > 100_000:
            self._listings.clear()
        self._listings[(partner, entry)] = (mtime, found)
        return found

    def _list(self, partner: str, entry: str, entry_dir: str) -> Entry:
        try:
            names = sorted(os.listdir(entry_dir))
        except (FileNotFoundError, NotADirectoryError):
            raise UnknownEntry(f"partner {partner} has no entry {entry}") from None
        flavors, refused, subtitles = [], [], {}
        for name in names:
            sub = subtitle_file(partner, entry, name)
            if sub is not None and not os.path.isdir(os.path.join(entry_dir, name)):
                if self.follow_symlinks or not os.path.islink(os.path.join(entry_dir, name)):
                    subtitles.setdefault(sub.track, sub)
                continue
            if not (name.endswith(".mp4") and valid_id(name[:-4])) or os.path.isdir(os.path.join(entry_dir, name)):
                continue  # a folder named like a flavor is not one
            if not self.follow_symlinks and os.path.islink(os.path.join(entry_dir, name)):
                refused.append((name[:-4], f"flavor file {partner}/{entry}/{name} {NOT_FOLLOWED}"))
                continue
            flavors.append(Flavor(name[:-4], f"{partner}/{entry}/{name}"))
        if not flavors:
            if refused:
                raise SymlinkNotFollowed(f"entry {partner}/{entry} has no servable flavor: " + "; ".join(r for _, r in refused))
            raise UnknownEntry(f"entry {partner}/{entry} has no .mp4 flavors")
        return Entry(partner, entry, tuple(flavors), tuple(refused), tuple(subtitles.values()))

    async def entry(self, partner: str, entry: str) -> Entry:
        return self.entry_sync(partner, entry)

    def _listed(self, path: Path) -> bool:
        return path.is_dir() and valid_id(path.name) and (self.follow_symlinks or not path.is_symlink())

    async def partners(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if self._listed(p)) if self.root.is_dir() else []

    async def entries(self, partner: str) -> list[str]:
        partner_dir = self.root / partner
        if not valid_id(partner) or not self._listed(partner_dir):
            raise UnknownPartner(f"no partner {partner}")
        return sorted(e.name for e in partner_dir.iterdir() if self._listed(e))


class StaticCatalog:
    """A catalog held in memory (tests, or a catalog loaded once from configuration)."""

    def __init__(self, entries: list[Entry]) -> None:
        self._entries = {(e.partner, e.id): e for e in entries}

    async def entry(self, partner: str, entry: str) -> Entry:
        found = self._entries.get((partner, entry))
        if found is None:
            if not any(p == partner for p, _ in self._entries):
                raise UnknownPartner(f"no partner {partner}")
            raise UnknownEntry(f"partner {partner} has no entry {entry}")
        return found

    async def partners(self) -> list[str]:
        return sorted({p for p, _ in self._entries})

    async def entries(self, partner: str) -> list[str]:
        return sorted(e for p, e in self._entries if p == partner)
