"""The ``[analytics]`` and ``[metrics]`` TOML sections, validated once at start.

    [analytics]
    enabled = false               # play events on/off (metrics are separate)
    sinks = ["jsonl"]             # "jsonl" (embedded default) and/or "redis"
    path = "analytics"            # JSONL folder (relative to the config file)
    rotate_mb = 64                # start a new JSONL file past this size...
    rotate_seconds = 3600         # ...or this age
    redis_url = "redis://127.0.0.1:6379/0"
    stream = "vodgate:events"     # Redis stream key
    maxlen = 1000000              # XADD MAXLEN ~ cap (approximate trimming)
    node_id = ""                  # "" = the host name
    store_ip = false              # keep the client IP in events (off: only a salted hash is used)
    queue_size = 20000            # events held in memory; beyond, new events are dropped and counted
    batch_size = 500              # events per sink write
    flush_interval = 1.0          # seconds between flushes of a partial batch
    shutdown_timeout = 15.0       # seconds a failing sink may hold up shutdown before events are given up
    session_bucket_seconds = 1800 # hashed session ids (no playSessionId, no token): IP+UA+entry per bucket
    session_salt = ""             # key of that hash; "" = random per process. Set the same on every node.

    [metrics]
    enabled = true
    path = "/metrics"

Errors are :class:`config.settings.ConfigError` and name key, value and fix,
like the rest of the configuration.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, check_table, without_credentials, wrong_type

SINKS = ("jsonl", "redis")

ANALYTICS_KEYS = {
    "enabled", "sinks", "path", "rotate_mb", "rotate_seconds", "redis_url", "stream", "maxlen", "node_id",
    "store_ip", "queue_size", "batch_size", "flush_interval", "shutdown_timeout", "session_bucket_seconds",
    "session_salt",
}
METRICS_KEYS = {"enabled", "path"}


@dataclass(frozen=True)
class AnalyticsConfig:
    enabled: bool = False
    sinks: tuple[str, ...] = ("jsonl",)
    path: Path = Path("analytics")
    rotate_mb: int = 64
    rotate_seconds: int = 3600
    redis_url: str = "redis://127.0.0.1:6379/0"
    stream: str = "vodgate:events"
    maxlen: int = 1_000_000
    node_id: str = ""
    store_ip: bool = False
    queue_size: int = 20_000
    batch_size: int = 500
    flush_interval: float = 1.0
    shutdown_timeout: float = 15.0
    session_bucket_seconds: int = 1800
    session_salt: str = field(default="", repr=False)

    @property
    def node(self) -> str:
        return self.node_id or socket.gethostname()


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    path: str = "/metrics"


def parse_analytics(table: dict[str, Any] | None, source: str = "config", base_dir: Path = Path(".")) -> AnalyticsConfig:
    """``[analytics]`` -> AnalyticsConfig (the lead calls this from config.settings.parse_settings)."""
    t = check_table(table, "analytics", ANALYTICS_KEYS, source)
    d = AnalyticsConfig()
    sinks = t.get("sinks", list(d.sinks))
    if isinstance(sinks, str):
        sinks = [sinks]
    if not isinstance(sinks, list) or not sinks or not all(isinstance(s, str) and s in SINKS for s in sinks):
        raise ConfigError(f'{source}: analytics.sinks has value {sinks!r}; expected a non-empty list of {", ".join(SINKS)}, e.g. ["jsonl"]')
    path = Path(_get(t, "path", str, str(d.path), source))
    redis_url = _get(t, "redis_url", str, d.redis_url, source)
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{source}: analytics.redis_url has value {without_credentials(repr(redis_url))}; expected redis://host:port/db, rediss://... or unix://path")
    return AnalyticsConfig(
        enabled=_get(t, "enabled", bool, d.enabled, source),
        sinks=tuple(dict.fromkeys(sinks)),
        path=path if path.is_absolute() else base_dir / path,
        rotate_mb=_positive(t, "rotate_mb", d.rotate_mb, source),
        rotate_seconds=_positive(t, "rotate_seconds", d.rotate_seconds, source),
        redis_url=redis_url,
        stream=_nonempty(t, "stream", d.stream, source),
        maxlen=_positive(t, "maxlen", d.maxlen, source),
        node_id=_node_id(_get(t, "node_id", str, d.node_id, source), source),
        store_ip=_get(t, "store_ip", bool, d.store_ip, source),
        queue_size=_positive(t, "queue_size", d.queue_size, source),
        batch_size=_positive(t, "batch_size", d.batch_size, source),
        flush_interval=_seconds(t, "flush_interval", d.flush_interval, source),
        shutdown_timeout=_seconds(t, "shutdown_timeout", d.shutdown_timeout, source),
        session_bucket_seconds=_positive(t, "session_bucket_seconds", d.session_bucket_seconds, source),
        session_salt=_get(t, "session_salt", str, d.session_salt, source),
    )


def parse_metrics(table: dict[str, Any] | None, source: str = "config") -> MetricsConfig:
    t = check_table(table, "metrics", METRICS_KEYS, source)
    d = MetricsConfig()
    path = _get(t, "path", str, d.path, source, "metrics")
    if not path.startswith("/") or path.startswith("/p/"):
        raise ConfigError(f"{source}: metrics.path has value {path!r}; expected an absolute path outside /p/, e.g. /metrics")
    return MetricsConfig(enabled=_get(t, "enabled", bool, d.enabled, source, "metrics"), path=path)


def _get(t: dict[str, Any], key: str, kind: type, default: Any, source: str, section: str = "analytics") -> Any:
    value = t.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise wrong_type(f"{section}.{key}", value, kind, source)
    return value


def _positive(t: dict[str, Any], key: str, default: int, source: str) -> int:
    value = _get(t, key, int, default, source)
    if value < 1:
        raise ConfigError(f"{source}: analytics.{key} has value {value}; expected a positive integer")
    return value


def _seconds(t: dict[str, Any], key: str, default: float, source: str) -> float:
    value = _get(t, key, float, default, source)
    if not 0 < value <= 3600:
        raise ConfigError(f"{source}: analytics.{key} has value {value}; expected seconds between 0 and 3600, e.g. 1.0")
    return value


def _nonempty(t: dict[str, Any], key: str, default: str, source: str) -> str:
    value = _get(t, key, str, default, source)
    if not value:
        raise ConfigError(f"{source}: analytics.{key} is empty; expected a Redis key such as {default!r}")
    return value


def _node_id(value: str, source: str) -> str:
    if value and (len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value)):
        raise ConfigError(f"{source}: analytics.node_id has value {value!r}; expected 1-64 characters of A-Z a-z 0-9 - _ .")
    return value
