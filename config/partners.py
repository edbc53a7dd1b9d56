"""Partners, their token keys and access-control profiles: TOML (or admin-API JSON) -> frozen objects.

Validated once, at start or when the admin API stores a profile. Every error names the full key
path, the value and the fix (secrets are never echoed), e.g.

    vodgate.toml: partners.demo.profiles.geo.rules[1].if.country has value ['UK']; expected ISO
    3166-1 alpha-2 codes such as "US" or "unknown" (the United Kingdom is "GB")

The schema (docs/ACCESS_CONTROL.md has every key)::

    [server]
    trusted_proxies = ["10.0.0.0/8"]        # X-Forwarded-For is read only from these peers
    geoip_database = "GeoLite2-Country.mmdb" # relative to the config file; needed by country rules
    token_clock_skew = 30                    # seconds of tolerance on token exp / st

    [partners.demo]
    admin_secret = "..."                     # /admin/ for this partner (16+ characters)
    token_keys = { k1 = "hex", k2 = "hex" }  # active keys, 16+ bytes each; all verify, one signs
    token_signing_key = "k2"                 # default: the first listed
    token_ipv6_prefix = 64                   # an IPv6 client is bound to its /64
    token_formats = ["vodgate", "akamai"]    # accepted token formats
    default_profile = "geo"                  # default: "open" (built in: no rules)

    [partners.demo.profiles.geo]
    description = "North America, or a 30 s preview on our sites"
    rules = [
      { if = { country = ["US", "CA"] }, then = ["allow"] },
      { if = { referrer = ["*.example.com"] }, then = [{ preview = 30 }] },
      { then = [{ block = "geo_blocked" }] },
    ]

    [partners.demo.entries.ladder]
    profile = "geo"
    available_from = 2026-01-01T00:00:00Z
    available_until = 2027-01-01T00:00:00Z

A rule: ``if`` (conditions that must all hold), ``unless`` (conditions that must each fail),
``then`` (actions), optional ``name``. ``not = true`` inside an ``if`` with one condition negates it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from auth.client_ip import IPNetwork
from auth.content_keys import DERIVED, KEY_SOURCES, METHODS, MIN_SECRET_BYTES, REDIS, Protection
from auth.rules import (
    MAX_PROFILE_PROGRAM_SIZE,
    NO_REFERRER,
    OPEN_PROFILE,
    REASON_CODE,
    UNKNOWN_COUNTRY,
    WEEKDAYS,
    AbsoluteWindow,
    Action,
    Allow,
    Authenticated,
    Block,
    Condition,
    Continue,
    CountryIn,
    EntryWindow,
    FlavorLimits,
    IpIn,
    LinearPattern,
    PatternError,
    Preview,
    Profile,
    RecurringWindow,
    ReferrerIn,
    Rule,
    Schedule,
    UserAgentMatches,
    Window,
    clock,
    rule_problem,
)
from auth.tokens import KEY_ID, KeyRing
from config.errors import ConfigError, unknown_keys
from config.settings import read_toml
from origin.catalog import valid_id

SECTION = "partners"
ACCESS_SERVER_KEYS = frozenset({"trusted_proxies", "geoip_database", "token_clock_skew"})
PARTNER_KEYS = frozenset({
    "admin_secret", "token_keys", "token_signing_key", "token_ipv6_prefix", "token_formats",
    "default_profile", "profiles", "entries", "encryption", "key_secrets", "key_rotation_segments", "key_source",
    "clear_progressive",
})
PROFILE_KEYS = frozenset({"rules", "description", "encryption"})
RULE_KEYS = frozenset({"name", "if", "unless", "then"})
CONDITION_KEYS = ("country", "referrer", "ip", "user_agent", "schedule", "authenticated")
ENTRY_KEYS = frozenset({"profile", "available_from", "available_until"})
TOKEN_FORMATS = ("vodgate", "akamai")
DEFAULT_PROFILE = "open"
MIN_KEY_BYTES = 16
MIN_ADMIN_SECRET = 16
MAX_CLOCK_SKEW = 3600
HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
COUNTRY = re.compile(r"[A-Z]{2}")
HHMM = re.compile(r"(\d{2}):(\d{2})")
KEY_HINT = "e.g. the output of: python -c 'import secrets; print(secrets.token_hex(32))'"


@dataclass(frozen=True)
class EntrySettings:
    profile: str | None = None
    window: EntryWindow | None = None


@dataclass(frozen=True)
class Partner:
    id: str
    keys: KeyRing = field(default_factory=lambda: KeyRing({}))
    admin_secret: str | None = field(default=None, repr=False)
    default_profile: str = DEFAULT_PROFILE
    profiles: Mapping[str, Profile] = field(default_factory=lambda: MappingProxyType({DEFAULT_PROFILE: OPEN_PROFILE}))
    entries: Mapping[str, EntrySettings] = field(default_factory=lambda: MappingProxyType({}))
    protection: Protection = field(default_factory=Protection)  # HLS encryption (docs/CONTENT_PROTECTION.md)
    # progressive MP4 (the clear file) of a partner that encrypts its HLS: refused unless this says so
    clear_progressive: bool = False

    def profile_for(self, entry: str) -> Profile:
        settings = self.entries.get(entry)
        name = settings.profile if settings is not None and settings.profile else self.default_profile
        return self.profiles[name]

    def protection_for(self, entry: str) -> Protection:
        """The partner's protection with the method of the entry's profile, where the profile sets one."""
        method = self.profile_for(entry).encryption
        return self.protection if method is None or method == self.protection.method else replace(self.protection, method=method)

    def entry_window(self, entry: str) -> EntryWindow | None:
        settings = self.entries.get(entry)
        return settings.window if settings is not None else None

    def with_profile(self, profile: Profile) -> "Partner":
        """A copy with ``profile`` added or replaced (the admin API's create / replace)."""
        return replace(self, profiles=MappingProxyType({**self.profiles, profile.name: profile}))

    def without_profile(self, name: str) -> "Partner":
        """A copy without profile ``name``; refused while the partner or an entry uses it."""
        if name not in self.profiles:
            raise ConfigError(f"partners.{self.id}.profiles has no profile {name!r}; existing: {sorted(self.profiles)}")
        users = [f"partners.{self.id}.default_profile"] if self.default_profile == name else []
        users += [f"partners.{self.id}.entries.{e}.profile" for e, s in self.entries.items() if s.profile == name]
        if users:
            raise ConfigError(f"profile {name!r} is in use by {', '.join(users)}; point them at another profile first")
        return replace(self, profiles=MappingProxyType({k: v for k, v in self.profiles.items() if k != name}))


@dataclass(frozen=True)
class AccessConfig:
    partners: Mapping[str, Partner] = field(default_factory=lambda: MappingProxyType({}))
    trusted_proxies: tuple[IPNetwork, ...] = ()
    geoip_database: Path | None = None
    token_clock_skew: int = 30


# --- entry points -------------------------------------------------------------------------------


def load_access(path: Path) -> AccessConfig:
    return parse_access(read_toml(path), source=str(path), base_dir=path.parent)


def parse_access(raw: Mapping[str, Any], source: str = "config", base_dir: Path = Path(".")) -> AccessConfig:
    """The access-control part of a whole config document: ``[server]``'s access keys and ``[partners]``.

    Other ``[server]`` keys are left to config.settings (which must accept ACCESS_SERVER_KEYS).
    """
    server = raw.get("server", {})
    if not isinstance(server, Mapping):
        raise ConfigError(f"{source}: 'server' must be a table ([server])")
    geoip = server.get("geoip_database")
    if geoip is not None:
        if not isinstance(geoip, str) or not geoip:
            raise _error(source, "server.geoip_database", geoip, 'a path to a MaxMind .mmdb file, e.g. "GeoLite2-Country.mmdb"')
        geoip_path = Path(geoip) if Path(geoip).is_absolute() else base_dir / geoip
    else:
        geoip_path = None
    skew = server.get("token_clock_skew", 30)
    if not _is_int(skew) or not 0 <= skew <= MAX_CLOCK_SKEW:
        raise _error(source, "server.token_clock_skew", skew, f"whole seconds between 0 and {MAX_CLOCK_SKEW}, e.g. 30")
    partners = raw.get(SECTION, {})
    return AccessConfig(
        partners=MappingProxyType(parse_partners(partners, source, base_dir, geoip_configured=geoip_path is not None)),
        trusted_proxies=tuple(_networks(server.get("trusted_proxies", []), "server.trusted_proxies", source)),
        geoip_database=geoip_path,
        token_clock_skew=skew,
    )


def parse_partners(raw: Any, source: str, base_dir: Path, geoip_configured: bool) -> dict[str, Partner]:
    """The ``[partners]`` table: ``partner id -> its table``. ``base_dir`` resolves relative paths."""
    if not isinstance(raw, Mapping):
        raise _error(source, SECTION, raw, "a table of partners: [partners.<partner id>]")
    partners = {}
    for pid, table in raw.items():
        where = f"{SECTION}.{pid}"
        if not valid_id(pid):
            raise ConfigError(f"{source}: {where}: partner id {pid!r} must be 1-64 characters of A-Z a-z 0-9 - _ (as in /p/<partner>/)")
        partners[pid] = _partner(pid, table, where, source, geoip_configured)
    return partners


def profile_from_dict(
    name: str,
    data: Any,
    *,
    where: str | None = None,
    source: str = "admin API",
    geoip_configured: bool,
    tokens_configured: bool = True,
    keys_configured: bool = True,
) -> Profile:
    """One profile from its TOML table or admin-API JSON object (datetimes as ISO 8601 strings).
    ``keys_configured``: whether the partner has content keys (key_secrets, or key_source = "redis"), which an
    ``encryption`` other than "none" needs."""
    where = where or f"profiles.{name}"
    if not valid_id(name):
        raise ConfigError(f"{source}: {where}: profile name {name!r} must be 1-64 characters of A-Z a-z 0-9 - _")
    table = _table(data, where, source, PROFILE_KEYS, 'a table like { rules = [ { if = { country = ["US"] }, then = ["allow"] } ] }')
    description = table.get("description", "")
    if not isinstance(description, str):
        raise _error(source, f"{where}.description", description, "a string")
    rules_raw = table.get("rules", [])
    if not isinstance(rules_raw, list):
        raise _error(source, f"{where}.rules", rules_raw, 'a list of rules: rules = [ { if = {...}, then = ["allow"] } ]')
    ctx = _Ctx(source, geoip_configured, tokens_configured)
    rules = tuple(_rule(r, f"{where}.rules[{i}]", ctx) for i, r in enumerate(rules_raw))
    encryption = table.get("encryption")
    if encryption is not None and encryption not in METHODS:
        raise _error(source, f"{where}.encryption", encryption, f'one of {", ".join(repr(m) for m in METHODS)} (or leave it out: the partner\'s)')
    if encryption not in (None, "none") and not keys_configured:
        raise ConfigError(f'{source}: {where}.encryption = "{encryption}" needs content keys on the partner: key_secrets = '
                          '["<64 hex digits>"], or key_source = "redis" (docs/CONTENT_PROTECTION.md)')
    return Profile(name, rules, description, encryption)


def profile_to_dict(profile: Profile) -> dict[str, Any]:
    """The JSON / TOML form of a profile; ``profile_from_dict`` reads it back to an equal profile."""
    out: dict[str, Any] = {}
    if profile.description:
        out["description"] = profile.description
    if profile.encryption is not None:
        out["encryption"] = profile.encryption
    out["rules"] = [_rule_to_dict(rule) for rule in profile.rules]
    return out


# --- partner ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    source: str
    geoip_configured: bool
    tokens_configured: bool
    pattern_sizes: list[int] = field(default_factory=list)  # RE2 instructions of the profile's user_agent patterns so far


def _partner(pid: str, raw: Any, where: str, source: str, geoip_configured: bool) -> Partner:
    table = _table(raw, where, source, PARTNER_KEYS, f"a table [partners.{pid}]")
    admin_secret = table.get("admin_secret")
    if admin_secret is not None and (not isinstance(admin_secret, str) or len(admin_secret) < MIN_ADMIN_SECRET):
        shown = f"a {type(admin_secret).__name__}" if not isinstance(admin_secret, str) else f"a secret of {len(admin_secret)} characters"
        raise ConfigError(f"{source}: {where}.admin_secret is {shown}; expected a string of at least {MIN_ADMIN_SECRET} characters, {KEY_HINT}")
    keys = _token_keys(table.get("token_keys", {}), f"{where}.token_keys", source)
    signing = table.get("token_signing_key")
    if signing is not None and signing not in keys:
        raise _error(source, f"{where}.token_signing_key", signing, f"one of the ids in {where}.token_keys: {sorted(keys)}")
    prefix = table.get("token_ipv6_prefix", 64)
    if not _is_int(prefix) or not 1 <= prefix <= 128:
        raise _error(source, f"{where}.token_ipv6_prefix", prefix, "a prefix length 1-128, e.g. 64 (one IPv6 subscriber line)")
    formats = table.get("token_formats", list(TOKEN_FORMATS))
    if not isinstance(formats, list) or not formats or any(f not in TOKEN_FORMATS for f in formats):
        raise _error(source, f"{where}.token_formats", formats, f'a non-empty list of {", ".join(repr(f) for f in TOKEN_FORMATS)}')
    ring = KeyRing(MappingProxyType(keys), prefix, frozenset(formats), signing)

    protection = _protection(table, where, source)
    profiles: dict[str, Profile] = {DEFAULT_PROFILE: OPEN_PROFILE}
    raw_profiles = table.get("profiles", {})
    if not isinstance(raw_profiles, Mapping):
        raise _error(source, f"{where}.profiles", raw_profiles, f"a table of profiles: [{where}.profiles.<name>]")
    for name, data in raw_profiles.items():
        profiles[name] = profile_from_dict(
            name, data, where=f"{where}.profiles.{name}", source=source,
            geoip_configured=geoip_configured, tokens_configured=bool(keys), keys_configured=protection.has_keys,
        )
    default = table.get("default_profile", DEFAULT_PROFILE)
    if not isinstance(default, str) or default not in profiles:
        raise _error(source, f"{where}.default_profile", default, f"the name of a profile of this partner: {sorted(profiles)}")

    entries: dict[str, EntrySettings] = {}
    raw_entries = table.get("entries", {})
    if not isinstance(raw_entries, Mapping):
        raise _error(source, f"{where}.entries", raw_entries, f"a table of entries: [{where}.entries.<entry id>]")
    for eid, data in raw_entries.items():
        ewhere = f"{where}.entries.{eid}"
        if not valid_id(eid):
            raise ConfigError(f"{source}: {ewhere}: entry id {eid!r} must be 1-64 characters of A-Z a-z 0-9 - _ (as in /e/<entry>/)")
        entries[eid] = _entry(data, ewhere, source, profiles)
    clear_progressive = table.get("clear_progressive", False)
    if not isinstance(clear_progressive, bool):
        raise _error(source, f"{where}.clear_progressive", clear_progressive,
                     "true or false (true: serve progressive MP4, the clear file, even though the partner encrypts its HLS)")
    return Partner(pid, ring, admin_secret, default, MappingProxyType(profiles), MappingProxyType(entries), protection,
                   clear_progressive)


def _protection(table: Mapping[str, Any], where: str, source: str) -> Protection:
    """``encryption``, ``key_source``, ``key_secrets`` and ``key_rotation_segments`` (docs/CONTENT_PROTECTION.md)."""
    method = table.get("encryption", "none")
    if method not in METHODS:
        raise _error(source, f"{where}.encryption", method, f'one of {", ".join(repr(m) for m in METHODS)}')
    rotation = table.get("key_rotation_segments", 0)
    if not _is_int(rotation) or rotation < 0:
        raise _error(source, f"{where}.key_rotation_segments", rotation, "a whole number of segments, e.g. 10 (0 = one key per entry)")
    key_source = table.get("key_source", DERIVED)
    if key_source not in KEY_SOURCES:
        raise _error(source, f"{where}.key_source", key_source, f'one of {", ".join(repr(k) for k in KEY_SOURCES)}')
    raw = table.get("key_secrets")
    if key_source == REDIS:  # imported keys (edge/key_store.py): there is nothing to derive them from
        if raw is not None:
            raise ConfigError(f'{source}: {where}.key_secrets is not used with {where}.key_source = "redis" (the keys are '
                              "imported into Redis): remove one of them")
        return Protection(method, (), rotation, REDIS)
    if raw is None:
        if method != "none":
            raise ConfigError(f'{source}: {where}.encryption = "{method}" needs {where}.key_secrets = ["<64 hex digits>"] '
                              f"(master secrets the content keys are derived from), {KEY_HINT}")
        return Protection(method, (), rotation)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f'{source}: {where}.key_secrets must be a non-empty list of hex secrets, e.g. ["<64 hex digits>"]; {KEY_HINT}')
    secrets = []
    for i, value in enumerate(raw):  # never echo a value: these are master secrets
        secrets.append(_hex_secret(value, f"{where}.key_secrets[{i}]", source, MIN_SECRET_BYTES))
    return Protection(method, tuple(secrets), rotation)


