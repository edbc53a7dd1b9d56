"""Admin API profile changes for the whole fleet: a versioned log layered over the TOML's profiles.

    changes = AdminChanges.from_settings(access, settings, redis_url)  # Redis, a state file, or memory
    await changes.start()                     # load the stored changes, apply them, follow other nodes
    change = await changes.put(partner, profile, by="203.0.113.7")   # recorded first, then applied here
    change = await changes.delete(partner, name, by="203.0.113.7")
    await changes.audit(partner, limit=50)    # every change of that partner, newest first
    await changes.sync()                      # re-read the backend: changes of sibling processes
    changes.reapply()                         # after a SIGHUP reload swapped in the file's profiles

Each change is a record {version, partner, op ("put" | "delete"), name, profile (the TOML shape, for a
put), at (UTC ISO time), by (the admin client's address by the trusted-proxy rule; never a secret)}.
``version`` is global and monotonic, handed out by the backend, so two nodes changing at once get two
versions and every node ends on the higher one. A node's effective profiles are the file's with the
changes applied in version order (a put replaces, a delete removes); only the latest change of each
(partner, profile) is kept for that, the audit keeps every change (the last MAX_AUDIT of each partner: one
partner's changes never push another's out).

Backends:

- Redis (``[redis] url``): a hash ``<channel>:admin:profiles`` ("partner|name" -> record), the counter
  ``<channel>:admin:version`` and the capped lists ``<channel>:admin:audit:<partner>``, written by one Lua script
  (atomic) that also publishes the record on the channel ``<channel>:admin``. Every node applies it
  within milliseconds; a node that was disconnected re-reads the whole hash when it resubscribes.
- A state file (``[admin] state_file``): JSON written beside and renamed over (mode 0600), the audit as
  JSON lines beside it (``<state_file>.audit.<partner>.jsonl``), read-modify-write under an flock so worker
  processes sharing the file never lose a change; siblings pick changes up with ``sync()``.
- Memory: what a node without either had before this module: lost at a restart.

A stored change that does not validate on this node (a country rule without GeoIP here, a partner the
file no longer has, a delete of a profile an entry uses) is skipped with a WARNING and counted.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping, Protocol

from auth.access import AccessControl
from auth.rules import Profile
from config.errors import ConfigError
from config.partners import profile_from_dict, profile_to_dict
from origin.catalog import valid_id

from .redis_channel import follow, redacted_url, stop

log = logging.getLogger("vodgate.admin.changes")

MAX_AUDIT = 10_000  # audit records kept per partner (Redis list, audit file, memory)
PUT, DELETE = "put", "delete"
REDIS_WAIT = 5.0  # seconds start() waits for Redis before serving with what it has (the bus keeps retrying)


class StoreError(Exception):
    """The backend could not record a change (Redis down, state file unwritable): nothing was applied."""


@dataclass(frozen=True)
class Change:
    version: int
    partner: str
    op: str  # PUT or DELETE
    name: str
    profile: dict[str, Any] | None  # profile_to_dict's form, for a put
    at: str  # UTC, ISO 8601
    by: str  # the admin client's address (trusted-proxy rule)

    @property
    def key(self) -> str:
        return change_key(self.partner, self.name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Change":
        """ValueError for anything that is not a record this module wrote."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a change is a JSON object, not {type(data).__name__}")
        try:
            change = cls(
                version=data["version"], partner=data["partner"], op=data["op"], name=data["name"],
                profile=data.get("profile"), at=data["at"], by=data["by"],
            )
        except KeyError as exc:
            raise ValueError(f"a change without {exc}") from None
        if not isinstance(change.version, int) or isinstance(change.version, bool) or change.version < 1:
            raise ValueError(f"a change with version {change.version!r}")
        if change.op not in (PUT, DELETE) or (change.op == PUT and not isinstance(change.profile, dict)):
            raise ValueError(f"change {change.version}: op {change.op!r} with profile {type(change.profile).__name__}")
        if not all(isinstance(v, str) for v in (change.partner, change.name, change.at, change.by)):
            raise ValueError(f"change {change.version}: partner, name, at and by are strings")
        return change


