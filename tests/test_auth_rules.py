"""decide(): each condition alone and negated, rule order, continue, limits, entry windows,
recurring windows across midnight and DST; all with an injected clock."""

import re
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from ipaddress import ip_address, ip_network
from zoneinfo import ZoneInfo

import pytest

from auth.rules import (
    AbsoluteWindow,
    Allow,
    Authenticated,
    Block,
    Continue,
    CountryIn,
    EntryWindow,
    Facts,
    FlavorLimits,
    IpIn,
    Preview,
    Profile,
    RecurringWindow,
    ReferrerIn,
    Rule,
    Schedule,
    UserAgentMatches,
    decide,
    referrer_host,
)
from auth.tokens import TokenResult
from config.partners import profile_from_dict

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)  # a Wednesday
VALID = TokenResult(True, "token_valid", "ok", "vodgate")
EXPIRED = TokenResult(False, "token_expired", "expired at 2026-07-01T11:00:00Z", "vodgate")


def facts(ip="203.0.113.7", country="FR", referrer="www.example.com", ua="Mozilla/5.0", token=None, path="/p/demo/e/x/hls/master.m3u8"):
    return Facts(ip_address(ip), country, referrer, ua, token, path)


def only(condition) -> Profile:
    """Block when the condition holds, else allowed by default."""
    return Profile("t", (Rule((condition,), (Block("hit"),)),))


def holds(condition, f=None, now=NOW) -> bool:
    decision = decide(only(condition), f or facts(), now)
    return not decision.allowed


def test_no_rules_allows():
    d = decide(Profile("open"), facts(), NOW)
    assert (d.allowed, d.status, d.reason, d.preview_seconds, d.limits.limited) == (True, 200, "allowed_by_default", None, False)


# --- each condition alone and negated ---------------------------------------------------------------


@pytest.mark.parametrize("country, expected", [("FR", True), ("US", False), (None, False)])
def test_country(country, expected):
    cond = CountryIn(codes=frozenset({"FR", "BE"}))
    assert holds(cond, facts(country=country)) is expected
    assert holds(CountryIn(codes=frozenset({"FR", "BE"}), negated=True), facts(country=country)) is not expected


def test_unknown_country_is_its_own_value():
    cond = CountryIn(codes=frozenset({"unknown"}))
    assert holds(cond, facts(country=None))
    assert not holds(cond, facts(country="FR"))
    assert holds(CountryIn(codes=frozenset({"FR"}), negated=True), facts(country=None))  # not FR includes unknown


@pytest.mark.parametrize("host, expected", [
    ("www.example.com", True),
    ("a.b.example.com", True),
    ("example.com", False),  # *.example.com is strictly below
    ("evil-example.com", False),
    ("example.com.evil.net", False),
    ("notexample.com", False),
    ("wwwexample.com", False),
    (None, False),
])
def test_referrer_wildcard(host, expected):
    cond = ReferrerIn(patterns=("*.example.com",))
    assert holds(cond, facts(referrer=host)) is expected
    assert holds(ReferrerIn(patterns=("*.example.com",), negated=True), facts(referrer=host)) is not expected


def test_referrer_exact_and_none():
    cond = ReferrerIn(patterns=("example.com", "none"))
    assert holds(cond, facts(referrer="example.com"))
    assert holds(cond, facts(referrer=None))
    assert not holds(cond, facts(referrer="www.example.com"))
    assert not holds(ReferrerIn(patterns=("example.com",)), facts(referrer=None))


@pytest.mark.parametrize("referer, origin, host", [
    ("https://www.Example.com:8443/watch?v=1", None, "www.example.com"),
    (None, "https://player.example.com", "player.example.com"),
    ("https://a.example.com/", "https://b.example.com", "a.example.com"),  # Referer first
    (None, "null", None),
    ("", None, None),
    (None, None, None),
    ("https://example.com./x", None, "example.com"),
    ("https://[2001:db8::1]/x", None, "2001:db8::1"),
    ("not a url", "https://b.example.com", None),
])
def test_referrer_host(referer, origin, host):
    assert referrer_host(referer, origin) == host


