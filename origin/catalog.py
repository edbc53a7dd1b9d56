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


def valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


@dataclass(frozen=True)
class Flavor:
    id: str
    key: str  # storage key, e.g. "demo/ladder/hi.mp4"


@dataclass(frozen=True)
class Entry:
    partner: str
    id: str
    flavors: tuple[Flavor, ...]

    def flavor(self, flavor_id: str) -> Flavor:
        for flavor in self.flavors:
            if flavor.id == flavor_id:
                return flavor
        raise UnknownFlavor(f"entry {self.id} has no flavor {flavor_id}")


class Catalog(Protocol):
    async def entry(self, partner: str, entry: str) -> Entry: ...

    async def entries(self, partner: str) -> list[str]: ...

    async def partners(self) -> list[str]: ...


class FileCatalog:
    """Folders as catalog. Flavors are listed in name order, which is the variant order."""

    def __init__(self, root: Path) -> None:
        self.root = root
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
        flavors = tuple(
            Flavor(name[:-4], f"{partner}/{entry}/{name}")
            for name in names
            if name.endswith(".mp4") and valid_id(name[:-4])
        )
        if not flavors:
            raise UnknownEntry(f"entry {partner}/{entry} has no .mp4 flavors")
        return Entry(partner, entry, flavors)

    async def entry(self, partner: str, entry: str) -> Entry:
        return self.entry_sync(partner, entry)

    async def partners(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and valid_id(p.name)) if self.root.is_dir() else []

    async def entries(self, partner: str) -> list[str]:
        partner_dir = self.root / partner
        if not valid_id(partner) or not partner_dir.is_dir():
            raise UnknownPartner(f"no partner {partner}")
        return sorted(e.name for e in partner_dir.iterdir() if e.is_dir() and valid_id(e.name))


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
