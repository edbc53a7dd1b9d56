"""Progressive MP4 (/p/demo/e/<fixture>/mp4/main.mp4) and the HTTP semantics around it.

Byte-exact against the file in the library: whole bodies, random single
ranges, suffix and open ranges, 416, ignored malformed ranges, HEAD,
If-Range, conditional requests (also on playlists and segments) and CORS.
"""

from __future__ import annotations

import hashlib
import random
from email.utils import format_datetime, parsedate_to_datetime
from datetime import timedelta
from pathlib import Path

import pytest

from media_fixtures import ALL_GOOD, LADDER

RANGED = "h264_high_bframes"  # the largest single-flavor fixture
ORIGIN = "https://player.example"


def url(entry: str, flavor: str = "main") -> str:
    return f"/p/demo/e/{entry}/mp4/{flavor}.mp4"


def library_file(media_library: Path, entry: str, flavor: str = "main") -> Path:
    return media_library / "demo" / entry / f"{flavor}.mp4"


PROGRESSIVE = [(fx, "main") for fx in ALL_GOOD] + [("ladder", flavor) for flavor in LADDER]


@pytest.mark.parametrize("entry, flavor", PROGRESSIVE, ids=[f"{e}-{f}" for e, f in PROGRESSIVE])
def test_whole_body_is_the_file(entry, flavor, client, media_library):
    data = library_file(media_library, entry, flavor).read_bytes()
    response = client.get(url(entry, flavor))
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert int(response.headers["content-length"]) == len(data)
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["accept-ranges"] == "bytes"
    assert "content-range" not in response.headers
    assert response.headers["etag"].startswith('"') and response.headers["last-modified"]


@pytest.fixture(scope="module")
def ranged(media_library) -> bytes:
    return library_file(media_library, RANGED).read_bytes()


def _check_partial(response, data: bytes, start: int, end: int) -> None:
    assert response.status_code == 206, (start, end, response.status_code)
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    assert int(response.headers["content-length"]) == end - start + 1
    assert response.content == data[start : end + 1]


def test_random_ranges_are_byte_exact(client, ranged):
    rng = random.Random(20261127)
    size = len(ranged)
    spans = [(0, 0), (size - 1, size - 1), (0, size - 1)]
    for _ in range(30 - len(spans)):
        start = rng.randrange(size)
        spans.append((start, min(size - 1, start + rng.choice([1, 187, 4096, 65536, size]))))
    for start, end in spans:
        _check_partial(client.get(url(RANGED), headers={"Range": f"bytes={start}-{end}"}), ranged, start, end)


def test_range_end_past_the_file_is_clamped(client, ranged):
    size = len(ranged)
    response = client.get(url(RANGED), headers={"Range": f"bytes=100-{size + 5000}"})
    _check_partial(response, ranged, 100, size - 1)


def test_suffix_range(client, ranged):
    size = len(ranged)
    _check_partial(client.get(url(RANGED), headers={"Range": "bytes=-500"}), ranged, size - 500, size - 1)
    # a suffix longer than the file is the whole file, still as a 206
    _check_partial(client.get(url(RANGED), headers={"Range": f"bytes=-{size + 10}"}), ranged, 0, size - 1)


def test_open_range(client, ranged):
    _check_partial(client.get(url(RANGED), headers={"Range": "bytes=100-"}), ranged, 100, len(ranged) - 1)


@pytest.mark.parametrize("spec", ["bytes={size}-", "bytes={size}-{end}", "bytes=-0"])
def test_unsatisfiable_range_is_416(spec, client, ranged):
    size = len(ranged)
    response = client.get(url(RANGED), headers={"Range": spec.format(size=size, end=size + 10)})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{size}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == "range_not_satisfiable" and body["detail"]


@pytest.mark.parametrize(
    "spec", ["bytes=abc", "bytes=5-2", "items=0-5", "bytes=0-1,5-6", "bytes=", "bytes=--5", "0-5"]
)
def test_malformed_or_multiple_range_gets_the_whole_body(spec, client, ranged):
    response = client.get(url(RANGED), headers={"Range": spec})
    assert response.status_code == 200
    assert "content-range" not in response.headers
    assert response.content == ranged


def test_head(client, ranged):
    response = client.head(url(RANGED))
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) == len(ranged)
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == client.get(url(RANGED)).headers["etag"]
    partial = client.head(url(RANGED), headers={"Range": "bytes=10-19"})
    assert partial.status_code == 206 and partial.content == b""
    assert int(partial.headers["content-length"]) == 10
    assert partial.headers["content-range"] == f"bytes 10-19/{len(ranged)}"


def test_if_range(client, ranged):
    first = client.get(url(RANGED))
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]
    _check_partial(client.get(url(RANGED), headers={"Range": "bytes=0-99", "If-Range": etag}), ranged, 0, 99)
    _check_partial(
        client.get(url(RANGED), headers={"Range": "bytes=0-99", "If-Range": last_modified}), ranged, 0, 99
    )
    for stale in ['"0123456789abcdef01234567"', f"W/{etag}"]:  # another tag; a weak tag never matches
        response = client.get(url(RANGED), headers={"Range": "bytes=0-99", "If-Range": stale})
        assert response.status_code == 200, stale
        assert "content-range" not in response.headers
        assert response.content == ranged
    older = format_datetime(parsedate_to_datetime(last_modified) - timedelta(days=1), usegmt=True)
    response = client.get(url(RANGED), headers={"Range": "bytes=0-99", "If-Range": older})
    assert response.status_code == 200 and response.content == ranged