def _token_keys(raw: Any, where: str, source: str) -> dict[str, bytes]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f'{source}: {where} must be a table of key id -> hex secret, e.g. {{ k1 = "<64 hex digits>" }}')
    keys = {}
    for kid, value in raw.items():
        if not KEY_ID.fullmatch(kid):
            raise ConfigError(f"{source}: {where}: key id {kid!r} must be 1-32 characters of A-Z a-z 0-9 _ -")
        keys[kid] = _hex_secret(value, f"{where}.{kid}", source, MIN_KEY_BYTES)
    return keys


def _hex_secret(value: Any, item: str, source: str, minimum: int) -> bytes:
    """A secret written as hex digits, of at least ``minimum`` bytes; the ConfigError names ``item``, never the value."""
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {item} is a {type(value).__name__}; expected a hex string, {KEY_HINT}")
    try:
        secret = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{source}: {item} is not an even number of hex digits (0-9 a-f); {KEY_HINT}") from None
    if len(secret) < minimum:
        raise ConfigError(f"{source}: {item} is {len(secret)} bytes; expected at least {minimum} bytes ({2 * minimum} hex digits), {KEY_HINT}")
    return secret


def _entry(raw: Any, where: str, source: str, profiles: Mapping[str, Profile]) -> EntrySettings:
    table = _table(raw, where, source, ENTRY_KEYS, 'a table like { profile = "geo", available_from = 2026-01-01T00:00:00Z }')
    profile = table.get("profile")
    if profile is not None and (not isinstance(profile, str) or profile not in profiles):
        raise _error(source, f"{where}.profile", profile, f"the name of a profile of this partner: {sorted(profiles)}")
    start = _moment(table["available_from"], f"{where}.available_from", source) if "available_from" in table else None
    end = _moment(table["available_until"], f"{where}.available_until", source) if "available_until" in table else None
    if start is not None and end is not None and end <= start:
        raise ConfigError(f"{source}: {where}.available_until ({_iso(end)}) is not after available_from ({_iso(start)}); swap or fix them")
    window = EntryWindow(start, end) if start is not None or end is not None else None
    return EntrySettings(profile, window)


