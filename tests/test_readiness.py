"""/readyz (issue 10, "Health"): 200 only when the node can serve, 503 with each check's state and reason.

Real `vodgate serve` processes on 127.0.0.1: an origin (a media root of its own and a GeoIP database), a shielded
origin, an edge holding its secret, an edge with a wrong secret, and an edge in front of the origin, the shielded
origin without a secret and an upstream that is down. Edges probe every 0.2 s, except the wrong-secret one, which
runs no prober (``health_interval = 0``: /readyz then probes on demand). The in-process tests at the end cover
what a process cannot show cheaply: a GeoIP reader that stopped working, remote storage, a missing media root.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import REPO, ServerProcess, free_port

SHIELD = "readiness-shield-secret-000001"
WRONG = "readiness-not-the-secret-00001"
PASSWORD = "readiness-upstream-password-01"  # in the dead upstream's URL: never shown
SHIELD_HEADER = "X-Vodgate-Shield"
INTERVAL = 0.2  # s between an edge's probes
MASTER = "/p/demo/e/h264_baseline/hls/master.m3u8"


def build_geoip(path: Path) -> Path | None:
    try:
        import mmdb_writer
        from netaddr import IPSet
    except ImportError:
        return None
    writer = mmdb_writer.MMDBWriter(ip_version=6, database_type="GeoLite2-Country", languages=["en"],
                                    ipv4_compatible=True)
    writer.insert_network(IPSet(["81.2.69.0/24"]), {"country": {"iso_code": "GB"}})
    writer.to_db_file(str(path))
    return path


def serve_args(toml: Path, text: str) -> list[str]:
    toml.write_text(text)
    return ["--config", str(toml)]


def restart(node: ServerProcess, args: list[str]) -> None:
    """Start ``node``'s command again on its port (a restarted origin keeps its address)."""
    node._log = open(node.log_path, "ab")
    cmd = [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port", str(node.port), "--workers", "1", *args]
    node.proc = subprocess.Popen(cmd, cwd=REPO, stdout=node._log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert node.proc.poll() is None, node.log()
        try:
            if httpx.get(f"{node.base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"the origin did not come back:\n{node.log()}")


@pytest.fixture(scope="module")
def nodes(media_library, tmp_path_factory):
    folder = tmp_path_factory.mktemp("readiness")
    root = folder / "library"
    root.mkdir()
    (root / "demo").symlink_to(media_library / "demo", target_is_directory=True)
    geoip = build_geoip(folder / "country.mmdb")
    origin_args = serve_args(folder / "origin.toml", f'[server]\nmedia_root = "{root}"\nsegment_duration = 4\n'
                             + (f'geoip_database = "{geoip}"\n' if geoip else ""))
    shielded_args = serve_args(folder / "shielded.toml", f'[server]\nmedia_root = "{media_library}"\nsegment_duration = 4\n'
                               f'[cdn]\nshield_secrets = ["{SHIELD}"]\n')
    started: dict[str, ServerProcess] = {}
    try:
        with ThreadPoolExecutor(2) as pool:
            origin = pool.submit(ServerProcess, origin_args, folder / "origin.log")
            shielded = pool.submit(ServerProcess, shielded_args, folder / "shielded.log")
            started["origin"], started["shielded"] = origin.result(), shielded.result()
        origin_url, shielded_url = started["origin"].base, started["shielded"].base
        dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there

        def edge(name: str, upstreams: list[str], secret: str | None, interval: float = INTERVAL, when: str = "all") -> list[str]:
            headers = f'upstream_headers = {{ "{SHIELD_HEADER}" = "{secret}" }}\n' if secret else ""
            listed = ", ".join(f'"{u}"' for u in upstreams)
            return serve_args(folder / f"{name}.toml", f'[edge]\nrole = "edge"\nupstreams = [{listed}]\n'
                              f'health_interval = {interval}\ndown_seconds = 1\nready_when = "{when}"\n{headers}')

        edges = {
            "good": edge("good", [shielded_url], SHIELD),
            "wrong": edge("wrong", [shielded_url], WRONG, interval=0),
            "mixed": edge("mixed", [origin_url, shielded_url, dead.replace("http://", f"http://edge:{PASSWORD}@")], None),
            "mixed_any": edge("mixed_any", [origin_url, shielded_url, dead], None, when="any"),
            "none_any": edge("none_any", [shielded_url, dead], None, when="any"),
        }
        with ThreadPoolExecutor(len(edges)) as pool:
            futures = {name: pool.submit(ServerProcess, args, folder / f"{name}.log") for name, args in edges.items()}
            for name, future in futures.items():
                started[name] = future.result()
        yield {**started, "dead": dead, "root": root, "geoip": geoip, "shielded_args": shielded_args}
    finally:
        for node in started.values():
            node.stop()


def readyz(base: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, f"{base}/readyz", timeout=10)


def checks(response: httpx.Response) -> dict[tuple[str, str | None], dict]:
    return {(c["check"], c.get("target")): c for c in response.json()["checks"]}


# --------------------------------------------------------------------------- origins


def test_an_origin_is_ready_when_its_media_root_lists_and_its_geoip_database_answers(nodes):
    answer = readyz(nodes["origin"].base)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["status"] == "ready"
    found = checks(answer)
    assert found[("media_root", None)]["state"] == "ok"
    if nodes["geoip"] is not None:
        assert found[("geoip", None)] == {"check": "geoip", "state": "ok", "code": "ok", "reason": "the GeoIP database is loaded"}
    assert str(nodes["root"]) not in answer.text  # an open endpoint names no folder of the server
    assert readyz(nodes["origin"].base, "HEAD").status_code == 200


def test_an_origin_whose_media_root_goes_away_is_not_ready_and_back_when_it_returns(nodes):
    base, root = nodes["origin"].base, nodes["root"]
    moved = root.with_name("library-moved")
    root.rename(moved)
    try:
        answer = readyz(base)
        assert answer.status_code == 503, answer.text
        check = checks(answer)[("media_root", None)]
        assert (check["state"], check["code"], check["reason"]) == ("fail", "missing", "the media root does not exist")
        assert answer.json()["status"] == "not_ready"
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # alive all the same
    finally:
        moved.rename(root)
    assert readyz(base).status_code == 200


def test_readyz_is_open_on_a_shielded_node_like_healthz(nodes):
    base = nodes["shielded"].base
    assert readyz(base).status_code == 200  # no secret: load balancers do not hold it
    assert httpx.get(f"{base}/metrics", timeout=10).status_code == 403  # the rest of the node stays shielded
    # what an edge's probe asks: /healthz with the shield check, refused without the secret, as a request would be
    probe = httpx.get(f"{base}/healthz", headers={"X-Vodgate-Shield-Check": "1"}, timeout=10)
    assert probe.status_code == 403 and probe.json()["error"] == "shield_required"
    probe = httpx.get(f"{base}/healthz", headers={"X-Vodgate-Shield-Check": "1", SHIELD_HEADER: SHIELD}, timeout=10)
    assert probe.status_code == 200
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # and open to everyone else


# --------------------------------------------------------------------------- edges


def test_an_edge_whose_upstream_accepts_its_secret_is_ready(nodes):
    answer = readyz(nodes["good"].base)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ready" and body["role"] == "edge"
    check = checks(answer)[("upstream", nodes["shielded"].base)]
    assert check["state"] == "ok" and "shield check passed" in check["reason"]
    assert httpx.get(f"{nodes['good'].base}{MASTER}", timeout=10).status_code == 200


def test_an_edge_with_a_wrong_secret_is_not_ready_and_no_longer_reports_its_upstream_up(nodes):
    edge, shielded = nodes["wrong"].base, nodes["shielded"].base
    answer = readyz(edge)  # this edge runs no prober: /readyz probes on demand
    assert answer.status_code == 503, answer.text
    check = checks(answer)[("upstream", shielded)]
    assert (check["state"], check["code"]) == ("fail", "shield_required")
    assert "refuses our shield secret" in check["reason"] and "upstream_headers" in check["reason"]
    # the observed bug: /healthz said "up" while every request was 403 shield_required
    media = httpx.get(f"{edge}{MASTER}", timeout=10)
    assert media.status_code == 502 and media.json()["error"] == "upstream_unavailable", media.text
    assert "refuses our shield secret" in media.json()["detail"]
    (upstream,) = httpx.get(f"{edge}/healthz", timeout=10).json()["upstreams"]
    assert upstream["up"] is False and "refuses our shield secret" in upstream["last_error"], upstream
    assert upstream["failures"] >= 2  # the probe and the request
    assert readyz(edge).status_code == 503  # the request did not mark it up again


def test_an_edge_checks_each_upstream_and_gives_each_its_reason(nodes):
    answer = readyz(nodes["mixed"].base)
    assert answer.status_code == 503, answer.text
    found = checks(answer)
    states = {target: (c["state"], c["code"]) for (name, target), c in found.items() if name == "upstream"}
    assert states == {
        nodes["origin"].base: ("ok", "ok"),
        nodes["shielded"].base: ("fail", "shield_required"),  # this edge lacks the secret altogether
        nodes["dead"]: ("fail", "unreachable"),
    }
    assert found[("upstream", nodes["dead"])]["reason"].startswith("health probe failed: connection failed")
    # the dead upstream's URL carries credentials: open answers and metric labels show it without them
    health = httpx.get(f"{nodes['mixed'].base}/healthz", timeout=10)
    metrics = httpx.get(f"{nodes['mixed'].base}/metrics", timeout=10)
    assert f'vodgate_upstream_up{{upstream="{nodes["dead"]}"}} 0.0' in metrics.text
    for text in (answer.text, health.text, metrics.text):
        assert PASSWORD not in text


def test_ready_when_any_needs_one_passing_upstream_and_still_lists_every_verdict(nodes):
    answer = readyz(nodes["mixed_any"].base)
    assert answer.status_code == 200, answer.text  # the same three upstreams as "mixed": one of them passes
    states = {target: c["code"] for (name, target), c in checks(answer).items() if name == "upstream"}
    assert states == {nodes["origin"].base: "ok", nodes["shielded"].base: "shield_required", nodes["dead"]: "unreachable"}
    assert answer.json()["status"] == "ready"
    none = readyz(nodes["none_any"].base)
    assert none.status_code == 503 and none.json()["status"] == "not_ready", none.text


def test_a_bad_ready_when_is_refused_with_its_choices(tmp_path):
    from config.settings import ConfigError, parse_settings

    with pytest.raises(ConfigError, match='edge.ready_when has value \'most\'; expected "all"'):
        parse_settings({"edge": {"role": "edge", "upstreams": ["http://o:1"], "ready_when": "most"}})


def readyz_until(base: str, status: int) -> tuple[httpx.Response, float]:
    """Poll ``base``'s /readyz until it answers ``status`` (at most 5 s): that answer and the seconds it took."""
    since = time.monotonic()
    while True:
        answer = readyz(base)
        if answer.status_code == status:
            return answer, time.monotonic() - since
        assert time.monotonic() - since < 5, answer.text
        time.sleep(0.02)


def test_readiness_follows_an_origin_down_and_back_up_within_the_probe_interval(nodes):
    """Last: it stops the shielded origin (and starts it again on its port)."""
    edge, shielded = nodes["good"].base, nodes["shielded"]
    assert readyz(edge).status_code == 200
    shielded.proc.terminate()
    shielded.proc.wait(10)
    answer, down_after = readyz_until(edge, 503)
    check = checks(answer)[("upstream", shielded.base)]
    assert (check["state"], check["code"]) == ("fail", "unreachable"), check
    assert down_after < INTERVAL + 0.8, down_after  # one probe round, with room for a loaded machine
    restart(shielded, nodes["shielded_args"])
    answer, up_after = readyz_until(edge, 200)
    assert up_after < INTERVAL + 0.8, up_after
    print(f"edge /readyz: 503 {down_after:.2f} s after its origin stopped, 200 {up_after:.2f} s after it answered again")


# --------------------------------------------------------------------------- in-process checks


def test_a_geoip_database_that_stops_answering_fails_its_check(tmp_path):
    from auth.access import AccessControl
    from config.partners import AccessConfig
    from edge.readiness import geoip_check

    path = build_geoip(tmp_path / "country.mmdb")
    if path is None:
        pytest.skip("mmdb-writer is not installed")
    access = AccessControl.from_config(AccessConfig(geoip_database=path))
    check = geoip_check(access)
    assert asyncio.run(check()).ok
    access.countries.close()
    failed = asyncio.run(check())
    assert (failed.ok, failed.code) == (False, "not_loaded") and "cannot be read" in failed.reason
    assert asyncio.run(geoip_check(AccessControl(AccessConfig()))()) == []  # none configured: no check


def test_remote_storage_is_ready_while_its_base_answers(nodes):
    from edge.readiness import StorageCheck
    from origin.http_storage import HttpStorage

    async def run(base_url: str, calls: int = 1) -> list:
        async with httpx.AsyncClient() as client:
            check = StorageCheck(HttpStorage(base_url, client))
            return [await check() for _ in range(calls)]

    first, again = asyncio.run(run(f"{nodes['origin'].base}/no-bucket-here", calls=2))
    assert (first.ok, first.reason, first.target) == (True, "the storage answers (HTTP 404)", nodes["origin"].base)
    assert again is first  # kept STORAGE_TTL s: a polling load balancer does not hammer the storage
    (down,) = asyncio.run(run(f"{nodes['dead']}/videos"))
    assert (down.ok, down.code, down.target) == (False, "unreachable", nodes["dead"])


def test_a_media_root_that_is_a_file_fails_its_check(tmp_path):
    from edge.readiness import MediaRootCheck

    (tmp_path / "file").write_text("not a folder")
    result = asyncio.run(MediaRootCheck(tmp_path / "file")())
    assert (result.ok, result.code) == (False, "not_a_folder")
    assert asyncio.run(MediaRootCheck(tmp_path)()).ok


def test_a_media_root_listing_that_hangs_fails_its_check_without_piling_up_threads(tmp_path):
    import threading

    from edge.readiness import MediaRootCheck

    release, listings = threading.Event(), []

    class HangingMount(MediaRootCheck):  # a dead network mount: the listing never returns
        def _list(self) -> None:
            listings.append(1)
            release.wait(10)

    async def run() -> list:
        check = HangingMount(tmp_path, timeout=0.1)
        try:
            return [await check(), await check()]
        finally:
            release.set()

    first, second = asyncio.run(run())
    assert (first.ok, first.code, second.code) == (False, "timeout", "timeout")
    assert len(listings) == 1  # the second call waited on the same listing: no second stuck thread
