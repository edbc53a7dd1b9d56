"""Content keys without a key database: derived per entry and rotation period from a partner master secret.

    content key = HKDF-SHA256(master secret, info = "vodgate content key|<partner>|<entry>|<period>") -> 16 bytes
    key id      = HKDF-SHA256(master secret, info = "vodgate key id|<partner>|<entry>|<period>")      -> 8 bytes, hex

The key id (kid) names a key in URLs and logs. It comes from a second, independent derivation, so
holding a kid (it is in every playlist) tells nothing about the key. Period p covers segments
``p * N + 1 .. (p + 1) * N`` with ``N = key_rotation_segments``; N = 0 is one key (period 0) per entry.

Pure: no configuration files, no HTTP. The partner's :class:`Protection` is parsed in config/partners.py.
"""

from __future__ import annotations

import hashlib

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONE = "none"
AES_128 = "aes-128"
SAMPLE_AES = "sample-aes"  # HLS SAMPLE-AES over MPEG-TS (packager/ts/sample_aes.py); same keys, same IVs
METHODS = (NONE, AES_128, SAMPLE_AES)
DERIVED = "derived"  # keys derived from the partner's master secrets (below)
REDIS = "redis"  # keys imported into Redis by the operator (edge/key_store.py)
KEY_SOURCES = (DERIVED, REDIS)
KEY_BYTES = 16  # AES-128
KID_BYTES = 8  # 16 hex digits: unique enough per entry, short in playlists
CENC_KID_BYTES = 16  # what ISO/IEC 23001-7 key ids are
MIN_SECRET_BYTES = 16
_KEY_INFO = b"vodgate content key"
_KID_INFO = b"vodgate key id"


@dataclass(frozen=True)
class Protection:
    """A partner's encryption setting. ``secrets[0]`` derives the keys playlists name; every listed secret's
    keys are still served (kids are looked up under each), so a player holding a playlist from before a
    master-secret rotation keeps playing."""

    method: str = NONE
    secrets: tuple[bytes, ...] = field(default=(), repr=False)
    rotation_segments: int = 0  # N: a new key every N segments; 0 = one key per entry
    source: str = DERIVED  # where keys come from: DERIVED (secrets) or REDIS (imported)

    @property
    def encrypts(self) -> bool:
        return self.method != NONE

    @property
    def imports(self) -> bool:
        return self.encrypts and self.source == REDIS

    @property
    def has_keys(self) -> bool:
        """Whether keys can be had: master secrets, or imported ones (a profile may switch encryption on)."""
        return bool(self.secrets) or self.source == REDIS

    def marker(self, keys: "KeySet") -> str | None:
        """8 hex digits naming ``tag`` in segment and init URLs (edge/urls.segment_uri); None for clear media."""
        if not self.encrypts:
            return None
        return hashlib.blake2s(self.tag(keys).encode(), digest_size=4).hexdigest()

    def tag(self, keys: "KeySet") -> str:
        """What the bytes of a protected resource depend on, for cache keys and ETags: the method, the rotation
        and the entry's key fingerprint (it changes with the master secret, or with imported keys). Reveals
        nothing secret."""
        if not self.encrypts:
            return "clear"
        return f"{self.method};n={self.rotation_segments};k={keys.fingerprint}"


def key_scope(entry: str, clip: str | None = None) -> str:
    """What a key belongs to: the entry, or one clip of it (``ladder/clip-10-20``). A clip's segments are
    numbered from 1 and cut from anywhere in the entry, so with the entry's keys its segment 1 would be
    encrypted with the key every preview viewer holds: each clip has keys of its own. Entry ids hold no
    ``/``, so no clip scope is an entry's."""
    return entry if clip is None else f"{entry}/{clip}"


def period_of(segment_number: int, rotation_segments: int) -> int:
    """The rotation period of 1-based segment ``segment_number``."""
    return 0 if rotation_segments <= 0 else (segment_number - 1) // rotation_segments


