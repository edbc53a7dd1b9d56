"""config/partners.py: the TOML schema, and errors that name the key path, the value and the fix."""

import json
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from auth.rules import Authenticated, CountryIn, FlavorLimits, Preview, RecurringWindow, Schedule
from config.partners import Partner, load_access, parse_access, parse_partners, profile_from_dict, profile_to_dict
from config.settings import ConfigError

K1 = "00112233445566778899aabbccddeeff"
K2 = "ffeeddccbbaa99887766554433221100ffeeddcc"

EXAMPLE = f'''
[server]
trusted_proxies = ["10.0.0.0/8", "2001:db8:ffff::/48"]
geoip_database = "GeoLite2-Country.mmdb"
token_clock_skew = 15

[partners.demo]
admin_secret = "correct-horse-battery-staple"
token_keys = {{ k1 = "{K1}", k2 = "{K2}" }}
token_signing_key = "k2"
token_ipv6_prefix = 56
default_profile = "geo"

[partners.demo.profiles.open]
rules = []

[partners.demo.profiles.geo]
description = "North America, or a preview from our sites"
rules = [
  {{ if = {{ country = ["US", "CA"], not = false }}, then = ["allow"] }},
  {{ if = {{ referrer = ["*.example.com"] }}, then = [{{ preview = 30 }}] }},
  {{ then = [{{ block = "geo_blocked" }}] }},
]

[partners.demo.profiles.paid]
rules = [
  {{ name = "subscribers", unless = {{ authenticated = true }}, then = ["block"] }},
  {{ if = {{ schedule = [{{ time = "18:00-20:00", tz = "Europe/Paris" }}, {{ days = ["sat", "sun"], time = "22:00-02:00", tz = "UTC" }}] }}, then = [{{ limit_flavors = {{ max_height = 720, max_bitrate = 3_000_000 }} }}, "continue"] }},
  {{ if = {{ ip = ["192.0.2.0/24", "2001:db8::/32"], user_agent = "(?i)smart-?tv" }}, then = [{{ preview = 12.5 }}] }},
  {{ if = {{ schedule = {{ from = 2026-01-01T00:00:00Z, until = 2026-02-01T00:00:00+01:00 }} }}, then = ["allow"] }},
]

[partners.demo.entries.ladder]
profile = "paid"
available_from = 2026-01-01T00:00:00Z
available_until = 2027-01-01T00:00:00Z

[partners.other]
'''


def parse(text: str, base=Path("/etc/vodgate")):
    return parse_access(tomllib.loads(text), "vodgate.toml", base)


def test_example_parses():
    config = parse(EXAMPLE)
    assert [str(n) for n in config.trusted_proxies] == ["10.0.0.0/8", "2001:db8:ffff::/48"]
    assert config.geoip_database == Path("/etc/vodgate/GeoLite2-Country.mmdb")
    assert config.token_clock_skew == 15
    demo = config.partners["demo"]
    assert demo.keys.key_ids == ["k1", "k2"] and demo.keys.signing_kid() == "k2" and demo.keys.ipv6_prefix == 56
    assert demo.keys.keys["k1"] == bytes.fromhex(K1)
    assert demo.profile_for("ladder").name == "paid" and demo.profile_for("anything").name == "geo"
    assert demo.entry_window("ladder").available_until == datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert demo.entry_window("other") is None
    paid = demo.profiles["paid"]
    assert paid.rules[0].name == "subscribers" and paid.rules[0].conditions == (Authenticated(negated=True),)
    schedule = paid.rules[1].conditions[0]
    assert isinstance(schedule, Schedule) and schedule.windows[1] == RecurringWindow(22 * 3600, 2 * 3600, "UTC", frozenset({5, 6}))
    assert paid.rules[1].actions[0] == FlavorLimits(720, 3_000_000)
    assert paid.rules[2].actions == (Preview(__import__("fractions").Fraction(25, 2)),)
    other = config.partners["other"]
    assert other.default_profile == "open" and other.profile_for("x").rules == () and other.keys.key_ids == []


def test_secrets_are_not_in_reprs():
    config = parse(EXAMPLE)
    text = repr(config)
    assert K1 not in text and "correct-horse" not in text and repr(bytes.fromhex(K1)) not in text


def test_empty_config_has_no_partners():
    config = parse_access({}, "x", Path("."))
    assert dict(config.partners) == {} and config.trusted_proxies == () and config.geoip_database is None