# --- rules --------------------------------------------------------------------------------------


def _rule(raw: Any, where: str, ctx: _Ctx) -> Rule:
    table = _table(raw, where, ctx.source, RULE_KEYS, 'a table like { if = { country = ["US"] }, then = ["allow"] }')
    name = table.get("name")
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 64):
        raise _error(ctx.source, f"{where}.name", name, "a short label (1-64 characters)")
    conditions: list[Condition] = []
    if "if" in table:
        conditions += _conditions(table["if"], f"{where}.if", ctx, negated=False)
    if "unless" in table:
        conditions += _conditions(table["unless"], f"{where}.unless", ctx, negated=True)
    if "then" not in table:
        raise ConfigError(f'{ctx.source}: {where} has no "then"; add the actions, e.g. then = ["allow"] or then = [{{ block = "geo_blocked" }}]')
    actions = _actions(table["then"], f"{where}.then", ctx.source)
    problem = rule_problem(actions)
    if problem:
        raise ConfigError(f"{ctx.source}: {where}.then has value {_show(table['then'])}; {problem}")
    return Rule(tuple(conditions), tuple(actions), name)


def _conditions(raw: Any, where: str, ctx: _Ctx, negated: bool) -> list[Condition]:
    allowed = set(CONDITION_KEYS) | ({"not"} if not negated else set())
    table = _table(raw, where, ctx.source, frozenset(allowed), 'a table of conditions like { country = ["US"], referrer = ["*.example.com"] }')
    flip = table.get("not", False)
    if not isinstance(flip, bool):
        raise _error(ctx.source, f"{where}.not", flip, "true or false")
    names = [k for k in CONDITION_KEYS if k in table]
    if not names:
        raise ConfigError(f"{ctx.source}: {where} has no condition; use one of {', '.join(CONDITION_KEYS)} (a rule without \"if\" always matches)")
    if flip and len(names) > 1:
        raise ConfigError(
            f"{ctx.source}: {where}.not negates a single condition, but {where} has {len(names)} ({', '.join(names)}); "
            f"move the ones to negate to \"unless\" (each condition there must fail)"
        )
    return [_condition(k, table[k], f"{where}.{k}", ctx, negated != flip) for k in names]


