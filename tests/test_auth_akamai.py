"""Akamai EdgeAuth (hdnts) tokens against a reference computation written from the published
generator (akamai/EdgeAuth-Token-Python): fields ip, st, exp, acl, id, data in that order, joined by
"~"; for a URL token "url=<path>" is appended to the signed string but not to the token; the key is
hex-decoded; hmac = hex HMAC-SHA256 of the signed string, appended as the last field."""

import binascii
import hashlib
import hmac
from ipaddress import ip_address

import pytest

from auth.tokens import KeyRing, parse_akamai, redact, sign_akamai, verify

KEY_HEX = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
KEY = bytes.fromhex(KEY_HEX)
KEYS = KeyRing({"edge": KEY})
NOW = 1_780_000_000
CLIENT = ip_address("198.51.100.7")
MASTER = "/p/demo/e/ladder/hls/master.m3u8"


def reference(key_hex, *, exp, acl=None, url=None, ip=None, st=None, session_id=None, data=None,
              field_delimiter="~"):
    """An independent EdgeAuth generator (the spec, not vodgate's code)."""
    token = []
    if ip:
        token.append("ip=" + ip)
    if st:
        token.append("st=" + str(st))
    token.append("exp=" + str(exp))
    if url is None:
        token.append("acl=" + acl)
    if session_id:
        token.append("id=" + session_id)
    if data:
        token.append("data=" + data)
    source = token + (["url=" + url] if url is not None else [])
    digest = hmac.new(binascii.a2b_hex(key_hex.encode()), field_delimiter.join(source).encode(), hashlib.sha256).hexdigest()
    return field_delimiter.join(token + ["hmac=" + digest])


def check(token, path=MASTER, client=CLIENT, keys=KEYS, now=NOW):
    return verify(token, path, client, keys, now, 30)


def test_known_answer_computed_with_openssl():
    # printf 'ip=...~data=abc' | openssl dgst -sha256 -mac HMAC -macopt hexkey:a1b2...
    expected = ("ip=198.51.100.7~st=1780000000~exp=1780003600~acl=/p/demo/e/ladder/*~id=session-42~data=abc"
                "~hmac=67c4f7771560cc4292ce5640fb28167c1420e09967822ddb11971ec943b388a3")
    assert reference(KEY_HEX, ip="198.51.100.7", st=1780000000, exp=1780003600, acl="/p/demo/e/ladder/*",
                     session_id="session-42", data="abc") == expected
    assert sign_akamai(KEY, 1780003600, acl="/p/demo/e/ladder/*", ip="198.51.100.7", start=1780000000,
                       session_id="session-42", data="abc") == expected
    result = check(expected)
    assert result.valid and result.format == "akamai" and result.key_id == "edge", result.detail
    assert result.claims.session_id == "session-42" and result.claims.data == "abc"


def test_url_token_known_answer():
    # the url is signed but not carried: exp=1780003600~url=/p/demo/e/ladder/hls/master.m3u8
    token = "exp=1780003600~hmac=b39ee6f8ce50781c2a4fb92bf779fbba24c99e95b20c5c5212dde8c8d70bbcec"
    assert reference(KEY_HEX, exp=1780003600, url=MASTER) == token
    assert sign_akamai(KEY, 1780003600, url=MASTER) == token
    assert check(token).valid
    other = check(token, path="/p/demo/e/ladder/hls/hi/index.m3u8")
    assert other.reason == "token_bad_signature" and "exact URL" in other.detail


@pytest.mark.parametrize("fields", [
    dict(acl="/p/demo/e/ladder/*"),
    dict(acl="/p/demo/*", st=NOW - 5),
    dict(acl="/p/demo/e/ladder/*", ip="198.51.100.7"),
    dict(acl="/p/demo/e/ladder/*", session_id="abc-123"),
    dict(acl="/p/demo/e/ladder/*", data="free-form"),
    dict(acl="/p/demo/e/ladder/hls/master.m3u8!/p/demo/e/ladder/hls/*"),
    dict(url=MASTER),
])
def test_round_trip_against_reference(fields):
    mine = sign_akamai(KEY, NOW + 600, **{("start" if k == "st" else k): v for k, v in fields.items()})
    theirs = reference(KEY_HEX, exp=NOW + 600, **fields)
    assert mine == theirs
    result = check(theirs)
    assert result.valid, result.detail


@pytest.mark.parametrize("acl, path, ok", [
    ("/p/demo/e/ladder/*", "/p/demo/e/ladder/hls/hi/seg-1.ts", True),
    ("/p/demo/e/ladder/*", "/p/demo/e/ladderx/hls/master.m3u8", False),
    ("/p/demo/e/ladder/*", "/p/demo/e/ladder", False),
    ("/p/demo/e/ladder/hls/master.m3u8", "/p/demo/e/ladder/hls/master.m3u8", True),  # no wildcard: exact
    ("/p/demo/e/ladder/hls/master.m3u8", "/p/demo/e/ladder/hls/master.m3u8x", False),
    ("/p/demo/e/*/hls/*", "/p/demo/e/other/hls/x/seg-2.ts", True),
    ("/p/demo/e/ladder/hls/?/index.m3u8", "/p/demo/e/ladder/hls/a/index.m3u8", True),
    ("/p/demo/e/ladder/hls/?/index.m3u8", "/p/demo/e/ladder/hls/ab/index.m3u8", False),
    ("/p/demo/e/a/*!/p/demo/e/b/*", "/p/demo/e/b/hls/master.m3u8", True),  # "!" separates ACLs
    ("/p/demo/e/a/*!/p/demo/e/b/*", "/p/demo/e/c/hls/master.m3u8", False),
    ("/p/demo/e/ladder.*", "/p/demo/e/ladderXhls", False),  # "." is literal
])
def test_acl_wildcards(acl, path, ok):
    result = check(reference(KEY_HEX, exp=NOW + 60, acl=acl), path=path)
    assert result.valid is ok, result.detail
    if not ok:
        assert result.reason == "token_wrong_path"


