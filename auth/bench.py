"""Micro-benchmark: the access-control cost of one media request (docs/PERFORMANCE.md).

    .venv/bin/python -m auth.bench [--requests 20000]

Measures, per request, in microseconds: client_ip() + verify() of a native token + decide() on a
realistic five-rule profile (IP, referrer, schedule in a named zone, token, default block), the same
with an Akamai token, and AccessControl.check() end to end (token extraction, facts, decision;
no GeoIP lookup). Compare with a segment request (milliseconds) in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import statistics
import time
from datetime import datetime, timezone
from fractions import Fraction
from types import MappingProxyType
from typing import Callable

from .client_ip import client_ip
from .rules import (
    Authenticated,
    Block,
    Continue,
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
from .tokens import KeyRing, sign_akamai, sign_native, verify

KEY = bytes.fromhex("6b2f0a1c9d8e7f60514233241506f7e8d9cabbac9d8e7f60514233241506f7e8")
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)
PATH = "/p/demo/e/ladder/hls/hi/seg-42.ts"
PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


def bench_profile() -> Profile:
    return Profile("bench", (
        Rule((IpIn(networks=(ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8:ffff::/48"))),), (Block("office_only"),)),
        Rule((UserAgentMatches(pattern=re.compile(r"(?i)bot|crawler")),), (Block("bots"),)),
        Rule((ReferrerIn(patterns=("*.example.com", "example.com", "none")),), (FlavorLimits(max_height=1080), Continue())),
        Rule((Schedule(windows=(RecurringWindow(18 * 3600, 20 * 3600, "Europe/Paris"),)),), (Preview(Fraction(30)),)),
        Rule((Authenticated(negated=True),), (Block(),)),
    ))


def measure(fn: Callable[[], object], requests: int, rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean µs per call."""
    results = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(requests):
            fn()
        results.append((time.perf_counter() - start) / requests * 1e6)
    return statistics.median(results)


def run(requests: int = 20000) -> dict[str, float]:
    profile = bench_profile()
    keys = KeyRing(MappingProxyType({"k1": KEY, "k2": KEY[::-1]}))
    exp = int(NOW.timestamp()) + 3600
    native = sign_native("k1", KEY, "/p/demo/e/ladder", exp, ip="203.0.113.9")
    akamai = sign_akamai(KEY[::-1], exp, acl="/p/demo/e/ladder/*")
    ua = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"

    def one(token: str) -> Callable[[], object]:
        def request() -> object:
            ip = client_ip("10.1.2.3", "198.51.100.1, 203.0.113.9", PROXIES)
            result = verify(token, PATH, ip, keys, NOW, 30)
            facts = Facts(ip, "FR", referrer_host("https://www.example.com/watch", None), ua, result, PATH)
            return decide(profile, facts, NOW)
        return request

    decision = one(native)()
    assert decision.allowed and decision.limits.max_height == 1080  # noqa: S101 - a benchmark sanity check
    ip = ipaddress.ip_address("203.0.113.9")
    token_result = verify(native, PATH, ip, keys, NOW, 30)
    facts = Facts(ip, "FR", "www.example.com", ua, token_result, PATH)

    from config.partners import AccessConfig, Partner
    from .access import AccessControl

    control = AccessControl(AccessConfig(
        partners=MappingProxyType({"demo": Partner("demo", keys, profiles=MappingProxyType({"open": profile}))}),
        trusted_proxies=PROXIES,
    ))
    query = {"token": native}

    def check() -> object:
        return control.check("demo", "ladder", PATH, peer="10.1.2.3", forwarded_for="203.0.113.9",
                             referer="https://www.example.com/watch", user_agent=ua, query=query, cookies={}, now=NOW)

    return {
        "verify_native_us": measure(lambda: verify(native, PATH, ip, keys, NOW, 30), requests),
        "verify_akamai_us": measure(lambda: verify(akamai, PATH, ip, keys, NOW, 30), requests),
        "decide_us": measure(lambda: decide(profile, facts, NOW), requests),
        "request_native_us": measure(one(native), requests),
        "request_akamai_us": measure(one(akamai), requests),
        "access_check_us": measure(check, requests),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m auth.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    ns = parser.parse_args(argv)
    for name, value in run(ns.requests).items():
        print(f"{name:20} {value:8.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
