"""Access-control profiles: ordered rules of conditions and actions, decided by a pure function.

    decide(profile, facts, now, entry_window=None) -> Decision

- The entry's availability window comes first: before ``available_from`` the answer is 403
  ``not_yet_available``, from ``available_until`` on 403 ``expired``, whatever the profile says.
- Rules are tried in order. A rule matches when every one of its conditions holds (a negated
  condition holds when its test fails). The first matching rule decides, unless its actions include
  ``continue``: then its preview / flavor limits are kept and later rules are tried too.
- ``block`` ends the decision at once (403 and the rule's reason code). ``allow``, ``preview`` and
  ``limit_flavors`` in a deciding rule allow the request with the restrictions gathered so far; the
  most restrictive preview and limits win.
- No rule decided: allowed (``allowed_by_default``), with whatever ``continue`` rules added.

Every decision carries an explanation (each rule tried, each condition's result and why) so
``vodgate access explain`` and ``/admin/`` can answer "why was this viewer blocked?".
Nothing here reads a clock, a socket or a file: the caller passes the facts and ``now``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from functools import cached_property, lru_cache
from typing import ClassVar, NamedTuple, Sequence
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import re2  # google-re2: user-supplied patterns run in linear time

from .client_ip import IPAddress, IPNetwork, normalize_ip
from .tokens import TokenResult

# Reason codes of a Decision (the JSON "error" of a 403; docs/ACCESS_CONTROL.md lists them all).
ALLOWED_BY_RULE = "allowed_by_rule"
ALLOWED_BY_DEFAULT = "allowed_by_default"
BLOCKED_BY_RULE = "blocked_by_rule"
TOKEN_REQUIRED = "token_required"
NOT_YET_AVAILABLE = "not_yet_available"
ENTRY_EXPIRED = "expired"
# Answered by the edge from a Decision, not by decide() itself:
PREVIEW_ONLY = "preview_only"  # a segment or byte range wholly past the preview
FLAVOR_NOT_ALLOWED = "flavor_not_allowed"  # a flavor above the decision's limits

UNKNOWN_COUNTRY = "unknown"
NO_REFERRER = "none"
REASON_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_USER_AGENT = 1024  # a user agent longer than this is matched on its first 1024 characters
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# --- facts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What a rule may look at, gathered by the edge for one request."""

    client_ip: IPAddress
    country: str | None = None  # ISO 3166-1 alpha-2; None when unknown
    referrer_host: str | None = None  # from Referer, else Origin; None when neither
    user_agent: str = ""
    token: TokenResult | None = None  # None when the request carries no token
    path: str = "/"


@lru_cache(maxsize=4096)
def referrer_host(referer: str | None, origin: str | None = None) -> str | None:
    """The host of the Referer header, else of the Origin header, lower case, without port or
    trailing dot; None when neither names a host (absent, empty, ``Origin: null``, garbage)."""
    for value in (referer, origin):
        if not value or value == "null":
            continue
        try:
            host = urlsplit(value.strip()).hostname
        except ValueError:
            host = None
        if host:
            return host.rstrip(".")
        return None  # a Referer was sent but names no host: do not fall back to Origin
    return None


# --- conditions ---------------------------------------------------------------------------------


class ConditionTrace(NamedTuple):
    """One condition's result in a decision; ``why`` is rendered only when someone reads it."""

    condition: "Condition"
    held: bool
    facts: Facts
    now: datetime

    @property
    def description(self) -> str:
        return self.condition.description

    @property
    def why(self) -> str:
        return self.condition.why(self.facts, self.now)


@dataclass(frozen=True, kw_only=True)
class Condition:
    """A test on the facts and the time. ``negated`` turns it around."""

    negated: bool = False
    kind: ClassVar[str] = ""

    def test(self, facts: Facts, now: datetime) -> bool:
        """The result before negation."""
        raise NotImplementedError

    def why(self, facts: Facts, now: datetime) -> str:
        """What was observed, for the explanation."""
        raise NotImplementedError

    def describe_test(self) -> str:
        raise NotImplementedError

    @cached_property
    def description(self) -> str:
        text = self.describe_test()
        return f"not {text}" if self.negated else text

    def evaluate(self, facts: Facts, now: datetime) -> ConditionTrace:
        return ConditionTrace(self, self.test(facts, now) != self.negated, facts, now)


