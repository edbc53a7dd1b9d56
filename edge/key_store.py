"""Where an encrypting partner's content keys come from (docs/CONTENT_PROTECTION.md, "Imported keys").

``key_source = "derived"`` (the default): derived from the partner's master secrets (auth/content_keys), no I/O.

``key_source = "redis"``: keys generated elsewhere (a key management system, another packager encrypting the same
content for DASH or DRM) and imported by the operator into the ``[redis] url`` database, one hash per entry::

    HSET vodgate:content-keys:<partner>:<entry> 0 "<KID: 32 hex>:<key: 32 hex>" [1 "<KID>:<key>" ...]

Field = rotation period (0 holds segments 1..N with ``key_rotation_segments = N``; 0 alone with N = 0). The
KID is the 16-byte Common Encryption key id written into cbcs inits and fragments; its first 8 bytes (16 hex
digits) are the kid of key URLs, so they must differ between an entry's periods. Each entry's hash is read
with one HGETALL and kept ``ttl`` seconds: a change in Redis shows within that time. Failures answer 503 with a
code that says which (key_store_unavailable, content_key_missing, content_key_invalid), logged at most once a
minute per kind, never with a key.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict

from auth.content_keys import KID_BYTES, DerivedKeys, ImportedKeys, KeySet, Protection, key_scope
from config.errors import without_credentials

from .urls import NoSuchResource

log = logging.getLogger("vodgate.keys")

REDIS_PREFIX = "vodgate:content-keys"
DEFAULT_TTL = 30.0
REDIS_TIMEOUT = 1.0  # a key lookup waits at most this long: a viewer's segment is waiting behind it
OUTAGE_BACKOFF = 2.0  # after a failed Redis call, answer 503 at once for this long instead of piling up calls
LOG_EVERY = 60.0
MAX_ENTRIES = 4096
_VALUE = re.compile(r"([0-9a-fA-F]{32}):([0-9a-fA-F]{32})")
_PERIOD = re.compile(r"0|[1-9][0-9]{0,8}")  # one spelling per period: "01" or "²" would be a second one
MAX_FIELDS = 50_000  # 27 hours of 2 s segments with a key each; more is an import gone wrong


class KeyStoreError(Exception):
    """Imported keys could not be had: 503 (edge/errors.py)."""

    code = "key_store_unavailable"


class ContentKeyInvalid(KeyStoreError):
    code = "content_key_invalid"


class ContentKeyMissing(KeyStoreError):
    code = "content_key_missing"


class ClipNeedsDerivedKeys(NoSuchResource):
    """A clip gets keys of its own (auth/content_keys.key_scope); nobody imports keys for every clip."""

    code = "clip_needs_derived_keys"


def redis_key(partner: str, entry: str) -> str:
    return f"{REDIS_PREFIX}:{partner}:{entry}"


def parse_keys(fields: dict, where: str) -> ImportedKeys:
    """An entry's hash as ImportedKeys; ContentKeyInvalid names the bad field, never a value."""
    keys: dict[int, tuple[bytes, bytes]] = {}
    if len(fields) > MAX_FIELDS:
        raise ContentKeyInvalid(f"{where}: {len(fields)} fields; at most {MAX_FIELDS} rotation periods are read")
    for raw_field, raw_value in fields.items():
        name = raw_field.decode(errors="replace") if isinstance(raw_field, bytes) else str(raw_field)
        value = raw_value.decode(errors="replace") if isinstance(raw_value, bytes) else str(raw_value)
        match = _VALUE.fullmatch(value.strip())
        if _PERIOD.fullmatch(name) is None or match is None:
            raise ContentKeyInvalid(f"{where}: field {name[:20]!r} must be a rotation period (0, 1, ...) holding "
                                    '"<KID: 32 hex digits>:<key: 32 hex digits>"')
        keys[int(name)] = bytes.fromhex(match[1]), bytes.fromhex(match[2])
    if not keys:
        raise ContentKeyMissing(f"no content keys imported for {where}")
    kids = [kid[:KID_BYTES] for kid, _ in keys.values()]
    if len(set(kids)) != len(kids):
        raise ContentKeyInvalid(f"{where}: two periods' KIDs share their first {KID_BYTES} bytes (the kid of key URLs)")
    return ImportedKeys(keys, where)


class ContentKeys:
    """The key set of a request's entry or clip: derived at once, or imported from Redis (cached ``ttl`` s)."""

    def __init__(self, redis_url: str | None, ttl: float = DEFAULT_TTL) -> None:
        self.url = redis_url
        self.ttl = ttl
        self._redis = None
        self._cache: OrderedDict[tuple[str, str], tuple[float, ImportedKeys | KeyStoreError]] = OrderedDict()
        self._down_until = 0.0
        self._logged: dict[str, float] = {}

    async def keys_for(self, protection: Protection, partner: str, entry: str, clip: str | None = None) -> KeySet:
        if not protection.imports:
            return DerivedKeys(protection, partner, entry, key_scope(entry, clip))
        if clip is not None:
            raise ClipNeedsDerivedKeys(f"partner {partner} imports its keys: clips (which need keys of their own) are not served")
        now = time.monotonic()
        found = self._cache.get((partner, entry))
        if found is not None and found[0] > now:
            return _result(found[1])
        result = await self._read(partner, entry, now)
        if not isinstance(result, KeyStoreError) or isinstance(result, (ContentKeyMissing, ContentKeyInvalid)):
            self._remember((partner, entry), now, result)  # a Redis outage is not remembered: retried after the backoff
        return _result(result)

    async def _read(self, partner: str, entry: str, now: float) -> ImportedKeys | KeyStoreError:
        where = f"entry {entry} of partner {partner} (Redis hash {redis_key(partner, entry)})"
        if self.url is None:
            return self._failed(KeyStoreError(f'partner {partner} has key_source = "redis" but this node has no [redis] url'))
        if now < self._down_until:
            return KeyStoreError("the key store (Redis) did not answer a moment ago; retrying shortly")
        try:
            fields = await asyncio.wait_for(self._client().hgetall(redis_key(partner, entry)), REDIS_TIMEOUT)
        except Exception as exc:  # connection refused, timeout, auth...: the same 503 for the viewer
            self._down_until = time.monotonic() + OUTAGE_BACKOFF
            return self._failed(KeyStoreError(f"the key store (Redis at {without_credentials(self.url)}) failed: "
                                              f"{type(exc).__name__}"))
        try:
            return await asyncio.to_thread(parse_keys, fields, where)  # a long hash is not parsed on the event loop
        except KeyStoreError as exc:
            return self._failed(exc)

    def _client(self):
        if self._redis is None:
            import redis.asyncio as aioredis  # only nodes whose partners import keys need the package

            self._redis = aioredis.Redis.from_url(self.url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT)
        return self._redis

    def _failed(self, exc: KeyStoreError) -> KeyStoreError:
        now = time.monotonic()
        if now - self._logged.get(exc.code, -LOG_EVERY) >= LOG_EVERY:  # once a minute per kind: an outage is one line
            self._logged[exc.code] = now
            log.warning("content keys: %s", exc)
        return exc

    def _remember(self, key: tuple[str, str], now: float, result: ImportedKeys | KeyStoreError) -> None:
        self._cache[key] = (now + self.ttl, result)
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_ENTRIES:
            self._cache.popitem(last=False)

    def forget(self) -> None:
        """Drop what was read (a reload, a purge): the next request reads Redis again."""
        self._cache.clear()

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


def _result(result: ImportedKeys | KeyStoreError) -> ImportedKeys:
    if isinstance(result, KeyStoreError):
        raise type(result)(str(result))
    return result
