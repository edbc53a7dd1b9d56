"""Server settings: TOML file or command-line defaults, validated once at start.

Every error names the key, the value and the fix (starlette's Config style);
nothing here uses ``assert``, which vanishes under ``python -O``.

    [server]
    host = "127.0.0.1"
    port = 8080
    media_root = "media"          # DIR/<partner>/<entry>/<flavor>.mp4
    segment_duration = 6          # seconds, target for HLS segments
    cors_origins = ["*"]
    index_cache_mb = 256          # parsed MP4 indexes kept in memory, by weight (their sample tables)
    index_cache_entries = 1024    # and at most this many of them
    log_level = "info"
    header_timeout = 10           # seconds to send a whole request head, else 408 and close
    body_timeout = 10             # seconds to send a whole request body after its head, else 408 (or close)
    max_header_bytes = 16384      # a larger request head is answered 431 and the connection closed
    max_connections = 1000        # open connections; a request on one more is answered 503
    keep_alive_timeout = 5        # seconds an idle keep-alive connection stays open
    follow_symlinks = true        # serve flavor files and folders that are symbolic links (as nginx does)
    access_log = "text"           # one line per request: "text" (combined log format), "json" or "off"
    workers = 0                   # serving processes (edge/workers.py); 0 = one per CPU

    [cache]
    memory_mb = 256               # packaged segments and playlists kept in memory
    disk_path = ""                # optional disk tier (survives restarts); "" = off
    disk_mb = 2048
    hot_lane = true               # answer warm shareable segments before any ASGI work (edge/hot.py)
    enabled = true                # false: no response cache and no hot lane (debugging, differential tests)

    [cdn]
    shield_header = "X-Vodgate-Shield"
    shield_secrets = []           # when set, only requests carrying one of these are served
    edge_secrets = []             # shared by edges and origins only (never a CDN): an edge vouches with one
    surrogate_header = "Surrogate-Key"   # or "Cache-Tag"
    s_maxage = 31536000
    stale_while_revalidate = 60
    stale_if_error = 86400
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from .admin import parse_admin
from .analytics import parse_analytics, parse_metrics
from .edge import parse_edge_section  # checks [edge] whatever the role: a typo never waits
from .errors import ConfigError, check_table, unknown_keys, without_credentials, wrong_type

__all__ = ["ConfigError", "Settings", "check_table", "load_settings", "parse_settings", "read_toml", "segment_duration"]


LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
ACCESS_LOGS = ("text", "json", "off")  # edge/access_log.py


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    media_root: Path = Path("media")
    segment_duration: Fraction = Fraction(6)
    cors_origins: tuple[str, ...] = ("*",)
    index_cache_mb: int = 256  # bytes bound of the parsed-index cache (origin/media.py); media sets and previews get a quarter each
    index_cache_entries: int = 1024  # count bound of the same cache: whichever is reached first evicts
    log_level: str = "info"
    header_timeout: float = 10.0  # edge/http_limits.py
    body_timeout: float = 10.0  # edge/http_limits.py (BODY_TIMEOUT)
    max_header_bytes: int = 16 * 1024
    max_connections: int = 1000  # uvicorn's limit_concurrency (cli/main.py)
    keep_alive_timeout: float = 5.0
    follow_symlinks: bool = True  # origin/catalog.py, origin/storage.py: links the operator placed are followed
    access_log: str = "text"  # edge/access_log.py: "text", "json" or "off"
    workers: int = 0  # serving processes (edge/workers.py); 0 = one per CPU this process may use (workers_for)
    worker: int = 0  # not a TOML key: this process's index among the workers (its disk tier shard)
    run_dir: Path | None = None  # not a TOML key: the node's private run folder when it runs workers (edge/workers.py)
    cache_memory_mb: int = 256
    cache_disk_path: Path | None = None
    cache_disk_mb: int = 2048
    hot_lane: bool = True
    cache_enabled: bool = True  # False: no response cache (memory, disk, edge store) and no hot lane
    shield_header: str = "X-Vodgate-Shield"
    shield_secrets: tuple[str, ...] = field(default=(), repr=False)  # never printed
    edge_secrets: tuple[str, ...] = field(default=(), repr=False)  # edges and origins only: vouching (edge/viewer.py)
    surrogate_header: str = "Surrogate-Key"
    s_maxage: int = 31536000
    stale_while_revalidate: int = 60
    stale_if_error: int = 86400
    access: Any = field(default=None, repr=False)  # config.partners.AccessConfig (partners, profiles, keys)
    edge_table: dict = field(default_factory=dict, repr=False)  # raw [edge] table: config/edge.py reads it
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    redis_channel: str = "vodgate:purge"
    key_ttl: float = 30.0  # seconds imported content keys are kept before Redis is read again (edge/key_store.py)
    storage: Any = field(default=None, repr=False)  # config.storage.StorageConfig; None = the local media_root
    catalog: Any = None  # list[origin.catalog.Entry] from [catalog]; None = list media_root's folders
    analytics: Any = None  # config.analytics.AnalyticsConfig ([analytics]: play events; off by default)
    admin: Any = None  # config.admin.AdminConfig ([admin]: where admin API changes are kept without Redis)
    metrics: Any = None  # config.analytics.MetricsConfig ([metrics]: /metrics, on by default)
    source: str = "defaults"  # where the settings came from, for messages

    def with_overrides(self, **changes: Any) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


SERVER_KEYS = {
    "host", "port", "media_root", "segment_duration", "cors_origins", "index_cache_mb", "index_cache_entries", "log_level",
    "header_timeout", "body_timeout", "max_header_bytes", "max_connections", "keep_alive_timeout", "follow_symlinks",
    "access_log", "workers",
}
MAX_WORKERS = 256
MAX_HEADER_BYTES = (8 * 1024, 64 * 1024)  # players and CDNs send heads under 2 KiB; nginx reads at most 32 KiB
MAX_TIMEOUT = 3600
CACHE_KEYS = {"memory_mb", "disk_path", "disk_mb", "hot_lane", "enabled"}
CDN_KEYS = {"shield_header", "shield_secrets", "edge_secrets", "surrogate_header", "s_maxage", "stale_while_revalidate", "stale_if_error"}
REDIS_KEYS = {"url", "channel", "key_ttl"}
SECTIONS = {"server", "cache", "cdn", "partners", "edge", "redis", "analytics", "metrics", "storage", "catalog", "admin"}


def read_toml(path: Path) -> dict[str, Any]:
    """A config file's document; ConfigError naming the file when it is missing or not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:  # unreadable for this user, a folder...: refused like a bad file (a reload keeps serving)
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None