def _condition(kind: str, value: Any, where: str, ctx: _Ctx, negated: bool) -> Condition:
    source = ctx.source
    if kind == "country":
        if not ctx.geoip_configured:
            raise ConfigError(
                f"{source}: {where} needs a GeoIP database, and none is configured; set server.geoip_database "
                '= "GeoLite2-Country.mmdb" (a MaxMind Country or City .mmdb file) or remove the country condition'
            )
        return CountryIn(codes=frozenset(_countries(value, where, source)), negated=negated)
    if kind == "referrer":
        return ReferrerIn(patterns=tuple(_referrers(value, where, source)), negated=negated)
    if kind == "ip":
        networks = _networks(value, where, source)
        if not networks:
            raise _error(source, where, value, 'a non-empty list of addresses or CIDRs, e.g. ["192.0.2.0/24", "2001:db8::/32"]')
        return IpIn(networks=tuple(networks), negated=negated)
    if kind == "user_agent":
        if not isinstance(value, str) or not value:  # its length and size: LinearPattern says
            raise _error(source, where, value, 'a regular expression (RE2 syntax, searched anywhere in the User-Agent), e.g. "(?i)smart-?tv"')
        try:
            pattern = LinearPattern.compile(value)
        except PatternError as exc:
            raise ConfigError(f"{source}: {where} has value {_show(value)}, which is {exc}") from None
        ctx.pattern_sizes.append(pattern.program_size)
        total = sum(ctx.pattern_sizes)
        if total > MAX_PROFILE_PROGRAM_SIZE:  # checked as they come: the rest is not compiled
            raise ConfigError(
                f"{source}: {where} has value {_show(value)}, which brings the profile's user_agent patterns to {total} RE2 "
                f"instructions together, at most {MAX_PROFILE_PROGRAM_SIZE} in one profile (a request may search them all); "
                "merge them into one alternation (a|b|c) or make them smaller"
            )
        return UserAgentMatches(pattern=pattern, negated=negated)
    if kind == "schedule":
        items = value if isinstance(value, list) else [value]
        if not items:
            raise _error(source, where, value, 'a window table or a list of them, e.g. { time = "18:00-20:00", tz = "Europe/Paris" }')
        windows = [_window(w, f"{where}[{i}]" if isinstance(value, list) else where, source) for i, w in enumerate(items)]
        return Schedule(windows=tuple(windows), negated=negated)
    if kind == "authenticated":
        if not isinstance(value, bool):
            raise _error(source, where, value, "true (has a valid token) or false (has none)")
        if not ctx.tokens_configured:
            raise ConfigError(f"{source}: {where}: token checks need keys, and this partner has none; add token_keys = {{ k1 = \"<hex>\" }} to the partner")
        return Authenticated(negated=negated != (not value))
    raise AssertionError(kind)  # pragma: no cover - CONDITION_KEYS lists every kind


