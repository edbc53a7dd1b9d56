"""The seam between the edge and the access-control core: one call per media request.

    control = AccessControl.from_config(access_config)          # at start: opens the GeoIP database
    check = control.check(partner, entry, path, peer=..., forwarded_for=..., referer=..., origin=...,
                          user_agent=..., query=..., cookies=..., now=datetime.now(timezone.utc))
    check.decision.allowed / .status / .reason / .preview_seconds / .limits
    check.propagate                                             # "token=..." to append to playlist URIs

Everything but the GeoIP lookup is a pure function of the arguments; the clock is passed in.
Profiles can be replaced while serving (admin API): each check reads the partner table once, and a
replacement swaps the whole table, so a request sees either the old or the new profile, never a mix.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Callable, Mapping
from urllib.parse import quote

from config.partners import AccessConfig, Partner
from config.settings import ConfigError

from .client_ip import IPAddress, client_ip
from .geoip import CountryLookup, CountrySource, GeoIpError
from .rules import OPEN_PROFILE, Decision, Facts, Profile, decide, referrer_host
from .tokens import QUERY_AKAMAI, QUERY_NATIVE, FoundToken, TokenResult, extract_token, verify


@dataclass(frozen=True)
class AccessCheck:
    decision: Decision
    facts: Facts
    token_source: str | None = None  # "query:token", "cookie:__hdnts", ...
    propagate: str | None = None  # query string to append to every URI a playlist lists, or None

    @property
    def token(self) -> TokenResult | None:
        return self.facts.token


class AccessControl:
    def __init__(self, config: AccessConfig, countries: CountrySource | None = None) -> None:
        self.config = config
        self.countries = countries
        self._partners: Mapping[str, Partner] = config.partners
        self._restricted = {pid: _restrictive(p) for pid, p in self._partners.items()}  # kept in step by _swap
        # run at the end of reload(), in the same step: the admin API's changes (edge/admin_store.py) are layered
        # over the file's profiles again before any request sees the file's alone
        self.after_reload: list[Callable[[], None]] = []
        self.generation = 0  # counts reloads and admin changes: either may change what a URL's bytes are (encryption)

    @classmethod
    def from_config(cls, config: AccessConfig) -> "AccessControl":
        """Opens ``server.geoip_database``; a missing or invalid file is a ConfigError (startup stops)."""
        countries = None
        if config.geoip_database is not None:
            try:
                countries = CountryLookup(config.geoip_database)
            except GeoIpError as exc:
                raise ConfigError(f"server.geoip_database: {exc}") from None
        return cls(config, countries)

    # --- per request ---

    def partner(self, partner_id: str) -> Partner | None:
        return self._partners.get(partner_id)

    def check(
        self,
        partner_id: str,
        entry: str,
        path: str,
        *,
        peer: str | None,
        forwarded_for: str | None = None,
        referer: str | None = None,
        origin: str | None = None,
        user_agent: str | None = None,
        query: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        now: datetime,
    ) -> AccessCheck:
        """The decision for one request. A partner without a [partners.<id>] table is open."""
        ip = self.viewer_ip(peer, forwarded_for)
        partner = self._partners.get(partner_id)
        found = extract_token(query or {}, cookies or {})
        profile = partner.profile_for(entry) if partner is not None else OPEN_PROFILE
        token = None
        if found is not None and partner is not None:
            token = verify(found.value, path, ip, partner.keys, now, self.config.token_clock_skew)
        facts = Facts(
            client_ip=ip,
            country=self.country(ip) if profile.uses_country else None,
            referrer_host=referrer_host(referer, origin),
            user_agent=user_agent or "",
            token=token,
            path=path,
        )
        window = partner.entry_window(entry) if partner is not None else None
        decision = decide(profile, facts, now, window)
        # only a token that verified goes into playlist URIs: anything else would let a viewer have every URI of
        # a long playlist carry kilobytes of its choosing (a 15 KB request, a 13 MB answer)
        propagate = propagation_query(found) if token is not None and token.valid else None
        return AccessCheck(decision, facts, found.source if found else None, propagate)

    def viewer_ip(self, peer: str | None, forwarded_for: str | None) -> IPAddress:
        """The client address by the trusted-proxy rule (X-Forwarded-For only from server.trusted_proxies)."""
        return client_ip(peer, forwarded_for, self.config.trusted_proxies)

    def config_partner(self, partner_id: str) -> Partner:
        """The partner's current configuration (admin API); ConfigError when it has none."""
        return self._require(partner_id)

    def restricts(self, partner_id: str) -> bool:
        """Whether answers for this partner can differ between viewers (any rule or entry window)."""
        return self._restricted.get(partner_id, False)

    def country(self, ip: IPAddress) -> str | None:
        return self.countries.country(ip) if self.countries is not None else None

    def decide_for(self, partner_id: str, entry: str, facts: Facts, now: datetime) -> Decision:
        """decide() with the partner's profile and entry window for ``entry`` (explain, admin)."""
        partner = self._partners.get(partner_id)
        if partner is None:
            return decide(OPEN_PROFILE, facts, now)
        return decide(partner.profile_for(entry), facts, now, partner.entry_window(entry))

    # --- admin ---

    def replace_profile(self, partner_id: str, profile: Profile) -> None:
        """Create or replace a profile (already validated by config.partners.profile_from_dict)."""
        partner = self._require(partner_id)
        self._swap(partner.with_profile(profile))
        self.generation += 1  # a profile may switch its entries' encryption: what a URL's bytes are (edge/hot.py)

    def delete_profile(self, partner_id: str, name: str) -> None:
        """ConfigError while the partner or one of its entries uses the profile."""
        self._swap(self._require(partner_id).without_profile(name))
        self.generation += 1

    def restore_file_profiles(self) -> None:
        """Every partner back to the configuration's profiles, without the admin API's changes (the store of
        those changes then applies them again: edge/admin_store.py)."""
        self._partners = self.config.partners
        self._restricted = {pid: _restrictive(p) for pid, p in self._partners.items()}

    def admin_allowed(self, partner_id: str, presented: str | None) -> bool:
        """Constant-time check of a partner's admin_secret; False when none is configured."""
        partner = self._partners.get(partner_id)
        if partner is None or partner.admin_secret is None or not presented:
            return False
        return hmac.compare_digest(partner.admin_secret.encode("utf-8"), presented.encode("utf-8"))

    def _require(self, partner_id: str) -> Partner:
        partner = self._partners.get(partner_id)
        if partner is None:
            raise ConfigError(f"no partner {partner_id!r} in the configuration; configured: {sorted(self._partners)}")
        return partner

    def _swap(self, partner: Partner) -> None:
        self._partners = MappingProxyType({**self._partners, partner.id: partner})
        self._restricted = {**self._restricted, partner.id: _restrictive(partner)}

    def reload(self, config: AccessConfig) -> None:
        """Replace the whole configuration (SIGHUP: edge/reload.py): partners, profiles, keys, trusted proxies,
        clock skew and the GeoIP database, re-opened from its path. ConfigError, with nothing changed, when the
        database does not open. Then ``after_reload`` runs: the admin API's stored changes apply again over the
        file's profiles."""
        countries = AccessControl.from_config(config).countries  # opened first: a bad file changes nothing
        restricted = {pid: _restrictive(p) for pid, p in config.partners.items()}
        self.config, self.countries = config, countries
        self._partners, self._restricted = config.partners, restricted
        self.generation += 1  # answers remembered under the previous file (edge/hot.py) are not given again
        for layer in self.after_reload:
            layer()
        # the previous GeoIP reader is not closed here: a lookup in flight holds it, and it closes when freed

    def close(self) -> None:
        closer = getattr(self.countries, "close", None)
        if closer is not None:
            closer()


def _restrictive(partner: Partner) -> bool:
    return any(p.rules for p in partner.profiles.values()) or any(
        partner.entry_window(e) is not None for e in partner.entries
    )


def propagation_query(found: FoundToken | None) -> str | None:
    """``token=...`` / ``hdnts=...`` when the token came in the query string: players do not copy a
    master playlist's query to the URIs it lists, so the playlists must. Cookie tokens travel alone."""
    if found is None or not found.source.startswith("query:"):
        return None
    name = found.source.split(":", 1)[1]
    if name not in (QUERY_NATIVE, QUERY_AKAMAI):  # pragma: no cover - extract_token's names only
        return None
    return f"{name}={quote(found.value, safe='~*!/:=')}"