@dataclass(frozen=True, kw_only=True)
class CountryIn(Condition):
    """The client's country (GeoIP) is one of ``codes``; ``"unknown"`` stands for no answer."""

    codes: frozenset[str]
    kind: ClassVar[str] = "country"

    def test(self, facts: Facts, now: datetime) -> bool:
        return (facts.country or UNKNOWN_COUNTRY) in self.codes

    def why(self, facts: Facts, now: datetime) -> str:
        return f"country is {facts.country or UNKNOWN_COUNTRY}"

    def describe_test(self) -> str:
        return f"country in [{', '.join(sorted(self.codes))}]"


@dataclass(frozen=True, kw_only=True)
class ReferrerIn(Condition):
    """The referring host is one of ``patterns``: an exact host, ``*.example.com`` (any host strictly
    under example.com, never example.com itself nor evil-example.com), or ``none`` (no referrer)."""

    patterns: tuple[str, ...]
    kind: ClassVar[str] = "referrer"

    @cached_property
    def _exact(self) -> frozenset[str]:
        return frozenset(p for p in self.patterns if not p.startswith("*."))

    @cached_property
    def _suffixes(self) -> tuple[str, ...]:
        return tuple(p[1:] for p in self.patterns if p.startswith("*."))  # ".example.com"

    def _match(self, host: str | None) -> str | None:
        if host is None:
            return NO_REFERRER if NO_REFERRER in self._exact else None
        if host in self._exact:
            return host
        for suffix in self._suffixes:
            if host.endswith(suffix):
                return "*" + suffix
        return None

    def test(self, facts: Facts, now: datetime) -> bool:
        return self._match(facts.referrer_host) is not None

    def why(self, facts: Facts, now: datetime) -> str:
        host = facts.referrer_host
        if host is None:
            return "no referrer"
        matched = self._match(host)
        return f"referrer host is {host}" + (f" (matches {matched})" if matched and matched != host else "")

    def describe_test(self) -> str:
        return f"referrer in [{', '.join(self.patterns)}]"


@dataclass(frozen=True, kw_only=True)
class IpIn(Condition):
    """The client address is in one of the networks (IPv4 and IPv6 mixed freely)."""

    networks: tuple[IPNetwork, ...]
    kind: ClassVar[str] = "ip"

    def _match(self, facts: Facts) -> IPNetwork | None:
        ip = normalize_ip(facts.client_ip)
        for network in self.networks:
            if ip in network:
                return network
        return None

    def test(self, facts: Facts, now: datetime) -> bool:
        return self._match(facts) is not None

    def why(self, facts: Facts, now: datetime) -> str:
        network = self._match(facts)
        ip = normalize_ip(facts.client_ip)
        return f"client {ip} is in {network}" if network is not None else f"client is {ip}"

    def describe_test(self) -> str:
        return f"ip in [{', '.join(map(str, self.networks))}]"


class PatternError(ValueError):
    """A user-supplied regular expression that RE2 cannot take; the message says why."""


