"""`vodgate token sign|verify` and `vodgate access explain`: the operator's side of access control.

Hooked into cli/main.py with::

    from cli import access as access_cli
    access_cli.add_token_commands(commands)      # commands = parser.add_subparsers(dest="command")
    access_cli.add_access_commands(commands)
    ...
    if ns.command in ("token", "access"):
        return access_cli.run(ns)                 # ConfigError propagates to main's handler

Each subcommand takes ``--config vodgate.toml`` (default: $VODGATE_CONFIG). Exit codes: 0 valid /
allowed, 1 invalid / denied, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TextIO
from urllib.parse import parse_qsl, quote, urlsplit

from auth.client_ip import UNSPECIFIED, IPAddress, normalize_ip
from auth.geoip import CountryLookup, GeoIpError
from auth.rules import Facts, decide, referrer_host
from auth.tokens import (
    Claims,
    TokenError,
    TokenResult,
    decode_native_claims,
    detect_format,
    extract_token,
    parse_akamai,
    parse_native,
    sign_akamai,
    sign_native,
    verify,
)
from config.partners import AccessConfig, Partner, load_access
from config.settings import ConfigError

LoadConfig = Callable[[Path], AccessConfig]
_TTL = re.compile(r"(\d+)\s*([smhd]?)")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PARTNER = re.compile(r"/p/([^/]+)/")


def add_token_commands(subparsers: Any, load_config: LoadConfig = load_access) -> None:
    token = subparsers.add_parser("token", help="sign or check hashed-URL tokens (docs/ACCESS_CONTROL.md)")
    commands = token.add_subparsers(dest="token_command", required=True)

    sign = commands.add_parser("sign", help="print a playable signed master playlist URL")
    _config_option(sign)
    sign.add_argument("--partner", required=True)
    sign.add_argument("--entry", required=True)
    sign.add_argument("--ttl", default="1h", help="lifetime: 3600, 90s, 15m, 1h, 2d (default 1h)")
    sign.add_argument("--ip", help="bind to this client: an address (IPv6: its token_ipv6_prefix) or a CIDR")
    sign.add_argument("--format", choices=("vodgate", "hdnts"), default="vodgate", help="hdnts: Akamai EdgeAuth")
    sign.add_argument("--base-url", help="scheme://host:port in front of the path (default: the config's "
                                         "[server] host and port, http://127.0.0.1:8080 when unset)")
    sign.add_argument("--delivery", choices=("hls", "cmaf"), default="hls")
    sign.add_argument("--key", help="key id to sign with (default the partner's token_signing_key)")
    sign.add_argument("--session", help="play session id carried in the token")
    sign.add_argument("--start", help="not valid before (ISO 8601 time, or 'now')")
    sign.add_argument("--clip", metavar="FROM-TO", help="pin the token to this clip, seconds (e.g. 10-20.5): it plays "
                      "clip URLs within it only (native tokens)")
    sign.set_defaults(run=_token_sign, load_config=load_config)

    check = commands.add_parser("verify", help="explain why a signed URL is or is not valid")
    _config_option(check)
    check.add_argument("url", help="the URL (or path with its query string) as a player would request it")
    check.add_argument("--ip", help="the client address to check an IP binding against")
    check.add_argument("--at", help="check at this time (ISO 8601; default now)")
    check.set_defaults(run=_token_verify, load_config=load_config)


def add_access_commands(subparsers: Any, load_config: LoadConfig = load_access) -> None:
    access = subparsers.add_parser("access", help="explain access-control decisions")
    commands = access.add_subparsers(dest="access_command", required=True)
    explain = commands.add_parser("explain", help="which rules match a viewer, which actions result, and why")
    _config_option(explain)
    explain.add_argument("--partner", required=True)
    explain.add_argument("--entry", required=True)
    explain.add_argument("--ip", help="client address (default 0.0.0.0)")
    explain.add_argument("--referrer", help="Referer header (a URL)")
    explain.add_argument("--origin", help="Origin header, used when there is no Referer")
    explain.add_argument("--ua", default="", help="User-Agent header")
    explain.add_argument("--at", help="time of the request (ISO 8601; default now)")
    explain.add_argument("--token", help="a token, or a signed URL carrying one")
    explain.add_argument("--country", help="ISO country code (or 'unknown') instead of the GeoIP lookup")
    explain.add_argument("--path", help="request path (default the entry's HLS master playlist)")
    explain.set_defaults(run=_access_explain, load_config=load_config)


def run(ns: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the subcommand chosen by add_*_commands. ConfigError is left to the caller."""
    return ns.run(ns, out or sys.stdout)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=os.environ.get("VODGATE_CONFIG"),
                        help="TOML config with the [partners] section (default $VODGATE_CONFIG)")


