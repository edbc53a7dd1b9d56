"""AccessControl.check(): request facts -> decision, end to end (client IP, GeoIP, token, profile)."""

import tomllib
from datetime import datetime, timezone

import pytest

from auth.access import AccessControl, propagation_query
from auth.tokens import FoundToken, sign_akamai, sign_native
from config.partners import parse_access, profile_from_dict
from config.settings import ConfigError

mmdb_writer = pytest.importorskip("mmdb_writer")
from netaddr import IPSet  # noqa: E402

K1 = "00112233445566778899aabbccddeeff"
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)
EXP = int(NOW.timestamp()) + 3600
MASTER = "/p/demo/e/ladder/hls/master.m3u8"

CONFIG = f'''
[server]
trusted_proxies = ["10.0.0.0/8"]
geoip_database = "country.mmdb"

[partners.demo]
admin_secret = "correct-horse-battery-staple"
token_keys = {{ k1 = "{K1}" }}
default_profile = "geo"

[partners.demo.profiles.geo]
rules = [
  {{ if = {{ country = ["GB"] }}, then = ["allow"] }},
  {{ if = {{ referrer = ["*.example.com"] }}, then = [{{ preview = 30 }}] }},
  {{ then = [{{ block = "geo_blocked" }}] }},
]

[partners.demo.profiles.paid]
rules = [ {{ unless = {{ authenticated = true }}, then = ["block"] }} ]

[partners.demo.entries.premium]
profile = "paid"

[partners.demo.entries.future]
profile = "paid"
available_from = 2027-01-01T00:00:00Z
'''


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    folder = tmp_path_factory.mktemp("access")
    writer = mmdb_writer.MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    writer.insert_network(IPSet(["81.2.69.0/24"]), {"country": {"iso_code": "GB"}})
    writer.insert_network(IPSet(["89.160.20.0/24"]), {"country": {"iso_code": "SE"}})
    writer.to_db_file(str(folder / "country.mmdb"))
    config = parse_access(tomllib.loads(CONFIG), "test.toml", folder)
    ctl = AccessControl.from_config(config)
    yield ctl
    ctl.close()


def check(control, entry="ladder", path=MASTER, **kw):
    args = {"peer": "89.160.20.5", "now": NOW} | kw
    return control.check("demo", entry, path, **args)


def test_country_from_the_socket_peer(control):
    assert check(control, peer="81.2.69.9").decision.reason == "allowed_by_rule"
    blocked = check(control, peer="89.160.20.5")
    assert (blocked.decision.status, blocked.decision.reason, blocked.facts.country) == (403, "geo_blocked", "SE")


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(control):
    spoofed = check(control, peer="89.160.20.5", forwarded_for="81.2.69.9")
    assert str(spoofed.facts.client_ip) == "89.160.20.5" and spoofed.decision.reason == "geo_blocked"


def test_forwarded_for_behind_a_trusted_proxy(control):
    proxied = check(control, peer="10.0.0.2", forwarded_for="89.160.20.5, 81.2.69.9")
    assert str(proxied.facts.client_ip) == "81.2.69.9" and proxied.decision.allowed


def test_referrer_preview(control):
    result = check(control, referer="https://www.example.com/watch")
    assert result.decision.allowed and result.decision.preview_seconds == 30
    assert not check(control, referer="https://evil-example.com/").decision.allowed


def test_token_profile(control):
    key = bytes.fromhex(K1)
    assert check(control, "premium", "/p/demo/e/premium/hls/master.m3u8").decision.reason == "token_required"
    native = sign_native("k1", key, "/p/demo/e/premium", EXP)
    ok = check(control, "premium", "/p/demo/e/premium/hls/hi/seg-1.ts", query={"token": native})
    assert ok.decision.allowed and ok.token_source == "query:token" and ok.propagate == f"token={native}"
    wrong = check(control, "premium", "/p/demo/e/premium/hls/master.m3u8", query={"token": sign_native("k1", key, "/p/demo/e/premiumx", EXP)})
    assert wrong.decision.reason == "token_wrong_path"
    akamai = sign_akamai(key, EXP, acl="/p/demo/e/premium/*")
    via_cookie = check(control, "premium", "/p/demo/e/premium/hls/master.m3u8", cookies={"__hdnts": akamai})
    assert via_cookie.decision.allowed and via_cookie.propagate is None
    expired = check(control, "premium", "/p/demo/e/premium/hls/master.m3u8", query={"hdnts": akamai},
                    now=datetime(2026, 7, 2, tzinfo=timezone.utc))
    assert expired.decision.reason == "token_expired"


def test_entry_window(control):
    key = bytes.fromhex(K1)
    native = sign_native("k1", key, "/p/demo/e/future", EXP)
    result = check(control, "future", "/p/demo/e/future/hls/master.m3u8", query={"token": native})
    assert (result.decision.status, result.decision.reason) == (403, "not_yet_available")


def test_unconfigured_partner_is_open(control):
    result = control.check("someone", "x", "/p/someone/e/x/hls/master.m3u8", peer="89.160.20.5", now=NOW,
                           query={"token": "garbage"})
    assert result.decision.allowed and result.facts.token is None


def test_profiles_replaced_while_serving(control):
    original = control.partner("demo").profiles["geo"]
    assert not check(control, peer="89.160.20.5").decision.allowed
    profile = profile_from_dict("geo", {"rules": [{"if": {"country": ["SE"]}, "then": ["allow"]}]}, geoip_configured=True)
    control.replace_profile("demo", profile)
    try:
        assert check(control, peer="89.160.20.5").decision.allowed
        with pytest.raises(ConfigError, match="in use"):
            control.delete_profile("demo", "geo")
    finally:
        control.replace_profile("demo", original)
    assert not check(control, peer="89.160.20.5").decision.allowed


def test_admin_secret(control):
    assert control.admin_allowed("demo", "correct-horse-battery-staple")
    assert not control.admin_allowed("demo", "correct-horse-battery-stapl")
    assert not control.admin_allowed("demo", None)
    assert not control.admin_allowed("nobody", "correct-horse-battery-staple")


def test_missing_geoip_database_stops_startup(tmp_path):
    config = parse_access(tomllib.loads('[server]\ngeoip_database = "missing.mmdb"'), "t", tmp_path)
    with pytest.raises(ConfigError, match="server.geoip_database: GeoIP database .*missing.mmdb does not exist"):
        AccessControl.from_config(config)


def test_propagation_query_quotes_what_must_be():
    assert propagation_query(None) is None
    assert propagation_query(FoundToken("a.b", "cookie:vodgate_token")) is None
    assert propagation_query(FoundToken("exp=1~acl=/p/*~hmac=ab", "query:hdnts")) == "hdnts=exp=1~acl=/p/*~hmac=ab"
    assert propagation_query(FoundToken("a&b c+d", "query:token")) == "token=a%26b%20c%2Bd"