def _countries(value: Any, where: str, source: str) -> list[str]:
    expected = 'a list of ISO 3166-1 alpha-2 codes such as ["US", "CA"], or "unknown" for addresses GeoIP cannot place'
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _error(source, where, value, expected)
    codes = []
    for code in value:
        if code.lower() == UNKNOWN_COUNTRY:
            codes.append(UNKNOWN_COUNTRY)
            continue
        upper = code.upper()
        if not COUNTRY.fullmatch(upper):
            raise _error(source, where, value, expected)
        if upper == "UK":
            raise _error(source, where, value, 'ISO codes: the United Kingdom is "GB"')
        codes.append(upper)
    return codes


def _referrers(value: Any, where: str, source: str) -> list[str]:
    expected = 'a list of hosts: "example.com" (exactly), "*.example.com" (any host under it, not example.com itself) or "none" (no Referer or Origin)'
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _error(source, where, value, expected)
    patterns = []
    for raw in value:
        pattern = raw.strip().lower().rstrip(".")
        host = pattern[2:] if pattern.startswith("*.") else pattern
        if pattern == NO_REFERRER:
            patterns.append(pattern)
            continue
        if "://" in raw or "/" in raw or ":" in raw:
            raise ConfigError(f"{source}: {where} has value {raw!r}; expected a host name only (no scheme, port or path), e.g. \"example.com\"")
        if "*" in host or not HOST.fullmatch(host):
            hint = ' (use "*.example.com" for any host under example.com, plus "example.com" for the domain itself)' if "*" in pattern else ""
            raise ConfigError(f"{source}: {where} has value {raw!r}; {expected}{hint}")
        patterns.append(pattern)
    return patterns