# --- token sign -----------------------------------------------------------------------------------


def _token_sign(ns: argparse.Namespace, out: TextIO) -> int:
    config = _load(ns)
    partner = _partner(config, ns.partner)
    entry = _id(ns.entry, "--entry")
    ttl = parse_ttl(ns.ttl)
    now = int(time.time())
    start = None if ns.start is None else (now if ns.start == "now" else int(parse_time(ns.start).timestamp()))
    expires = (start or now) + ttl
    kid = (ns.key or partner.keys.signing_kid()) if partner.keys.keys else None
    if kid is None:
        raise ConfigError(f"partners.{partner.id}.token_keys is empty; add a key to sign tokens")
    if kid not in partner.keys.keys:
        raise ConfigError(f"--key {kid!r} is not one of partners.{partner.id}.token_keys: {partner.keys.key_ids}")
    secret = partner.keys.keys[kid]
    tree = f"/p/{partner.id}/e/{entry}"
    path = f"{tree}/{ns.delivery}/master.m3u8"
    clip = _clip(ns.clip, ns.format)
    if clip is not None:
        from edge import urls  # only here: `token sign` otherwise stays free of edge/ (tests/test_auth_cli.py)

        path = urls.with_clip(path, clip)
    try:
        if ns.format == "hdnts":
            ip = None if ns.ip is None else str(_address(ns.ip, "--ip"))
            token = sign_akamai(secret, expires, acl=f"{tree}/*", ip=ip, start=start, session_id=ns.session)
            query = f"hdnts={quote(token, safe='~*!/:=')}"
        else:
            token = sign_native(kid, secret, tree, expires, ip=ns.ip, ipv6_prefix=partner.keys.ipv6_prefix,
                                session_id=ns.session, start=start, clip=clip.name.removeprefix("clip-") if clip else None)
            query = f"token={token}"
    except TokenError as exc:
        raise ConfigError(str(exc)) from None
    base = (ns.base_url or _configured_base_url(Path(ns.config))).rstrip("/")
    print(f"{base}{path}?{query}", file=out)
    bound = f", bound to {ns.ip}" if ns.ip else ""
    print(f"# {ns.format} token, key {kid}, covers {tree}/..., expires {_iso(expires)}{bound}", file=sys.stderr)
    return 0


def _clip(value: str | None, fmt: str) -> Any:
    """``--clip FROM-TO`` as an edge.urls.Clip (the URL's spelling of a clip is parsed there, and only there)."""
    if value is None:
        return None
    if fmt != "vodgate":
        raise ConfigError("--clip needs --format vodgate: Akamai tokens have no clip claim")
    from edge import urls

    try:
        return urls.parse_clip(value)
    except urls.BadRequest as exc:
        raise ConfigError(f"--clip {value!r}: {exc}") from None


# --- token verify ---------------------------------------------------------------------------------