MAX_PATTERN_LENGTH = 256  # characters; "(?i)(smart-?tv|roku|tizen)" is 26
# RE2 instructions of the compiled program. Compiling costs up to the square of the program's size:
# 60 x "[a-z]{0,1000}" (862 bytes of JSON) compiled to 420,004 instructions in 8 s, holding the GIL.
# A search costs up to (User-Agent length) x (program size) steps when the pattern defeats RE2's DFA
# cache ("a.{600}z" against 1024 random a/b: 8 ms, a fresh User-Agent each time). Usual sizes:
# "(?i)(smart-?tv|roku|tizen)" 29, "\pL" 1,200 (every Unicode letter), "(?i)[a-z]{0,700}" 4,904 (refused).
MAX_PROGRAM_SIZE = 2000
# All the user_agent patterns of one profile together: a request may search every one of them, and
# 700 patterns of 4,800 instructions (40 KiB of JSON) took 8 s per request, and 1.5 GB of DFA caches
# at RE2's default memory budget.
MAX_PROFILE_PROGRAM_SIZE = 4000
_TOO_LARGE = (
    f"at most {MAX_PROGRAM_SIZE}: a counted repetition copies what it repeats that many times "
    "((?i)[a-z]{0,1000} alone is 7,004); write * or + instead, or repeat less"
)
# RE2's compiler gives up as soon as a program outgrows its memory budget. A first compile with this small
# budget refuses a far-too-large pattern within a few milliseconds, before RE2 spends seconds building it
# (google-re2 holds the GIL while it compiles, so a thread alone would not help); every program within
# MAX_PROGRAM_SIZE fits in it (RE2 needs 12-25 bytes of budget per instruction).
_PROBE_MAX_MEM = 160 * 1024
# Memory of each pattern's program and DFA caches (RE2's default is 8 MiB). Ordinary patterns need a few
# KiB; one that defeats the DFA runs as fast or faster on RE2's NFA once its cache is full.
_MATCH_MAX_MEM = 1024 * 1024
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")  # in a str, only ever unpaired (JSON "\ud800" makes one)


def _re2_options(max_mem: int) -> "re2.Options":
    options = re2.Options()
    options.log_errors = False  # the PatternError says it; RE2 would also print to stderr
    options.max_mem = max_mem
    return options


_PROBE_OPTIONS = _re2_options(_PROBE_MAX_MEM)
_RE2_OPTIONS = _re2_options(_MATCH_MAX_MEM)
_RE2_UNSUPPORTED = (
    "RE2 (linear-time matching) does not support look-around ((?=...), (?!...), (?<=...), (?<!...)), "
    "backreferences (\\1, (?P=name)), possessive quantifiers or atomic groups, \\Z (write \\z), "
    "or repetition counts above 1000; rewrite the pattern without them"
)


def _compile_linear(text: str) -> "re2._Regexp":
    """``text`` compiled by RE2 within the limits above; :class:`PatternError` saying why not. Bounded
    time whatever the text: the length and the probe are checked before the full compile."""
    if len(text) > MAX_PATTERN_LENGTH:
        raise PatternError(f"too long: {len(text)} characters; a pattern is at most {MAX_PATTERN_LENGTH} characters")
    surrogate = _LONE_SURROGATE.search(text)
    if surrogate:
        raise PatternError(
            f"not Unicode text: character {surrogate.start()} is a lone UTF-16 surrogate ({ascii(surrogate[0])}); "
            "write the character itself (a surrogate escape needs its pair, as in \"\\ud83d\\ude00\")"
        )
    try:
        probe = re2.compile(text, options=_PROBE_OPTIONS)
    except re2.error as exc:
        why = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        if why.startswith("pattern too large"):
            raise PatternError(f"too large: it compiles to more than {MAX_PROGRAM_SIZE} RE2 instructions, {_TOO_LARGE}") from None
        try:
            re.compile(text)
        except re.error as python_error:
            raise PatternError(f"not a valid regular expression: {python_error}") from None
        raise PatternError(f"not accepted: {_RE2_UNSUPPORTED} (RE2: {why})") from None
    if probe.programsize > MAX_PROGRAM_SIZE:
        raise PatternError(f"too large: it compiles to {probe.programsize} RE2 instructions, {_TOO_LARGE}")
    try:
        return re2.compile(text, options=_RE2_OPTIONS)  # the probe's budget would leave the DFA no room
    except re2.error as exc:  # pragma: no cover - the probe compiled it with less memory
        raise PatternError(f"not accepted by RE2: {exc}") from None


