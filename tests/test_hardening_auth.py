"""Hardening of tokens, logs and the admin API, each against the real thing.

- a native token whose claims repeat a key is refused (never last-one-wins), also over HTTP;
- no log line of `vodgate serve` (uvicorn's access log, httpx's upstream request lines, any logger)
  carries a token, however its parameter name is spelled (``%74oken=``);
- admin bodies: bounded size and depth, unknown keys refused (a typo never purges a whole partner);
- user-supplied patterns (user_agent conditions, Akamai ACLs) run on RE2: linear time, and what RE2
  cannot take is refused at config / admin time with the reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import signal
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from ipaddress import ip_address
from pathlib import Path

import httpx
import pytest

from auth import tokens
from auth.rules import Facts, LinearPattern, PatternError, UserAgentMatches
from auth.tokens import KeyRing, TokenError, decode_native_claims, sign_akamai, sign_native, verify
from cli.logs import RedactTokens, redact_record
from config.partners import profile_from_dict, profile_to_dict
from config.settings import ConfigError
from conftest import ServerProcess

KEY = "00112233445566778899aabbccddeeff"
SECRET = bytes.fromhex(KEY)
ADMIN = "admin-secret-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
CATASTROPHIC = "^(a+)+$"  # exponential for a backtracking engine on "aaa...a!"
EVIL_AGENT = "a" * 1023 + "!"  # within the 1024 characters matched (auth.rules.MAX_USER_AGENT): the "!" counts
NOW = datetime(2026, 7, 1, 12, tzinfo=timezone.utc)

PARTNERS = f"""
[partners.demo]
admin_secret = "{ADMIN}"
token_keys = {{ k1 = "{KEY}" }}
default_profile = "open"

[partners.demo.profiles.tokens]
rules = [ {{ unless = {{ authenticated = true }}, then = ["block"] }} ]

[partners.demo.profiles.agents]
rules = [ {{ if = {{ user_agent = "{CATASTROPHIC}" }}, then = [{{ block = "bad_agent" }}] }} ]

[partners.demo.entries.hevc]
profile = "tokens"

[partners.demo.entries.video_only]
profile = "agents"
"""


def native_token_with_claims(claims_json: bytes, kid: str = "k1", secret: bytes = SECRET) -> str:
    """A native token over any claims bytes, MAC'd exactly as sign_native does."""
    body = base64.urlsafe_b64encode(claims_json).rstrip(b"=").decode("ascii")
    signed = f"vg1.{kid}.{body}"
    mac = hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest()
    return f"{signed}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode('ascii')}"


def in_an_hour() -> int:
    return int(time.time()) + 3600


