"""Where flavors come from: ``[storage]`` (local folder or HTTP object storage) and ``[catalog]``.

    [storage]
    type = "http"                         # "local" (default: server.media_root) or "http"
    base_url = "http://minio:9000/videos" # objects at <base_url>/<partner>/<entry>/<flavor>.mp4
    headers = { Authorization = "Bearer ..." }
    connect_timeout = 2
    read_timeout = 10
    stat_ttl = 5

    [catalog.demo]                        # partner -> entry -> flavor ids (needed with remote storage,
    ladder = ["hi", "mid", "lo"]          # which cannot be listed; optional with a local folder)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from origin.catalog import Entry, Flavor, valid_id

from .errors import ConfigError, unknown_keys, without_credentials

STORAGE_KEYS = {"type", "base_url", "headers", "connect_timeout", "read_timeout", "stat_ttl"}


@dataclass(frozen=True)
class StorageConfig:
    type: str = "local"
    base_url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold credentials
    connect_timeout: float = 2.0
    read_timeout: float = 10.0
    stat_ttl: float = 5.0


def parse_storage(raw: Mapping[str, Any], source: str) -> StorageConfig:
    table = raw.get("storage", {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: 'storage' must be a table ([storage])")
    unknown = set(table) - STORAGE_KEYS
    if unknown:
        raise unknown_keys("storage", unknown, STORAGE_KEYS, source)
    kind = table.get("type", "local")
    if kind not in ("local", "http"):
        raise ConfigError(f"{source}: storage.type has value {kind!r}; expected \"local\" or \"http\"")
    base_url = table.get("base_url", "")
    if kind == "http" and (not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))):
        raise ConfigError(f"{source}: storage.base_url has value {without_credentials(repr(base_url))}; expected a URL like \"http://minio:9000/videos\"")
    headers = table.get("headers", {})
    if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{source}: storage.headers must be a table of strings")  # values not echoed: credentials
    return StorageConfig(
        kind, base_url, dict(headers),
        _seconds(table, "connect_timeout", 2.0, source), _seconds(table, "read_timeout", 10.0, source), _seconds(table, "stat_ttl", 5.0, source),
    )


def parse_catalog(raw: Mapping[str, Any], source: str) -> list[Entry] | None:
    """``[catalog.<partner>] <entry> = [flavor ids]`` -> entries; None when there is no [catalog]."""
    table = raw.get("catalog")
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: 'catalog' must be a table: [catalog.<partner>] <entry> = [\"flavor\", ...]")
    entries = []
    for partner, listed in table.items():
        where = f"catalog.{partner}"
        if not valid_id(partner) or not isinstance(listed, Mapping):
            raise ConfigError(f"{source}: {where} must be a partner id with a table of entries")
        for entry, flavors in listed.items():
            if not valid_id(entry) or not isinstance(flavors, list) or not flavors or not all(isinstance(f, str) and valid_id(f) for f in flavors):
                raise ConfigError(f"{source}: {where}.{entry} has value {flavors!r}; expected a list of flavor ids like [\"hi\", \"lo\"]")
            entries.append(Entry(partner, entry, tuple(Flavor(f, f"{partner}/{entry}/{f}.mp4") for f in flavors)))
    return entries


def _seconds(table: Mapping[str, Any], key: str, default: float, source: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{source}: storage.{key} has value {value!r}; expected seconds > 0")
    return float(value)