def _networks(value: Any, where: str, source: str) -> list[IPNetwork]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _error(source, where, value, 'a list of addresses or CIDRs, e.g. ["10.0.0.0/8", "2001:db8::/32"]')
    networks: list[IPNetwork] = []
    for text in value:
        try:
            networks.append(ipaddress.ip_network(text.strip()))
        except ValueError as exc:
            try:
                loose = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                raise ConfigError(f"{source}: {where} has value {text!r}; expected an IP address or CIDR such as 10.0.0.0/8 ({exc})") from None
            raise ConfigError(f"{source}: {where} has value {text!r}, which has host bits set; did you mean {loose}?") from None
    return networks


def _window(raw: Any, where: str, source: str) -> Window:
    if not isinstance(raw, Mapping):
        raise _error(source, where, raw, '{ time = "18:00-20:00", tz = "Europe/Paris" } (recurring) or { from = 2026-01-01T00:00:00Z, until = ... } (absolute)')
    keys = set(raw)
    if keys & {"from", "until"}:
        extra = keys - {"from", "until"}
        if extra:
            raise ConfigError(f"{source}: {where} mixes an absolute window (from/until) with {sorted(extra)}; use two windows in a list")
        start = _moment(raw["from"], f"{where}.from", source) if "from" in raw else None
        end = _moment(raw["until"], f"{where}.until", source) if "until" in raw else None
        if start is not None and end is not None and end <= start:
            raise ConfigError(f"{source}: {where}.until ({_iso(end)}) is not after from ({_iso(start)}); swap or fix them")
        return AbsoluteWindow(start, end)
    unknown = keys - {"time", "tz", "days"}
    if unknown:
        raise ConfigError(f"{source}: {where} has unknown key(s) {sorted(unknown)}; known: days, time, tz (recurring) or from, until (absolute)")
    if "time" not in raw or "tz" not in raw:
        raise ConfigError(f'{source}: {where} needs time and tz, e.g. {{ time = "18:00-20:00", tz = "Europe/Paris" }} (add days = ["sat", "sun"] for some weekdays only)')
    start, end = _time_range(raw["time"], f"{where}.time", source)
    tz = raw["tz"]
    try:
        if not isinstance(tz, str) or not tz or tz.startswith("/") or ".." in tz:
            raise ZoneInfoNotFoundError(tz)
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise _error(source, f"{where}.tz", tz, 'an IANA time zone name such as "Europe/Paris", "America/New_York" or "UTC"') from None
    days = frozenset(range(7))
    if "days" in raw:
        value = raw["days"]
        if not isinstance(value, list) or not value or any(not isinstance(d, str) or d.lower()[:3] not in WEEKDAYS for d in value):
            raise _error(source, f"{where}.days", value, f"a list of weekdays from {', '.join(repr(d) for d in WEEKDAYS)}")
        days = frozenset(WEEKDAYS.index(d.lower()[:3]) for d in value)
    return RecurringWindow(start, end, tz, days)