def wait_for_text(path: Path, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace")
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


# --------------------------------------------------------------------------- 1. duplicate claims


def test_a_repeated_claim_is_refused_not_last_one_wins():
    claims = b'{"acl":"/p/demo/e/other","acl":"/p/demo/e/hevc","exp":1782907200}'
    with pytest.raises(TokenError, match="duplicate claim 'acl'"):
        decode_native_claims(base64.urlsafe_b64encode(claims).rstrip(b"=").decode())
    token = native_token_with_claims(claims)
    result = verify(token, "/p/demo/e/hevc/hls/master.m3u8", ip_address("192.0.2.1"), KeyRing({"k1": SECRET}), NOW)
    assert (result.valid, result.reason) == (False, "token_malformed")
    assert "duplicate claim 'acl'" in result.detail


def test_claims_nested_too_deeply_are_malformed_not_a_crash():
    """The claims are decoded before the MAC is checked: anyone could send these."""
    token = native_token_with_claims(b"[" * 2500, secret=b"not the partner's key")
    result = verify(token, "/p/demo/e/hevc/hls/master.m3u8", ip_address("192.0.2.1"), KeyRing({"k1": SECRET}), NOW)
    assert (result.valid, result.reason) == (False, "token_bad_signature")
    signed = native_token_with_claims(b"[" * 2500)
    result = verify(signed, "/p/demo/e/hevc/hls/master.m3u8", ip_address("192.0.2.1"), KeyRing({"k1": SECRET}), NOW)
    assert (result.reason, result.detail) == ("token_malformed", "claims are not a flat JSON object (nested too deeply)")


# --------------------------------------------------------------------------- 2. redaction


def test_redact_query_redacts_every_spelling_starlette_reads_as_the_token():
    token = sign_native("k1", SECRET, "/p/demo/e/hevc", 1782907200)
    akamai = sign_akamai(SECRET, 1782907200, acl="/p/demo/e/hevc/*")
    fingerprint = tokens.redact(token).split("#")[1].rstrip(">")
    for query in (f"token={token}", f"%74oken={token}", f"%74%6F%6B%65%6E={token}", f"a=1&%74oken={token}&b=2",
                  f"token=+{token}", f"hdn%74s={akamai}", f"%68dnts={akamai}"):
        shown = tokens.redact_query(query)
        assert token not in shown and akamai not in shown and "<redacted #" in shown, query
        if token in query:
            assert fingerprint in shown, query  # the fingerprint redact() shows: log lines correlate
    # names Starlette does not read as the token are left alone
    for query in ("Token=abc", "mytoken=abc", "tok+en=abc", "%2574oken=abc", "tokens=abc"):
        assert tokens.redact_query(query) == query
    once = tokens.redact_text(f'GET /p?%74oken={token} "HTTP/1.1 200 OK"')
    assert tokens.redact_text(once) == once and token not in once
    # outside a query string (an exception message, a cookie): native tokens and Akamai MACs still go
    dashed = "vg1.k1.eyJhY2wiOiIvIn0." + "A" * 42 + "-"  # a MAC may end in "-" (base64url)
    for bare in (token, dashed):
        fingerprint_of_bare = tokens.redact(bare).split("#")[1].rstrip(">")
        assert tokens.redact_text(f"cookie {bare} seen") == f"cookie <redacted #{fingerprint_of_bare}> seen"
    assert akamai.rsplit("hmac=", 1)[1] not in tokens.redact_text(f"cookie __hdnts={akamai}")


def test_the_log_filter_redacts_message_arguments_and_tracebacks():
    token = sign_native("k1", SECRET, "/p/demo/e/hevc", 1782907200)
    url = httpx.URL(f"http://127.0.0.1:1/p/demo/e/hevc/hls/main/seg-1.ts?%74oken={token}")
    # httpx's own line: the URL is an httpx.URL argument, not a str
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, 'HTTP Request: %s %s "%s %d %s"', ("GET", url, "HTTP/1.1", 200, "OK"), None)
    assert RedactTokens().filter(record) is True
    assert token not in record.getMessage() and "seg-1.ts?%74oken=<redacted #" in record.getMessage()
    # uvicorn's access line keeps its five arguments (its formatter unpacks them)
    access = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", f"/p/x?token={token}", "1.1", 200), None)
    redact_record(access)
    assert len(access.args) == 5 and access.args[4] == 200 and token not in access.getMessage()
    try:
        raise RuntimeError(f"upstream failed for {url}")
    except RuntimeError:
        failed = logging.LogRecord("vodgate", logging.ERROR, __file__, 1, "fetch failed", (), sys.exc_info())
    redact_record(failed)
    assert token not in logging.Formatter().format(failed) and "RuntimeError" in failed.exc_text


@pytest.fixture(scope="module")
def pair(media_library, tmp_path_factory):
    """An origin (open, no partners) and an edge whose partner needs a token for entry hevc."""
    folder = tmp_path_factory.mktemp("hardening-pair")
    origin = ServerProcess(["--media", str(media_library), "--segment-duration", "4"], folder / "origin.log")
    config = folder / "edge.toml"
    config.write_text("[edge]\nttl = 600\n" + PARTNERS)
    try:
        edge = ServerProcess(["--config", str(config), "--role", "edge", "--upstream", origin.base], folder / "edge.log")
    except Exception:
        origin.stop()
        raise
    yield origin, edge
    edge.stop()
    origin.stop()