def _token_verify(ns: argparse.Namespace, out: TextIO) -> int:
    config = _load(ns)
    parts = urlsplit(ns.url)
    path = parts.path
    match = _PARTNER.match(path)
    if match is None:
        print(f"INVALID not_found: {path!r} is not a /p/<partner>/e/<entry>/... path", file=out)
        return 1
    partner = _partner(config, match[1])
    found = extract_token(dict(parse_qsl(parts.query, keep_blank_values=True)), {})
    if found is None:
        print("INVALID token_missing: the URL carries no ?token= or ?hdnts= parameter", file=out)
        return 1
    now = parse_time(ns.at) if ns.at else datetime.now(timezone.utc)
    ip, note = _verify_ip(ns.ip, found.value, partner)
    result = verify(found.value, path, ip, partner.keys, now, config.token_clock_skew)
    _print_token(result, found.value, out, note)
    return 0 if result.valid else 1


def _verify_ip(given: str | None, token: str, partner: Partner) -> tuple[IPAddress, str | None]:
    if given is not None:
        return _address(given, "--ip"), None
    claims = _unverified_claims(token)
    if claims is not None and claims.ip is not None:
        return claims.ip.network_address, f"IP binding {claims.ip} not checked: pass --ip CLIENT to check it"
    return UNSPECIFIED, None


def _print_token(result: TokenResult, token: str, out: TextIO, note: str | None = None) -> None:
    print(f"{'VALID' if result.valid else 'INVALID'} {result.reason}: {result.detail}", file=out)
    claims = result.claims
    label = "claims"
    if claims is None:
        claims = _unverified_claims(token)
        label = "claims (unverified: the signature did not check out)"
    print(f"  format: {result.format or 'unrecognised'}" + (f", key {result.key_id}" if result.key_id else ""), file=out)
    if claims is not None:
        print(f"  {label}:", file=out)
        print(f"    expires: {_iso(claims.expires)}", file=out)
        if claims.start is not None:
            print(f"    start:   {_iso(claims.start)}", file=out)
        print(f"    acl:     {'!'.join(claims.acl) if claims.acl else (claims.url or '(url token: the signed path)')}", file=out)
        if claims.ip is not None:
            print(f"    ip:      {claims.ip}", file=out)
        if claims.session_id is not None:
            print(f"    session: {claims.session_id}", file=out)
        if claims.clip is not None:
            print(f"    clip:    {float(claims.clip[0]):g}-{float(claims.clip[1]):g} s", file=out)
    if note:
        print(f"  note: {note}", file=out)


def _unverified_claims(token: str) -> Claims | None:
    try:
        if detect_format(token) == "vodgate":
            return decode_native_claims(parse_native(token).raw_claims)
        if detect_format(token) == "akamai":
            return parse_akamai(token).claims
    except TokenError:
        return None
    return None


# --- access explain -------------------------------------------------------------------------------


def _access_explain(ns: argparse.Namespace, out: TextIO) -> int:
    config = _load(ns)
    partner = _partner(config, ns.partner)
    entry = _id(ns.entry, "--entry")
    now = parse_time(ns.at) if ns.at else datetime.now(timezone.utc)
    path = ns.path or f"/p/{partner.id}/e/{entry}/hls/master.m3u8"
    ip = _address(ns.ip, "--ip") if ns.ip else UNSPECIFIED
    profile = partner.profile_for(entry)
    country, country_note = _country(ns.country, ip, config, profile.uses_country)
    token_result = None
    token_value = None
    if ns.token:
        token_value = _token_argument(ns.token)
        token_result = verify(token_value, path, ip, partner.keys, now, config.token_clock_skew)
    facts = Facts(ip, country, referrer_host(ns.referrer, ns.origin), ns.ua or "", token_result, path)
    decision = decide(profile, facts, now, partner.entry_window(entry))
    print(f"request: {path} at {_iso(now.timestamp())}", file=out)
    print(f"  client {ip}" + ("" if ns.ip else " (no --ip given)"), file=out)
    print(f"  country {country or 'unknown'} ({country_note})", file=out)
    print(f"  referrer host {facts.referrer_host or 'none'}", file=out)
    print(f"  user agent {facts.user_agent!r}", file=out)
    if token_result is not None and token_value is not None:
        print(f"  token {token_result.redacted}: {token_result.reason} ({token_result.detail})", file=out)
    else:
        print("  token none", file=out)
    for line in decision.explanation():
        print(line, file=out)
    return 0 if decision.allowed else 1