@dataclass(frozen=True)
class LinearPattern:
    """A regular expression from a config file or the admin API, matched by RE2: time linear in the
    text, whatever the pattern (Python's ``re`` backtracks: ``^(a+)+$`` on a crafted User-Agent would
    stall the event loop). RE2 syntax: Python's, less look-around and backreferences; ``(?i)`` works.
    At most MAX_PATTERN_LENGTH characters and MAX_PROGRAM_SIZE compiled instructions, so that compiling
    one takes milliseconds whatever the text."""

    pattern: str  # the source text, as written (what profile_to_dict and explain print)

    @classmethod
    def compile(cls, text: str) -> "LinearPattern":
        """Raises :class:`PatternError` saying why RE2 refuses ``text``."""
        found = cls(text)
        _ = found._regexp  # compile now: refuse at config / admin time, never at the first request
        return found

    @cached_property
    def _regexp(self) -> "re2._Regexp":
        return _compile_linear(self.pattern)

    @property
    def program_size(self) -> int:
        """RE2 instructions (what MAX_PROGRAM_SIZE and MAX_PROFILE_PROGRAM_SIZE count)."""
        return int(self._regexp.programsize)

    def search(self, text: str) -> bool:
        # encoded here, leniently: google-re2 would encode a str strictly, and a lone surrogate (from a
        # command line's undecodable bytes) would raise. Bytes are also the faster path through it.
        return self._regexp.search(text.encode("utf-8", "surrogatepass")) is not None


@dataclass(frozen=True, kw_only=True)
class UserAgentMatches(Condition):
    """``pattern`` is found anywhere in the User-Agent (RE2 search; ``(?i)`` for any case).

    A plain string or a compiled ``re`` pattern (tests, benchmarks) is recompiled as a LinearPattern."""

    pattern: LinearPattern
    kind: ClassVar[str] = "user_agent"

    def __post_init__(self) -> None:
        given: object = self.pattern
        if isinstance(given, LinearPattern):
            return
        if isinstance(given, re.Pattern):
            if given.flags & ~(re.IGNORECASE | re.UNICODE):
                raise PatternError(f"user_agent pattern {given.pattern!r}: only the re.IGNORECASE flag carries over to RE2; write the others inline")
            inline = given.pattern.startswith("(?i)")  # re reports inline flags in .flags too
            text = ("(?i)" if given.flags & re.IGNORECASE and not inline else "") + given.pattern
        elif isinstance(given, str):
            text = given
        else:
            raise PatternError(f"user_agent pattern {given!r} is a {type(given).__name__}; expected a string")
        object.__setattr__(self, "pattern", LinearPattern.compile(text))

    def test(self, facts: Facts, now: datetime) -> bool:
        return self.pattern.search(facts.user_agent[:MAX_USER_AGENT])

    def why(self, facts: Facts, now: datetime) -> str:
        agent = facts.user_agent
        return f"user agent is {agent[:60] + ('...' if len(agent) > 60 else '')!r}"

    def describe_test(self) -> str:
        return f"user agent matches /{self.pattern.pattern}/"


@dataclass(frozen=True)
class AbsoluteWindow:
    """``start <= now < end``; either end may be open."""

    start: datetime | None = None
    end: datetime | None = None

    def contains(self, now: datetime) -> bool:
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)

    def describe(self) -> str:
        return f"from {_iso(self.start) if self.start else 'the beginning'} until {_iso(self.end) if self.end else 'forever'}"

    def observe(self, now: datetime) -> str:
        return f"now is {_iso(now)}"


@dataclass(frozen=True)
class RecurringWindow:
    """A wall-clock window in a named time zone on some weekdays, e.g. 18:00-20:00 Europe/Paris.

    ``start``/``end`` are seconds after local midnight (``end`` up to 86400 for "24:00"). When
    ``end <= start`` the window crosses midnight and belongs to the day it starts on: fri 22:00-02:00
    holds from Friday 22:00 to Saturday 02:00. Local time follows the zone's DST: on the day clocks
    skip an hour a window inside the gap does not occur, on the day they repeat one it occurs twice.
    """

    start: int
    end: int
    tz: str
    days: frozenset[int] = frozenset(range(7))  # 0 = Monday

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= seconds < self.end
        return (day in self.days and seconds >= self.start) or ((day - 1) % 7 in self.days and seconds < self.end)

    def describe(self) -> str:
        days = "daily" if len(self.days) == 7 else ",".join(WEEKDAYS[d] for d in sorted(self.days))
        return f"{days} {clock(self.start)}-{clock(self.end)} {self.tz}"

    def observe(self, now: datetime) -> str:
        local = now.astimezone(self.zone)
        return f"now is {WEEKDAYS[local.weekday()]} {local:%Y-%m-%d %H:%M:%S} {self.tz}"


