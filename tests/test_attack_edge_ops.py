"""Attack review of the edge-facing operations work (readiness, the shield check, the access log, metrics).

Real `vodgate serve` processes on 127.0.0.1: a shielded origin (an open partner and a token-gated one) and an
edge holding its secret, which runs no prober and keeps a mark-down for a minute, so that anything a viewer
could do to mark the origin down would show in the edge's /healthz. Both write JSON access lines and trust
127.0.0.0/8 as proxies.

Fixed here: the hot lane read the last of two shield headers where the full path reads the first (edge/hot.py);
an edge forwarded only the first X-Forwarded-For line to its origin (edge/proxy.py); an Akamai hmac= field
percent-encoded twice reached the access log (auth/tokens.py).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from urllib.parse import quote
import m3u8
import pytest

from conftest import ServerProcess, hot_answers_in
from test_access_log import KEY, PARTNERS as OPEN_AND_PAID  # the same open and token-gated partners

SHIELD = "attack-edge-ops-shield-secret-01"
SHIELD_HEADER = "X-Vodgate-Shield"
EDGE_SECRET = "attack-edge-ops-edge-secret-0001"
OPEN = "/p/open/e/clip"
PAID = "/p/paid/e/clip"

ORIGIN = """
[server]
media_root = "{library}"
segment_duration = 2
access_log = "json"
trusted_proxies = ["127.0.0.0/8"]

[cdn]
shield_secrets = ["{shield}"]
edge_secrets = ["{edge_secret}"]
{partners}"""

PARTNERS = OPEN_AND_PAID + """
[partners.prev]
default_profile = "preview"
[partners.prev.profiles.preview]
rules = [ {{ then = [ {{ preview = 5 }} ] }} ]
"""

EDGE = """
[server]
access_log = "json"
trusted_proxies = ["127.0.0.0/8"]

[edge]
role = "edge"
upstreams = ["{origin}"]
health_interval = 0
down_seconds = 60
upstream_headers = {{ "{header}" = "{shield}" }}

