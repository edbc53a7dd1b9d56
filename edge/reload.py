"""SIGHUP: re-read the config file and apply what can change while serving.

What a reload applies, in one swap (a request sees the old or the new state, never a mix):
the partners, their profiles, entry windows and token keys, ``server.trusted_proxies``,
``server.token_clock_skew`` and the GeoIP database (re-opened, so a new file at the same path is
picked up). Every other setting (listen address, caches, shield, edge upstreams...) is fixed when the
server starts: a reload that changes one says so in the log and goes on with the running value.

A file that does not load (TOML, an unknown key, a GeoIP database that does not open, an edge that
could not vouch for a new rule) is refused with its error and the running configuration keeps
serving. Nothing is closed or restarted: connections and requests in flight carry on.

Profile changes made through the admin API survive a reload: they are stored apart (edge/admin_store.py) and
applied again over the new file's profiles in the same step as the swap (``AccessControl.after_reload``), so
no request sees the file's profiles without them. A stored change the new file makes invalid (its partner
removed, a country rule with the GeoIP database gone) is skipped with a warning naming it.

A reload that changes a partner's content protection (``encryption``, ``key_rotation_segments`` or the first of
``key_secrets``: what its segments' bytes depend on) hands the partners to ``on_protection_change`` (cli/main.py
purges their cached objects on this node and, over Redis, on every node) and warns that CDN caches must be
purged too: they hold segments of the previous setting under immutable URLs (docs/CONTENT_PROTECTION.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from pathlib import Path
from typing import Callable

from auth.access import AccessControl
from config.edge import parse_edge_section
from config.errors import ConfigError
from config.partners import AccessConfig
from config.settings import Settings, load_settings, read_toml

log = logging.getLogger("vodgate.reload")

# Settings fields that are not in a TOML table of their own name, as an operator writes them.
_CDN_FIELDS = {"shield_header", "shield_secrets", "edge_secrets", "surrogate_header", "s_maxage",
               "stale_while_revalidate", "stale_if_error"}
_KEY_NAMES = {"hot_lane": "cache.hot_lane", "cache_enabled": "cache.enabled", "redis_url": "redis.url",
              "redis_channel": "redis.channel", "key_ttl": "redis.key_ttl", "edge_table": "[edge]", "storage": "[storage]", "catalog": "[catalog]",
              "analytics": "[analytics]", "metrics": "[metrics]", "admin": "admin.state_file"}
_NOT_COMPARED = {"access", "source", "worker", "run_dir"}


class Reloader:
    """Applies the config file at ``path`` to a running node's access control (see the module docstring)."""

    def __init__(self, path: Path, running: Settings, access: AccessControl, role: str,
                 started_with: Settings | None = None,
                 on_protection_change: Callable[[list[str]], None] | None = None) -> None:
        self.path = path
        self.on_protection_change = on_protection_change  # partners whose protection a reload changed
        self.running = running  # with the command line's overrides
        self.access = access
        self.role = role
        # what the file said at start: a reload compares the file with itself, so a --port given on the
        # command line is not reported as a change (a worker is given what its supervisor accepted: the file
        # may hold an edit nobody has reloaded yet, edge/workers.py)
        self.started_with = started_with or load_settings(path)
        # the file's role, not the running one: a --role given on the command line is not a change either
        self.started_role, _ = parse_edge_section(self.started_with.edge_table, self.started_with.source)
        self._scheduled = False  # a reload waits on the event loop (on_signal)

    def reload(self, document: dict | None = None) -> bool:
        """Load the file (or take ``document``, the file as a worker's supervisor accepted it) and apply;
        False (the error logged) when it is refused."""
        try:
            settings = self._load() if document is None else load_settings(self.path, document)
            role, _ = parse_edge_section(settings.edge_table, settings.source)
            new_access = settings.access or AccessConfig()
            if self.role == "edge":
                from .app import require_edge_secrets  # the check create_edge makes at start

                require_edge_secrets(dataclasses.replace(self.running, access=new_access), AccessControl(new_access))
            opened = [p for p in self.access.config.partners if self.access.restricts(p)]
            before = protection_fingerprints(self.access.config)
            self.access.reload(new_access)  # and, in the same step, the admin API's stored changes over it
        except ConfigError as exc:
            log.error("reload refused, still serving the previous configuration: %s", exc)
            return False
        opened = [p for p in opened if not self.access.restricts(p)]
        if opened:  # meant, or a file cut short: either way the operator must know at once
            log.warning("reload: partner(s) %s no longer have access rules or entry windows in %s: their media is "
                        "now open to every viewer", ", ".join(opened), self.path)
        self._protection_changed(before, protection_fingerprints(self.access.config))
        fixed = restart_only_changes(self.started_with, settings)
        if role != self.started_role:
            fixed.insert(0, "edge.role")
        if fixed:
            log.warning("reload: %s changed in %s but only take effect at a restart; running with the previous "
                        "values", ", ".join(fixed), self.path)
        log.info("reloaded %s: %d partner(s), GeoIP %s", self.path, len(new_access.partners),
                 new_access.geoip_database or "none")
        return True

    def _protection_changed(self, before: dict[str, tuple], after: dict[str, tuple]) -> None:
        clear = protection_fingerprint(None)
        changed = sorted(p for p in before.keys() | after.keys() if before.get(p, clear) != after.get(p, clear))
        if not changed:
            return
        bus = " (and, with [redis] url, every node on the purge bus)" if self.on_protection_change is not None else ""
        log.warning("reload: the content protection of partner(s) %s changed (encryption, key rotation or first key "
                    "secret): this node%s drops their cached objects; a CDN keeps serving segments of the previous "
                    "setting until you purge them there too: surrogate key %s (docs/CONTENT_PROTECTION.md), and "
                    "POST /admin/partners/<partner>/purge on edges not on the Redis purge bus", ", ".join(changed), bus,
                    ", ".join(f"p-{p}" for p in changed))
        if self.on_protection_change is not None:
            try:
                self.on_protection_change(changed)
            except Exception:  # the reload itself is done: never undo it for a purge that could not be scheduled
                log.exception("reload: could not purge the cached objects of partner(s) %s", ", ".join(changed))

    def _load(self) -> Settings:
        return accepted_config(self.path)[1]

    def install(self) -> None:
        """Reload on SIGHUP, as a callback of the server's event loop (see on_signal)."""
        signal.signal(signal.SIGHUP, self.on_signal)

    def on_signal(self, signum: int, frame: object) -> None:
        """Schedule one reload on the running event loop; reload at once when no loop runs yet.

        Python runs a signal handler between two bytecodes of whatever the main thread is doing: halfway
        through an access check (its trusted proxies read before the swap, its partner after) or an admin
        profile swap (which would then write the old partner table back over the reloaded one), and again
        inside a running reload when a second signal lands (the inner one applies the newer file, then the
        outer one the older file it had read). Run as a loop callback instead, a reload happens between two
        steps, alone; signals that arrive before it runs make that one reload, which reads the file last.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not serving yet: nothing to interleave with
            self.reload()
            return
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon_threadsafe(self._scheduled_reload)  # signal-safe: a deque append and a wake-up byte

    def _scheduled_reload(self) -> None:
        self._scheduled = False  # a signal from now on reads the file again
        self.reload()


def accepted_config(path: Path) -> tuple[dict, Settings]:
    """The file's document and settings, or ConfigError as a reload refuses it (what a supervisor checks before it
    forwards SIGHUP to its workers, edge/workers.py). An empty file is refused: serving with one is serving
    every partner open, and a reload reads an empty file when it lands between an editor's truncation and its
    write (``cat > vodgate.toml``): write the new file beside it and rename it over, as for the GeoIP database."""
    raw = read_toml(path)
    if not raw:
        raise ConfigError(f"config file {path} is empty (caught halfway through a rewrite?); a reload "
                          "needs the whole file: write it beside and rename it into place")
    return raw, load_settings(path, raw)


def protection_fingerprint(partner) -> tuple:
    """What a partner's segment bytes depend on: the method, the rotation, the key source and the first master secret
    (compared in memory, never logged). A partner that is absent counts as clear."""
    if partner is None:
        return ("clear",)
    protection = partner.protection
    # profiles may switch encryption per entry: their methods and which entries use which profile count too
    methods = tuple(sorted((name, p.encryption) for name, p in partner.profiles.items() if p.encryption is not None))
    if not methods and not protection.encrypts:
        return ("clear",)
    assigned = (partner.default_profile, tuple(sorted((e, s.profile) for e, s in partner.entries.items() if s.profile)))
    return (protection.method, protection.rotation_segments, protection.source, protection.secrets[:1], methods,
            assigned if methods else ())


def protection_fingerprints(config: AccessConfig) -> dict[str, tuple]:
    return {pid: protection_fingerprint(partner) for pid, partner in config.partners.items()}


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

