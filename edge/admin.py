"""/admin/: per-partner operator API, authenticated with the partner's admin secret.

    GET    /admin/partners/{partner}/profiles            list profiles (JSON, the TOML shape)
    PUT    /admin/partners/{partner}/profiles/{name}     create or replace (validated like the config file)
    DELETE /admin/partners/{partner}/profiles/{name}
    GET    /admin/partners/{partner}/changes?limit=      this partner's profile changes, newest first (the audit)
    GET    /admin/partners/{partner}/explain?entry=&ip=&referrer=&ua=&at=&token=
    GET    /admin/partners/{partner}/reports/summary?from=&to=&entry=&format=json|csv|table, reports/plot.png
    POST   /admin/partners/{partner}/purge                {"entry": ...} or {"prefix": "/p/..."} or {} (whole partner);
                                                          reaches every node when Redis is configured

Bodies are JSON of at most 64 KiB (413 beyond), nested at most 32 deep, with unique keys (400 bad_json);
a key the endpoint does not know, or a string that is not Unicode text (a lone surrogate escape such as
"\\ud800", which could not be encoded back), is a 400 naming it. Profiles are parsed (their patterns
compiled) in a worker thread. A client that hangs up before its body is complete gets no answer and
leaves no traceback.

``Authorization: Bearer <admin_secret>``, compared in constant time.

A profile change is validated here, recorded by edge/admin_store.py (a global version, who and when: Redis
for the fleet, a state file for one node, else memory) and then applied to this node; the other nodes apply
it from Redis within milliseconds, and every node applies the stored changes over the TOML's profiles at start
and after a reload. PUT and DELETE answer the change's version in ``X-Vodgate-Change-Version``. A change
the store cannot record (Redis down) is 503 ``admin_store_unavailable`` and applied nowhere.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from typing import Sequence
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from auth.access import AccessControl
from config.partners import profile_from_dict, profile_to_dict
from config.settings import ConfigError
from origin.catalog import valid_id

from . import urls
from .admin_store import AdminChanges, Change, MemoryLog, StoreError
from .purge import CachePurger, PurgeError, PurgeRequest
from .errors import error_response

log = logging.getLogger("vodgate.admin")

MAX_BODY_BYTES = 64 * 1024  # a profile is a few KiB; a body past this is a mistake or an attack
MAX_JSON_DEPTH = 32  # a profile nests 6 deep (rules[].if.schedule[].days[]); json.loads recurses
CHANGES_LIMIT = (50, 1000)  # GET changes: the default and the most one answer lists
VERSION_HEADER = "X-Vodgate-Change-Version"
PURGE_KEYS = ("entry", "prefix")
PURGE_FORMS = 'send {"entry": "E"}, {"prefix": "/p/P/..."} or {} (the whole partner)'
REPORT_MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8", "table": "text/plain; charset=utf-8"}
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # in a str from json.loads, only ever unpaired


class BadBody(Exception):
    """An admin request body that is refused before its meaning is looked at."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code

    def response(self) -> Response:
        return error_response(self.status, self.code, str(self), personal=True)


class ClientGone(BadBody):
    """The client hung up before its body was complete: nobody is left to read an answer."""

    def __init__(self) -> None:
        super().__init__(499, "client_closed_request", "the client closed the connection before sending its whole body")

    def response(self) -> Response:
        return Response(status_code=self.status)  # the server drops it: the connection is gone