def test_load_access_reads_a_file(tmp_path):
    path = tmp_path / "vodgate.toml"
    path.write_text(EXAMPLE)
    assert load_access(path).geoip_database == tmp_path / "GeoLite2-Country.mmdb"
    with pytest.raises(ConfigError, match="does not exist"):
        load_access(tmp_path / "missing.toml")


def test_profile_round_trip_through_json():
    config = parse(EXAMPLE)
    for profile in config.partners["demo"].profiles.values():
        data = json.loads(json.dumps(profile_to_dict(profile)))
        assert profile_from_dict(profile.name, data, geoip_configured=True) == profile


def test_profile_to_dict_is_readable():
    geo = parse(EXAMPLE).partners["demo"].profiles["geo"]
    assert profile_to_dict(geo) == {
        "description": "North America, or a preview from our sites",
        "rules": [
            {"if": {"country": ["CA", "US"]}, "then": ["allow"]},
            {"if": {"referrer": ["*.example.com"]}, "then": [{"preview": 30}]},
            {"then": [{"block": "geo_blocked"}]},
        ],
    }


def test_not_negates_a_single_condition():
    p = profile_from_dict("x", {"rules": [{"if": {"country": ["US"], "not": True}, "then": ["block"]}]}, geoip_configured=True)
    assert p.rules[0].conditions == (CountryIn(codes=frozenset({"US"}), negated=True),)
    assert profile_to_dict(p)["rules"][0] == {"unless": {"country": ["US"]}, "then": ["block"]}


def test_partner_profile_edits():
    demo = parse(EXAMPLE).partners["demo"]
    new = profile_from_dict("late", {"rules": [{"then": ["allow"]}]}, geoip_configured=False)
    edited = demo.with_profile(new)
    assert "late" in edited.profiles and "late" not in demo.profiles
    assert "late" not in edited.without_profile("late").profiles
    with pytest.raises(ConfigError, match=r"in use by partners.demo.default_profile"):
        demo.without_profile("geo")
    with pytest.raises(ConfigError, match=r"in use by partners.demo.entries.ladder.profile"):
        demo.without_profile("paid")
    with pytest.raises(ConfigError, match="no profile 'nope'"):
        demo.without_profile("nope")


# --- errors name the key path, the value and the fix ------------------------------------------------------


def rules(*items: str, geo=True) -> str:
    server = '[server]\ngeoip_database = "g.mmdb"\n' if geo else ""
    return f'{server}[partners.demo]\ntoken_keys = {{ k1 = "{K1}" }}\n[partners.demo.profiles.geo]\nrules = [\n' + ",\n".join(items) + "\n]\n"


