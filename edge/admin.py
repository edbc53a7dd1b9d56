"""/admin/: per-partner operator API, authenticated with the partner's admin secret.

    GET    /admin/partners/{partner}/profiles            list profiles (JSON, the TOML shape)
    PUT    /admin/partners/{partner}/profiles/{name}     create or replace (validated like the config file)
    DELETE /admin/partners/{partner}/profiles/{name}
    GET    /admin/partners/{partner}/explain?entry=&ip=&referrer=&ua=&at=&token=
    GET    /admin/partners/{partner}/reports/summary?from=&to=&entry=&format=json|csv|table, reports/plot.png
    POST   /admin/partners/{partner}/purge                {"entry": ...} or {"prefix": "/p/..."} or {} (whole partner);
                                                          reaches every node when Redis is configured

``Authorization: Bearer <admin_secret>``, compared in constant time. Changes
apply to the next request; they live in memory (the TOML file stays the
source of truth at the next start).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Sequence
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from auth.access import AccessControl
from config.partners import profile_from_dict, profile_to_dict
from config.settings import ConfigError
from origin.catalog import valid_id

from . import urls
from .purge import CachePurger, PurgeError, PurgeRequest
from .errors import error_response

log = logging.getLogger("vodgate.admin")


class Admin:
    def __init__(self, access: AccessControl, purger: CachePurger, reports: Sequence[Route] = ()) -> None:
        self.access = access
        self.purger = purger
        # analytics report endpoints by name ("summary", "plot.png"), served per partner below
        self.reports = {route.path.lstrip("/"): route.endpoint for route in reports}

    def routes(self) -> list[Route]:
        base = "/admin/partners/{partner}"
        return [
            Route(f"{base}/profiles", self.list_profiles, methods=["GET"]),
            Route(f"{base}/profiles/{{name}}", self.put_profile, methods=["PUT"]),
            Route(f"{base}/profiles/{{name}}", self.delete_profile, methods=["DELETE"]),
            Route(f"{base}/explain", self.explain, methods=["GET"]),
            Route(f"{base}/purge", self.purge, methods=["POST"]),
            Route(f"{base}/reports/{{name}}", self.report, methods=["GET"]),
        ]

    def _authorize(self, request: Request) -> tuple[str, Response | None]:
        partner = request.path_params["partner"]
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if not header:
            return partner, error_response(401, "admin_auth_required", "send Authorization: Bearer <admin_secret>", {"WWW-Authenticate": "Bearer"}, personal=True)
        if scheme.lower() != "bearer" or not valid_id(partner) or not self.access.admin_allowed(partner, secret.strip()):
            return partner, error_response(403, "admin_forbidden", f"not an admin secret of partner {partner}", personal=True)
        return partner, None

    async def list_profiles(self, request: Request) -> Response:
        partner, denied = self._authorize(request)
        if denied:
            return denied
        profiles = self.access.config_partner(partner).profiles
        return _json({name: profile_to_dict(p) for name, p in sorted(profiles.items())})

    async def put_profile(self, request: Request) -> Response:
        partner, denied = self._authorize(request)
        if denied:
            return denied
        name = request.path_params["name"]
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            return error_response(400, "bad_json", f"request body is not JSON: {exc}", personal=True)
        owner = self.access.config_partner(partner)
        try:
            profile = profile_from_dict(
                name,
                body,
                where=f"partners.{partner}.profiles.{name}",
                source="admin API",
                geoip_configured=self.access.countries is not None,
                tokens_configured=bool(owner.keys.keys),
            )
            self.access.replace_profile(partner, profile)
        except ConfigError as exc:
            return error_response(400, "bad_profile", str(exc), personal=True)
        log.info("admin: partner %s replaced profile %s", partner, name)
        return _json({name: profile_to_dict(profile)})

    async def delete_profile(self, request: Request) -> Response:
        partner, denied = self._authorize(request)
        if denied:
            return denied
        name = request.path_params["name"]
        if name not in self.access.config_partner(partner).profiles:
            return error_response(404, "unknown_profile", f"partner {partner} has no profile {name}", personal=True)
        try:
            self.access.delete_profile(partner, name)
        except ConfigError as exc:
            return error_response(409, "profile_in_use", str(exc), personal=True)
        log.info("admin: partner %s deleted profile %s", partner, name)
        return Response(status_code=204)

    async def explain(self, request: Request) -> Response:
        partner, denied = self._authorize(request)
        if denied:
            return denied
        q = request.query_params
        entry = q.get("entry", "")
        if not valid_id(entry):
            return error_response(400, "bad_request", "explain needs entry=<entry id>", personal=True)
        try:
            at = datetime.fromisoformat(q["at"]) if "at" in q else datetime.now(timezone.utc)
        except ValueError:
            return error_response(400, "bad_request", "at= takes an ISO 8601 time, e.g. 2026-11-27T18:30:00+01:00", personal=True)
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        path = q.get("path") or urls.master_path(partner, entry, "hls")
        check = self.access.check(
            partner, entry, path, peer=q.get("ip"), referer=q.get("referrer"), user_agent=q.get("ua"),
            query={"token": q["token"]} if "token" in q else {}, now=at,
        )
        facts = check.facts
        return _json(
            {
                "request": {"path": path, "at": at.isoformat(), "client_ip": str(facts.client_ip), "country": facts.country,
                            "referrer_host": facts.referrer_host, "user_agent": facts.user_agent,
                            "token": None if check.token is None else {"valid": check.token.valid, "reason": check.token.reason, "token": check.token.redacted}},
                "decision": check.decision.to_dict(),
            }
        )

    async def purge(self, request: Request) -> Response:
        partner, denied = self._authorize(request)
        if denied:
            return denied
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            return error_response(400, "bad_json", f"request body is not JSON: {exc}", personal=True)
        if not isinstance(body, dict):
            return error_response(400, "bad_request", 'send {"entry": "E"}, {"prefix": "/p/P/..."} or {}', personal=True)
        try:
            if "prefix" in body:
                spec = PurgeRequest(prefix=str(body["prefix"]))
                if spec.scope_partner != partner:
                    raise PurgeError(f"prefix must start with {urls.cache_prefix(partner)}")
            else:
                entry = body.get("entry")
                spec = PurgeRequest(partner=partner, entry=None if entry is None else str(entry))
            spec.key_prefix()
        except (PurgeError, ValueError) as exc:
            return error_response(400, "bad_request", str(exc), personal=True)
        result = await self.purger.purge(spec)  # this node, then every node on the Redis channel
        log.info("admin: partner %s purged %s (%d objects here)", partner, spec.key_prefix(), result.removed)
        return _json({"purged": spec.key_prefix(), **result.to_dict()})


    async def report(self, request: Request) -> Response:
        """Play analytics of this partner only: the partner filter is forced, whatever the query says."""
        partner, denied = self._authorize(request)
        if denied:
            return denied
        endpoint = self.reports.get(request.path_params["name"])
        if endpoint is None:
            known = ", ".join(sorted(self.reports)) or "none: analytics is off ([analytics] enabled = false)"
            return error_response(404, "not_found", f"reports: {known}", personal=True)
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "partner"] + [("partner", partner)]
        request.scope["query_string"] = urlencode(query).encode()
        return await endpoint(Request(request.scope, request.receive))


def _json(data: object) -> JSONResponse:
    return JSONResponse(data, headers={"Cache-Control": "no-store"})
