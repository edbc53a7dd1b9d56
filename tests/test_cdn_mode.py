"""CDN-origin mode: the shield, and the cache headers a CDN acts on (app driven in-process by httpx)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from config.settings import ConfigError, Settings, parse_settings
from edge.app import create_app

SECRET_A = "a" * 24
SECRET_B = "rotated-secret-bbbbbbbbbb"


def get(app, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://origin") as client:
            return await client.get(path, headers=headers or {})

    return asyncio.run(run())


@pytest.fixture(scope="module")
def shielded(media_library):
    settings = Settings(media_root=media_library, shield_header="X-CDN-Secret", shield_secrets=(SECRET_A, SECRET_B))
    return create_app(settings)


def test_shield_refuses_requests_without_the_secret(shielded):
    for headers in ({}, {"X-CDN-Secret": "wrong"}, {"X-CDN-Secret": SECRET_A[:-1]}):
        response = get(shielded, "/p/demo/e/ladder/hls/master.m3u8", headers)
        assert response.status_code == 403
        assert response.json()["error"] == "shield_required"
        assert b"#EXTM3U" not in response.content


def test_shield_accepts_every_active_secret_and_leaves_health_open(shielded):
    for secret in (SECRET_A, SECRET_B):
        response = get(shielded, "/p/demo/e/ladder/hls/master.m3u8", {"X-CDN-Secret": secret})
        assert response.status_code == 200 and response.text.startswith("#EXTM3U")
    assert get(shielded, "/healthz").status_code == 200


def test_cdn_cache_headers_and_surrogate_keys(media_library):
    app = create_app(Settings(media_root=media_library, surrogate_header="Cache-Tag", stale_if_error=600))
    for path in ("/p/demo/e/ladder/hls/master.m3u8", "/p/demo/e/ladder/cmaf/hi/seg-1.m4s", "/p/demo/e/ladder/mp4/hi.mp4"):
        response = get(app, path)
        assert response.status_code == 200, path
        cache_control = response.headers["cache-control"]
        for directive in ("public", "s-maxage=", "immutable", "stale-while-revalidate=", "stale-if-error=600"):
            assert directive in cache_control, (path, cache_control)
        assert response.headers["cache-tag"] == "p-demo e-demo-ladder"
        assert "vary" not in response.headers
    error = get(app, "/p/demo/e/nope/hls/master.m3u8")
    assert error.status_code == 404 and "cache-tag" not in error.headers
    assert "immutable" not in error.headers["cache-control"]


def test_etags_are_identical_across_origin_nodes(media_library):
    first, second = create_app(Settings(media_root=media_library)), create_app(Settings(media_root=media_library))
    for path in ("/p/demo/e/ladder/hls/master.m3u8", "/p/demo/e/ladder/hls/lo/seg-2.ts"):
        assert get(first, path).headers["etag"] == get(second, path).headers["etag"]


def test_shield_config_is_validated_without_echoing_secrets():
    with pytest.raises(ConfigError, match=r"cdn.shield_secrets\[0\] is shorter than 16") as info:
        parse_settings({"cdn": {"shield_secrets": ["short-secret"]}})
    assert "short-secret" not in str(info.value)
    assert SECRET_A not in repr(Settings(shield_secrets=(SECRET_A,)))


def request(app, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://origin") as client:
            return await client.request(method, path, headers=headers)

    return asyncio.run(run())


def test_cors_star_does_not_vary_by_origin(media_library):
    app = create_app(Settings(media_root=media_library))
    response = get(app, "/p/demo/e/ladder/hls/master.m3u8", {"Origin": "https://player.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "vary" not in response.headers  # one CDN copy for every embedding site
    preflight = request(app, "OPTIONS", "/p/demo/e/ladder/hls/lo/seg-1.ts", {"Origin": "https://player.example", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range"})
    assert preflight.status_code == 204
    assert "Range" in preflight.headers["access-control-allow-headers"]


def test_cors_allow_list_echoes_and_varies(media_library):
    app = create_app(Settings(media_root=media_library, cors_origins=("https://good.example",)))
    good = get(app, "/p/demo/e/ladder/hls/master.m3u8", {"Origin": "https://good.example"})
    assert good.headers["access-control-allow-origin"] == "https://good.example"
    assert good.headers["vary"] == "Origin"
    bad = get(app, "/p/demo/e/ladder/hls/master.m3u8", {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in bad.headers
    preflight = request(app, "OPTIONS", "/p/demo/e/ladder/hls/master.m3u8", {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 403
