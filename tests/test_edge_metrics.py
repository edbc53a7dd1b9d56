"""An edge's /metrics and /healthz tell one story (issue 10, "Metrics"), and every node exports process metrics.

A real origin and a real edge on 127.0.0.1. The edge lists an upstream that is down before the origin, runs no
prober (every upstream count comes from requests, so the numbers are exact), keeps objects fresh 1 s and serves
stale copies. A known sequence (misses, hits on the full path and the hot lane, a purge, a refetch, then the
origin stopped and a stale copy served) must give the same figures in /healthz, in /metrics and in the X-Cache
headers the client saw, and the upstream counters the sequence implies.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ServerProcess, free_port

ADMIN = "edge-metrics-admin-secret-001"
SEG_A = "/p/demo/e/h264_baseline/hls/main/seg-1.ts"
SEG_B = "/p/demo/e/h264_baseline/hls/main/seg-2.ts"


@pytest.fixture(scope="module")
def nodes(media_library, tmp_path_factory):
    folder = tmp_path_factory.mktemp("edge_metrics")
    launched = time.time()
    origin = ServerProcess(["--media", str(media_library), "--segment-duration", "4"], folder / "origin.log")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the first upstream fails and the edge fails over
    toml = folder / "edge.toml"
    toml.write_text(
        f'[edge]\nrole = "edge"\nupstreams = ["{dead}", "{origin.base}"]\nhealth_interval = 0\ndown_seconds = 60\n'
        f'ttl = 1\nstale_if_error = 3600\n[partners.demo]\nadmin_secret = "{ADMIN}"\n'
    )
    try:
        edge = ServerProcess(["--config", str(toml)], folder / "edge.log")
    except Exception:
        origin.stop()
        raise
    yield {"origin": origin, "edge": edge, "dead": dead, "launched": launched, "ready": time.time()}
    edge.stop()
    origin.stop()


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    """``(sample name, sorted labels) -> value`` of a /metrics answer."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_edge_metrics_match_healthz_after_hits_misses_a_purge_and_a_stale_copy(nodes):
    edge, origin, dead = nodes["edge"], nodes["origin"], nodes["dead"]
    seen: Counter[str] = Counter()

    def get(path: str) -> str:
        answer = httpx.get(f"{edge.base}{path}", timeout=10)
        assert answer.status_code == 200, answer.text
        seen[answer.headers["x-cache"]] += 1
        return answer.headers["x-cache"]

    assert get(SEG_A) == "MISS"  # the dead upstream first: it fails, the edge fails over to the origin
    fetched_a = time.monotonic()
    assert get(SEG_A) == "HIT"  # the hot lane's answer, counted with the full path's
    assert get(SEG_B) == "MISS"
    assert get(SEG_B) == "HIT"
    purge = httpx.post(f"{edge.base}/admin/partners/demo/purge", headers={"Authorization": f"Bearer {ADMIN}"},
                       json={"prefix": SEG_B}, timeout=10)
    assert purge.status_code == 200 and purge.json()["removed"] == 1, purge.text
    assert get(SEG_B) == "MISS"  # purged: fetched again
    origin.stop()
    while get(SEG_A) != "STALE":  # HIT while fresh (ttl 1 s), then the origin refuses: the stale copy
        assert time.monotonic() - fetched_a < 10, seen
    assert get(SEG_A) == "STALE"  # every upstream now marked down: stale at once

    health = httpx.get(f"{edge.base}/healthz", timeout=10).json()
    samples = scrape(edge.base)
    assert health == httpx.get(f"{edge.base}/healthz", timeout=10).json()  # nothing moved while we read

    # the edge cache: the client's X-Cache tally = /healthz = /metrics
    for result in ("HIT", "MISS", "COALESCED", "STALE"):
        assert health["cache"][result] == seen[result] == value(samples, "vodgate_segment_cache_lookups_total", result=result), result
    assert seen["STALE"] == 2 and seen["MISS"] == 3
    assert value(samples, "vodgate_hot_lane_answers_total") >= 1  # the HITs include the hot lane's (edge/hot.py)
    assert health["cache"]["objects"] == value(samples, "vodgate_segment_cache_items") == 2
    assert health["cache"]["memory_bytes"] == value(samples, "vodgate_segment_cache_memory_bytes") > 0

    # upstreams: what the sequence implies, in /healthz and /metrics alike
    rows = {row["url"]: row for row in health["upstreams"]}
    expected = {
        dead: {"up": False, "requests": 2, "failures": 2, "failovers": 1},  # the first MISS; the stale round
        origin.base: {"up": False, "requests": 4, "failures": 1, "failovers": 1},  # 3 MISSes; refused at the stale round
    }
    for url, want in expected.items():
        assert {key: rows[url][key] for key in want} == want, (url, rows[url])
        assert value(samples, "vodgate_upstream_up", upstream=url) == 0.0
        for key in ("requests", "failures", "failovers"):
            assert value(samples, f"vodgate_upstream_{key}_total", upstream=url) == want[key], (url, key)

    # purges
    assert health["purges"] == {"applied": 1, "removed": 1} and health["purge_bus"] is None
    assert value(samples, "vodgate_purges_total") == 1 and value(samples, "vodgate_purged_objects_total") == 1
    assert not any(name.startswith("vodgate_purge_bus") for name, _ in samples)  # no [redis]: no bus series


def test_process_metrics_are_present_and_plausible(nodes):
    edge = nodes["edge"]
    samples = scrape(edge.base)
    pid = edge.proc.pid
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    assert 0 < value(samples, "vodgate_process_cpu_seconds_total") <= cpu + 0.05
    assert value(samples, "vodgate_process_cpu_seconds_total") >= cpu - 0.5
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    resident = value(samples, "vodgate_process_resident_memory_bytes")
    assert 10 * 2**20 < resident < 2 * 2**30 and abs(resident - rss) < 0.25 * rss, (resident, rss)
    assert value(samples, "vodgate_process_virtual_memory_bytes") >= resident
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    open_fds = value(samples, "vodgate_process_open_fds")
    assert 3 <= open_fds <= value(samples, "vodgate_process_max_fds") and abs(open_fds - fds) <= 5, (open_fds, fds)
    started = value(samples, "vodgate_process_start_time_seconds")
    assert nodes["launched"] - 2 <= started <= nodes["ready"] + 1, (started, nodes["launched"], nodes["ready"])