def _country(given: str | None, ip: IPAddress, config: AccessConfig, needed: bool) -> tuple[str | None, str]:
    if given is not None:
        return (None if given.lower() == "unknown" else given.upper()), "from --country"
    if config.geoip_database is None:
        return None, "no GeoIP database configured"
    if not needed:
        return None, "not looked up: the profile has no country condition"
    try:
        with CountryLookup(config.geoip_database) as lookup:
            return lookup.country(ip), f"GeoIP {config.geoip_database.name}"
    except GeoIpError as exc:
        raise ConfigError(f"server.geoip_database: {exc}") from None


def _token_argument(value: str) -> str:
    if value.startswith(("http://", "https://", "/")):
        found = extract_token(dict(parse_qsl(urlsplit(value).query, keep_blank_values=True)), {})
        if found is None:
            raise ConfigError(f"--token {value[:60]!r}... carries no ?token= or ?hdnts= parameter")
        return found.value
    return value


# --- helpers --------------------------------------------------------------------------------------


def parse_ttl(text: str) -> int:
    """'3600', '90s', '15m', '1h', '2d' -> seconds."""
    match = _TTL.fullmatch(text.strip().lower())
    if match is None or int(match[1]) == 0:
        raise ConfigError(f"--ttl has value {text!r}; expected a positive duration such as 3600, 90s, 15m, 1h or 2d")
    return int(match[1]) * _TTL_UNITS[match[2]]


def parse_time(text: str) -> datetime:
    """ISO 8601; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"time {text!r} is not ISO 8601; expected e.g. 2026-07-01T18:30:00+02:00 or 2026-07-01T16:30:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _configured_base_url(path: Path) -> str:
    """http://host:port of the server this config runs ([server] host and port, their defaults when unset).

    A wildcard bind address (0.0.0.0, ::) is no address to put in a URL: the loopback of its family
    stands in, which is right on the server itself; anywhere else pass --base-url.
    """
    from config.settings import load_settings

    settings = load_settings(path)
    return f"http://{_url_host(settings.host)}:{settings.port}"


def _url_host(host: str) -> str:
    """A [server] host (an IP address or localhost) as a URL's host: the wildcard of either family in any
    spelling (0.0.0.0, ::, ::0) its loopback, IPv6 in brackets with a zone's "%" written %25 (RFC 6874)."""
    if host == "localhost":
        return "127.0.0.1"
    address = ipaddress.ip_address(host)  # config.settings only lets an address through
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "[::1]"
    return f"[{host.replace('%', '%25')}]" if address.version == 6 else host


def _load(ns: argparse.Namespace) -> AccessConfig:
    if ns.config is None:
        raise ConfigError("no configuration: pass --config vodgate.toml (or set VODGATE_CONFIG)")
    return ns.load_config(Path(ns.config))


def _partner(config: AccessConfig, partner_id: str) -> Partner:
    partner = config.partners.get(partner_id)
    if partner is None:
        raise ConfigError(f"no [partners.{partner_id}] in the configuration; configured: {sorted(config.partners)}")
    return partner


def _id(value: str, option: str) -> str:
    from origin.catalog import valid_id

    if not valid_id(value):
        raise ConfigError(f"{option} has value {value!r}; expected 1-64 characters of A-Z a-z 0-9 - _")
    return value


def _address(text: str, option: str) -> IPAddress:
    try:
        return normalize_ip(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ConfigError(f"{option} has value {text!r}; expected an IP address such as 203.0.113.7 or 2001:db8::7") from None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
