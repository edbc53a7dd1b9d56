"""CDN-origin mode: cache headers a CDN acts on, and the origin shield.

The shield lets an origin answer only its CDN: every request must carry the
CDN's shared secret in a configured header (several secrets may be active
during a rotation). It is pure ASGI middleware so it runs before any work.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send


OPEN_PATHS = ("/healthz", "/readyz")  # load balancers probe without the secret
# A playlist that holds this viewer's token, or whose body a rule may tell viewers apart by: only the
# viewer's own cache may keep it, briefly (origin and edge alike).
PERSONAL_PLAYLIST_CACHE = "private, max-age=60"
ACCESS_HEADER = "X-Vodgate-Access"  # "restricted" on media of a partner with access rules


@dataclass(frozen=True)
class CdnPolicy:
    max_age: int = 31536000
    s_maxage: int = 31536000
    stale_while_revalidate: int = 60
    stale_if_error: int = 86400
    surrogate_header: str = "Surrogate-Key"  # Fastly; "Cache-Tag" for Cloudflare/Akamai

    def media_headers(self, partner: str, entry: str, restricted: bool = False) -> dict[str, str]:
        """Headers of a successful media response (playlists and segments are immutable per version).

        ``restricted``: the partner has access rules, said in ACCESS_HEADER so that an edge which has no
        rules for it refuses to share the answer (edge/proxy.py) instead of serving it to everyone."""
        cache_control = (
            f"public, max-age={self.max_age}, s-maxage={self.s_maxage}, immutable, "
            f"stale-while-revalidate={self.stale_while_revalidate}, stale-if-error={self.stale_if_error}"
        )
        headers = {"Cache-Control": cache_control, self.surrogate_header: surrogate_keys(partner, entry)}
        if restricted:
            headers[ACCESS_HEADER] = "restricted"
        return headers


def surrogate_keys(partner: str, entry: str) -> str:
    """Tags for purge-by-tag: one for the partner, one for the entry (ids contain no spaces)."""
    return f"p-{partner} e-{partner}-{entry}"


def shield_passes(presented: bytes, secrets: Sequence[bytes]) -> bool:
    """Whether the header value is one of the secrets: every secret compared, each in constant time."""
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(presented, secret)
    return matched


class ShieldGuard:
    """Whether a request carries one of the shield secrets (always, when none is configured)."""

    def __init__(self, header: str, secrets: Sequence[str]) -> None:
        self.header = header.lower().encode("latin-1")
        self.secrets = [s.encode() for s in secrets]

    def passes(self, scope: Scope) -> bool:
        if not self.secrets:
            return True
        presented = next((value for name, value in scope["headers"] if name == self.header), b"")
        return shield_passes(presented, self.secrets)


class ShieldMiddleware:
    """403 ``shield_required`` unless the request carries one of the shared secrets."""

    def __init__(self, app: ASGIApp, header: str, secrets: Sequence[str]) -> None:
        self.app = app
        self.guard = ShieldGuard(header, secrets)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.guard.secrets or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.guard.passes(scope):  # it proves the caller is our CDN or edge; it vouches for no viewer
            await self.app(scope, receive, send)
            return
        await refuse_unshielded(send)


async def refuse_unshielded(send: Send) -> None:
    """The one answer to a request without the shield secret."""
    body = json.dumps({"error": "shield_required", "detail": "this node serves its CDN only: send the shield header"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
