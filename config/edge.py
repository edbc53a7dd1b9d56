"""Edge role settings: the ``[edge]`` TOML table and ``--role`` / ``--upstream``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from .errors import ConfigError, unknown_keys, without_credentials

MB = 1024 * 1024


def normalize_upstream(url: str) -> str:
    """An upstream origin's base URL without a trailing slash; ValueError for anything but http(s)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"upstream {without_credentials(repr(url))} is not an http(s) URL such as http://origin:8080")
    if parts.query or parts.fragment:
        raise ValueError(f"upstream {without_credentials(repr(url))} must not have a query or fragment")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class EdgeConfig:
    upstreams: tuple[str, ...]
    connect_timeout: float = 2.0  # seconds to open a connection to an upstream
    read_timeout: float = 10.0  # seconds without a byte from an upstream
    health_interval: float = 5.0  # /healthz probe period; 0 = no probes
    down_seconds: float = 10.0  # a marked-down upstream is retried first after this (or its next good probe)
    ttl: float = 60.0  # seconds an object is served without asking upstream, then revalidated
    stale_if_error: float = 86400.0  # seconds past freshness a copy may be served while every upstream fails
    negative_ttl: float = 10.0  # seconds a 404/410 is remembered
    chunk_size: int = MB  # progressive MP4 cache granularity
    upstream_headers: tuple[tuple[str, str], ...] = ()  # e.g. (("X-Origin-Shield", "secret"),)
    max_connections: int = 100  # pooled keep-alive connections to all upstreams
    pass_headers: tuple[str, ...] = ()  # more upstream response headers to keep (e.g. a custom surrogate header)
    ready_when: str = "all"  # /readyz with several upstreams: "all" of them pass, or "any" one (edge/readiness.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "upstreams", tuple(normalize_upstream(u) for u in self.upstreams))
        if not self.upstreams:
            raise ValueError("edge.upstreams: an edge needs at least one upstream URL")
        if self.chunk_size < 64 * 1024:
            raise ValueError("edge.chunk_size must be at least 64 KiB")


EDGE_KEYS = {
    "role", "upstreams", "connect_timeout", "read_timeout", "health_interval", "down_seconds", "ttl",
    "stale_if_error", "negative_ttl", "chunk_kb", "upstream_headers", "max_connections", "ready_when",
}
READY_WHEN = ("all", "any")
ROLES = ("all", "origin", "edge")


def _check_keys(table: Mapping[str, Any], source: str) -> None:
    """ConfigError for a key [edge] does not have, or no longer has."""
    if "viewer_params" in table:
        raise ConfigError(
            f"{source}: edge.viewer_params is gone: an edge now writes into playlists exactly what an origin does "
            "(token, hdnts and a checked playSessionId, quoted); remove the key"
        )
    unknown = set(table) - EDGE_KEYS
    if unknown:
        raise unknown_keys("edge", unknown, EDGE_KEYS, source)


def edge_config_from_table(table: Mapping[str, Any], source: str = "config", upstreams: Sequence[str] = ()) -> EdgeConfig:
    """The ``[edge]`` TOML table (``role`` is validated, not kept) -> EdgeConfig; ConfigError names key and fix.

    ``upstreams`` (e.g. from ``--upstream``) replace the table's list when given.
    """

    _check_keys(table, source)
    role = table.get("role", "all")
    if role not in ROLES:
        raise ConfigError(f"{source}: edge.role has value {role!r}; expected one of {', '.join(ROLES)}")

    def number(key: str, default: float, minimum: float = 0.0) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise ConfigError(f"{source}: edge.{key} has value {value!r}; expected a number of seconds >= {minimum:g}")
        return float(value)

    ups = list(upstreams) or table.get("upstreams", [])
    if not isinstance(ups, list) or not all(isinstance(u, str) for u in ups):
        raise ConfigError(f'{source}: edge.upstreams has value {without_credentials(repr(ups))}; expected a list like ["http://origin:8080"]')
    headers = table.get("upstream_headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        # values not echoed: these headers carry the secrets an origin's shield asks for
        raise ConfigError(f'{source}: edge.upstream_headers must be a table of strings, like {{"X-Origin-Shield" = "secret"}}')
    chunk_kb = table.get("chunk_kb", 1024)
    if isinstance(chunk_kb, bool) or not isinstance(chunk_kb, int) or not 64 <= chunk_kb <= 16384:
        raise ConfigError(f"{source}: edge.chunk_kb has value {chunk_kb!r}; expected an integer between 64 and 16384")
    max_connections = table.get("max_connections", 100)
    if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
        raise ConfigError(f"{source}: edge.max_connections has value {max_connections!r}; expected a positive integer")
    ready_when = table.get("ready_when", "all")
    if ready_when not in READY_WHEN:
        raise ConfigError(f'{source}: edge.ready_when has value {ready_when!r}; expected "all" (every upstream passes) '
                          'or "any" (at least one does)')
    try:
        return EdgeConfig(
            upstreams=tuple(ups),
            ready_when=ready_when,
            connect_timeout=number("connect_timeout", 2.0, 0.1),
            read_timeout=number("read_timeout", 10.0, 0.1),
            health_interval=number("health_interval", 5.0),
            down_seconds=number("down_seconds", 10.0),
            ttl=number("ttl", 60.0),
            stale_if_error=number("stale_if_error", 86400.0),
            negative_ttl=number("negative_ttl", 10.0),
            chunk_size=chunk_kb * 1024,
            upstream_headers=tuple(headers.items()),
            max_connections=max_connections,
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc} (set edge.upstreams or pass --upstream URL)") from None


def parse_edge_section(
    table: Mapping[str, Any], source: str = "config", *, role: str | None = None, upstreams: Sequence[str] = ()
) -> tuple[str, EdgeConfig | None]:
    """``[edge]`` + ``--role`` + ``--upstream`` -> (role, EdgeConfig when the role is edge, else None).

    The table's keys are checked whatever the role, so a typo never waits for the day a node turns edge.
    """

    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: 'edge' must be a table ([edge])")
    _check_keys(table, source)
    chosen = role or table.get("role") or ("edge" if upstreams else "all")  # --upstream alone means an edge
    if chosen not in ROLES:
        where = "--role" if role else "edge.role"
        raise ConfigError(f"{source}: {where} has value {chosen!r}; expected one of {', '.join(ROLES)}")
    if chosen != "edge":
        if upstreams:
            raise ConfigError(f"{source}: --upstream is for the edge role, and the role is {chosen!r} (use --role edge)")
        return chosen, None
    return chosen, edge_config_from_table({**table, "role": chosen}, source, upstreams)