def period_count(segment_count: int, rotation_segments: int) -> int:
    return 1 if rotation_segments <= 0 else max(1, -(-segment_count // rotation_segments))


@lru_cache(maxsize=4096)
def content_key(secret: bytes, partner: str, entry: str, period: int) -> bytes:
    # cached: every encrypted segment packaged and every key request derives one (HKDF), mostly the same few
    return _derive(secret, _KEY_INFO, partner, entry, period, KEY_BYTES)


@lru_cache(maxsize=4096)
def key_id(secret: bytes, partner: str, entry: str, period: int) -> str:
    return _derive(secret, _KID_INFO, partner, entry, period, KID_BYTES).hex()


@lru_cache(maxsize=4096)
def cenc_key_id(secret: bytes, partner: str, entry: str, period: int) -> bytes:
    """The 16-byte KID of Common Encryption (fMP4 'cbcs': tenc, seig, pssh). HKDF output is a prefix of its
    longer outputs, so it begins with the 8 bytes of :func:`key_id`: the kid of key URLs is its first half."""
    return _derive(secret, _KID_INFO, partner, entry, period, CENC_KID_BYTES)


def find_period(protection: Protection, partner: str, entry: str, kid: str, periods: int) -> tuple[bytes, int] | None:
    """The (master secret, period) whose kid is ``kid``, among the entry's ``periods``; None if it names none."""
    for secret in protection.secrets:
        found = _kid_periods(secret, partner, entry, periods).get(kid)
        if found is not None:
            return secret, found
    return None


@lru_cache(maxsize=256)
def _kid_periods(secret: bytes, partner: str, entry: str, periods: int) -> dict[str, int]:
    # cached: a long entry rotated every segment has thousands of periods, and every key request looks one up
    return {key_id(secret, partner, entry, p): p for p in range(periods)}


def _derive(secret: bytes, purpose: bytes, partner: str, entry: str, period: int, length: int) -> bytes:
    # "|" cannot occur in partner or entry ids (A-Z a-z 0-9 - _) nor in a clip scope, so the info string is unambiguous
    info = b"|".join((purpose, partner.encode(), entry.encode(), str(period).encode()))
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


# --------------------------------------------------------------------------- the keys of one entry or clip


class KeySet(Protocol):
    """The content keys of one key scope (an entry or a clip), by rotation period."""

    @property
    def fingerprint(self) -> str:
        """Changes whenever any key of the entry does (never reveals one): part of URL markers and cache keys."""

    def kid(self, period: int) -> str:
        """The key id in key URLs: 16 lower-case hex digits."""

    def cenc_kid(self, period: int) -> bytes:
        """The 16-byte Common Encryption KID (fMP4 cbcs); its first half is :meth:`kid`."""

    def key(self, period: int) -> bytes:
        """The 16-byte AES key."""

    def lookup(self, kid: str, periods: int) -> tuple[int, bytes] | None:
        """(period, key) of the key URL kid ``kid`` among the first ``periods``; None if it names none."""


@dataclass(frozen=True)
class DerivedKeys:
    """Keys derived from the partner's master secrets; kids are looked up under every listed secret."""

    protection: Protection
    partner: str
    entry: str
    scope: str  # key_scope(entry, clip)

    @property
    def fingerprint(self) -> str:
        return key_id(self.protection.secrets[0], self.partner, self.entry, 0)

    def kid(self, period: int) -> str:
        return key_id(self.protection.secrets[0], self.partner, self.scope, period)

    def cenc_kid(self, period: int) -> bytes:
        return cenc_key_id(self.protection.secrets[0], self.partner, self.scope, period)

    def key(self, period: int) -> bytes:
        return content_key(self.protection.secrets[0], self.partner, self.scope, period)

    def lookup(self, kid: str, periods: int) -> tuple[int, bytes] | None:
        found = find_period(self.protection, self.partner, self.scope, kid, periods)
        if found is None:
            return None
        secret, period = found
        return period, content_key(secret, self.partner, self.scope, period)


class MissingPeriodKey(LookupError):
    """An imported key set lacks a period the media needs (503, edge/errors.py)."""

    code = "content_key_missing"


@dataclass(frozen=True)
class ImportedKeys:
    """Keys an operator imported (edge/key_store.py): period -> (16-byte KID, 16-byte key)."""

    keys: Mapping[int, tuple[bytes, bytes]] = field(repr=False)
    where: str = ""  # what the set belongs to, for error messages

    @cached_property  # a digest over every key: once per set (a set is cached for key_ttl, edge/key_store.py)
    def fingerprint(self) -> str:
        kids = b"".join(self.keys[p][0] for p in sorted(self.keys))
        return hashlib.blake2s(kids + b"|" + b"".join(self.keys[p][1] for p in sorted(self.keys)), digest_size=8).hexdigest()

    def kid(self, period: int) -> str:
        return self._of(period)[0][:KID_BYTES].hex()

    def cenc_kid(self, period: int) -> bytes:
        return self._of(period)[0]

    def key(self, period: int) -> bytes:
        return self._of(period)[1]

    def lookup(self, kid: str, periods: int) -> tuple[int, bytes] | None:
        for period in range(periods):
            found = self.keys.get(period)
            if found is not None and found[0][:KID_BYTES].hex() == kid:
                return period, found[1]
        return None

    def _of(self, period: int) -> tuple[bytes, bytes]:
        found = self.keys.get(period)
        if found is None:
            raise MissingPeriodKey(f"no imported key for rotation period {period} of {self.where}")
        return found