@pytest.mark.parametrize("ip, expected", [
    ("192.0.2.10", True),
    ("192.0.3.10", False),
    ("2001:db8:5::1", True),
    ("2001:db9::1", False),
    ("::ffff:192.0.2.10", True),
])
def test_ip_cidr_v4_and_v6(ip, expected):
    nets = (ip_network("192.0.2.0/24"), ip_network("2001:db8::/32"))
    assert holds(IpIn(networks=nets), facts(ip=ip)) is expected
    assert holds(IpIn(networks=nets, negated=True), facts(ip=ip)) is not expected


@pytest.mark.parametrize("ua, expected", [
    ("Mozilla/5.0 (compatible; Googlebot/2.1)", True),
    ("SomeCrawler/1.0", True),
    ("Mozilla/5.0 (iPhone)", False),
    ("", False),
])
def test_user_agent_regex(ua, expected):
    cond = UserAgentMatches(pattern=re.compile(r"(?i)bot\b|crawler"))
    assert holds(cond, facts(ua=ua)) is expected
    assert holds(UserAgentMatches(pattern=re.compile(r"(?i)bot\b|crawler"), negated=True), facts(ua=ua)) is not expected


def test_user_agent_is_matched_on_a_bounded_prefix():
    cond = UserAgentMatches(pattern=re.compile("needle"))
    assert not holds(cond, facts(ua="x" * 2000 + "needle"))


@pytest.mark.parametrize("token, expected", [(VALID, True), (EXPIRED, False), (None, False)])
def test_authenticated(token, expected):
    assert holds(Authenticated(), facts(token=token)) is expected
    assert holds(Authenticated(negated=True), facts(token=token)) is not expected


def test_absolute_schedule():
    window = AbsoluteWindow(datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 7, 2, tzinfo=UTC))
    cond = Schedule(windows=(window,))
    assert holds(cond, now=datetime(2026, 7, 1, tzinfo=UTC))  # start inclusive
    assert holds(cond, now=datetime(2026, 7, 1, 23, 59, 59, tzinfo=UTC))
    assert not holds(cond, now=datetime(2026, 7, 2, tzinfo=UTC))  # end exclusive
    assert not holds(cond, now=datetime(2026, 6, 30, 23, 59, 59, tzinfo=UTC))
    assert holds(Schedule(windows=(window,), negated=True), now=datetime(2026, 7, 3, tzinfo=UTC))
    assert holds(Schedule(windows=(AbsoluteWindow(end=datetime(2026, 7, 2, tzinfo=UTC)),)))
    assert not holds(Schedule(windows=(AbsoluteWindow(start=datetime(2026, 7, 2, tzinfo=UTC)),)))


# --- recurring windows in a named zone ---------------------------------------------------------------------


BLACKOUT = RecurringWindow(18 * 3600, 20 * 3600, "Europe/Paris")


def paris(*args) -> datetime:
    return datetime(*args, tzinfo=PARIS)


@pytest.mark.parametrize("moment, inside", [
    (paris(2026, 1, 15, 17, 59, 59), False),
    (paris(2026, 1, 15, 18, 0), True),  # winter: 17:00 UTC
    (paris(2026, 1, 15, 19, 59, 59), True),
    (paris(2026, 1, 15, 20, 0), False),
    (paris(2026, 7, 15, 18, 30), True),  # summer: 16:30 UTC
    (datetime(2026, 7, 15, 16, 30, tzinfo=UTC), True),
    (datetime(2026, 7, 15, 18, 30, tzinfo=UTC), False),  # 20:30 in Paris
    (datetime(2026, 1, 15, 17, 30, tzinfo=UTC), True),  # 18:30 in Paris
    (datetime(2026, 1, 15, 16, 30, tzinfo=UTC), False),
])
def test_daily_blackout_in_paris(moment, inside):
    assert BLACKOUT.contains(moment) is inside
    assert holds(Schedule(windows=(BLACKOUT,)), now=moment) is inside