def test_no_log_line_of_an_edge_or_its_origin_carries_a_token(pair):
    origin, edge = pair
    token = sign_native("k1", SECRET, "/p/demo/e/hevc", in_an_hour())
    base = f"{edge.base}/p/demo/e/hevc/hls"
    assert httpx.get(f"{base}/main/seg-1.ts", timeout=30).status_code == 403  # the profile wants a token
    requests = {
        "master.m3u8?%74oken=": httpx.get(f"{base}/master.m3u8?%74oken={token}", timeout=30),
        "main/seg-1.ts?%74oken=": httpx.get(f"{base}/main/seg-1.ts?%74oken={token}", timeout=30),  # accepted as the token
        "main/seg-2.ts?token=": httpx.get(f"{base}/main/seg-2.ts?token={token}", timeout=30),
    }
    assert {k: r.status_code for k, r in requests.items()} == dict.fromkeys(requests, 200)
    seg1, seg2 = "/p/demo/e/hevc/hls/main/seg-1.ts?%74oken=<redacted #", "/p/demo/e/hevc/hls/main/seg-2.ts?token=<redacted #"
    edge_log = wait_for_text(edge.log_path, f"GET {seg2}")
    origin_log = wait_for_text(origin.log_path, f"GET {seg2}")
    # every request was logged, with its token redacted: the edge's access log, the edge's httpx
    # lines for what it sent upstream (the viewer's query goes along), the origin's access log
    for path in ("/p/demo/e/hevc/hls/master.m3u8?%74oken=<redacted #", seg1, seg2):
        assert f"GET {path}" in edge_log, edge_log[-3000:]
    assert f"HTTP Request: GET {origin.base}{seg1}" in edge_log and f"HTTP Request: GET {origin.base}{seg2}" in edge_log, edge_log[-3000:]
    assert f"GET {seg1}" in origin_log and f"GET {seg2}" in origin_log, origin_log[-3000:]
    mac = token.rsplit(".", 1)[1]
    for name, log in (("edge", edge_log), ("origin", origin_log)):
        assert token not in log and mac not in log, f"the {name} logged the token"


# --------------------------------------------------------------------------- 3 and 4 over HTTP