# --------------------------------------------------------------------------- conditional requests

CONDITIONAL_PATHS = [
    url(RANGED),
    "/p/demo/e/ladder/hls/master.m3u8",
    "/p/demo/e/ladder/cmaf/master.m3u8",
    "/p/demo/e/ladder/hls/mid/index.m3u8",
    "/p/demo/e/ladder/hls/mid/iframes.m3u8",
    "/p/demo/e/ladder/hls/hi/a1/index.m3u8",
    "/p/demo/e/ladder/hls/lo/seg-2.ts",
    "/p/demo/e/ladder/hls/hi/a1/seg-1.ts",
    "/p/demo/e/ladder/cmaf/lo/init.mp4",
    "/p/demo/e/ladder/cmaf/lo/seg-3.m4s",
    "/p/demo/e/ladder/cmaf/hi/a1/seg-2.m4s",
]


@pytest.mark.parametrize("path", CONDITIONAL_PATHS)
def test_conditional_requests(path, client):
    full = client.get(path)
    assert full.status_code == 200 and full.content
    etag, last_modified = full.headers["etag"], full.headers["last-modified"]
    assert etag.startswith('"') and etag.endswith('"')  # strong
    assert client.get(path).headers["etag"] == etag  # stable
    for headers in ({"If-None-Match": etag}, {"If-None-Match": f'"other", {etag}'}, {"If-None-Match": "*"},
                    {"If-Modified-Since": last_modified}):
        response = client.get(path, headers=headers)
        assert response.status_code == 304, headers
        assert response.content == b""
        assert response.headers["etag"] == etag
    # a different tag, or an older date: the full body again
    response = client.get(path, headers={"If-None-Match": '"0123456789abcdef01234567"'})
    assert response.status_code == 200 and response.content == full.content
    older = format_datetime(parsedate_to_datetime(last_modified) - timedelta(days=1), usegmt=True)
    response = client.get(path, headers={"If-Modified-Since": older})
    assert response.status_code == 200 and response.content == full.content
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)
    response = client.get(path, headers={"If-None-Match": '"other"', "If-Modified-Since": last_modified})
    assert response.status_code == 200


def test_etags_differ_between_resources(client):
    tags = {client.get(p).headers["etag"] for p in CONDITIONAL_PATHS}
    assert len(tags) == len(CONDITIONAL_PATHS)


# --------------------------------------------------------------------------- CORS


def test_cors_on_get(client):
    response = client.get(url(RANGED), headers={"Origin": ORIGIN, "Range": "bytes=0-9"})
    assert response.status_code == 206
    assert response.headers["access-control-allow-origin"] in ("*", ORIGIN)
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"content-range", "content-length", "accept-ranges"} <= exposed
    playlist = client.get("/p/demo/e/ladder/hls/master.m3u8", headers={"Origin": ORIGIN})
    assert playlist.headers["access-control-allow-origin"] in ("*", ORIGIN)


def test_cors_preflight_for_range(client):
    response = client.options(
        url(RANGED),
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range"},
    )
    assert response.status_code in (200, 204)
    assert response.headers["access-control-allow-origin"] in ("*", ORIGIN)
    methods = {m.strip().upper() for m in response.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "HEAD"} <= methods
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert "range" in allowed


# --------------------------------------------------------------------------- ranges on HLS segments
# I-frame playlists address segments with EXT-X-BYTERANGE, so segments honour single ranges too.


@pytest.mark.parametrize(
    "path", ["/p/demo/e/ladder/hls/hi/seg-2.ts", "/p/demo/e/ladder/cmaf/hi/seg-2.m4s", "/p/demo/e/ladder/cmaf/hi/init.mp4"]
)
def test_segment_ranges(path, client):
    full = client.get(path)
    assert full.status_code == 200
    data, etag = full.content, full.headers["etag"]
    size = len(data)
    assert client.head(path).headers["accept-ranges"] == "bytes"
    _check_partial(client.get(path, headers={"Range": "bytes=0-187"}), data, 0, 187)
    _check_partial(client.get(path, headers={"Range": "bytes=-100"}), data, size - 100, size - 1)
    _check_partial(client.get(path, headers={"Range": "bytes=100-"}), data, 100, size - 1)
    _check_partial(client.get(path, headers={"Range": "bytes=0-99", "If-Range": etag}), data, 0, 99)
    stale = client.get(path, headers={"Range": "bytes=0-99", "If-Range": '"0123456789abcdef01234567"'})
    assert stale.status_code == 200 and stale.content == data
    malformed = client.get(path, headers={"Range": "bytes=9-1"})
    assert malformed.status_code == 200 and malformed.content == data
    unsatisfiable = client.get(path, headers={"Range": f"bytes={size}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{size}"
    assert unsatisfiable.json()["error"] == "range_not_satisfiable"