def load_settings(path: Path, document: dict[str, Any] | None = None) -> Settings:
    """The settings of config file ``path``: read from it, or from ``document`` (its TOML as already read, e.g. by a
    worker's supervisor); relative paths are from its folder."""
    return parse_settings(read_toml(path) if document is None else document, source=str(path), base_dir=path.parent)


def parse_settings(raw: dict[str, Any], source: str = "config", base_dir: Path = Path(".")) -> Settings:
    unknown_sections = set(raw) - SECTIONS
    if unknown_sections:
        raise unknown_keys("", unknown_sections, SECTIONS, source)
    # imported here: config.partners imports ConfigError from this module
    from .partners import ACCESS_SERVER_KEYS, parse_access

    server = _section(raw, "server", SERVER_KEYS | ACCESS_SERVER_KEYS, source)
    cache = _section(raw, "cache", CACHE_KEYS, source)
    cdn = _section(raw, "cdn", CDN_KEYS, source)
    redis = _section(raw, "redis", REDIS_KEYS, source)
    from .storage import parse_catalog, parse_storage

    storage = parse_storage(raw, source)
    catalog = parse_catalog(raw, source)
    if storage.type == "http" and catalog is None:
        raise ConfigError(f"{source}: storage.type = \"http\" needs a [catalog] listing entries (remote storage cannot be listed)")

    edge_table = raw.get("edge", {})
    parse_edge_section(edge_table, source)
    defaults = Settings()
    disk_path = _typed(cache, "disk_path", str, "", source, "cache")
    cache_enabled = _typed(cache, "enabled", bool, defaults.cache_enabled, source, "cache")
    media_root = Path(_typed(server, "media_root", str, str(defaults.media_root), source))
    settings = Settings(
        host=_host(_typed(server, "host", str, defaults.host, source), source),
        port=_port(_typed(server, "port", int, defaults.port, source), source),
        media_root=media_root if media_root.is_absolute() else (base_dir / media_root),
        segment_duration=segment_duration(server.get("segment_duration", 6), f"{source}: server.segment_duration"),
        cors_origins=tuple(_string_list(server, "cors_origins", list(defaults.cors_origins), source)),
        index_cache_mb=_positive(_typed(server, "index_cache_mb", int, defaults.index_cache_mb, source), "server.index_cache_mb", source),
        index_cache_entries=_positive(_typed(server, "index_cache_entries", int, defaults.index_cache_entries, source), "server.index_cache_entries", source),
        log_level=_choice(_typed(server, "log_level", str, defaults.log_level, source), LOG_LEVELS, "server.log_level", source),
        header_timeout=_timeout(server, "header_timeout", defaults.header_timeout, source),
        body_timeout=_timeout(server, "body_timeout", defaults.body_timeout, source),
        max_header_bytes=_header_bytes(_typed(server, "max_header_bytes", int, defaults.max_header_bytes, source), source),
        max_connections=_positive(_typed(server, "max_connections", int, defaults.max_connections, source), "server.max_connections", source),
        keep_alive_timeout=_timeout(server, "keep_alive_timeout", defaults.keep_alive_timeout, source),
        follow_symlinks=_flag(server, "follow_symlinks", defaults.follow_symlinks, source),
        access_log=_access_log(server.get("access_log", defaults.access_log), source),
        workers=_workers(_typed(server, "workers", int, defaults.workers, source), source),
        cache_memory_mb=_positive(_typed(cache, "memory_mb", int, defaults.cache_memory_mb, source, "cache"), "cache.memory_mb", source),
        cache_disk_path=(base_dir / disk_path) if disk_path else None,
        cache_disk_mb=_positive(_typed(cache, "disk_mb", int, defaults.cache_disk_mb, source, "cache"), "cache.disk_mb", source),
        hot_lane=_typed(cache, "hot_lane", bool, defaults.hot_lane, source, "cache") and cache_enabled,  # it answers from the cache
        cache_enabled=cache_enabled,
        shield_header=_header_name(_typed(cdn, "shield_header", str, defaults.shield_header, source, "cdn"), "cdn.shield_header", source),
        shield_secrets=tuple(_secrets(cdn, source)),
        edge_secrets=tuple(_secrets(cdn, source, "edge_secrets")),
        surrogate_header=_header_name(_typed(cdn, "surrogate_header", str, defaults.surrogate_header, source, "cdn"), "cdn.surrogate_header", source),
        s_maxage=_seconds(cdn, "s_maxage", defaults.s_maxage, source),
        stale_while_revalidate=_seconds(cdn, "stale_while_revalidate", defaults.stale_while_revalidate, source),
        stale_if_error=_seconds(cdn, "stale_if_error", defaults.stale_if_error, source),
        access=parse_access(raw, source, base_dir),
        edge_table=dict(edge_table),
        redis_url=_redis_url(_typed(redis, "url", str, "", source, "redis"), source) or None,
        redis_channel=_typed(redis, "channel", str, "vodgate:purge", source, "redis"),
        key_ttl=_key_ttl(redis.get("key_ttl", defaults.key_ttl), source),
        storage=storage,
        catalog=catalog,
        analytics=parse_analytics(raw.get("analytics"), source, base_dir),
        metrics=parse_metrics(raw.get("metrics"), source),
        admin=parse_admin(raw.get("admin"), source, base_dir),
        source=source,
    )
    importing = [pid for pid, p in (settings.access.partners.items() if settings.access else ()) if p.protection.source == "redis"]
    if importing and settings.redis_url is None:
        raise ConfigError(f'{source}: partners {", ".join(importing)} set key_source = "redis" (imported content keys) but '
                          "there is no [redis] url to read them from")
    return settings