Window = AbsoluteWindow | RecurringWindow


@dataclass(frozen=True, kw_only=True)
class Schedule(Condition):
    """``now`` is inside any of the windows."""

    windows: tuple[Window, ...]
    kind: ClassVar[str] = "schedule"

    def test(self, facts: Facts, now: datetime) -> bool:
        return any(window.contains(now) for window in self.windows)

    def why(self, facts: Facts, now: datetime) -> str:
        for window in self.windows:
            if window.contains(now):
                return f"{window.observe(now)} (inside {window.describe()})"
        return "; ".join(dict.fromkeys(w.observe(now) for w in self.windows))

    def describe_test(self) -> str:
        return f"time in [{'; '.join(w.describe() for w in self.windows)}]"


@dataclass(frozen=True, kw_only=True)
class Authenticated(Condition):
    """The request carries a valid token (signature, expiry, path and IP all good)."""

    kind: ClassVar[str] = "authenticated"

    def test(self, facts: Facts, now: datetime) -> bool:
        return facts.token is not None and facts.token.valid

    def why(self, facts: Facts, now: datetime) -> str:
        if facts.token is None:
            return "no token"
        if facts.token.valid:
            return "valid token"
        return f"{facts.token.reason}: {facts.token.detail}"

    def describe_test(self) -> str:
        return "has a valid token"


# --- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allow:
    def describe(self) -> str:
        return "allow"


@dataclass(frozen=True)
class Continue:
    def describe(self) -> str:
        return "continue"


@dataclass(frozen=True)
class Block:
    """403 with ``reason`` (default ``blocked_by_rule``; in a rule that tests "not has a valid token",
    the token's own failure: ``token_required`` when there is none, else ``token_expired`` etc.)."""

    reason: str | None = None

    def describe(self) -> str:
        return f"block ({self.reason})" if self.reason else "block"


@dataclass(frozen=True)
class Preview:
    """Only the first ``seconds`` of the entry may be played."""

    seconds: Fraction

    def describe(self) -> str:
        return f"preview {_seconds(self.seconds)}s"


@dataclass(frozen=True)
class FlavorLimits:
    """Flavors above these are left out of the master playlist and answer 403 flavor_not_allowed."""

    max_height: int | None = None
    max_bitrate: int | None = None  # bits per second, compared with the flavor's BANDWIDTH

    def allows(self, height: int | None, bitrate: int | None) -> bool:
        """None (unknown, or audio with no height) passes that limit."""
        if self.max_height is not None and height is not None and height > self.max_height:
            return False
        if self.max_bitrate is not None and bitrate is not None and bitrate > self.max_bitrate:
            return False
        return True

    def tighten(self, other: "FlavorLimits") -> "FlavorLimits":
        return FlavorLimits(_min(self.max_height, other.max_height), _min(self.max_bitrate, other.max_bitrate))

    @property
    def limited(self) -> bool:
        return self.max_height is not None or self.max_bitrate is not None

    def describe(self) -> str:
        parts = []
        if self.max_height is not None:
            parts.append(f"max_height {self.max_height}")
        if self.max_bitrate is not None:
            parts.append(f"max_bitrate {self.max_bitrate}")
        return f"limit_flavors ({', '.join(parts) or 'none'})"


NO_LIMITS = FlavorLimits()

Action = Allow | Continue | Block | Preview | FlavorLimits