def test_blackout_follows_dst_on_the_switch_days():
    # 2026-03-29: Paris goes from UTC+1 to UTC+2 at 01:00 UTC; 2026-10-25 back at 01:00 UTC
    assert BLACKOUT.contains(datetime(2026, 3, 28, 17, 30, tzinfo=UTC))  # 18:30 CET
    assert BLACKOUT.contains(datetime(2026, 3, 29, 16, 30, tzinfo=UTC))  # 18:30 CEST
    assert not BLACKOUT.contains(datetime(2026, 3, 29, 18, 30, tzinfo=UTC))  # 20:30 CEST
    assert BLACKOUT.contains(datetime(2026, 10, 25, 17, 30, tzinfo=UTC))  # 18:30 CET again
    assert not BLACKOUT.contains(datetime(2026, 10, 25, 16, 30, tzinfo=UTC))  # 17:30 CET


def test_window_in_the_skipped_and_repeated_hour():
    night = RecurringWindow(2 * 3600, 3 * 3600, "Europe/Paris")
    spring = [datetime(2026, 3, 29, 0, 0, tzinfo=UTC) + timedelta(minutes=m) for m in range(0, 180, 5)]
    assert not any(night.contains(t) for t in spring)  # 02:00-03:00 does not exist that night
    autumn = [datetime(2026, 10, 25, 0, 0, tzinfo=UTC) + timedelta(minutes=m) for m in range(0, 180, 5)]
    assert sum(night.contains(t) for t in autumn) == 24  # it happens twice: 2 h of 5-minute steps


def test_window_crossing_midnight():
    late = RecurringWindow(22 * 3600, 2 * 3600, "America/New_York")
    ny = ZoneInfo("America/New_York")
    assert late.contains(datetime(2026, 7, 1, 23, 0, tzinfo=ny))
    assert late.contains(datetime(2026, 7, 2, 1, 59, tzinfo=ny))
    assert not late.contains(datetime(2026, 7, 2, 2, 0, tzinfo=ny))
    assert not late.contains(datetime(2026, 7, 1, 21, 59, tzinfo=ny))


def test_weekday_window_crossing_midnight_belongs_to_its_start_day():
    friday_night = RecurringWindow(22 * 3600, 2 * 3600, "Europe/Paris", frozenset({4}))  # fri
    assert friday_night.contains(paris(2026, 7, 3, 23, 0))  # Friday 23:00
    assert friday_night.contains(paris(2026, 7, 4, 1, 30))  # Saturday 01:30, still Friday's window
    assert not friday_night.contains(paris(2026, 7, 4, 23, 0))  # Saturday 23:00
    assert not friday_night.contains(paris(2026, 7, 3, 1, 30))  # Friday 01:30 is Thursday's night


def test_whole_day_weekend_window():
    weekend = RecurringWindow(0, 86400, "UTC", frozenset({5, 6}))
    assert weekend.contains(datetime(2026, 7, 4, 0, 0, tzinfo=UTC))
    assert weekend.contains(datetime(2026, 7, 5, 23, 59, 59, tzinfo=UTC))
    assert not weekend.contains(datetime(2026, 7, 6, 0, 0, tzinfo=UTC))


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="aware"):
        decide(Profile("x"), facts(), datetime(2026, 1, 1))


# --- rule order, continue, actions ------------------------------------------------------------------------------


def geo_profile():
    return profile_from_dict("geo", {"rules": [
        {"if": {"country": ["US", "CA"]}, "then": ["allow"]},
        {"if": {"referrer": ["*.example.com"]}, "then": [{"preview": 30}]},
        {"then": [{"block": "geo_blocked"}]},
    ]}, geoip_configured=True)