def change_key(partner: str, name: str) -> str:
    return f"{partner}|{name}"  # neither id can hold "|" (origin.catalog.valid_id)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _parse_all(raw: Iterable[Any], where: str) -> list[Change]:
    """Records that parse, in version order; a malformed one is logged and left out."""
    changes = []
    for item in raw:
        try:
            changes.append(Change.from_dict(json.loads(item) if isinstance(item, (str, bytes)) else item))
        except ValueError as exc:  # json.JSONDecodeError included
            log.warning("admin changes: ignoring a malformed record in %s: %s", where, exc)
    return sorted(changes, key=lambda c: c.version)


# --------------------------------------------------------------------------- backends


class ChangeLog(Protocol):
    """Where changes are kept. ``record`` hands out the next version atomically and returns the record."""

    kind: str

    async def record(self, fields: dict[str, Any]) -> Change: ...
    async def load(self) -> tuple[int, list[Change]]: ...  # (the last version handed out, the latest change per key)
    async def audit(self, partner: str, limit: int) -> list[Change]: ...


class MemoryLog:
    """Changes of this process only, lost at a restart (no Redis, no state file)."""

    kind = "memory"

    def __init__(self) -> None:
        self.version = 0
        self.latest: dict[str, Change] = {}
        self.history: dict[str, deque[Change]] = {}  # per partner

    async def record(self, fields: dict[str, Any]) -> Change:
        self.version += 1
        change = Change(version=self.version, **fields)
        self.latest[change.key] = change
        self.history.setdefault(change.partner, deque(maxlen=MAX_AUDIT)).append(change)
        return change

    async def load(self) -> tuple[int, list[Change]]:
        return self.version, sorted(self.latest.values(), key=lambda c: c.version)

    async def audit(self, partner: str, limit: int) -> list[Change]:
        return list(reversed(self.history.get(partner, ())))[:limit]