# --- rules and profiles -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    conditions: tuple[Condition, ...]
    actions: tuple[Action, ...]
    name: str | None = None

    def __post_init__(self) -> None:
        problem = rule_problem(self.actions)
        if problem:
            raise ValueError(problem)

    @cached_property
    def continues(self) -> bool:
        return any(isinstance(a, Continue) for a in self.actions)

    @cached_property
    def block(self) -> Block | None:
        return next((a for a in self.actions if isinstance(a, Block)), None)

    @cached_property
    def requires_token(self) -> bool:
        """Blocks requests without a valid token: has the condition "not has a valid token"."""
        return any(isinstance(c, Authenticated) and c.negated for c in self.conditions)

    @cached_property
    def description(self) -> str:
        when = " and ".join(c.description for c in self.conditions) or "always"
        return f"if {when} then {', '.join(a.describe() for a in self.actions)}"


def rule_problem(actions: Sequence[Action]) -> str | None:
    """Why an action list is contradictory, or None."""
    if not actions:
        return "a rule needs at least one action"
    kinds = [type(a) for a in actions]
    if len(set(kinds)) != len(kinds):
        return "each action may appear once in a rule"
    if Block in kinds and len(kinds) > 1:
        return "block ends the decision: it cannot be combined with other actions"
    if Allow in kinds and Continue in kinds:
        return "allow decides and continue goes on: use one of them"
    return None


@dataclass(frozen=True)
class Profile:
    name: str
    rules: tuple[Rule, ...] = ()
    description: str = ""
    encryption: str | None = None  # the HLS encryption of its entries; None: the partner's (docs/CONTENT_PROTECTION.md)

    @cached_property
    def uses_country(self) -> bool:
        return any(isinstance(c, CountryIn) for r in self.rules for c in r.conditions)


OPEN_PROFILE = Profile("open", (), "no rules: everything is allowed")


@dataclass(frozen=True)
class EntryWindow:
    """When an entry may be played at all: ``available_from <= now < available_until``."""

    available_from: datetime | None = None
    available_until: datetime | None = None

    def refusal(self, now: datetime) -> tuple[str, str] | None:
        if self.available_from is not None and now < self.available_from:
            return NOT_YET_AVAILABLE, f"the entry is available from {_iso(self.available_from)} (now {_iso(now)})"
        if self.available_until is not None and now >= self.available_until:
            return ENTRY_EXPIRED, f"the entry was available until {_iso(self.available_until)} (now {_iso(now)})"
        return None


# --- the decision -------------------------------------------------------------------------------


class RuleTrace(NamedTuple):
    index: int  # 0-based, as in the config's rules[i]
    description: str
    matched: bool
    conditions: tuple[ConditionTrace, ...]
    decisive: bool  # this rule decided (block, or a match without continue)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    status: int  # 200 or 403
    reason: str
    detail: str
    preview_seconds: Fraction | None = None
    limits: FlavorLimits = NO_LIMITS
    rule: int | None = None  # index of the deciding rule
    profile: str = ""
    trace: tuple[RuleTrace, ...] = ()
    rules_total: int = 0
    window_checked: str | None = None  # what the entry window said, when there is one

    def to_dict(self) -> dict[str, object]:
        """JSON for the admin API's explain (and the 403 body's "error" is ``reason``)."""
        return {
            "allowed": self.allowed,
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "preview_seconds": None if self.preview_seconds is None else float(self.preview_seconds),
            "limits": {"max_height": self.limits.max_height, "max_bitrate": self.limits.max_bitrate},
            "profile": self.profile,
            "rule": self.rule,
            "entry_window": self.window_checked,
            "rules": [
                {
                    "index": rt.index,
                    "rule": rt.description,
                    "matched": rt.matched,
                    "decisive": rt.decisive,
                    "conditions": [{"condition": c.description, "held": c.held, "why": c.why} for c in rt.conditions],
                }
                for rt in self.trace
            ],
            "explanation": self.explanation(),
        }

    def explanation(self) -> list[str]:
        """Lines for `vodgate access explain` and /admin/: every rule tried, every condition."""
        lines = [f"profile {self.profile!r} ({self.rules_total} rule{'s' if self.rules_total != 1 else ''})"]
        if self.window_checked:
            lines.append(f"entry window: {self.window_checked}")
        for rt in self.trace:
            label = "DECIDED" if rt.decisive else ("matched, continue" if rt.matched else "no match")
            lines.append(f"rule {rt.index}: {label}: {rt.description}")
            for ct in rt.conditions:
                lines.append(f"    [{'x' if ct.held else ' '}] {ct.description}: {ct.why}")
        if self.rule is not None and self.rule + 1 < self.rules_total:
            rest = f"rule {self.rule + 1}" if self.rule + 2 == self.rules_total else f"rules {self.rule + 1}-{self.rules_total - 1}"
            lines.append(f"{rest}: not evaluated (rule {self.rule} decided)")
        elif self.rule is None and not self.allowed and self.rules_total:  # refused by the entry window
            lines.append("rules: not evaluated (outside the entry's availability window)")
        verdict = "ALLOW" if self.allowed else f"DENY {self.status}"
        lines.append(f"=> {verdict} {self.reason}: {self.detail}")
        if self.allowed and self.preview_seconds is not None:
            lines.append(f"   preview: first {_seconds(self.preview_seconds)} s only")
        if self.allowed and self.limits.limited:
            lines.append(f"   {self.limits.describe()}")
        return lines


