"""Hardening of tokens, logs and the admin API, each against the real thing.

- a native token whose claims repeat a key is refused (never last-one-wins), also over HTTP;
- no log line of `vodgate serve` (uvicorn's access log, httpx's upstream request lines, any logger)
  carries a token, however its parameter name is spelled (``%74oken=``);
- admin bodies: bounded size and depth, unknown keys refused (a typo never purges a whole partner);
- user-supplied patterns (user_agent conditions, Akamai ACLs) run on RE2: linear time, and what RE2
  cannot take is refused at config / admin time with the reason;
- (second review) a pattern that would take RE2 seconds to compile is refused in milliseconds, a profile's
  patterns are bounded together, and an admin PUT never holds up another partner's viewers; lone
  surrogates (admin JSON, command lines) are refused or matched, never a 500 or a traceback; a client
  hanging up mid-body leaves no traceback; a native token is redacted wherever it sits in a log line;
  native claims have exact JSON types.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from contextlib import contextmanager
from datetime import datetime, timezone
from ipaddress import ip_address
from pathlib import Path

import httpx
import pytest

from auth import tokens
from auth.rules import MAX_PATTERN_LENGTH, MAX_PROFILE_PROGRAM_SIZE, MAX_PROGRAM_SIZE, Facts, LinearPattern, PatternError, UserAgentMatches
from auth.tokens import KeyRing, TokenError, decode_native_claims, sign_akamai, sign_native, verify
from cli import logs
from cli.logs import RedactTokens, redact_record
from config.partners import load_access, parse_access, profile_from_dict, profile_to_dict
from config.settings import ConfigError
from conftest import ServerProcess, serving

KEY = "00112233445566778899aabbccddeeff"
SECRET = bytes.fromhex(KEY)
ADMIN = "admin-secret-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
TENANT_AUTH = {"Authorization": "Bearer tenant-admin-secret-0123456789"}  # another partner's operator
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

[partners.demo.profiles.tv]
description = "replaced over the admin API by a test"

[partners.demo.entries.h264_baseline]
profile = "tv"

[partners.tenant]
admin_secret = "tenant-admin-secret-0123456789"
default_profile = "open"
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
    config.write_text('[cdn]\nedge_secrets = ["hardening-edge-secret-0123456789"]\n[edge]\nttl = 600\n' + PARTNERS)
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
    base = f"{edge.base}/p/demo/e/hevc/cmaf"  # HEVC is offered over fMP4 only
    assert httpx.get(f"{base}/main/seg-1.m4s", timeout=30).status_code == 403  # the profile wants a token
    requests = {
        "master.m3u8?%74oken=": httpx.get(f"{base}/master.m3u8?%74oken={token}", timeout=30),
        "main/seg-1.m4s?%74oken=": httpx.get(f"{base}/main/seg-1.m4s?%74oken={token}", timeout=30),  # accepted as the token
        "main/seg-2.m4s?token=": httpx.get(f"{base}/main/seg-2.m4s?token={token}", timeout=30),
    }
    assert {k: r.status_code for k, r in requests.items()} == dict.fromkeys(requests, 200)
    seg1, seg2 = "/p/demo/e/hevc/cmaf/main/seg-1.m4s?%74oken=<redacted #", "/p/demo/e/hevc/cmaf/main/seg-2.m4s?token=<redacted #"
    edge_log = wait_for_text(edge.log_path, f"GET {seg2}")
    origin_log = wait_for_text(origin.log_path, f"GET {seg2}")
    # every request was logged, with its token redacted: the edge's access log, the edge's httpx
    # lines for what it sent upstream (the viewer's query goes along), the origin's access log
    for path in ("/p/demo/e/hevc/cmaf/master.m3u8?%74oken=<redacted #", seg1, seg2):
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
    yield from serving(["--config", str(config)], folder / "server.log")


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
    assert http.get(f"/p/demo/e/hevc/cmaf/master.m3u8?token={good}").status_code == 200  # the crafting is right (HEVC: fMP4 only)
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
    assert http.get("/admin/partners/demo/profiles", headers=AUTH).json().keys() == {"open", "tokens", "agents", "tv"}


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


# --------------------------------------------------------------------------- 5. second review: RE2 compile cost

REVIEWER_PATTERN = "(?i)" + "[a-z]{0,1000}" * 60  # 784 characters: RE2 compiled it for 8 s, holding the GIL
JUST_OVER = "(?i)" + "[a-z]{0,1000}" * 19  # 251 characters, within the length: over the program budget


def test_the_reviewers_pattern_is_refused_from_a_config_file_in_milliseconds(tmp_path):
    config = tmp_path / "vodgate.toml"
    config.write_text(
        '[partners.demo]\ndefault_profile = "open"\n\n[partners.demo.profiles.slow]\n'
        f'rules = [ {{ if = {{ user_agent = "{REVIEWER_PATTERN}" }}, then = ["block"] }} ]\n'
    )
    started = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        load_access(config)
    assert time.monotonic() - started < 1.0
    message = str(refused.value)
    assert message.startswith(f"{config}: partners.demo.profiles.slow.rules[0].if.user_agent has value '(?i)[a-z]{{0,1000}}[a-z]")
    assert message.endswith(f"which is too long: 784 characters; a pattern is at most {MAX_PATTERN_LENGTH} characters")


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (JUST_OVER, f"which is too large: it compiles to more than {MAX_PROGRAM_SIZE} RE2 instructions, at most {MAX_PROGRAM_SIZE}: "),
        ("\\pL" * 85, f"which is too large: it compiles to more than {MAX_PROGRAM_SIZE} RE2 instructions"),  # no repetition at all
        ("(?i)[a-z]{0,1000}", f"which is too large: it compiles to 7004 RE2 instructions, at most {MAX_PROGRAM_SIZE}: "),
        ("x" * (MAX_PATTERN_LENGTH + 1), f"which is too long: {MAX_PATTERN_LENGTH + 1} characters; a pattern is at most {MAX_PATTERN_LENGTH} characters"),
    ],
)
def test_patterns_over_the_length_or_the_program_budget_are_refused_in_milliseconds(pattern, why):
    started = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        agent_condition(pattern)
    assert time.monotonic() - started < 0.5  # RE2 took over a second for JUST_OVER
    assert why in str(refused.value)
    if "too large" in why:
        assert "write * or + instead, or repeat less" in str(refused.value)


def test_reasonable_and_near_limit_patterns_still_work():
    for pattern in ("(?i)(smart-?tv|roku|tizen)", "(?i)[a-z]{0,250}", "\\pL", "x" * MAX_PATTERN_LENGTH):
        agent_condition(pattern)
    condition = agent_condition("(?i)(smart-?tv|roku|tizen)")
    for agent, held in (("Mozilla/5.0 (SMART-TV; Linux; Tizen 2.3)", True), ("Roku/DVP-9.10 (519.10E04111A)", True),
                        ("Mozilla/5.0 (SmartTV)", True), ("Mozilla/5.0 (X11; Linux x86_64)", False)):
        assert condition.test(Facts(ip_address("192.0.2.1"), user_agent=agent), NOW) is held, agent
    # undecodable bytes from a command line (vodgate access explain --ua) arrive as lone surrogates: no crash
    assert condition.test(Facts(ip_address("192.0.2.1"), user_agent="Roku\udcff/DVP"), NOW) is True


def test_admin_put_of_the_reviewers_pattern_is_refused_in_milliseconds(http):
    body = json.dumps({"rules": [{"if": {"user_agent": REVIEWER_PATTERN}, "then": ["block"]}]}, separators=(",", ":")).encode()
    started = time.monotonic()
    status, code, detail = error_of(http.put("/admin/partners/tenant/profiles/slow", headers=TENANT_AUTH, content=body))
    assert time.monotonic() - started < 2.0  # was 8 s, and a 200
    assert (status, code) == (400, "bad_profile")
    assert detail.startswith("admin API: partners.tenant.profiles.slow.rules[0].if.user_agent has value '(?i)[a-z]{0,1000}")
    assert detail.endswith(f"which is too long: 784 characters; a pattern is at most {MAX_PATTERN_LENGTH} characters")


def latencies_during(put, client: httpx.Client, path: str) -> tuple[httpx.Response, list[float]]:
    """Runs ``put()`` in a thread and GETs ``path`` again and again meanwhile: put's response, and how
    long each GET took."""
    result: dict[str, httpx.Response] = {}
    worker = threading.Thread(target=lambda: result.setdefault("response", put()))
    worker.start()
    time.sleep(0.05)  # the server is now reading the body, or compiling it
    seconds = []
    while worker.is_alive() or not seconds:
        started = time.monotonic()
        assert client.get(path).status_code == 200
        seconds.append(time.monotonic() - started)
    worker.join()
    return result["response"], seconds


def test_an_admin_put_never_holds_up_another_partners_viewers(srv, http):
    """Partner tenant's operator PUTs patterns; partner demo's viewers must not wait for RE2."""
    viewer = "/p/demo/e/ladder/hls/master.m3u8"
    assert http.get(viewer).status_code == 200
    # distinct patterns near the budget (google-re2 caches compiled patterns by their text)
    at_the_budget = [{"if": {"user_agent": f"(?i)[a-z]{{0,250}}{i}"}, "then": ["block"]} for i in range(2)]  # 2 x 1,755
    at_the_budget += [{"if": {"user_agent": f"(?i)(smart-?tv|roku|tizen){i}"}, "then": ["block"]} for i in range(5)]
    many = [{"if": {"user_agent": f"(?i)[a-z]{{0,250}}{i}"}, "then": ["block"]} for i in range(700)]
    just_over = [{"if": {"user_agent": f"{JUST_OVER}{i}"}, "then": ["block"]} for i in range(3)]  # and 4 s for these
    with httpx.Client(base_url=srv.base, timeout=120) as admin:  # its own client: one per thread
        for name, rules, refusal in (
            ("budget", at_the_budget, None),
            ("many", many, f"rules[2].if.user_agent has value '(?i)[a-z]{{0,250}}2', which brings the profile's user_agent patterns to 5265 RE2 instructions together, at most {MAX_PROFILE_PROGRAM_SIZE} in one profile"),
            ("over", just_over, f"rules[0].if.user_agent has value '(?i)[a-z]{{0,1000}}[a-z]{{0,1000}}"),
        ):
            started = time.monotonic()
            answer, seconds = latencies_during(lambda: admin.put(f"/admin/partners/tenant/profiles/{name}", headers=TENANT_AUTH, json={"rules": rules}), http, viewer)
            assert time.monotonic() - started < 2.0, name
            assert max(seconds) < 0.5, f"a viewer of another partner waited {max(seconds):.2f} s during the PUT of {name} ({len(seconds)} requests)"
            if refusal is None:
                assert answer.status_code == 200, answer.text[:300]
            else:
                assert (answer.status_code, answer.json()["error"]) == (400, "bad_profile")
                assert answer.json()["detail"].startswith(f"admin API: partners.tenant.profiles.{name}.{refusal}"), answer.json()["detail"]
        assert f"which is too large: it compiles to more than {MAX_PROGRAM_SIZE} RE2 instructions" in answer.json()["detail"]
        assert admin.delete("/admin/partners/tenant/profiles/budget", headers=TENANT_AUTH).status_code == 204


def test_a_profiles_patterns_together_are_bounded_too():
    """Each request may search every user_agent pattern of its profile: 700 patterns of 4,800 RE2
    instructions took 8 s per request (fresh User-Agents defeating the DFA cache) and 1.5 GB."""
    fine = {"rules": [{"if": {"user_agent": f"(?i)(smart-?tv|roku|tizen){i}"}, "then": ["block"]} for i in range(120)]}
    assert len(profile_from_dict("p", fine, geoip_configured=False).rules) == 120  # 120 x about 30 instructions
    hostile = {"rules": [{"if": {"user_agent": f"a.{{240}}z{i}"}, "then": ["block"]} for i in range(700)]}
    started = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        profile_from_dict("p", hostile, geoip_configured=False)
    assert time.monotonic() - started < 0.5  # refused at the third pattern: the rest are never compiled
    assert str(refused.value) == (
        "admin API: profiles.p.rules[2].if.user_agent has value 'a.{240}z2', which brings the profile's user_agent patterns "
        f"to 5781 RE2 instructions together, at most {MAX_PROFILE_PROGRAM_SIZE} in one profile (a request may search them all); "
        "merge them into one alternation (a|b|c) or make them smaller"
    )


def test_a_reasonable_pattern_put_over_the_admin_api_decides_requests(http):
    body = {"rules": [{"if": {"user_agent": "(?i)(smart-?tv|roku|tizen)"}, "then": [{"block": "tv_app_only"}]}]}
    put = http.put("/admin/partners/demo/profiles/tv", headers=AUTH, json=body)
    assert put.status_code == 200 and put.json() == {"tv": body}
    master = "/p/demo/e/h264_baseline/hls/master.m3u8"
    assert error_of(http.get(master, headers={"User-Agent": "Mozilla/5.0 (SMART-TV; Linux; Tizen 2.3)"}))[:2] == (403, "tv_app_only")
    assert error_of(http.get(master, headers={"User-Agent": "Roku/DVP-9.10"}))[:2] == (403, "tv_app_only")
    assert http.get(master, headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}).status_code == 200


# --------------------------------------------------------------------------- 6. lone surrogates, hang-ups


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"rules":[{"if":{"user_agent":"\\ud800"},"then":["block"]}]}', "partners.demo.profiles.odd.rules[0].if.user_agent"),
        (b'{"description":"tv \\udfff","rules":[]}', "partners.demo.profiles.odd.description"),
        (b'{"rules":[{"name":"\\ud83d","then":["allow"]}]}', "partners.demo.profiles.odd.rules[0].name"),
        (b'{"rules":[],"\\ud800":1}', "partners.demo.profiles.odd (a key)"),
    ],
)
def test_a_lone_surrogate_in_a_profile_is_a_400_naming_where(http, body, where):
    """JSON may escape a lone surrogate and json.loads keeps it; RE2 and every JSON answer echoing it
    failed to encode it: 500 with a traceback, and a stored description broke GET profiles for good."""
    status, code, detail = error_of(http.put("/admin/partners/demo/profiles/odd", headers=AUTH, content=body))
    assert (status, code) == (400, "bad_profile")
    assert detail.startswith(f"admin API: {where} holds a lone UTF-16 surrogate"), detail
    assert "which is not Unicode text" in detail
    assert http.get("/admin/partners/demo/profiles", headers=AUTH).status_code == 200


def test_surrogate_pairs_are_fine_and_a_lone_one_in_a_purge_is_a_400(http):
    paired = http.put("/admin/partners/demo/profiles/odd", headers=AUTH, content=b'{"description":"tv \\ud83d\\udcfa","rules":[]}')
    assert paired.status_code == 200 and paired.json()["odd"]["description"] == "tv \N{TELEVISION}"
    status, code, detail = error_of(http.post("/admin/partners/demo/purge", headers=AUTH, content=b'{"prefix":"/p/demo/\\ud800"}'))
    assert (status, code) == (400, "bad_request") and detail.startswith("the purge body.prefix holds a lone UTF-16 surrogate")
    assert http.delete("/admin/partners/demo/profiles/odd", headers=AUTH).status_code == 204


def test_a_config_file_cannot_carry_a_lone_surrogate_and_a_pattern_refuses_one(tmp_path):
    config = tmp_path / "vodgate.toml"
    config.write_text('[partners.demo.profiles.odd]\nrules = [ { if = { user_agent = "\\ud800" }, then = ["block"] } ]\n')
    with pytest.raises(ConfigError, match="is not valid TOML: Escaped character is not a Unicode scalar value"):
        load_access(config)
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads('x = "\\udfff"')
    # a config built in Python (parse_access takes a dict) can: refused with the reason, no UnicodeEncodeError
    raw = {"partners": {"demo": {"profiles": {"odd": {"rules": [{"if": {"user_agent": "tv\ud800"}, "then": ["block"]}]}}}}}
    with pytest.raises(ConfigError) as refused:
        parse_access(raw)
    assert str(refused.value) == (
        "config: partners.demo.profiles.odd.rules[0].if.user_agent has value 'tv\\ud800', which is not Unicode text: "
        "character 2 is a lone UTF-16 surrogate ('\\ud800'); write the character itself (a surrogate escape needs its pair, as in \"\\ud83d\\ude00\")"
    )
    with pytest.raises(PatternError, match="lone UTF-16 surrogate"):
        LinearPattern.compile("\udcff")


def test_undecodable_command_line_bytes_are_explained_not_a_traceback(tmp_path):
    """`vodgate access explain` takes the User-Agent, token and path from argv, where undecodable bytes
    become lone surrogates (PEP 383): RE2 and the Akamai MAC check failed to encode them."""
    config = tmp_path / "vodgate.toml"
    config.write_text(
        f'[partners.demo]\ntoken_keys = {{ k1 = "{KEY}" }}\ndefault_profile = "p"\n\n[partners.demo.profiles.p]\n'
        'rules = [ { if = { user_agent = "(?i)roku" }, then = [{ block = "tv" }] }, { unless = { authenticated = true }, then = ["block"] } ]\n'
    )
    hmac_zero = b"0" * 64
    for extra, verdict in (
        ([b"--ua", b"Roku\xff/DVP"], b"=> DENY 403 tv: blocked by rule 0"),
        ([b"--token", b"exp=1999999999~acl=/\xff*~hmac=" + hmac_zero], b"=> DENY 403 token_malformed: blocked by rule 1: token is not Unicode text"),
        ([b"--token", b"exp=1999999999~hmac=" + hmac_zero, b"--path", b"/p/demo/e/ladder/\xff"], b"=> DENY 403 token_bad_signature"),
        ([b"--token", b"exp=1999999999~acl=/*~hmac=" + hmac_zero, b"--path", b"/p/demo/e/ladder/\xff"], b"=> DENY 403 token_bad_signature"),
    ):
        command = [sys.executable.encode(), b"-m", b"cli.main", b"access", b"explain", b"--config", str(config).encode(),
                   b"--partner", b"demo", b"--entry", b"ladder", *extra]
        done = subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, capture_output=True, timeout=60)
        assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")[-2000:]
        assert done.returncode == 1 and verdict in done.stdout, done.stdout.decode(errors="replace")  # 1: denied


def hang_up_mid_body(port: int, request_head: str, partial_body: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request_head.encode() + partial_body)
        time.sleep(0.3)  # the server is waiting for the rest of the body


def test_an_admin_client_hanging_up_mid_body_leaves_no_traceback(srv, http):
    logged_before = len(srv.log_path.read_text(errors="replace"))
    auth = f"Host: 127.0.0.1\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\n"
    hang_up_mid_body(srv.port, f"PUT /admin/partners/demo/profiles/gone HTTP/1.1\r\n{auth}Content-Length: 1000\r\n\r\n", b'{"rules": [')
    hang_up_mid_body(srv.port, f"POST /admin/partners/demo/purge HTTP/1.1\r\n{auth}Transfer-Encoding: chunked\r\n\r\n", b'5\r\n{"ent\r\n')
    time.sleep(0.5)
    marker = "/admin/partners/demo/profiles?after=hang-ups"
    assert "gone" not in http.get(marker, headers=AUTH).json()
    log = wait_for_text(srv.log_path, f"GET {marker}")[logged_before:]
    assert f"GET {marker}" in log
    for needle in ("Traceback", "Exception in ASGI application", "ClientDisconnect"):
        assert needle not in log, log[-3000:]


# --------------------------------------------------------------------------- 7. redaction anywhere in a line


def test_a_native_token_is_redacted_wherever_it_sits_in_a_log_line():
    """Through the real record factory (cli.logs.install, as `vodgate serve` does), names vodgate does
    not read as the token included: the bare-token pattern needed a non-base64 character before "vg1"."""
    token = sign_native("k1", SECRET, "/p/demo/e/hevc", 1782907200)
    mac = token.rsplit(".", 1)[1]
    fingerprint = tokens.redact(token).split("#")[1].rstrip(">")
    spellings = {
        "?%20token=%20TOKEN": "?%20token=%20<redacted #FP>",
        "?token+=%20TOKEN": "?token+=%20<redacted #FP>",
        "?+token=%20TOKEN": "?+token=%20<redacted #FP>",
        "?a=1&%20token=TOKEN&b=2": "?a=1&%20token=<redacted #FP>&b=2",
        "?next=%2Fp%2Fdemo%3Ftoken%3DTOKEN": "?next=%2Fp%2Fdemo%3Ftoken%3D<redacted #FP>",  # a URL in a parameter
        "?x=DOTTED&y=1": "?x=<redacted #FP>&y=1",  # the token with its dots written %2E
        "?x=xTOKENx": "?x=x<redacted #FP>x",  # glued to other characters: exactly the token goes
    }
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    logger = logging.getLogger("vodgate.test.redaction")
    keep = Keep()
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    previous = logging.getLogRecordFactory()
    logs.install()
    try:
        for spelling in spellings:
            target = "/p/demo/e/hevc/hls/master.m3u8" + spelling.replace("TOKEN", token).replace("DOTTED", token.replace(".", "%2E"))
            logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", target, "1.1", 200)  # uvicorn's access line
            logger.info("HTTP Request: GET %s", httpx.URL(f"http://origin{target}"))  # httpx's, with a URL object
            logger.info(f"upstream failed for {target}")  # in the message itself
    finally:
        logging.setLogRecordFactory(previous)
        logger.removeHandler(keep)
    assert len(lines) == 3 * len(spellings)
    for line in lines:
        assert mac not in line and token not in line, line
    for index, shown in enumerate(spellings.values()):  # the rest of the line intact, the token's own fingerprint
        assert f"GET /p/demo/e/hevc/hls/master.m3u8{shown.replace('FP', fingerprint)} HTTP/1.1" in lines[3 * index], lines[3 * index]


def test_akamai_macs_are_redacted_however_the_field_is_delimited():
    akamai = sign_akamai(SECRET, 1782907200, acl="/p/demo/e/hevc/*")
    mac = akamai.rsplit("hmac=", 1)[1]
    for text in (f"?+hdnts={akamai}", f"?x={akamai.replace('~', '%7E')}", f"?x={akamai.replace('=', '%3D')}", f"glued{akamai}"):
        shown = tokens.redact_text(text)
        assert mac not in shown and ("hmac=<redacted>" in shown or "hmac%3D<redacted>" in shown), shown


def test_no_access_log_line_carries_a_token_under_a_name_vodgate_does_not_read(srv, http):
    token = sign_native("k1", SECRET, "/p/demo/e/hevc", in_an_hour())
    mac = token.rsplit(".", 1)[1]
    for query in (f"%20token=%20{token}", f"token+=%20{token}", f"+token=%20{token}"):
        answer = http.get(f"/p/demo/e/hevc/hls/master.m3u8?{query}")
        assert error_of(answer)[:2] == (403, "token_required")  # " token" is not "token": no token was read
    log = wait_for_text(srv.log_path, "GET /p/demo/e/hevc/hls/master.m3u8?+token=%20<redacted #")
    assert "GET /p/demo/e/hevc/hls/master.m3u8?%20token=%20<redacted #" in log, log[-3000:]
    assert "GET /p/demo/e/hevc/hls/master.m3u8?+token=%20<redacted #" in log, log[-3000:]
    assert token not in log and mac not in log


# --------------------------------------------------------------------------- 8. native claims: exact JSON types

HEVC = "/p/demo/e/hevc"


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"acl": HEVC, "exp": "1999999999"}, "claim exp is a string; expected an integer (Unix seconds)"),
        ({"acl": HEVC, "exp": True}, "claim exp is a boolean; expected an integer (Unix seconds)"),
        ({"acl": HEVC, "exp": 1999999999.5}, "claim exp is a number with a fraction or an exponent; expected an integer (Unix seconds)"),
        ({"acl": HEVC, "exp": 1999999999.0}, "claim exp is a number with a fraction or an exponent; expected an integer (Unix seconds)"),
        ({"acl": HEVC, "exp": 1999999999, "st": 1.7e9}, "claim st is a number with a fraction or an exponent; expected an integer (Unix seconds)"),
        ({"acl": HEVC, "exp": None}, "claim exp is null; expected an integer (Unix seconds)"),
        ({"acl": HEVC, "exp": 1999999999, "st": "0"}, "claim st is a string; expected an integer (Unix seconds)"),
        ({"acl": HEVC, "exp": 1999999999, "st": None}, "claim st is null; expected an integer (Unix seconds)"),
        ({"acl": [HEVC], "exp": 1999999999}, "claim acl is an array; expected a path starting with '/'"),
        ({"acl": HEVC, "exp": 1999999999, "sid": 42}, "claim sid is a number; expected 1-128 printable ASCII characters"),
        ({"acl": HEVC, "exp": 1999999999, "sid": None}, "claim sid is null; expected 1-128 printable ASCII characters"),
        ({"acl": HEVC, "exp": 1999999999, "ip": None}, 'claim ip is null; expected a network in CIDR notation, e.g. "192.0.2.7/32"'),
        ({"acl": HEVC, "exp": 1999999999, "ip": 3221225991}, 'claim ip is a number; expected a network in CIDR notation, e.g. "192.0.2.7/32"'),
    ],
)
def test_native_claims_of_the_wrong_json_type_are_refused_naming_the_claim(claims, why):
    token = native_token_with_claims(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    result = verify(token, f"{HEVC}/hls/master.m3u8", ip_address("192.0.2.7"), KeyRing({"k1": SECRET}), NOW)
    assert (result.valid, result.reason, result.detail) == (False, "token_malformed", why)


def test_sign_native_writes_exact_types():
    signed = sign_native("k1", SECRET, HEVC, 1999999999.9, ip="192.0.2.7", session_id="play-42", start=1700000000.0)
    segment = signed.split(".")[2]
    claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    assert claims == {"acl": HEVC, "exp": 1999999999, "ip": "192.0.2.7/32", "sid": "play-42", "st": 1700000000}
    assert [type(claims[k]) for k in ("acl", "exp", "ip", "sid", "st")] == [str, int, str, str, int]
    assert verify(signed, f"{HEVC}/hls/master.m3u8", ip_address("192.0.2.7"), KeyRing({"k1": SECRET}), NOW).valid


def test_a_signed_token_with_a_string_expiry_is_refused_over_http(http):
    good = native_token_with_claims(json.dumps({"acl": HEVC, "exp": in_an_hour()}, separators=(",", ":"), sort_keys=True).encode())
    assert http.get(f"{HEVC}/cmaf/master.m3u8?token={good}").status_code == 200  # HEVC: fMP4 only
    stringly = native_token_with_claims(json.dumps({"acl": HEVC, "exp": str(in_an_hour())}, separators=(",", ":"), sort_keys=True).encode())
    status, code, detail = error_of(http.get(f"{HEVC}/hls/master.m3u8?token={stringly}"))
    assert (status, code) == (403, "token_malformed") and "claim exp is a string" in detail