class FileLog:
    """A JSON state file (mode 0600) and its JSON-lines audit, shared by the worker processes of one node.

    Every write is a read-modify-write under an exclusive flock on ``<state_file>.lock``: two processes
    recording at once get consecutive versions and neither change is lost. The state file is replaced
    whole (written beside, then renamed), so a reader without the lock sees one version or the next.
    """

    kind = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    async def record(self, fields: dict[str, Any]) -> Change:
        try:
            return await asyncio.to_thread(self._record, fields)
        except (OSError, ValueError) as exc:
            raise StoreError(f"admin state file {self.path}: {exc}") from exc

    async def load(self) -> tuple[int, list[Change]]:
        return await asyncio.to_thread(self._read)

    async def audit(self, partner: str, limit: int) -> list[Change]:
        return await asyncio.to_thread(self._audit, partner, limit)

    def _record(self, fields: dict[str, Any]) -> Change:
        with self._locked():
            version, changes = self._read()
            change = Change(version=version + 1, **fields)
            latest = {c.key: c for c in changes}
            latest[change.key] = change
            state = {"format": 1, "version": change.version, "changes": [c.to_dict() for c in latest.values()]}
            _write_private(self.path, json.dumps(state, indent=1).encode())
            self._append_audit(change)
            return change

    def _read(self) -> tuple[int, list[Change]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return 0, []
        try:
            state = json.loads(raw)
        except ValueError as exc:  # not written by this module (writes are whole: a rename)
            raise ValueError(f"{self.path} is not JSON ({exc})") from None
        if not isinstance(state, dict) or not isinstance(state.get("version"), int) or not isinstance(state.get("changes"), list):
            raise ValueError(f"{self.path} is not an admin state file (expected {{\"version\": N, \"changes\": [...]}})")
        return state["version"], _parse_all(state["changes"], str(self.path))

    def audit_path(self, partner: str) -> Path:
        if not valid_id(partner):  # it names a file: never a path
            raise ValueError(f"malformed partner id {partner[:40]!r}")
        return self.path.with_name(f"{self.path.name}.audit.{partner}.jsonl")

    def _append_audit(self, change: Change) -> None:
        path = self.audit_path(change.partner)
        line = (json.dumps(change.to_dict()) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        with open(path, "rb") as f:
            lines = f.readlines()
        if len(lines) > MAX_AUDIT + MAX_AUDIT // 10:  # trimmed now and then, not at every change
            _write_private(path, b"".join(lines[-MAX_AUDIT:]))

    def _audit(self, partner: str, limit: int) -> list[Change]:
        path = self.audit_path(partner)
        try:
            with open(path, "rb") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return []
        return list(reversed(_parse_all(lines, str(path))))[:limit]

    def _locked(self) -> "_FileLock":
        return _FileLock(self.lock_path)


class _FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # blocks this worker thread, never the event loop

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _write_private(path: Path, data: bytes) -> None:
    """``data`` into ``path``, mode 0600, atomically: written beside, flushed, renamed over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# One script, so the version, the state, the audit and the message are one atomic step: two nodes recording
# at once get two versions, and the hash ends on the record of the higher one. ARGV[1] is the record's JSON
# without its version ("{...}"), spliced in here so the version is the one INCR gave.
_RECORD_SCRIPT = """
local version = redis.call('INCR', KEYS[1])
local record = '{"version": ' .. version .. ', ' .. string.sub(ARGV[1], 2)
redis.call('HSET', KEYS[2], ARGV[2], record)
redis.call('LPUSH', KEYS[3], record)
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
redis.call('PUBLISH', ARGV[4], record)
return record
"""


class RedisLog:
    """The fleet's changes in Redis, with a pub/sub channel that brings other nodes' changes at once."""

    kind = "redis"

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.channel = namespace  # "<redis.channel>:admin"
        self.version_key = f"{namespace}:version"
        self.state_key = f"{namespace}:profiles"
        self._redis: Any = None
        self._script: Any = None

    def client(self) -> Any:
        if self._redis is None:
            import redis.asyncio as aioredis  # only nodes with [redis] configured need the package

            self._redis = aioredis.Redis.from_url(self.url, socket_connect_timeout=2.0, socket_keepalive=True)
            self._script = self._redis.register_script(_RECORD_SCRIPT)
        return self._redis

    def redacted_url(self) -> str:
        return redacted_url(self.url)

    async def record(self, fields: dict[str, Any]) -> Change:
        self.client()
        body = json.dumps(fields)
        try:
            raw = await self._script(
                keys=[self.version_key, self.state_key, self.audit_key(fields["partner"])],
                args=[body, change_key(fields["partner"], fields["name"]), MAX_AUDIT, self.channel],
            )
        except Exception as exc:  # redis.exceptions.* and OSError
            raise StoreError(f"Redis at {self.redacted_url()} did not take the change: {exc}") from exc
        return Change.from_dict(json.loads(raw))

    async def load(self) -> tuple[int, list[Change]]:
        client = self.client()
        async with client.pipeline(transaction=True) as pipe:  # one snapshot of counter and hash
            version, state = await pipe.get(self.version_key).hgetall(self.state_key).execute()
        return int(version or 0), _parse_all(state.values(), self.state_key)

    def audit_key(self, partner: str) -> str:
        return f"{self.channel}:audit:{partner}"

    async def audit(self, partner: str, limit: int) -> list[Change]:
        key = self.audit_key(partner)
        raw = await self.client().lrange(key, 0, limit - 1)  # newest first (LPUSH)
        return list(reversed(_parse_all(raw, key)))[:limit]

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


# --------------------------------------------------------------------------- the store


class AdminChanges:
    """This node's view of the fleet's admin changes, applied to its AccessControl (module docstring)."""

    def __init__(self, access: AccessControl, backend: ChangeLog, *, warn_lost: str | None = None) -> None:
        self.access = access
        self.backend = backend
        self.warn_lost = warn_lost  # where changes are kept when a restart loses them: start() warns once
        # awaited after this process recorded a change (the worker layer tells sibling processes to sync)
        self.after_local_change: Callable[[], Awaitable[None]] | None = None
        self.version = 0  # every change up to this one is applied here (or superseded, or skipped)
        self.applied = 0  # changes applied to the access control (a reload's re-applications included)
        self.skipped = 0  # changes that did not validate here, each time one was skipped
        self._latest: dict[str, Change] = {}  # the latest change of each (partner, name) this process knows
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._subscribed = asyncio.Event()
        access.after_reload.append(self.reapply)  # SIGHUP (edge/reload.py): the file's profiles, then ours

    @classmethod
    def from_settings(cls, access: AccessControl, settings: Any, redis_url: str | None = None) -> "AdminChanges":
        """Redis when the node has a URL, else ``[admin] state_file``, else memory. Only the first worker of a
        node (``settings.worker`` 0, the only one without workers) warns when a restart would lose changes."""
        url = redis_url or settings.redis_url
        admin = getattr(settings, "admin", None)
        warns = getattr(settings, "worker", 0) == 0
        if url:
            return cls(access, RedisLog(url, f"{settings.redis_channel}:admin"))
        if admin is not None and admin.state_file is not None:
            lost = f"{admin.state_file}, removed at exit," if admin.temporary else None
            return cls(access, FileLog(admin.state_file), warn_lost=lost if warns else None)
        return cls(access, MemoryLog(), warn_lost="this process's memory" if warns else None)

    # --- lifecycle ---

    async def start(self) -> None:
        """Load and apply the stored changes; with Redis, follow the channel (waits up to REDIS_WAIT s)."""
        if self.warn_lost:
            admins = sorted(p for p, partner in self.access.config.partners.items() if partner.admin_secret)
            if admins:
                log.warning("admin API changes of partner(s) %s are kept in %s and will not survive a restart or reach "
                            "other nodes: set [redis] url, or [admin] state_file for one node", ", ".join(admins),
                            self.warn_lost)
        if isinstance(self.backend, RedisLog):
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._follow(self.backend), name="vodgate-admin-changes")
            try:
                await asyncio.wait_for(self._subscribed.wait(), REDIS_WAIT)
            except asyncio.TimeoutError:
                log.warning("admin changes: Redis at %s not reachable yet; serving the file's profiles until it is",
                            self.backend.redacted_url())
            return
        try:
            await self._sync()
        except (OSError, ValueError) as exc:  # unreadable, or not a file this module wrote: never serve without it
            raise ConfigError(f"admin state file: {exc} (fix it, or move it away to start from the file's profiles)") from exc

    async def close(self) -> None:
        await stop(self._task)
        self._task = None
        if isinstance(self.backend, RedisLog):
            await self.backend.close()

    @property
    def subscribed(self) -> bool | None:
        """Whether the Redis channel is followed (None: no Redis)."""
        return self._subscribed.is_set() if isinstance(self.backend, RedisLog) else None

    def stats(self) -> dict[str, Any]:
        """What /healthz shows under "admin_changes"."""
        return {"backend": self.backend.kind, "version": self.version, "applied": self.applied,
                "skipped": self.skipped, "subscribed": self.subscribed}

    # --- changes made here ---

    async def put(self, partner: str, profile: Profile, *, by: str) -> Change:
        """Record ``profile`` (validated by the caller), then apply it here. StoreError: nothing changed."""
        fields = {"partner": partner, "op": PUT, "name": profile.name, "profile": profile_to_dict(profile),
                  "at": _now(), "by": by}
        return await self._record(fields, profile)

    async def delete(self, partner: str, name: str, *, by: str) -> Change:
        """Record the deletion (the caller checked the profile exists and is unused), then apply it here."""
        fields = {"partner": partner, "op": DELETE, "name": name, "profile": None, "at": _now(), "by": by}
        return await self._record(fields, None)

    async def audit(self, partner: str, limit: int) -> list[Change]:
        return await self.backend.audit(partner, limit)

    async def _record(self, fields: dict[str, Any], profile: Profile | None) -> Change:
        async with self._lock:
            change = await self.backend.record(fields)
            try:
                if change.version == self.version + 1:
                    self._apply(change, profile)
                    self._advance([change])
                elif change.version <= self.version:  # the store restarted empty and we have not re-read it yet
                    self._rebuild(*await self.backend.load())
                else:  # another node or process recorded in between: take theirs too, in version order
                    await self._catch_up()
            except Exception as exc:  # recorded, so the request succeeded: the next sync or message applies it here
                log.warning("admin changes: change %d is recorded but the %s store could not be re-read: %s",
                            change.version, self.backend.kind, exc)
        if self.after_local_change is not None:
            try:
                await self.after_local_change()
            except Exception:  # the change is recorded and applied: the request succeeded
                log.exception("admin changes: after_local_change failed")
        return change

    # --- changes made elsewhere ---

    async def sync(self) -> bool:
        """Re-read the backend and apply every change newer than this process's; True if something changed.
        Never raises: a backend that cannot be read is logged, and the next sync tries again."""
        try:
            return await self._sync()
        except Exception as exc:  # redis.exceptions.*, OSError, a malformed state file
            log.warning("admin changes: could not read the %s store: %s", self.backend.kind, exc)
            return False

    async def _sync(self) -> bool:
        async with self._lock:
            return await self._catch_up()

    async def _catch_up(self) -> bool:
        version, changes = await self.backend.load()
        if version < self.version:  # the backend lost its state (a Redis restarted without persistence)
            return self._rebuild(version, changes)
        newer = [c for c in changes if c.version > self.version]
        if newer:
            config = self.access.config
            profiles = await asyncio.to_thread(lambda: [self._validated(c) for c in newer])
            if self.access.config is not config:  # a reload came in meanwhile: validate against the new file
                profiles = [self._validated(c) for c in newer]
            for change, profile in zip(newer, profiles):
                if profile is not _SKIP:
                    self._apply(change, profile)
        self._advance(newer)
        self.version = max(self.version, version)
        return bool(newer)

    def _rebuild(self, version: int, changes: list[Change]) -> bool:
        """The store went back in time: what it holds now, over the file's profiles; its versions start over."""
        log.warning("admin changes: the %s store is at version %d, this node was at %d: it lost changes; rebuilding "
                    "from the file's profiles and the %d change(s) it holds", self.backend.kind, version, self.version,
                    len(changes))
        self._latest = {c.key: c for c in changes}
        self.version = version
        self.reapply()
        return True

    async def _follow(self, backend: RedisLog) -> None:
        """Subscribe to the channel; at every (re)subscription re-read the whole state (what was missed)."""
        async def subscribed() -> None:
            await self._sync()
            self._subscribed.set()
            log.info("admin changes: following %s at version %d", backend.channel, self.version)

        def lost(exc: Exception, backoff: float) -> None:
            self._subscribed.clear()
            log.warning("admin changes: Redis at %s: %s; reconnecting in %.1f s", backend.redacted_url(), exc, backoff)

        await follow(backend.client, backend.channel, on_subscribed=subscribed, on_message=self._received, on_lost=lost)

    async def _received(self, data: Any) -> None:
        try:
            change = Change.from_dict(json.loads(data))
        except ValueError as exc:
            log.warning("admin changes: ignoring a malformed message: %s", exc)
            return
        async with self._lock:
            if change.version <= self.version:
                return  # ours (applied before it was published back), or already read with the whole state
            if change.version > self.version + 1:  # one was missed: read them all, in order
                await self._catch_up()
                return
            profile = await asyncio.to_thread(self._validated, change) if change.op == PUT else self._validated(change)
            if profile is not _SKIP:
                self._apply(change, profile)
            self._advance([change])
        log.info("admin changes: partner %s %s profile %s (version %d, from another node)", change.partner,
                 "replaced" if change.op == PUT else "deleted", change.name, change.version)

    # --- applying ---

    def reapply(self) -> None:
        """The file's profiles, then every known change in version order, in one step of the event loop
        (no request sees the file's profiles without the changes): after a SIGHUP reload, or a store reset."""
        self.access.restore_file_profiles()
        for change in sorted(self._latest.values(), key=lambda c: c.version):
            profile = self._validated(change)
            if profile is not _SKIP:
                self._apply(change, profile)

    def _advance(self, changes: list[Change]) -> None:
        for change in changes:
            self._latest[change.key] = change
            self.version = max(self.version, change.version)

    def _validated(self, change: Change) -> Any:
        """The profile a put carries (None for a delete), validated against this node; _SKIP, logged, if not."""
        try:
            partner = self.access.config_partner(change.partner)
            if change.op == DELETE:
                if change.name in partner.profiles:
                    partner.without_profile(change.name)  # refused while default_profile or an entry names it
                return None
            return profile_from_dict(
                change.name, change.profile, where=f"partners.{change.partner}.profiles.{change.name}",
                source=f"admin change {change.version}", geoip_configured=self.access.countries is not None,
                tokens_configured=bool(partner.keys.keys), keys_configured=partner.protection.has_keys,
            )
        except ConfigError as exc:
            self.skipped += 1
            log.warning("admin changes: skipping change %d (%s of profile %s of partner %s), which does not apply "
                        "on this node: %s", change.version, change.op, change.name, change.partner, exc)
            return _SKIP

    def _apply(self, change: Change, profile: Profile | None) -> None:
        try:
            if change.op == PUT and profile is not None:
                self.access.replace_profile(change.partner, profile)
            elif change.op == DELETE and change.name in self.access.config_partner(change.partner).profiles:
                self.access.delete_profile(change.partner, change.name)
        except ConfigError as exc:  # a reload between validation and now took the partner or used the profile
            self.skipped += 1
            log.warning("admin changes: skipping change %d (%s of profile %s of partner %s): %s", change.version,
                        change.op, change.name, change.partner, exc)
            return
        self.applied += 1


_SKIP: Any = object()  # a change _validated refused (logged and counted)