def test_first_matching_rule_decides():
    profile = geo_profile()
    us = decide(profile, facts(country="US", referrer="www.example.com"), NOW)
    assert (us.allowed, us.reason, us.rule, us.preview_seconds) == (True, "allowed_by_rule", 0, None)
    fr_site = decide(profile, facts(country="FR", referrer="www.example.com"), NOW)
    assert (fr_site.allowed, fr_site.rule, fr_site.preview_seconds) == (True, 1, Fraction(30))
    fr_other = decide(profile, facts(country="FR", referrer="evil-example.com"), NOW)
    assert (fr_other.allowed, fr_other.status, fr_other.reason, fr_other.rule) == (False, 403, "geo_blocked", 2)


def test_all_conditions_of_a_rule_must_hold():
    rule = Rule((CountryIn(codes=frozenset({"FR"})), ReferrerIn(patterns=("*.example.com",))), (Block(),))
    profile = Profile("p", (rule,))
    assert decide(profile, facts(country="FR", referrer="www.example.com"), NOW).reason == "blocked_by_rule"
    assert decide(profile, facts(country="FR", referrer="other.org"), NOW).allowed
    assert decide(profile, facts(country="US", referrer="www.example.com"), NOW).allowed


def test_continue_accumulates_and_most_restrictive_wins():
    profile = Profile("p", (
        Rule((), (Preview(Fraction(120)), FlavorLimits(max_height=1080), Continue())),
        Rule((ReferrerIn(patterns=("none",)),), (Preview(Fraction(30)), FlavorLimits(max_bitrate=2_000_000), Continue())),
        Rule((CountryIn(codes=frozenset({"FR"})),), (FlavorLimits(max_height=720),)),
        Rule((), (Block(),)),
    ))
    d = decide(profile, facts(country="FR", referrer=None), NOW)
    assert (d.allowed, d.rule, d.reason) == (True, 2, "allowed_by_rule")
    assert d.preview_seconds == 30
    assert (d.limits.max_height, d.limits.max_bitrate) == (720, 2_000_000)
    assert not decide(profile, facts(country="US"), NOW).allowed  # continue rules do not stop a later block


def test_continue_then_nothing_decides_keeps_the_restrictions():
    profile = Profile("p", (Rule((), (Preview(Fraction(45, 2)), Continue())),))
    d = decide(profile, facts(), NOW)
    assert (d.allowed, d.reason, d.preview_seconds) == (True, "allowed_by_default", Fraction(45, 2))


def test_block_after_continue_drops_the_restrictions():
    profile = Profile("p", (Rule((), (Preview(Fraction(30)), Continue())), Rule((), (Block("nope"),))))
    d = decide(profile, facts(), NOW)
    assert (d.allowed, d.status, d.reason, d.preview_seconds) == (False, 403, "nope", None)


def test_limit_flavors():
    limits = FlavorLimits(max_height=720, max_bitrate=3_000_000)
    assert limits.allows(720, 3_000_000) and limits.allows(480, 800_000)
    assert not limits.allows(1080, 2_000_000) and not limits.allows(720, 3_000_001)
    assert limits.allows(None, 128_000)  # audio: no height
    assert FlavorLimits(max_height=720).allows(480, 50_000_000)
    d = decide(Profile("p", (Rule((), (FlavorLimits(max_height=720),)),)), facts(), NOW)
    assert d.allowed and d.limits.allows(720, None) and not d.limits.allows(1080, None)


def test_contradictory_actions_are_refused():
    for actions in [(), (Block(), Preview(Fraction(3))), (Allow(), Continue()), (Allow(), Allow())]:
        with pytest.raises(ValueError):
            Rule((), actions)


# --- token-driven block reasons ---------------------------------------------------------------------


def token_profile():
    return Profile("paid", (Rule((Authenticated(negated=True),), (Block(),)),))


def test_token_required_reasons():
    profile = token_profile()
    assert decide(profile, facts(token=None), NOW).reason == "token_required"
    denied = decide(profile, facts(token=EXPIRED), NOW)
    assert (denied.status, denied.reason) == (403, "token_expired") and "expired at" in denied.detail
    assert decide(profile, facts(token=VALID), NOW).allowed
    explicit = Profile("paid", (Rule((Authenticated(negated=True),), (Block("subscribers_only"),)),))
    assert decide(explicit, facts(token=EXPIRED), NOW).reason == "subscribers_only"