FULL = dict(exp=NOW + 600, acl="/p/demo/e/ladder/*", ip="198.51.100.7", st=NOW - 60, session_id="s1", data="d")


@pytest.mark.parametrize("field, value", [
    ("exp", str(NOW + 99999)),
    ("acl", "/*"),
    ("ip", "198.51.100.8"),
    ("st", str(NOW - 120)),
    ("id", "s2"),
    ("data", "e"),
])
def test_tampered_field_is_bad_signature(field, value):
    token = reference(KEY_HEX, **FULL)
    parts = [f"{field}={value}" if p.split("=", 1)[0] == field else p for p in token.split("~")]
    tampered = "~".join(parts)
    assert tampered != token
    assert check(tampered, client=ip_address("198.51.100.8")).reason == "token_bad_signature"


def test_removed_or_reordered_fields_are_bad_signature():
    token = reference(KEY_HEX, **FULL)
    parts = token.split("~")
    without_ip = "~".join(p for p in parts if not p.startswith("ip="))
    assert check(without_ip).reason == "token_bad_signature"
    swapped = "~".join([parts[1], parts[0], *parts[2:]])
    assert check(swapped).reason == "token_bad_signature"
    mac = parts[-1][5:]
    flipped = token[:-1] + ("0" if mac[-1] != "0" else "1")
    assert check(flipped).reason == "token_bad_signature"


@pytest.mark.parametrize("token", [
    "exp=1780003600~acl=/*",
    "hmac=" + "0" * 64 + "~exp=1780003600~acl=/*",
    "exp=1780003600~acl=/*~hmac=xyz",
    "exp=soon~acl=/*~hmac=" + "0" * 64,
    "exp=1780003600~exp=1780003601~acl=/*~hmac=" + "0" * 64,
    "exp=1780003600~acl=/*~colour=red~hmac=" + "0" * 64,
    "exp=1780003600~acl=/*~ip=not-an-ip~hmac=" + "0" * 64,
    "acl=/*~hmac=" + "0" * 64 + "~exp=1",
])
def test_malformed(token):
    assert check(token).reason == "token_malformed"


def test_times():
    assert check(reference(KEY_HEX, exp=NOW - 31, acl="/*")).reason == "token_expired"
    assert check(reference(KEY_HEX, exp=NOW - 29, acl="/*")).valid
    assert check(reference(KEY_HEX, exp=NOW + 600, st=NOW + 31, acl="/*")).reason == "token_not_yet_valid"


def test_ip_binding_ipv4_and_ipv6_prefix():
    v4 = reference(KEY_HEX, exp=NOW + 60, acl="/*", ip="198.51.100.7")
    assert check(v4).valid
    assert check(v4, client=ip_address("198.51.100.8")).reason == "token_wrong_ip"
    v6 = reference(KEY_HEX, exp=NOW + 60, acl="/*", ip="2001:db8:1:2::10")
    assert check(v6, client=ip_address("2001:db8:1:2:ffff::1")).valid  # same /64 (the partner's prefix)
    assert check(v6, client=ip_address("2001:db8:1:3::10")).reason == "token_wrong_ip"
    assert check(v6, client=ip_address("2001:db8:1:3::10"), keys=KeyRing({"edge": KEY}, ipv6_prefix=48)).valid


def test_escape_early_values_are_unquoted_after_the_signature():
    # EdgeAuth's escape_early percent-encodes ip/id/data (lower-case hex) before signing
    token = reference(KEY_HEX, exp=NOW + 60, acl="/*", ip="2001%3adb8%3a%3a1", session_id="a%20b")
    result = check(token, client=ip_address("2001:db8::1"))
    assert result.valid and result.claims.session_id == "a b"


def test_rotation_tries_every_listed_key():
    old = reference(KEY_HEX, exp=NOW + 60, acl="/*")
    new_key = "00" * 15 + "01"
    new = reference(new_key, exp=NOW + 60, acl="/*")
    ring = KeyRing({"new": bytes.fromhex(new_key), "old": KEY})
    assert check(old, keys=ring).key_id == "old" and check(new, keys=ring).key_id == "new"
    retired = KeyRing({"new": bytes.fromhex(new_key)})
    assert check(old, keys=retired).reason == "token_bad_signature"
    assert check(old, keys=KeyRing({})).reason == "token_unknown_key"


def test_parse_and_redact():
    token = reference(KEY_HEX, **FULL)
    parsed = parse_akamai(token)
    assert parsed.claims.acl == ("/p/demo/e/ladder/*",) and parsed.claims.start == NOW - 60
    shown = redact(token)
    assert token.rsplit("=", 1)[1] not in shown and "198.51.100.7" not in shown and "s1" not in shown
    assert shown.startswith("<token akamai exp=")


def test_akamai_can_be_disabled():
    token = reference(KEY_HEX, exp=NOW + 60, acl="/*")
    assert check(token, keys=KeyRing({"edge": KEY}, formats=frozenset({"vodgate"}))).reason == "token_malformed"