def _time_range(value: Any, where: str, source: str) -> tuple[int, int]:
    expected = '"HH:MM-HH:MM" in 24-hour local time, e.g. "18:00-20:00", "22:00-02:00" (crosses midnight) or "00:00-24:00" (all day)'
    if not isinstance(value, str) or value.count("-") != 1:
        raise _error(source, where, value, expected)
    bounds = []
    for part in value.split("-"):
        match = HHMM.fullmatch(part.strip())
        if match is None:
            raise _error(source, where, value, expected)
        hours, minutes = int(match[1]), int(match[2])
        if minutes > 59 or hours > 24 or (hours == 24 and minutes):
            raise _error(source, where, value, expected)
        bounds.append(hours * 3600 + minutes * 60)
    start, end = bounds
    if start == 86400:
        raise _error(source, where, value, "a start before 24:00 (" + expected + ")")
    if start == end % 86400:
        raise ConfigError(f"{source}: {where} has value {value!r}, an empty window; use \"00:00-24:00\" for the whole day")
    return start, end


def _moment(value: Any, where: str, source: str) -> datetime:
    expected = "a date and time with a zone, e.g. 2026-01-01T00:00:00Z or 2026-01-01T01:00:00+01:00"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise _error(source, where, value, expected) from None
    if isinstance(value, date) and not isinstance(value, datetime):
        raise _error(source, where, value, expected + " (add the time of day)")
    if not isinstance(value, datetime):
        raise _error(source, where, value, expected)
    if value.tzinfo is None:
        raise ConfigError(f"{source}: {where} has value {value.isoformat()}, which has no time zone; add Z (UTC) or an offset like +01:00")
    return value


# --- actions ------------------------------------------------------------------------------------


def _actions(raw: Any, where: str, source: str) -> list[Action]:
    expected = 'a list of actions: "allow", "continue", "block", { block = "reason_code" }, { preview = 30 }, { limit_flavors = { max_height = 720 } }'
    if not isinstance(raw, list) or not raw:
        raise _error(source, where, raw, expected)
    return [_action(item, f"{where}[{i}]", source, expected) for i, item in enumerate(raw)]