# --- entry availability window ---------------------------------------------------------------------


def test_entry_window_overrides_the_profile():
    window = EntryWindow(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    open_profile = Profile("open")
    before = decide(open_profile, facts(), datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), window)
    assert (before.allowed, before.status, before.reason) == (False, 403, "not_yet_available")
    after = decide(open_profile, facts(), datetime(2027, 1, 1, tzinfo=UTC), window)
    assert (after.allowed, after.reason) == (False, "expired")
    assert decide(open_profile, facts(), datetime(2026, 1, 1, tzinfo=UTC), window).allowed
    allow_all = Profile("p", (Rule((), (Allow(),)),))
    assert decide(allow_all, facts(), datetime(2027, 6, 1, tzinfo=UTC), window).reason == "expired"
    assert decide(open_profile, facts(), datetime(2099, 1, 1, tzinfo=UTC), EntryWindow(datetime(2026, 1, 1, tzinfo=UTC))).allowed
    assert after.explanation()[1:] == [
        "entry window: the entry was available until 2027-01-01T00:00:00Z (now 2027-01-01T00:00:00Z)",
        "=> DENY 403 expired: the entry was available until 2027-01-01T00:00:00Z (now 2027-01-01T00:00:00Z)",
    ]
    late = decide(allow_all, facts(), datetime(2027, 6, 1, tzinfo=UTC), window).explanation()
    assert "rules: not evaluated (outside the entry's availability window)" in late
    custom = decide(Profile("p", (Rule((), (Block("expired"),)),)), facts(), NOW)
    assert "outside the entry" not in "\n".join(custom.explanation())


# --- explanation ---------------------------------------------------------------------------------------------


def test_explanation_lists_every_rule_and_condition():
    profile = profile_from_dict("geo", {"rules": [
        {"name": "north-america", "if": {"country": ["US", "CA"]}, "then": ["allow"]},
        {"if": {"referrer": ["*.example.com"], "user_agent": "Safari"}, "unless": {"ip": ["192.0.2.0/24"]}, "then": [{"preview": 30}]},
        {"if": {"schedule": {"time": "18:00-20:00", "tz": "Europe/Paris"}}, "then": [{"block": "blackout"}]},
        {"then": [{"block": "geo_blocked"}]},
    ]}, geoip_configured=True)
    d = decide(profile, facts(country="FR", referrer="www.example.com", ua="Mozilla Safari"), NOW)
    assert d.allowed and d.rule == 1
    lines = d.explanation()
    text = "\n".join(lines)
    assert lines[0] == "profile 'geo' (4 rules)"
    assert "rule 0: no match: if country in [CA, US] then allow" in text
    assert "    [ ] country in [CA, US]: country is FR" in text
    assert "rule 1: DECIDED:" in text
    assert "    [x] referrer in [*.example.com]: referrer host is www.example.com (matches *.example.com)" in text
    assert "    [x] not ip in [192.0.2.0/24]: client is 203.0.113.7" in text
    assert "rules 2-3: not evaluated (rule 1 decided)" in text
    assert lines[-2:] == ["=> ALLOW allowed_by_rule: allowed by rule 1", "   preview: first 30 s only"]
    as_json = d.to_dict()
    assert as_json["rules"][1]["conditions"][0]["held"] is True and as_json["preview_seconds"] == 30.0

    blackout = decide(profile, facts(country="FR", referrer="other.org"), datetime(2026, 7, 1, 16, 30, tzinfo=UTC))
    text = "\n".join(blackout.explanation())
    assert "[x] time in [daily 18:00-20:00 Europe/Paris]: now is wed 2026-07-01 18:30:00 Europe/Paris (inside daily 18:00-20:00 Europe/Paris)" in text
    assert text.endswith("=> DENY 403 blackout: blocked by rule 2")


def test_decide_is_pure():
    profile = geo_profile()
    f = facts(country="FR", referrer="www.example.com")
    assert decide(profile, f, NOW) == decide(profile, f, NOW)
