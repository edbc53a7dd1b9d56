"""Native vodgate tokens: valid, expired, not yet valid, tampered (every field), ACL boundaries,
IP binding (IPv4, IPv6 /64), key rotation; where tokens come from; redaction."""

import base64
import hashlib
import hmac
import json
from datetime import datetime, timezone
from ipaddress import ip_address

import pytest

from auth import tokens
from auth.tokens import KeyRing, acl_covers, extract_token, redact, sign_native, verify

K1 = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
K2 = bytes.fromhex("ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100")
KEYS = KeyRing({"k1": K1, "k2": K2})
NOW = 1_780_000_000
ACL = "/p/demo/e/ladder"
MASTER = "/p/demo/e/ladder/hls/master.m3u8"
SEGMENT = "/p/demo/e/ladder/hls/hi/seg-3.ts"
CLIENT = ip_address("203.0.113.7")


def sign(**kw):
    args = {"key_id": "k1", "secret": K1, "acl": ACL, "expires": NOW + 3600} | kw
    return sign_native(args.pop("key_id"), args.pop("secret"), args.pop("acl"), args.pop("expires"), **args)


def check(token, path=MASTER, client=CLIENT, keys=KEYS, now=NOW, skew=30):
    return verify(token, path, client, keys, now, skew)


# --- the format -------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_format_matches_the_documented_construction():
    token = sign(ip="203.0.113.7", session_id="play-1", start=NOW - 10)
    version, kid, claims, mac = token.split(".")
    assert (version, kid) == ("vg1", "k1")
    assert json.loads(unb64(claims)) == {"acl": ACL, "exp": NOW + 3600, "ip": "203.0.113.7/32", "sid": "play-1", "st": NOW - 10}
    expected = hmac.new(K1, f"vg1.k1.{claims}".encode(), hashlib.sha256).digest()
    assert unb64(mac) == expected
    assert all(c.isalnum() or c in "-_." for c in token)  # URL-safe as is


def test_valid_token_covers_master_and_segments():
    token = sign(session_id="abc")
    for path in (MASTER, SEGMENT, "/p/demo/e/ladder/cmaf/hi/init.mp4", "/p/demo/e/ladder/mp4/hi.mp4"):
        result = check(token, path)
        assert result.valid and result.reason == "token_valid", result.detail
    result = check(token)
    assert result.format == "vodgate" and result.key_id == "k1"
    assert result.claims.session_id == "abc" and result.claims.acl == (ACL,) and result.claims.expires == NOW + 3600


def test_expired_with_skew():
    token = sign(expires=NOW)
    assert check(token, now=NOW + 30).valid  # inside the skew
    result = check(token, now=NOW + 31)
    assert (result.valid, result.reason) == (False, "token_expired")
    assert "expired at" in result.detail
    assert check(token, now=NOW + 31, skew=60).valid


def test_not_yet_valid_with_skew():
    token = sign(start=NOW + 100)
    assert check(token, now=NOW + 70).valid
    assert check(token, now=NOW + 69).reason == "token_not_yet_valid"


def test_aware_datetime_clock():
    token = sign()
    assert check(token, now=datetime.fromtimestamp(NOW, timezone.utc)).valid
    with pytest.raises(ValueError, match="aware"):
        check(token, now=datetime(2026, 1, 1))


# --- tampering ----------------------------------------------------------------------------------


def retamper(token: str, **changes) -> str:
    """The same MAC over claims with one field changed (or removed when None)."""
    version, kid, claims, mac = token.split(".")
    data = json.loads(unb64(claims))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return ".".join([version, kid, b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode()), mac])


BASE = dict(ip="203.0.113.7", session_id="s1", start=NOW - 60)


@pytest.mark.parametrize("change", [
    {"exp": NOW + 999999},
    {"acl": "/p/demo"},
    {"acl": "/"},
    {"ip": "0.0.0.0/0"},
    {"ip": None},
    {"sid": "s2"},
    {"st": NOW - 120},
    {"st": None},
    {"extra": 1},
])
def test_tampered_claims_are_bad_signature(change):
    token = retamper(sign(**BASE), **change)
    result = check(token)
    assert (result.valid, result.reason) == (False, "token_bad_signature"), change


def test_tampered_mac_is_bad_signature():
    token = sign(**BASE)
    head, mac = token.rsplit(".", 1)
    flipped = mac[:5] + ("A" if mac[5] != "A" else "B") + mac[6:]
    assert check(f"{head}.{flipped}").reason == "token_bad_signature"


def test_tampered_kid():
    token = sign(**BASE)
    assert check(token.replace("vg1.k1.", "vg1.k2.", 1)).reason == "token_bad_signature"  # another listed key
    assert check(token.replace("vg1.k1.", "vg1.k9.", 1)).reason == "token_unknown_key"