def _action(item: Any, where: str, source: str, expected: str) -> Action:
    if isinstance(item, str):
        simple = {"allow": Allow(), "continue": Continue(), "block": Block()}
        if item not in simple:
            raise _error(source, where, item, expected)
        return simple[item]
    if not isinstance(item, Mapping) or len(item) != 1:
        raise _error(source, where, item, expected + " (one action per table)")
    (kind, value), = item.items()
    if kind == "block":
        if not isinstance(value, str) or not REASON_CODE.fullmatch(value):
            raise _error(source, f"{where}.block", value, 'a reason code of lower-case letters, digits and _, e.g. "geo_blocked"')
        return Block(value)
    if kind == "preview":
        try:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            seconds = Fraction(str(value))
        except (ValueError, ZeroDivisionError):
            raise _error(source, f"{where}.preview", value, "seconds, e.g. 30 or 12.5") from None
        if seconds <= 0:
            raise _error(source, f"{where}.preview", value, 'more than 0 seconds (to refuse playback, use "block")')
        if (seconds * 1000).denominator != 1:  # preview URLs name clips in milliseconds (edge/urls.clip_marker)
            raise _error(source, f"{where}.preview", value, "seconds with at most 3 decimals, e.g. 30 or 12.125")
        return Preview(seconds)
    if kind == "limit_flavors":
        table = _table(value, f"{where}.limit_flavors", source, frozenset({"max_height", "max_bitrate"}), "{ max_height = 720 } and/or { max_bitrate = 3_000_000 }")
        if not table:
            raise ConfigError(f"{source}: {where}.limit_flavors is empty; give max_height (pixels) and/or max_bitrate (bits per second)")
        for key in table:
            if not _is_int(table[key]) or table[key] < 1:
                unit = "pixels, e.g. 720" if key == "max_height" else "bits per second, e.g. 3_000_000"
                raise _error(source, f"{where}.limit_flavors.{key}", table[key], f"a positive integer ({unit})")
        return FlavorLimits(table.get("max_height"), table.get("max_bitrate"))
    raise _error(source, where, item, expected)


# --- to dict ------------------------------------------------------------------------------------


def _rule_to_dict(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.name:
        out["name"] = rule.name
    positive = {c.kind: _condition_value(c) for c in rule.conditions if not c.negated or isinstance(c, Authenticated)}
    negative = {c.kind: _condition_value(c) for c in rule.conditions if c.negated and not isinstance(c, Authenticated)}
    if positive:
        out["if"] = positive
    if negative:
        out["unless"] = negative
    out["then"] = [_action_to_dict(a) for a in rule.actions]
    return out


def _condition_value(c: Condition) -> Any:
    if isinstance(c, CountryIn):
        return sorted(c.codes)
    if isinstance(c, ReferrerIn):
        return list(c.patterns)
    if isinstance(c, IpIn):
        return [str(n) for n in c.networks]
    if isinstance(c, UserAgentMatches):
        return c.pattern.pattern
    if isinstance(c, Schedule):
        return [_window_to_dict(w) for w in c.windows]
    if isinstance(c, Authenticated):
        return not c.negated
    raise AssertionError(type(c))  # pragma: no cover


def _window_to_dict(w: Window) -> dict[str, Any]:
    if isinstance(w, AbsoluteWindow):
        out = {}
        if w.start is not None:
            out["from"] = w.start.isoformat()
        if w.end is not None:
            out["until"] = w.end.isoformat()
        return out
    out = {"time": f"{clock(w.start)}-{clock(w.end)}", "tz": w.tz}
    if len(w.days) < 7:
        out["days"] = [WEEKDAYS[d] for d in sorted(w.days)]
    return out


def _action_to_dict(a: Action) -> Any:
    if isinstance(a, Allow):
        return "allow"
    if isinstance(a, Continue):
        return "continue"
    if isinstance(a, Block):
        return {"block": a.reason} if a.reason else "block"
    if isinstance(a, Preview):
        return {"preview": a.seconds.numerator if a.seconds.denominator == 1 else float(a.seconds)}
    if isinstance(a, FlavorLimits):
        return {"limit_flavors": {k: v for k, v in (("max_height", a.max_height), ("max_bitrate", a.max_bitrate)) if v is not None}}
    raise AssertionError(type(a))  # pragma: no cover


# --- helpers ------------------------------------------------------------------------------------


def _table(raw: Any, where: str, source: str, known: frozenset[str], example: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise _error(source, where, raw, example)
    unknown = set(raw) - known
    if unknown:
        raise unknown_keys(where, unknown, known, source)
    return raw


def _error(source: str, where: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{source}: {where} has value {_show(value)}; expected {expected}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