@pytest.mark.parametrize("toml, message", [
    (rules('{ if = { country = ["UK"] }, then = ["allow"] }'),
     "vodgate.toml: partners.demo.profiles.geo.rules[0].if.country has value ['UK']; expected ISO codes: the United Kingdom is \"GB\""),
    (rules('{ then = ["allow"] }', '{ if = { country = ["USA"] }, then = ["allow"] }'),
     "vodgate.toml: partners.demo.profiles.geo.rules[1].if.country has value ['USA']; expected a list of ISO 3166-1 alpha-2 codes"),
    (rules('{ if = { country = ["US"] }, then = ["allow"] }', geo=False),
     "vodgate.toml: partners.demo.profiles.geo.rules[0].if.country needs a GeoIP database, and none is configured; set server.geoip_database"),
    (rules('{ if = { referrer = ["https://example.com/"] }, then = ["allow"] }'),
     "partners.demo.profiles.geo.rules[0].if.referrer has value 'https://example.com/'; expected a host name only"),
    (rules('{ if = { referrer = ["*example.com"] }, then = ["allow"] }'),
     'use "*.example.com" for any host under example.com'),
    (rules('{ if = { ip = ["10.0.0.1/8"] }, then = ["allow"] }'),
     "partners.demo.profiles.geo.rules[0].if.ip has value '10.0.0.1/8', which has host bits set; did you mean 10.0.0.0/8?"),
    (rules('{ if = { ip = ["10.0.0/8"] }, then = ["allow"] }'),
     "partners.demo.profiles.geo.rules[0].if.ip has value '10.0.0/8'; expected an IP address or CIDR"),
    (rules('{ if = { user_agent = "(unclosed" }, then = ["allow"] }'),
     "partners.demo.profiles.geo.rules[0].if.user_agent has value '(unclosed', which is not a valid regular expression"),
    (rules('{ if = { schedule = { time = "18:00-20:00", tz = "Europe/Pariss" } }, then = ["allow"] }'),
     "partners.demo.profiles.geo.rules[0].if.schedule.tz has value 'Europe/Pariss'; expected an IANA time zone name"),
    (rules('{ if = { schedule = { time = "18h-20h", tz = "UTC" } }, then = ["allow"] }'),
     "partners.demo.profiles.geo.rules[0].if.schedule.time has value '18h-20h'; expected \"HH:MM-HH:MM\""),
    (rules('{ if = { schedule = { time = "18:00-18:00", tz = "UTC" } }, then = ["allow"] }'),
     'an empty window; use "00:00-24:00" for the whole day'),
    (rules('{ if = { schedule = [{ time = "18:00-20:00", tz = "UTC", days = ["funday"] }] }, then = ["allow"] }'),
     "partners.demo.profiles.geo.rules[0].if.schedule[0].days has value ['funday']; expected a list of weekdays"),
    (rules('{ if = { schedule = { from = 2026-01-01T00:00:00 } }, then = ["allow"] }'),
     "partners.demo.profiles.geo.rules[0].if.schedule.from has value 2026-01-01T00:00:00, which has no time zone; add Z (UTC) or an offset"),
    (rules('{ if = { schedule = { from = 2026-02-01T00:00:00Z, until = 2026-01-01T00:00:00Z } }, then = ["allow"] }'),
     "partners.demo.profiles.geo.rules[0].if.schedule.until (2026-01-01T00:00:00Z) is not after from"),
    (rules('{ if = { country = ["US"], referrer = ["a.com"], not = true }, then = ["allow"] }'),
     'partners.demo.profiles.geo.rules[0].if.not negates a single condition, but partners.demo.profiles.geo.rules[0].if has 2 (country, referrer); move the ones to negate to "unless"'),
    (rules('{ if = { colour = "red" }, then = ["allow"] }'),
     "unknown key(s) partners.demo.profiles.geo.rules[0].if.colour; known: authenticated, country"),
    (rules('{ if = { country = ["US"] } }'),
     'partners.demo.profiles.geo.rules[0] has no "then"; add the actions'),
    (rules('{ then = ["allow", "continue"] }'),
     "partners.demo.profiles.geo.rules[0].then has value ['allow', 'continue']; allow decides and continue goes on"),
    (rules('{ then = [{ block = "x" }, { preview = 3 }] }'),
     "block ends the decision: it cannot be combined with other actions"),
    (rules('{ then = ["deny"] }'),
     "partners.demo.profiles.geo.rules[0].then[0] has value 'deny'; expected a list of actions"),
    (rules('{ then = [{ block = "Geo Blocked" }] }'),
     "partners.demo.profiles.geo.rules[0].then[0].block has value 'Geo Blocked'; expected a reason code"),
    (rules('{ then = [{ preview = 0 }] }'),
     'partners.demo.profiles.geo.rules[0].then[0].preview has value 0; expected more than 0 seconds (to refuse playback, use "block")'),
    (rules('{ then = [{ limit_flavors = { max_height = "720p" } }] }'),
     "partners.demo.profiles.geo.rules[0].then[0].limit_flavors.max_height has value '720p'; expected a positive integer (pixels"),
    (rules('{ then = [{ limit_flavors = { max_width = 1280 } }] }'),
     "unknown key(s) partners.demo.profiles.geo.rules[0].then[0].limit_flavors.max_width"),
    (rules('{ if = { authenticated = "yes" }, then = ["allow"] }'),
     "partners.demo.profiles.geo.rules[0].if.authenticated has value 'yes'; expected true (has a valid token) or false"),
])
def test_rule_errors(toml, message):
    with pytest.raises(ConfigError) as info:
        parse(toml)
    assert message in str(info.value)