def _key_ttl(value: Any, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
        raise ConfigError(f"{source}: redis.key_ttl has value {value!r}; expected seconds from 0 to 3600, e.g. 30")
    return float(value)


def _secrets(cdn: dict[str, Any], source: str, key: str = "shield_secrets") -> list[str]:
    secrets = cdn.get(key, [])
    if not isinstance(secrets, list) or not all(isinstance(v, str) for v in secrets):
        raise ConfigError(f"{source}: cdn.{key} must be a list of strings")  # value not echoed: a secret
    for i, secret in enumerate(secrets):
        if len(secret) < 16:
            raise ConfigError(f"{source}: cdn.{key}[{i}] is shorter than 16 characters; use a long random string")
    return secrets


def _header_name(value: str, key: str, source: str) -> str:
    if not value or not all(c.isalnum() or c == "-" for c in value):
        raise ConfigError(f"{source}: {key} has value {value!r}; expected an HTTP header name like X-Vodgate-Shield")
    return value


def _seconds(table: dict[str, Any], key: str, default: int, source: str) -> int:
    value = _typed(table, key, int, default, source, "cdn")
    if value < 0:
        raise ConfigError(f"{source}: cdn.{key} has value {value}; expected seconds >= 0")
    return value


def _section(raw: dict[str, Any], name: str, known: set[str], source: str) -> dict[str, Any]:
    return check_table(raw.get(name), name, known, source)


def _typed(table: dict[str, Any], key: str, kind: type, default: Any, source: str, section: str = "server") -> Any:
    value = table.get(key, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise wrong_type(f"{section}.{key}", value, kind, source)
    return value


def _flag(table: dict[str, Any], key: str, default: bool, source: str, section: str = "server") -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: {section}.{key} has value {value!r}; expected true or false (a TOML boolean, unquoted)")
    return value


def _string_list(table: dict[str, Any], key: str, default: list[str], source: str) -> list[str]:
    value = table.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{source}: server.{key} has value {value!r}; expected a list of strings like ["*"]')
    return value


def _host(value: str, source: str) -> str:
    if value in ("localhost", ""):
        return value or "127.0.0.1"
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{source}: server.host has value {value!r}; expected an IP address such as 127.0.0.1 or 0.0.0.0") from None
    return value


def _timeout(table: dict[str, Any], key: str, default: float, source: str) -> float:
    """Seconds as an int or a float, more than 0 and at most MAX_TIMEOUT."""
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT:
        raise ConfigError(f"{source}: server.{key} has value {value!r}; expected seconds such as {default:g}, "
                          f"more than 0 and at most {MAX_TIMEOUT}")
    return float(value)


def _header_bytes(value: int, source: str) -> int:
    low, high = MAX_HEADER_BYTES
    if not low <= value <= high:
        raise ConfigError(f"{source}: server.max_header_bytes has value {value}; expected bytes between {low} and {high} "
                          f"(8-64 KiB: enough for any player's request, small enough to bound memory)")
    return value


def _port(value: int, source: str) -> int:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{source}: server.port has value {value}; expected 0-65535")
    return value


def _positive(value: int, key: str, source: str) -> int:
    if value < 1:
        raise ConfigError(f"{source}: {key} has value {value}; expected a positive integer")
    return value


def _workers(value: int, source: str) -> int:
    if not 0 <= value <= MAX_WORKERS:
        raise ConfigError(f"{source}: server.workers has value {value}; expected 0 (one per CPU) to {MAX_WORKERS}")
    return value


def workers_for(configured: int, cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """How many serving processes: ``configured``, or for 0 (the default) one per CPU this process may use:
    the CPUs it may run on (a container's cpuset), fewer under a CPU quota (``docker run --cpus 2``: cgroup v2
    ``cpu.max``), which ``os.cpu_count()`` alone would not see."""
    if configured:
        return configured
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))  # 1.5 CPUs of quota: 2 workers
    except (OSError, ValueError):
        pass  # no cgroup v2 here, or no quota: the CPUs are the bound
    return max(1, cpus)


def _choice(value: str, choices: tuple[str, ...], key: str, source: str) -> str:
    if value.lower() not in choices:
        raise ConfigError(f"{source}: {key} has value {value!r}; expected one of {', '.join(choices)}")
    return value.lower()


def _redis_url(value: str, source: str) -> str:
    """Checked here, not first by the purge bus when serve starts (a traceback that config check had passed)."""
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{source}: redis.url has value {without_credentials(repr(value))}; expected "
                          "redis://host:port/db, rediss://... or unix://path")
    return value


def _access_log(value: Any, source: str) -> str:
    if not isinstance(value, str) or value.lower() not in ACCESS_LOGS:
        raise ConfigError(f'{source}: server.access_log has value {value!r}; expected "text" (a combined-log-format '
                          f'line per request), "json" (a JSON object per line) or "off" (quoted)')
    return value.lower()


def segment_duration(value: Any, where: str) -> Fraction:
    """Seconds as int, float or string ("6", "2.5"); between 1 and 60."""
    try:
        seconds = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{where} has value {value!r}; expected seconds such as 6 or 4.5") from None
    if not 1 <= seconds <= 60:
        raise ConfigError(f"{where} has value {value!r}; expected between 1 and 60 seconds")
    return seconds
