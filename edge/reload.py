"""SIGHUP: re-read the config file and apply what can change while serving.

What a reload applies, in one swap (a request sees the old or the new state, never a mix):
the partners, their profiles, entry windows and token keys, ``server.trusted_proxies``,
``server.token_clock_skew`` and the GeoIP database (re-opened, so a new file at the same path is
picked up). Every other setting (listen address, caches, shield, edge upstreams...) is fixed when the
server starts: a reload that changes one says so in the log and goes on with the running value.

A file that does not load (TOML, an unknown key, a GeoIP database that does not open, an edge that
could not vouch for a new rule) is refused with its error and the running configuration keeps
serving. Nothing is closed or restarted: connections and requests in flight carry on.

Profile changes made through the admin API live in memory and are replaced by the file's on reload.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from pathlib import Path

from auth.access import AccessControl
from config.edge import parse_edge_section
from config.errors import ConfigError
from config.partners import AccessConfig
from config.settings import Settings, load_settings

log = logging.getLogger("vodgate.reload")

# Settings fields that are not in a TOML table of their own name, as an operator writes them.
_CDN_FIELDS = {"shield_header", "shield_secrets", "edge_secrets", "surrogate_header", "s_maxage",
               "stale_while_revalidate", "stale_if_error"}
_KEY_NAMES = {"hot_lane": "cache.hot_lane", "cache_enabled": "cache.enabled", "redis_url": "redis.url",
              "redis_channel": "redis.channel", "edge_table": "[edge]", "storage": "[storage]", "catalog": "[catalog]",
              "analytics": "[analytics]", "metrics": "[metrics]"}
_NOT_COMPARED = {"access", "source"}


class Reloader:
    """Applies the config file at ``path`` to a running node's access control (see the module docstring)."""

    def __init__(self, path: Path, running: Settings, access: AccessControl, role: str) -> None:
        self.path = path
        self.running = running  # with the command line's overrides
        self.access = access
        self.role = role
        # what the file said at start: a reload compares the file with itself, so a --port given on the
        # command line is not reported as a change
        self.started_with = load_settings(path)

    def reload(self) -> bool:
        """Load and apply; False (the error logged) when the file is refused."""
        try:
            settings = load_settings(self.path)
            role, _ = parse_edge_section(settings.edge_table, settings.source)
            new_access = settings.access or AccessConfig()
            if self.role == "edge":
                from .app import require_edge_secrets  # the check create_edge makes at start

                require_edge_secrets(dataclasses.replace(self.running, access=new_access), AccessControl(new_access))
            self.access.reload(new_access)
        except ConfigError as exc:
            log.error("reload refused, still serving the previous configuration: %s", exc)
            return False
        fixed = restart_only_changes(self.started_with, settings)
        if role != self.role:
            fixed.insert(0, "edge.role")
        if fixed:
            log.warning("reload: %s changed in %s but only take effect at a restart; running with the previous "
                        "values", ", ".join(fixed), self.path)
        log.info("reloaded %s: %d partner(s), GeoIP %s", self.path, len(new_access.partners),
                 new_access.geoip_database or "none")
        return True

    def install(self) -> None:
        """Reload on SIGHUP (the handler runs on the main thread, between two steps of the event loop)."""
        signal.signal(signal.SIGHUP, lambda signum, frame: self.reload())


def restart_only_changes(started_with: Settings, new: Settings) -> list[str]:
    """The TOML names of the settings that differ and that a reload does not apply."""
    changed = []
    for field in dataclasses.fields(Settings):
        if field.name in _NOT_COMPARED:
            continue
        if getattr(started_with, field.name) != getattr(new, field.name):
            changed.append(toml_name(field.name))
    return changed


def toml_name(field: str) -> str:
    if field in _KEY_NAMES:
        return _KEY_NAMES[field]
    if field in _CDN_FIELDS:
        return f"cdn.{field}"
    if field.startswith("cache_"):
        return f"cache.{field.removeprefix('cache_')}"
    return f"server.{field}"