@pytest.mark.parametrize("mangle", [
    lambda t: t.replace("vg1.", "vg2.", 1),
    lambda t: t + ".x",
    lambda t: t.rsplit(".", 1)[0],
    lambda t: t[:-3],  # mac too short
    lambda t: t.replace("vg1.k1.", "vg1.k!1.", 1),
    lambda t: t.replace("vg1.k1.", "vg1.k1.@", 1),
    lambda t: "",
    lambda t: "hello",
    lambda t: t + "A" * 5000,
])
def test_malformed(mangle):
    result = check(mangle(sign()))
    assert (result.valid, result.reason) == (False, "token_malformed")


def test_well_signed_but_unreadable_claims_are_malformed():
    claims = b64(b'{"exp": "soon", "acl": "/p"}')
    mac = b64(hmac.new(K1, f"vg1.k1.{claims}".encode(), hashlib.sha256).digest())
    assert check(f"vg1.k1.{claims}.{mac}").reason == "token_malformed"


def test_signature_is_checked_before_time_and_path():
    forged = retamper(sign(expires=NOW - 9999), acl="/p/other")
    assert check(forged).reason == "token_bad_signature"


# --- ACL --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("acl, path, covered", [
    ("/p/1/e/ab", "/p/1/e/ab", True),
    ("/p/1/e/ab", "/p/1/e/ab/hls/master.m3u8", True),
    ("/p/1/e/ab", "/p/1/e/abc", False),
    ("/p/1/e/ab", "/p/1/e/abc/hls/master.m3u8", False),
    ("/p/1/e/ab", "/p/1/e/a", False),
    ("/p/1/e/ab", "/p/1/e", False),
    ("/p/1/e/ab/", "/p/1/e/ab/hls/master.m3u8", True),
    ("/p/1/e/ab/", "/p/1/e/abc", False),
    ("/p/1", "/p/1/e/anything/hls/master.m3u8", True),
    ("/p/1", "/p/10/e/x", False),
    ("/", "/p/1/e/x", True),
])
def test_acl_prefix_boundaries(acl, path, covered):
    assert acl_covers(acl, path) is covered
    result = check(sign(acl=acl), path)
    assert result.valid is covered
    if not covered:
        assert result.reason == "token_wrong_path"


@pytest.mark.parametrize("path", [
    "/p/demo/e/ladder/../other/hls/master.m3u8",
    "/p/demo/e/ladder/./hls/master.m3u8",
    "/p/demo/e/ladder//hls/master.m3u8",
    "p/demo/e/ladder/hls/master.m3u8",
])
def test_paths_that_could_normalise_elsewhere_are_refused(path):
    assert check(sign(), path).reason == "token_wrong_path"


# --- IP binding -------------------------------------------------------------------------------------


def test_ipv4_binding():
    token = sign(ip="203.0.113.7")
    assert check(token, client=ip_address("203.0.113.7")).valid
    assert check(token, client=ip_address("::ffff:203.0.113.7")).valid  # dual-stack socket
    result = check(token, client=ip_address("203.0.113.8"))
    assert result.reason == "token_wrong_ip" and "203.0.113.7/32" in result.detail
    assert check(token, client=ip_address("2001:db8::1")).reason == "token_wrong_ip"


def test_ipv4_cidr_binding():
    token = sign(ip="198.51.100.0/24")
    assert check(token, client=ip_address("198.51.100.200")).valid
    assert check(token, client=ip_address("198.51.101.1")).reason == "token_wrong_ip"


def test_ipv6_bound_by_prefix():
    token = sign(ip="2001:db8:1:2:aaaa::1")  # default /64
    assert json.loads(unb64(token.split(".")[2]))["ip"] == "2001:db8:1:2::/64"
    assert check(token, client=ip_address("2001:db8:1:2:bbbb::9")).valid  # privacy address rotated
    assert check(token, client=ip_address("2001:db8:1:3::1")).reason == "token_wrong_ip"
    assert check(token, client=ip_address("203.0.113.7")).reason == "token_wrong_ip"


def test_ipv6_prefix_is_configurable():
    token = sign(ip="2001:db8:1:2::1", ipv6_prefix=48)
    assert check(token, client=ip_address("2001:db8:1:ffff::1")).valid
    assert check(token, client=ip_address("2001:db8:2::1")).reason == "token_wrong_ip"
    exact = sign(ip="2001:db8:1:2::1/128")
    assert check(exact, client=ip_address("2001:db8:1:2::1")).valid
    assert check(exact, client=ip_address("2001:db8:1:2::2")).reason == "token_wrong_ip"


def test_bad_ip_cannot_be_signed():
    with pytest.raises(tokens.TokenError, match="not an IP address"):
        sign(ip="example.com")


# --- key rotation -------------------------------------------------------------------------------------


def test_key_rotation():
    old = sign(key_id="k1", secret=K1)
    new = sign(key_id="k2", secret=K2)
    both = KeyRing({"k1": K1, "k2": K2})
    assert check(old, keys=both).valid and check(new, keys=both).valid
    after = KeyRing({"k2": K2, "k3": K1[::-1]})  # k1 retired
    assert check(old, keys=after).reason == "token_unknown_key"
    assert check(new, keys=after).valid
    assert check(old, keys=KeyRing({})).reason == "token_unknown_key"


