"""Bad files and bad requests over HTTP: clear JSON errors, nothing leaks, the server keeps serving.

Order matters in this module: the concurrency test runs first (so the bad
files are likely still unparsed when it fires), and the log / health checks
run last, after every bad request of the module.
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import m3u8
import pytest

import media_fixtures as mf
from media_fixtures import ALL_BAD

# code(s), status check and a phrase the detail must contain
EXPECTED = {
    "truncated": ({"truncated_media", "malformed_media"}, "5xx", None),
    "corrupt": ({"truncated_media", "malformed_media"}, "5xx", None),
    "text_as_mp4": ({"malformed_media"}, "5xx", "not an MP4"),
    "empty": ({"malformed_media"}, "5xx", "not an MP4"),
    "unsupported_codec": ({"unsupported_media"}, 415, "mp4v"),
}
assert set(EXPECTED) == set(ALL_BAD)

BAD_RESOURCES = [
    "hls/master.m3u8",
    "cmaf/master.m3u8",
    "hls/main/index.m3u8",
    "cmaf/main/index.m3u8",
    "hls/main/iframes.m3u8",
    "hls/main/a1/index.m3u8",
    "hls/main/seg-1.ts",
    "cmaf/main/init.mp4",
    "cmaf/main/seg-1.m4s",
    "mp4/main.mp4",
]
GOOD_SEGMENTS = [
    "/p/demo/e/ladder/hls/hi/seg-1.ts",
    "/p/demo/e/ladder/cmaf/mid/seg-2.m4s",
    "/p/demo/e/h264_high_bframes/hls/main/a1/seg-2.ts",
    "/p/demo/e/hevc/cmaf/main/seg-1.m4s",
]


def assert_json_error(response: httpx.Response, status, codes) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    if status == "5xx":
        assert 500 <= response.status_code < 600, (response.status_code, body)
    elif isinstance(status, tuple):
        assert response.status_code in status, (response.status_code, body)
    else:
        assert response.status_code == status, (response.status_code, body)
    if codes is not None:
        assert body["error"] in ({codes} if isinstance(codes, str) else codes), body
    return body


@pytest.fixture(scope="module", autouse=True)
def log_start(server) -> int:
    """Where the server log stood when this module started."""
    return server.log_path.stat().st_size


# --------------------------------------------------------------------------- concurrency (first)


def test_good_segments_are_served_while_bad_files_fail(server):
    """Fire bad requests (first-time parses of broken files among them) and good segment
    requests at the same moment from threads: every good one still gets its bytes."""
    reference = {path: httpx.get(server.base + path, timeout=30).content for path in GOOD_SEGMENTS}
    bad = [f"/p/bad/e/{name}/{res}" for name in ALL_BAD for res in ("cmaf/main/seg-1.m4s", "hls/master.m3u8")]
    jobs = [("bad", p) for p in bad] + [("good", p) for p in GOOD_SEGMENTS * 3]
    barrier = threading.Barrier(len(jobs))

    def fire(job):
        kind, path = job
        with httpx.Client(base_url=server.base, timeout=30) as c:
            barrier.wait()
            return kind, path, c.get(path)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(fire, jobs))
    for kind, path, response in results:
        if kind == "good":
            assert response.status_code == 200, (path, response.status_code, response.text[:200])
            assert response.content == reference[path], path
        else:
            name = path.split("/")[4]
            codes, status, _ = EXPECTED[name]
            assert_json_error(response, status, codes)


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("resource", BAD_RESOURCES)
@pytest.mark.parametrize("name", ALL_BAD)
def test_bad_file_gives_clear_json_error(name, resource, client):
    codes, status, phrase = EXPECTED[name]
    response = client.get(f"/p/bad/e/{name}/{resource}")
    body = assert_json_error(response, status, codes)
    assert f"bad/{name}/main.mp4" in body["detail"], body  # names the file
    if phrase:
        assert phrase in body["detail"], body
    assert "immutable" not in response.headers.get("cache-control", ""), "an error must not be cached for a year"
    if response.status_code >= 500:
        assert response.headers["cache-control"] == "no-store"


def test_bad_file_head_is_an_error_too(client):
    for name in ALL_BAD:
        response = client.head(f"/p/bad/e/{name}/mp4/main.mp4")
        assert response.status_code >= 400 and response.content == b"", name


# --------------------------------------------------------------------------- traversal


@pytest.fixture(scope="module")
def outside_sentinel(media_library):
    """A playable MP4 just OUTSIDE the library (../outside/main.mp4 from a partner folder):
    if any traversal reached it, the server would happily serve it."""
    target = media_library.parent / "outside" / "main.mp4"
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(mf.fixture_path("h264_baseline"), target)
    return target


TRAVERSALS = [
    "/p/demo/e/../../outside/mp4/main.mp4",
    "/p/../e/outside/mp4/main.mp4",
    "/p/%2e%2e/e/outside/mp4/main.mp4",
    "/p/%2E%2E/e/outside/hls/master.m3u8",
    "/p/demo/e/%2e%2e/mp4/main.mp4",
    "/p/demo/e/%2e%2e%2f%2e%2e%2foutside/mp4/main.mp4",
    "/p/demo/e/h264_baseline/mp4/..%2F..%2F..%2Foutside%2Fmain.mp4",
    "/p/demo/e/h264_baseline%2F..%2F..%2F..%2Foutside/mp4/main.mp4",
    "/p/demo/e/h264_baseline/hls/..%2F..%2F..%2Foutside/index.m3u8",
    "/p/demo/e/h264_baseline/hls/main/..%2F..%2F..%2F..%2Foutside%2Fmain.mp4",
    "/p/demo/e/h264_baseline/mp4/%2e%2e.mp4",
    "/p/demo/e/h264_baseline/mp4/..%5C..%5Coutside.mp4",
    "/p/demo/e/h264_baseline/mp4/main%00.mp4",
    "/p/demo/e/..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd/mp4/main.mp4",
    "/p/demo/e/h264_baseline/mp4/..%2F..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
]


def raw_get(server, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET with the path sent exactly as written (httpx would resolve '..' itself)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_never_leaves_the_library(path, server, outside_sentinel):
    status, headers, body = raw_get(server, path)
    assert status in (400, 404), (status, body[:200])
    assert headers["content-type"].startswith("application/json")
    parsed = json.loads(body)
    assert set(parsed) == {"error", "detail"}
    assert b"ftyp" not in body and b"root:" not in body
    assert len(body) < 1000


# --------------------------------------------------------------------------- malformed / unknown ids

MALFORMED_IDS = ["a b", "-lead", "_lead", "a.b", "x" * 65, "caf\u00e9", "a%22b", "a'b", "a;b"]


@pytest.mark.parametrize("bad_id", MALFORMED_IDS)
def test_malformed_ids_are_400(bad_id, client):
    quoted = httpx.URL("http://x/" + bad_id).raw_path.decode()[1:]
    paths = [
        f"/p/{quoted}/e/h264_baseline/hls/master.m3u8",
        f"/p/demo/e/{quoted}/cmaf/master.m3u8",
        f"/p/demo/e/h264_baseline/hls/{quoted}/index.m3u8",
        f"/p/demo/e/h264_baseline/cmaf/{quoted}/seg-1.m4s",
        f"/p/demo/e/h264_baseline/mp4/{quoted}.mp4",
    ]
    for path in paths:
        body = assert_json_error(client.get(path), 400, "bad_request")
        assert "id" in body["detail"], body


@pytest.mark.parametrize(
    "path, code",
    [
        ("/p/nobody/e/h264_baseline/hls/master.m3u8", "unknown_partner"),
        ("/p/nobody/e/h264_baseline/mp4/main.mp4", "unknown_partner"),
        ("/p/demo/e/nothing/hls/master.m3u8", "unknown_entry"),
        ("/p/demo/e/nothing/cmaf/main/seg-1.m4s", "unknown_entry"),
        ("/p/demo/e/nothing/mp4/main.mp4", "unknown_entry"),
        ("/p/demo/e/h264_baseline/mp4/nope.mp4", "unknown_flavor"),
        ("/p/demo/e/h264_baseline/hls/nope/index.m3u8", "unknown_flavor"),
        ("/p/demo/e/h264_baseline/cmaf/nope/init.mp4", "unknown_flavor"),
        ("/p/demo/e/ladder/hls/nope/seg-1.ts", "unknown_flavor"),
        ("/p/demo/e/ladder/hls/nope/iframes.m3u8", "unknown_flavor"),
        ("/p/demo/e/ladder/cmaf/nope/a1/index.m3u8", "unknown_flavor"),
    ],
)
def test_unknown_ids_are_404(path, code, client):
    assert_json_error(client.get(path), 404, code)


# --------------------------------------------------------------------------- segment numbers


@pytest.mark.parametrize("fmt, ext", [("hls", "ts"), ("cmaf", "m4s")])
@pytest.mark.parametrize("rendition", ["main", "main/a1"])
def test_segment_numbers(fmt, ext, rendition, client):
    root = f"/p/demo/e/h264_baseline/{fmt}/{rendition}"
    assert client.get(f"{root}/seg-1.{ext}").status_code == 200
    for number in ("0", "-1", "00", "+1", "1.5", "x"):
        assert_json_error(client.get(f"{root}/seg-{number}.{ext}"), 400, "bad_request")
    for number in ("999999", str(10**30), "3"):  # h264_baseline has 2 segments of 4 s
        assert_json_error(client.get(f"{root}/seg-{number}.{ext}"), 404, {"segment_not_found", "not_found"})
    other = "m4s" if ext == "ts" else "ts"
    assert_json_error(client.get(f"{root}/seg-1.{other}"), (400, 404), None)


def test_unknown_routes_are_json_404(client):
    for path in ("/p/demo/e/h264_baseline/dash/index.mpd", "/p/demo/e/h264_baseline/hls/main/foo.txt",
                 "/p/demo", "/nothing-here", "/p/demo/e/h264_baseline/hls/main/a1/iframes.m3u8"):
        assert_json_error(client.get(path), 404, None)


# --------------------------------------------------------------------------- flavors=


def test_flavors_subset_selects_variants(client):
    for fmt in ("hls", "cmaf"):
        root = f"/p/demo/e/ladder/{fmt}/master.m3u8"
        full = m3u8.loads(client.get(root).text)
        assert sorted(p.uri for p in full.playlists) == ["hi/index.m3u8", "lo/index.m3u8", "mid/index.m3u8"]
        for subset, want in (("hi,lo", ["hi", "lo"]), ("mid", ["mid"]), (" lo , mid ", ["lo", "mid"])):
            response = client.get(root, params={"flavors": subset})
            assert response.status_code == 200, response.text
            master = m3u8.loads(response.text)
            assert sorted(p.uri for p in master.playlists) == [f"{f}/index.m3u8" for f in want]
            assert sorted(i.uri for i in master.iframe_playlists) == [f"{f}/iframes.m3u8" for f in want]
            assert response.headers["etag"] != client.get(root).headers["etag"]
        for bad in ("../x", "", ",", "hi,../lo", "a b"):
            assert_json_error(client.get(root, params={"flavors": bad}), 400, "bad_request")
        assert_json_error(client.get(root, params={"flavors": "nope"}), 404, "unknown_flavor")


# --------------------------------------------------------------------------- last: health and log


def test_zz_server_still_healthy(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    response = client.get("/p/demo/e/ladder/hls/hi/seg-1.ts")
    assert response.status_code == 200 and response.content[:1] == b"\x47"  # TS sync byte


def test_zz_each_bad_file_is_logged_once(client, server, log_start):
    """A broken file's failure is cached: requested many times, it is parsed and logged once."""
    for _ in range(5):
        for name in ALL_BAD:
            for resource in ("hls/master.m3u8", "mp4/main.mp4", "cmaf/main/seg-1.m4s"):
                assert client.get(f"/p/bad/e/{name}/{resource}").status_code >= 400
    log = server.log_path.read_text(errors="replace")
    for name in ALL_BAD:
        key = f"bad/{name}/main.mp4"
        mentions = [line for line in log.splitlines() if key in line]
        assert len(mentions) == 1, f"{key} is mentioned {len(mentions)} times in the server log:\n" + "\n".join(
            mentions[:10]
        )
    ours = server.log_path.read_bytes()[log_start:].decode(errors="replace")
    assert "Traceback" not in ours, "unexpected errors were logged while this module ran:\n" + ours[-5000:]