async def read_json_body(request: Request, empty: object = None) -> object:
    """The request's JSON body (``empty`` when there is none and that is allowed): at most
    MAX_BODY_BYTES (413 beyond), nested at most MAX_JSON_DEPTH deep, every object's keys unique."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadBody(413, "body_too_large", f"request body is {int(declared)} bytes; admin bodies are at most {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():  # chunked bodies have no Content-Length: count as they come
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BadBody(413, "body_too_large", f"request body is over {MAX_BODY_BYTES} bytes; admin bodies are at most {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        log.debug("admin: %s %s: the client hung up after %d bytes of its body", request.method, request.url.path, size)
        raise ClientGone() from None
    raw = b"".join(chunks)
    if not raw.strip() and empty is not None:
        return empty
    try:
        data = json.loads(raw, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise BadBody(400, "bad_json", f"request body is JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BadBody(400, "bad_json", f"request body is not JSON: {exc}") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise BadBody(400, "bad_json", f"request body is JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return data


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    data: dict[str, object] = {}
    for key, value in pairs:
        if key in data:
            raise BadBody(400, "bad_json", f"request body has key {key[:64]!r} twice in one object (JSON readers disagree on which counts)")
        data[key] = value
    return data


def lone_surrogate(value: object, where: str) -> str | None:
    """The path (``where.rules[0].if.user_agent``) of the first string in ``value``, key or value, that
    holds a lone UTF-16 surrogate, or None. JSON may escape one ("\\ud800") and json.loads keeps it, but
    it is not Unicode: RE2 and every JSON answer that echoes it would fail to encode it (500)."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    return f"{path} (a key)"
                stack.append((child, f"{path}.{key[:64]}"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def _not_unicode(path: str) -> str:
    return (
        f"{path} holds a lone UTF-16 surrogate (an escape such as \\ud800 without its pair), which is not "
        "Unicode text; send the character itself, or both halves of its escape (\\ud83d\\ude00)"
    )


def _depth(value: object) -> int:
    """How deep lists and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:  # past the limit the answer is known; do not walk further
            stack.extend((child, depth + 1) for child in children)
    return deepest


def purge_request(partner: str, body: object) -> PurgeRequest:
    """The purge a body asks for: exactly one of "entry" / "prefix" (a string), or {} for the whole
    partner. An unknown key is refused: {"entyr": "ladder"} must not purge the whole partner."""
    if not isinstance(body, dict):
        raise PurgeError(f"the body is a JSON {type(body).__name__}; {PURGE_FORMS}")
    surrogate = lone_surrogate(body, "the purge body")
    if surrogate:
        raise PurgeError(_not_unicode(surrogate))
    unknown = sorted(set(body) - set(PURGE_KEYS))
    if unknown:
        raise PurgeError(f"unknown key(s) {', '.join(repr(k[:64]) for k in unknown)} in the purge body; {PURGE_FORMS}")
    for key, value in body.items():
        if not isinstance(value, str):
            raise PurgeError(f'"{key}" has value {json.dumps(value)[:64]}; expected a string; {PURGE_FORMS}')
    if len(body) > 1:
        raise PurgeError(f'give "entry" or "prefix", not both; {PURGE_FORMS}')
    if "prefix" in body:
        spec = PurgeRequest(prefix=body["prefix"])
        if spec.scope_partner != partner:
            raise PurgeError(f"prefix must start with {urls.cache_prefix(partner)}")
    else:
        spec = PurgeRequest(partner=partner, entry=body.get("entry"))
    spec.key_prefix()  # validates the entry id / prefix
    return spec


class Admin:
    def __init__(
        self, access: AccessControl, purger: CachePurger, reports: Sequence[Route] = (), changes: AdminChanges | None = None
    ) -> None:
        self.access = access
        self.purger = purger
        self.changes = changes or AdminChanges(access, MemoryLog())  # no store given (tests): memory, as before
        # analytics report endpoints by name ("summary", "plot.png"), served per partner below
        self.reports = {route.path.lstrip("/"): route.endpoint for route in reports}

    def routes(self) -> list[Route]:
        base = "/admin/partners/{partner}"
        return [
            Route(f"{base}/profiles", self.list_profiles, methods=["GET"]),
            Route(f"{base}/profiles/{{name}}", self.put_profile, methods=["PUT"]),
            Route(f"{base}/profiles/{{name}}", self.delete_profile, methods=["DELETE"]),
            Route(f"{base}/changes", self.list_changes, methods=["GET"]),
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
            body = await read_json_body(request)
        except BadBody as bad:
            return bad.response()
        owner = self.access.config_partner(partner)
        before = self.access.partner(partner).profiles.get(name)  # type: ignore[union-attr]
        where = f"partners.{partner}.profiles.{name}"
        surrogate = lone_surrogate(body, where)
        if surrogate:
            return error_response(400, "bad_profile", f"admin API: {_not_unicode(surrogate)}", personal=True)
        try:
            # in a worker thread, so other requests go on meanwhile: a profile's patterns compile in a
            # few milliseconds each and tens of milliseconds together (auth.rules bounds both)
            profile = await run_in_threadpool(
                profile_from_dict,
                name,
                body,
                where=where,
                source="admin API",
                geoip_configured=self.access.countries is not None,
                tokens_configured=bool(owner.keys.keys), keys_configured=owner.protection.has_keys,
            )
        except ConfigError as exc:
            return error_response(400, "bad_profile", str(exc), personal=True)
        try:
            change = await self.changes.put(partner, profile, by=self._client(request))
        except StoreError as exc:
            return _unrecorded(exc)
        log.info("admin: partner %s replaced profile %s (version %d)", partner, name, change.version)
        if (before.encryption if before is not None else None) != profile.encryption:
            await self._purge_protection_change(partner, name)
        # the version in a header: the body stays {name: profile} (clients compare it), and a profile may be named "version"
        return _json({name: profile_to_dict(profile)}, change)

    async def _purge_protection_change(self, partner: str, profile: str) -> None:
        """A profile's encryption changed: its entries' URLs change (markers), but an edge that cached an old
        URL would keep answering it. Drop the partner's cached objects here, in the other workers and on the
        purge bus, as a reload that changes the encryption does (edge/reload.py)."""
        try:
            await self.purger.purge(PurgeRequest(partner=partner))
        except PurgeError as exc:
            log.warning("admin: partner %s profile %s changed its encryption, and the purge failed: %s", partner, profile, exc)
            return
        log.warning("admin: the encryption of partner %s's profile %s changed: its cached objects were purged here "
                    "and on the purge bus; purge them at the CDN too (surrogate key p-%s)", partner, profile, partner)

    async def delete_profile(self, request: Request) -> Response:
        partner, denied = self._authorize(request)
        if denied:
            return denied
        name = request.path_params["name"]
        if name not in self.access.config_partner(partner).profiles:
            return error_response(404, "unknown_profile", f"partner {partner} has no profile {name}", personal=True)
        try:
            self.access.config_partner(partner).without_profile(name)  # refused while it is in use: nothing recorded
        except ConfigError as exc:
            return error_response(409, "profile_in_use", str(exc), personal=True)
        try:
            change = await self.changes.delete(partner, name, by=self._client(request))
        except StoreError as exc:
            return _unrecorded(exc)
        log.info("admin: partner %s deleted profile %s (version %d)", partner, name, change.version)
        return Response(status_code=204, headers={VERSION_HEADER: str(change.version)})

    async def list_changes(self, request: Request) -> Response:
        """The audit of this partner's profile changes, newest first: only the caller's partner, whatever it asks."""
        partner, denied = self._authorize(request)
        if denied:
            return denied
        default, most = CHANGES_LIMIT
        raw = request.query_params.get("limit", str(default))
        if not raw.isdigit() or not 1 <= int(raw) <= most:
            return error_response(400, "bad_request", f"limit= takes a whole number from 1 to {most} (default {default})", personal=True)
        try:
            changes = await self.changes.audit(partner, int(raw))
        except Exception as exc:  # Redis unreachable, an unreadable audit file
            log.warning("admin: the audit of partner %s could not be read: %s", partner, exc)
            return error_response(503, "admin_store_unavailable", "the store of admin changes cannot be read now; try again", personal=True)
        return _json({"partner": partner, "version": self.changes.version, "changes": [c.to_dict() for c in changes]})

    def _client(self, request: Request) -> str:
        """Who made a change: the client address by the trusted-proxy rule (X-Forwarded-For only from
        server.trusted_proxies), as the access checks see it; never anything of the Authorization header."""
        peer = request.client.host if request.client else None
        forwarded = ",".join(request.headers.getlist("x-forwarded-for")) or None
        return str(self.access.viewer_ip(peer, forwarded))

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
            spec = purge_request(partner, await read_json_body(request, empty={}))
        except BadBody as bad:
            return bad.response()
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
        fmt = request.query_params.get("format", "json")
        summary = request.path_params["name"] == "summary" and fmt in REPORT_MEDIA_TYPES
        if summary:  # asked as JSON, to take the server's folder (or Redis address) out of its source
            query = [(k, v) for k, v in query if k != "format"] + [("format", "json")]
        request.scope["query_string"] = urlencode(query).encode()
        answer = await endpoint(Request(request.scope, request.receive))
        return _without_location(answer, fmt) if summary else answer


def _without_location(answer: Response, fmt: str) -> Response:
    """The summary ``answer`` (JSON) in format ``fmt``, its ``source`` cut to the kind (``jsonl`` or ``redis``):
    a partner's admin learns where plays are counted, never the server's folder or its Redis address."""
    from analytics.report import RENDERERS

    if answer.status_code != 200:
        return answer  # an error (a bad query) says nothing of the source
    report = json.loads(answer.body)
    report["source"] = str(report.get("source", "")).partition(":")[0]
    return Response(RENDERERS[fmt](report), media_type=REPORT_MEDIA_TYPES[fmt], headers={"Cache-Control": "no-store"})


def _json(data: object, change: Change | None = None) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if change is not None:
        headers[VERSION_HEADER] = str(change.version)
    return JSONResponse(data, headers=headers)


def _unrecorded(exc: StoreError) -> Response:
    """503; the reason goes to the log only: a partner's admin never learns the server's Redis address or folders."""
    log.warning("admin: change not recorded: %s", exc)
    return error_response(503, "admin_store_unavailable", "the change could not be recorded, so it is applied nowhere; try again", personal=True)