def decide(profile: Profile, facts: Facts, now: datetime, entry_window: EntryWindow | None = None) -> Decision:
    """The access decision for one request. Pure: same inputs, same decision."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime (e.g. datetime.now(timezone.utc))")
    total = len(profile.rules)
    window_note = None
    if entry_window is not None:
        refusal = entry_window.refusal(now)
        if refusal is not None:
            return Decision(False, 403, refusal[0], refusal[1], profile=profile.name, rules_total=total, window_checked=refusal[1])
        window_note = "inside the availability window"
    preview: Fraction | None = None
    limits = NO_LIMITS
    traces: list[RuleTrace] = []
    for index, rule in enumerate(profile.rules):
        results = tuple([c.evaluate(facts, now) for c in rule.conditions])
        if not all([r.held for r in results]):
            traces.append(RuleTrace(index, rule.description, False, results, False))
            continue
        block = rule.block
        if block is not None:
            traces.append(RuleTrace(index, rule.description, True, results, True))
            reason = block.reason or _default_block_reason(rule, facts)
            detail = f"blocked by rule {index}" + (f" ({rule.name})" if rule.name else "")
            if reason.startswith("token_") and facts.token is not None and not facts.token.valid:
                detail += f": {facts.token.detail}"
            elif reason == TOKEN_REQUIRED:
                detail += ": the request carries no token"
            return Decision(False, 403, reason, detail, None, NO_LIMITS, index, profile.name, tuple(traces), total, window_note)
        for action in rule.actions:
            if isinstance(action, Preview):
                preview = action.seconds if preview is None else min(preview, action.seconds)
            elif isinstance(action, FlavorLimits):
                limits = limits.tighten(action)
        if rule.continues:
            traces.append(RuleTrace(index, rule.description, True, results, False))
            continue
        traces.append(RuleTrace(index, rule.description, True, results, True))
        detail = f"allowed by rule {index}" + (f" ({rule.name})" if rule.name else "")
        return Decision(True, 200, ALLOWED_BY_RULE, detail, preview, limits, index, profile.name, tuple(traces), total, window_note)
    detail = "no rule decided" if total else "the profile has no rules"
    return Decision(True, 200, ALLOWED_BY_DEFAULT, detail, preview, limits, None, profile.name, tuple(traces), total, window_note)


def _default_block_reason(rule: Rule, facts: Facts) -> str:
    if rule.requires_token:
        if facts.token is None:
            return TOKEN_REQUIRED
        if not facts.token.valid:
            return facts.token.reason
    return BLOCKED_BY_RULE


# --- small helpers ------------------------------------------------------------------------------


def clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}" + (f":{seconds % 60:02d}" if seconds % 60 else "")


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