def test_same_kid_other_secret_is_bad_signature():
    assert check(sign(), keys=KeyRing({"k1": K2})).reason == "token_bad_signature"


def test_formats_can_be_restricted():
    assert check(sign(), keys=KeyRing({"k1": K1}, formats=frozenset({"akamai"}))).reason == "token_malformed"


def test_every_reason_code_is_documented():
    assert set(tokens.REASONS) == {
        "token_malformed", "token_expired", "token_not_yet_valid", "token_bad_signature",
        "token_wrong_path", "token_wrong_ip", "token_unknown_key",
    }


# --- where tokens come from --------------------------------------------------------------------------------


def test_extract_token_precedence():
    assert extract_token({}, {}) is None
    assert extract_token({"token": "a", "hdnts": "b"}, {"vodgate_token": "c"}).source == "query:token"
    assert extract_token({"hdnts": "b"}, {"vodgate_token": "c"}).source == "query:hdnts"
    found = extract_token({"token": ""}, {"vodgate_token": "c", "__hdnts": "d"})
    assert (found.value, found.source) == ("c", "cookie:vodgate_token")
    assert extract_token({}, {"__hdnts": "d"}).source == "cookie:__hdnts"


# --- never logged whole --------------------------------------------------------------------------------------


def test_redaction_hides_mac_ip_and_session():
    token = sign(ip="203.0.113.7", session_id="secret-session")
    shown = redact(token)
    mac = token.rsplit(".", 1)[1]
    assert mac not in shown and "203.0.113" not in shown and "secret-session" not in shown
    assert "kid=k1" in shown and f"exp={NOW + 3600}" in shown and "acl=/p/demo/e/ladder" in shown
    assert shown == redact(token)  # stable fingerprint: correlates log lines
    result = check(token, client=ip_address("198.51.100.1"))
    assert result.redacted == shown
    assert token not in repr(result) and mac not in repr(result)
    assert redact("x" * 50).startswith("<token unrecognised 50 chars #")


def test_keyring_repr_hides_secrets():
    assert K1.hex() not in repr(KEYS) and repr(K1) not in repr(KEYS)
    assert "k1" in repr(KEYS)


def test_documented_worked_example():
    """docs/ACCESS_CONTROL.md quotes these exact values."""
    key = bytes.fromhex("6b2f0a1c9d8e7f60514233241506f7e8d9cabbac9d8e7f60514233241506f7e8")
    token = sign_native("k1", key, "/p/demo/e/ladder", 1782907200, ip="2001:db8:1:2::7", ipv6_prefix=64, session_id="play-42")
    assert token == (
        "vg1.k1.eyJhY2wiOiIvcC9kZW1vL2UvbGFkZGVyIiwiZXhwIjoxNzgyOTA3MjAwLCJpcCI6IjIwMDE6ZGI4OjE6Mjo6LzY0Iiwic2lkIjoicGxheS00MiJ9"
        ".CLO2wjtNRYX6kz403nzFJoK82KTwr5fJ_KzysNwCR30"
    )
    keys = KeyRing({"k1": key})
    at = 1782907200 + 30
    assert verify(token, "/p/demo/e/ladder/hls/hi/seg-3.ts", ip_address("2001:db8:1:2:abcd::1"), keys, at, 30).valid
    assert verify(token, "/p/demo/e/ladder/hls/hi/seg-3.ts", ip_address("2001:db8:1:2:abcd::1"), keys, at + 1, 30).reason == "token_expired"
    assert verify(token, MASTER, ip_address("2001:db8:1:3::1"), keys, at, 30).reason == "token_wrong_ip"
    assert verify(token, "/p/demo/e/ladderx/hls/master.m3u8", ip_address("2001:db8:1:2::1"), keys, at, 30).reason == "token_wrong_path"
    assert redact(token) == "<token vodgate kid=k1 exp=1782907200 acl=/p/demo/e/ladder #11a347d8df>"
    akamai = tokens.sign_akamai(key, 1782907200, acl="/p/demo/e/ladder/*", start=1782903600)
    assert akamai == "st=1782903600~exp=1782907200~acl=/p/demo/e/ladder/*~hmac=81981cf2db1310430fc238e871b4f12a4b166ec4a15c63355e23bed9c42d88e3"


def test_redact_query_for_access_logs():
    token = sign()
    line = f"GET /p/demo/e/ladder/hls/master.m3u8?flavors=hi&token={token}&x=1 HTTP/1.1"
    shown = tokens.redact_query(line)
    assert token not in shown and token.rsplit(".", 1)[1] not in shown
    assert shown.startswith("GET /p/demo/e/ladder/hls/master.m3u8?flavors=hi&token=<redacted #") and shown.endswith("&x=1 HTTP/1.1")
    assert redact(token).split("#")[1].rstrip(">") in shown  # same fingerprint as the redacted token
    assert "hmac" not in tokens.redact_query("hdnts=exp%3D1~acl%3D/*~hmac%3Dab")
    assert tokens.redact_query("mytoken=abc") == "mytoken=abc"