[cdn]
edge_secrets = ["{edge_secret}"]
{partners}"""


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, media_fixture_paths):
    d = tmp_path_factory.mktemp("attack-edge-ops")
    for partner in ("open", "paid", "prev"):
        (d / "lib" / partner / "clip").mkdir(parents=True)
        shutil.copy(media_fixture_paths["h264_2997"], d / "lib" / partner / "clip" / "main.mp4")
    partners = PARTNERS.format(key=KEY)
    (d / "origin.toml").write_text(ORIGIN.format(library=d / "lib", shield=SHIELD, edge_secret=EDGE_SECRET, partners=partners))
    started: dict[str, ServerProcess] = {}
    try:
        started["origin"] = ServerProcess(["--config", str(d / "origin.toml")], d / "origin.log")
        (d / "edge.toml").write_text(EDGE.format(origin=started["origin"].base, header=SHIELD_HEADER, shield=SHIELD,
                                                   edge_secret=EDGE_SECRET, partners=partners))
        started["edge"] = ServerProcess(["--config", str(d / "edge.toml")], d / "edge.log")
        yield started
    finally:
        for node in started.values():
            node.stop()


def hot_answers(http: httpx.Client, headers: dict) -> int:
    return hot_answers_in(http.get("/metrics", headers=headers).text)


def upstream_of(edge: ServerProcess) -> dict:
    (upstream,) = httpx.get(f"{edge.base}/healthz", timeout=10).json()["upstreams"]
    return upstream


# --------------------------------------------------------------------------- the shield and the hot lane


def test_hot_lane_and_full_path_read_the_same_one_of_two_shield_headers(nodes):
    """A request with the shield header twice (a wrong value first, the secret second): the full path's
    ShieldMiddleware reads the first and refuses; the hot lane read the last and answered 200."""
    origin = nodes["origin"]
    cdn = {SHIELD_HEADER: SHIELD}
    twice = [(SHIELD_HEADER, "wrong"), (SHIELD_HEADER, SHIELD)]
    with httpx.Client(base_url=origin.base, timeout=30) as http:
        media = m3u8.loads(http.get(f"{OPEN}/hls/main/index.m3u8", headers=cdn).text)
        url = f"{OPEN}/hls/main/{media.segments[0].uri}"
        full = http.get(url, headers=cdn)
        assert full.status_code == 200
        before = hot_answers(http, cdn)
        assert http.get(url, headers=cdn).content == full.content
        assert hot_answers(http, cdn) == before + 1  # the segment is warm: the hot lane answers a plain GET
        # the full path's answer to the duplicated header (a Cookie keeps the request off the hot lane)
        refused = http.get(url, headers=twice + [("Cookie", "x=1")])
        assert refused.status_code == 403 and refused.json()["error"] == "shield_required"
        # the same request without the Cookie: the same answer, whichever lane takes it
        hot_try = http.get(url, headers=twice)
        assert hot_try.status_code == 403 and hot_try.json()["error"] == "shield_required", hot_try.status_code
        # and the other order passes on both lanes
        assert http.get(url, headers=list(reversed(twice))).content == full.content
        assert http.get(url, headers=list(reversed(twice)) + [("Cookie", "x=1")]).content == full.content


# --------------------------------------------------------------------------- nothing a viewer sends marks an origin down


def test_nothing_a_viewer_sends_through_an_edge_marks_its_origin_down(nodes):
    edge, origin = nodes["edge"], nodes["origin"]
    assert httpx.get(f"{edge.base}/readyz", timeout=10).status_code == 200  # probes on demand: up, shield passed
    forged = {SHIELD_HEADER: "forged", "X-Vodgate-Shield-Check": "1", "Cookie": f"{SHIELD_HEADER}=forged",
              "Authorization": "Bearer forged"}
    with httpx.Client(base_url=edge.base, timeout=30) as http:
        assert http.get(f"{PAID}/hls/master.m3u8").status_code == 403  # the origin's access rule, relayed
        assert http.get(f"{PAID}/hls/master.m3u8", headers=forged).status_code == 403
        assert http.get(f"{OPEN}/hls/master.m3u8", headers=forged).status_code == 200  # the edge's own secret goes
        assert http.get("/p/open/e/nothing/hls/master.m3u8", headers=forged).status_code == 404
        # the probe header to the edge's own /healthz (the edge has no shield of its own): an ordinary answer
        assert http.get("/healthz", headers=forged).status_code == 200
    # an outsider asking the origin itself for the shield check learns only what any shielded path says
    check = httpx.get(f"{origin.base}/healthz", headers={"X-Vodgate-Shield-Check": "1"}, timeout=10)
    assert check.status_code == 403 and check.json()["error"] == "shield_required"
    assert "no-store" in check.headers["cache-control"]  # a CDN keeps no 403 for /healthz
    assert httpx.get(f"{origin.base}/healthz", timeout=10).status_code == 200  # a load balancer's probe
    upstream = upstream_of(edge)
    assert upstream["up"] is True and upstream["failures"] == 0 and upstream["last_error"] is None, upstream
    assert httpx.get(f"{edge.base}/readyz", timeout=10).status_code == 200


def test_readyz_and_healthz_are_never_cached_and_name_no_folder_or_secret(nodes):
    edge, origin = nodes["edge"], nodes["origin"]
    library = str(origin.log_path.parent)
    for base in (edge.base, origin.base):
        for path in ("/readyz", "/healthz"):
            for method in ("GET", "HEAD"):
                answer = httpx.request(method, f"{base}{path}", timeout=10)
                assert answer.status_code == 200, (base, path, answer.text)
                assert "no-store" in answer.headers["cache-control"], (base, path, method)
                assert library not in answer.text and SHIELD not in answer.text, answer.text
    # /metrics stays behind the origin's shield
    assert httpx.get(f"{origin.base}/metrics", timeout=10).status_code == 403
    assert httpx.get(f"{origin.base}/metrics", headers={SHIELD_HEADER: SHIELD}, timeout=10).status_code == 200


def test_no_request_header_or_path_grows_the_metric_series(nodes):
    """Label values an outsider could choose (paths, partners, entries, methods) never become series."""
    origin = nodes["origin"]
    cdn = {SHIELD_HEADER: SHIELD}

    def series(http: httpx.Client) -> int:
        return sum(1 for line in http.get("/metrics", headers=cdn).text.splitlines() if line and not line.startswith("#"))

    with httpx.Client(base_url=origin.base, timeout=30) as http:
        for warm in range(3):
            http.get(f"/p/open/e/w{warm}/hls/master.m3u8", headers=cdn)
            http.get(f"/x{warm}", headers=cdn)
        before = series(http)

        def ask(i: int) -> None:
            with httpx.Client(base_url=origin.base, timeout=30) as c:
                c.get(f"/p/open/e/unknown{i}/hls/master.m3u8", headers={**cdn, "User-Agent": f"ua{i}"})
                c.get(f"/p/p{i}/e/e{i}/hls/index{i}.m3u8", headers=cdn)
                c.get(f"/random/{i}", headers=cdn)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(ask, range(200)))
        assert series(http) <= before + 2, "a series per request: an outsider grows /metrics"


# --------------------------------------------------------------------------- the viewer's address, edge and origin alike


def json_line(node: ServerProcess, needle: str) -> dict:
    deadline = time.monotonic() + 5
    while True:
        found = [line for line in node.log_path.read_text(errors="replace").splitlines() if needle in line and line.startswith("{")]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(found) == 1, (needle, node.log()[-2000:])
    return json.loads(found[0])


def test_an_edge_forwards_every_x_forwarded_for_line_so_the_origin_sees_the_viewer_it_saw(nodes):
    """Two X-Forwarded-For lines (a viewer's own, then the one a proxy in front of the edge added): the edge
    read both (its access log and access checks join them) but forwarded only the first to the origin, so the
    origin took the viewer's forged address for the client."""
    edge, origin = nodes["edge"], nodes["origin"]
    n = uuid.uuid4().hex
    # a preview viewer: the edge asks the origin as this viewer (edge/proxy.py _pass_through), headers and all
    answer = httpx.get(f"{edge.base}/p/prev/e/clip/hls/master.m3u8", timeout=30,
                       headers=[("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.9"), ("User-Agent", n)])
    assert answer.status_code == 200 and "index-p" in answer.text, answer.text
    assert json_line(edge, n)["client_ip"] == "198.51.100.9"
    assert json_line(origin, n)["client_ip"] == "198.51.100.9"


# --------------------------------------------------------------------------- redaction in the access log


def test_an_akamai_mac_encoded_twice_is_redacted_like_a_native_token_encoded_twice(nodes):
    """A referer whose parameter holds a URL whose own parameter holds a player URL (two levels of
    percent-encoding): the native token was hidden, the Akamai hmac= field was logged as sent."""
    origin = nodes["origin"]
    mac = "ab" * 32
    n = uuid.uuid4().hex
    inner = quote(f"https://player.example/?hdnts=exp=2000000000~acl=/*~hmac={mac}", safe="")
    referer = f"https://login.example/?return={quote(f'https://site.example/?next={inner}', safe='')}"
    assert "hmac%253D" in referer
    httpx.get(f"{origin.base}{OPEN}/hls/master.m3u8?n={n}", headers={SHIELD_HEADER: SHIELD, "Referer": referer}, timeout=30)
    line = json_line(origin, n)
    assert mac not in line["referer"] and "hmac%253D<redacted>" in line["referer"], line["referer"]
    assert mac not in origin.log_path.read_text(errors="replace")