@pytest.fixture(scope="module")
def srv(media_library, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hardening-srv")
    config = folder / "vodgate.toml"
    config.write_text(f'[server]\nmedia_root = "{media_library}"\nsegment_duration = 4\n' + PARTNERS)
    proc = ServerProcess(["--config", str(config)], folder / "server.log")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def http(srv):
    with httpx.Client(base_url=srv.base, timeout=30) as client:
        yield client


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"], body["detail"]


def test_a_token_with_a_repeated_claim_is_refused_over_http(http):
    exp = in_an_hour()
    good = native_token_with_claims(json.dumps({"acl": "/p/demo/e/hevc", "exp": exp}, separators=(",", ":"), sort_keys=True).encode())
    assert http.get(f"/p/demo/e/hevc/hls/master.m3u8?token={good}").status_code == 200  # the crafting is right
    twice = native_token_with_claims(f'{{"acl":"/p/demo/e/other","acl":"/p/demo/e/hevc","exp":{exp}}}'.encode())
    assert error_of(http.get(f"/p/demo/e/hevc/hls/master.m3u8?token={twice}"))[:2] == (403, "token_malformed")


def test_admin_bodies_nested_too_deeply_or_too_large_are_refused(http):
    status, code, detail = error_of(http.put("/admin/partners/demo/profiles/deep", headers=AUTH, content=b"[" * 60_000))
    assert (status, code) == (400, "bad_json") and "nested more than 32 levels" in detail  # json.loads' RecursionError
    status, code, _ = error_of(http.put("/admin/partners/demo/profiles/deep", headers=AUTH, content=b"[" * 100_000))
    assert (status, code) == (413, "body_too_large")  # past the size cap: refused before parsing
    status, code, _ = error_of(http.put("/admin/partners/demo/profiles/deep", headers=AUTH, content=b"[" * 500 + b"]" * 500))
    assert (status, code) == (400, "bad_json")  # parses, but deeper than any profile
    big = json.dumps({"description": "x" * 70_000, "rules": []}).encode()
    status, code, detail = error_of(http.put("/admin/partners/demo/profiles/big", headers=AUTH, content=big))
    assert (status, code) == (413, "body_too_large") and "65536 bytes" in detail

    def chunked():  # no Content-Length: the cap holds while reading
        for _ in range(70):
            yield b" " * 1024

    status, code, _ = error_of(http.post("/admin/partners/demo/purge", headers=AUTH, content=chunked()))
    assert (status, code) == (413, "body_too_large")
    status, code, detail = error_of(http.put("/admin/partners/demo/profiles/dup", headers=AUTH, content=b'{"rules": [], "rules": [{"then": ["block"]}]}'))
    assert (status, code) == (400, "bad_json") and "'rules' twice" in detail
    assert http.get("/admin/partners/demo/profiles", headers=AUTH).json().keys() == {"open", "tokens", "agents"}


def test_admin_bodies_with_unknown_keys_are_refused_naming_the_key(http):
    warm = "/p/demo/e/ladder/hls/hi/seg-1.ts"
    assert http.get(warm).status_code == 200
    assert http.get(warm).headers["x-cache"] == "HIT"
    status, code, detail = error_of(http.post("/admin/partners/demo/purge", headers=AUTH, json={"entyr": "ladder"}))
    assert (status, code) == (400, "bad_request") and "'entyr'" in detail
    assert http.get(warm).headers["x-cache"] == "HIT"  # nothing was purged
    status, code, detail = error_of(http.post("/admin/partners/demo/purge", headers=AUTH, json={"entry": 5}))
    assert (status, code) == (400, "bad_request") and '"entry" has value 5; expected a string' in detail
    status, code, _ = error_of(http.post("/admin/partners/demo/purge", headers=AUTH, json={"entry": "ladder", "prefix": "/p/demo/"}))
    assert (status, code) == (400, "bad_request")
    status, code, detail = error_of(http.put("/admin/partners/demo/profiles/typo", headers=AUTH, json={"rules": [], "rulez": []}))
    assert (status, code) == (400, "bad_profile") and "partners.demo.profiles.typo.rulez" in detail
    status, code, detail = error_of(http.put("/admin/partners/demo/profiles/typo", headers=AUTH, json={"rules": [{"iff": {}, "then": ["allow"]}]}))
    assert (status, code) == (400, "bad_profile") and "rules[0].iff" in detail
    purged = http.post("/admin/partners/demo/purge", headers=AUTH, json={"entry": "ladder"})
    assert purged.status_code == 200 and purged.json()["purged"] == "/p/demo/e/ladder/"
    assert http.get(warm).headers["x-cache"] == "MISS"


def test_admin_put_of_a_pattern_re2_cannot_take_says_why(http):
    body = {"rules": [{"if": {"user_agent": "(bot)\\1"}, "then": ["block"]}]}
    status, code, detail = error_of(http.put("/admin/partners/demo/profiles/bots", headers=AUTH, json=body))
    assert (status, code) == (400, "bad_profile")
    assert "partners.demo.profiles.bots.rules[0].if.user_agent has value '(bot)\\\\1'" in detail
    assert "RE2 (linear-time matching) does not support" in detail and "backreferences" in detail
    ok = http.put("/admin/partners/demo/profiles/bots", headers=AUTH, json={"rules": [{"if": {"user_agent": "(?i)bot"}, "then": ["block"]}]})
    assert ok.status_code == 200 and ok.json() == {"bots": {"rules": [{"if": {"user_agent": "(?i)bot"}, "then": ["block"]}]}}


def test_a_catastrophic_user_agent_pattern_does_not_stall_the_server(http):
    started = time.monotonic()
    answer = http.get("/p/demo/e/video_only/hls/master.m3u8", headers={"User-Agent": EVIL_AGENT}, timeout=5)
    assert answer.status_code == 200  # no match: "!" ends it
    assert error_of(http.get("/p/demo/e/video_only/hls/master.m3u8", headers={"User-Agent": "aaaa"}))[:2] == (403, "bad_agent")
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- 4. RE2, in-process


@contextmanager
def decided_within(seconds: float):
    """Fails the test when the body runs longer than ``seconds``: a backtracking regex is interrupted
    (Python's re checks for signals while it matches), so a regression fails instead of hanging."""

    def too_slow(signum, frame):
        raise AssertionError(f"not decided within {seconds} s: the pattern backtracks")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def agent_condition(pattern: str) -> UserAgentMatches:
    profile = profile_from_dict("p", {"rules": [{"if": {"user_agent": pattern}, "then": ["block"]}]}, geoip_configured=False)
    condition = profile.rules[0].conditions[0]
    assert isinstance(condition, UserAgentMatches)
    return condition


def test_a_catastrophic_pattern_decides_in_linear_time():
    condition = agent_condition(CATASTROPHIC)
    with decided_within(1.0):  # generous: a backtracking engine takes forever here
        assert condition.test(Facts(ip_address("192.0.2.1"), user_agent=EVIL_AGENT), NOW) is False
        assert condition.test(Facts(ip_address("192.0.2.1"), user_agent="a" * 1000), NOW) is True
        assert LinearPattern.compile(CATASTROPHIC).search("a" * 50000 + "!") is False  # the whole text, untruncated


def test_an_akamai_acl_pattern_matches_in_linear_time():
    acl = "/*" + "a*" * 12 + "b"  # ".*a.*a...b": polynomial backtracking in Python's re
    token = sign_akamai(SECRET, 1782907200, acl=acl)
    with decided_within(1.0):
        result = verify(token, "/" + "a" * 3000 + "c", ip_address("192.0.2.1"), KeyRing({"k1": SECRET}), NOW)
    assert result.reason == "token_wrong_path"
    assert verify(token, "/" + "a" * 20 + "b", ip_address("192.0.2.1"), KeyRing({"k1": SECRET}), NOW).valid


@pytest.mark.parametrize("pattern", ["(bot)\\1", "(?P<b>bot)(?P=b)", "bot(?=x)", "(?<!x)bot", "bot\\Z"])
def test_patterns_re2_cannot_take_are_refused_with_the_reason(pattern):
    with pytest.raises(ConfigError) as refused:
        agent_condition(pattern)
    message = str(refused.value)
    assert f"profiles.p.rules[0].if.user_agent has value {pattern!r}, which is not accepted: RE2 (linear-time matching) does not support" in message
    assert "rewrite the pattern without them" in message


def test_re2_patterns_keep_case_folding_and_round_trip():
    condition = agent_condition("(?i)smart-?tv")
    assert condition.test(Facts(ip_address("192.0.2.1"), user_agent="Mozilla/5.0 (SMART-TV; Linux)"), NOW)
    assert not condition.test(Facts(ip_address("192.0.2.1"), user_agent="Mozilla/5.0 (X11; Linux)"), NOW)
    assert condition.description == "user agent matches /(?i)smart-?tv/"
    profile = profile_from_dict("p", {"rules": [{"if": {"user_agent": "(?i)smart-?tv"}, "then": ["block"]}]}, geoip_configured=False)
    assert profile_to_dict(profile) == {"rules": [{"if": {"user_agent": "(?i)smart-?tv"}, "then": ["block"]}]}
    assert profile_from_dict("p", profile_to_dict(profile), geoip_configured=False) == profile
    with pytest.raises(ConfigError, match=r"which is not a valid regular expression: missing \)"):
        agent_condition("(unclosed")
    with pytest.raises(PatternError, match="RE2"):
        LinearPattern.compile("a++")