@pytest.mark.parametrize("toml, message", [
    ('[server]\ntrusted_proxies = "10.0.0.0/8"', "vodgate.toml: server.trusted_proxies has value '10.0.0.0/8'; expected a list of addresses or CIDRs"),
    ("[server]\ntoken_clock_skew = -1", "vodgate.toml: server.token_clock_skew has value -1; expected whole seconds between 0 and 3600"),
    ("[server]\ngeoip_database = 3", "vodgate.toml: server.geoip_database has value 3; expected a path"),
    ("[partners.demo]\nadmin_secret = \"short\"", "partners.demo.admin_secret is a secret of 5 characters; expected a string of at least 16 characters"),
    ('[partners.demo]\ntoken_keys = { k1 = "abc" }', "partners.demo.token_keys.k1 is not an even number of hex digits"),
    ('[partners.demo]\ntoken_keys = { k1 = "abcd" }', "partners.demo.token_keys.k1 is 2 bytes; expected at least 16 bytes (32 hex digits)"),
    (f'[partners.demo]\ntoken_keys = {{ "k 1" = "{K1}" }}', "partners.demo.token_keys: key id 'k 1' must be 1-32 characters"),
    (f'[partners.demo]\ntoken_keys = {{ k1 = "{K1}" }}\ntoken_signing_key = "k2"', "partners.demo.token_signing_key has value 'k2'; expected one of the ids in partners.demo.token_keys: ['k1']"),
    ("[partners.demo]\ntoken_ipv6_prefix = 129", "partners.demo.token_ipv6_prefix has value 129; expected a prefix length 1-128"),
    ('[partners.demo]\ntoken_formats = ["jwt"]', "partners.demo.token_formats has value ['jwt']; expected a non-empty list of 'vodgate', 'akamai'"),
    ('[partners.demo]\ndefault_profile = "geo"', "partners.demo.default_profile has value 'geo'; expected the name of a profile of this partner: ['open']"),
    ('[partners.demo]\ncolour = "red"', "unknown key(s) partners.demo.colour; known: admin_secret"),
    ('[partners."de mo"]', "partners.de mo: partner id 'de mo' must be 1-64 characters"),
    ('[partners.demo.entries.ladder]\nprofile = "nope"', "partners.demo.entries.ladder.profile has value 'nope'; expected the name of a profile of this partner: ['open']"),
    ("[partners.demo.entries.ladder]\navailable_from = 2026-01-01", "partners.demo.entries.ladder.available_from has value datetime.date(2026, 1, 1); expected a date and time with a zone"),
    ("[partners.demo.entries.ladder]\navailable_from = 2026-02-01T00:00:00Z\navailable_until = 2026-01-01T00:00:00Z", "partners.demo.entries.ladder.available_until (2026-01-01T00:00:00Z) is not after available_from"),
    ('[partners.demo.profiles.paid]\nrules = [ { unless = { authenticated = true }, then = ["block"] } ]', "partners.demo.profiles.paid.rules[0].unless.authenticated: token checks need keys, and this partner has none"),
    ('[partners.demo.profiles.x]\nrules = { then = ["allow"] }', "partners.demo.profiles.x.rules has value {'then': ['allow']}; expected a list of rules"),
])
def test_partner_and_server_errors(toml, message):
    with pytest.raises(ConfigError) as info:
        parse(toml)
    assert message in str(info.value)


def test_secret_values_are_never_echoed():
    with pytest.raises(ConfigError) as info:
        parse('[partners.demo]\ntoken_keys = { k1 = "0123456789abcdef0123456789abcdeZ" }')
    assert "0123456789abcdef" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse('[partners.demo]\nadmin_secret = "hunter2"')
    assert "hunter2" not in str(info.value)


def test_admin_api_errors_name_the_field():
    with pytest.raises(ConfigError) as info:
        profile_from_dict("geo", {"rules": [{"then": ["allow"]}, {"if": {"ip": ["nope"]}, "then": ["allow"]}]},
                          where="partners.demo.profiles.geo", geoip_configured=False)
    assert str(info.value).startswith("admin API: partners.demo.profiles.geo.rules[1].if.ip has value 'nope'")
    with pytest.raises(ConfigError, match="profile name 'a b' must be"):
        profile_from_dict("a b", {"rules": []}, geoip_configured=False)
    p = profile_from_dict("w", {"rules": [{"if": {"schedule": {"from": "2026-01-01T00:00:00Z"}}, "then": ["allow"]}]}, geoip_configured=False)
    assert p.rules[0].conditions[0].windows[0].start == datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_parse_partners_directly():
    partners = parse_partners({"demo": {"token_keys": {"k1": K1}}}, "x", Path("."), geoip_configured=False)
    assert isinstance(partners["demo"], Partner) and partners["demo"].keys.key_ids == ["k1"]
