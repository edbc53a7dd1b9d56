"""`vodgate serve --workers N`: one port, N processes (edge/workers.py), one node as seen from outside.

Real processes and real connections: every request below opens a new connection, so the kernel's
SO_REUSEPORT spreads them over the workers (40 connections all landing on one of two workers has odds
of 2^-39). What each worker did is read from the node's /metrics, itself the merge of every worker's.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, ServerProcess, free_port

ADMIN = "worker-admin-secret-0123456789"
MASTER = "/p/demo/e/ladder/hls/master.m3u8"
SEGMENT = "/p/demo/e/ladder/hls/lo/seg-1.ts"
CONNECTIONS = 40


def config(library: Path, tmp: Path, rules: str = '{ then = ["allow"] }', extra: str = "") -> str:
    return f'''[server]
media_root = "{library}"
segment_duration = 4
{extra}
[cache]
disk_path = "{tmp / 'disk'}"

[analytics]
enabled = true
path = "{tmp / 'events'}"
flush_interval = 0.05
session_salt = "workers"

[partners.demo]
admin_secret = "{ADMIN}"
default_profile = "p"

[partners.demo.profiles.p]
rules = [ {rules} ]
'''


def samples(base: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def metric(base: str, name: str, **labels: str) -> float:
    return samples(base).get((name, tuple(sorted(labels.items()))), 0.0)


def fetch_on_new_connections(base: str, path: str, times: int = CONNECTIONS, **headers: str) -> list[int]:
    statuses = []
    for _ in range(times):
        with httpx.Client(timeout=30) as fresh:  # a new connection each time: the kernel picks the worker
            statuses.append(fresh.get(base + path, headers=headers).status_code)
    return statuses


def wait_for(check, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not _holds(check):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _holds(check) -> bool:
    try:
        return bool(check())
    except httpx.HTTPError:  # no worker listening for a moment (both being replaced)
        return False


@pytest.fixture()
def node(tmp_path, media_library):
    path = tmp_path / "vodgate.toml"
    path.write_text(config(media_library, tmp_path))
    srv = ServerProcess(["--config", str(path), "--workers", "2"], tmp_path / "server.log")
    srv.config_path = path
    srv.tmp = tmp_path
    wait_for(lambda: metric(srv.base, "vodgate_workers", state="answering") == 2, what="both workers")
    yield srv
    srv.stop()


def test_both_workers_serve_and_one_scrape_counts_every_request_of_the_node(node) -> None:
    assert fetch_on_new_connections(node.base, MASTER) == [200] * CONNECTIONS
    figures = samples(node.base)
    assert figures[("vodgate_http_requests_total", (("route", "master"), ("status", "200")))] == CONNECTIONS
    # both served: each worker built the entry's media set once (its own memory caches) ...
    assert figures[("vodgate_media_set_cache_misses_total", ())] == 2
    # ... and the master was packaged once: the second worker found it in the shared disk tier
    assert figures[("vodgate_segment_cache_lookups_total", (("result", "MISS"),))] == 1
    assert figures[("vodgate_segment_cache_lookups_total", (("result", "HIT"),))] == CONNECTIONS - 1
    # in each worker's memory: the master's template and its query-free bytes (edge/delivery.py, the hot lane's)
    assert figures[("vodgate_segment_cache_items", ())] == 4
    assert {labels for name, labels in figures if name == "vodgate_process_resident_memory_bytes"} == {
        (("worker", "0"),), (("worker", "1"),)}
    assert figures[("vodgate_workers", (("state", "configured"),))] == 2


def test_the_disk_tier_is_shared_a_segment_one_worker_packaged_is_not_packaged_again(node) -> None:
    assert fetch_on_new_connections(node.base, SEGMENT) == [200] * CONNECTIONS  # one after another
    assert metric(node.base, "vodgate_packaging_seconds_count", format="hls") == 1
    assert len(list((node.tmp / "disk").rglob("*.seg"))) == 1  # in the folder of the worker that packaged it


def test_workers_answer_byte_for_byte_what_one_process_answers(node, tmp_path, media_library) -> None:
    one = ServerProcess(["--config", str(node.config_path), "--workers", "1"], tmp_path / "one.log")
    try:
        for path in (MASTER, "/p/demo/e/ladder/hls/mid/index.m3u8", "/p/demo/e/ladder/cmaf/mid/init.mp4",
                     "/p/demo/e/ladder/cmaf/mid/seg-2.m4s", SEGMENT):
            want = httpx.get(one.base + path, timeout=30)
            for _ in range(6):
                with httpx.Client(timeout=30) as fresh:
                    got = fresh.get(node.base + path)
                assert (got.status_code, got.content, got.headers.get("etag")) == (want.status_code, want.content, want.headers.get("etag")), path
    finally:
        one.stop()


def test_a_purge_drops_the_object_from_every_worker(node) -> None:
    fetch_on_new_connections(node.base, MASTER)
    answer = httpx.post(f"{node.base}/admin/partners/demo/purge", json={"entry": "ladder"},
                        headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    # the master in each worker's memory (its template and query-free bytes: 2 x 2) and in the disk tier (1)
    assert answer.json()["removed"] == 5
    assert metric(node.base, "vodgate_segment_cache_items") == 0
    misses = metric(node.base, "vodgate_segment_cache_lookups_total", result="MISS")
    fetch_on_new_connections(node.base, MASTER)
    assert metric(node.base, "vodgate_segment_cache_lookups_total", result="MISS") - misses == 1  # packaged again, once
    assert metric(node.base, "vodgate_purges_total") == 2  # applied once in each worker


def test_sighup_reaches_every_worker_and_a_bad_file_is_refused_once(node, media_library) -> None:
    assert set(fetch_on_new_connections(node.base, MASTER, 10)) == {200}
    node.config_path.write_text(config(media_library, node.tmp, '{ then = [{ block = "closed" }] }'))
    os.kill(node.proc.pid, signal.SIGHUP)
    wait_for(lambda: node.log().count("reloaded ") >= 2, what="both workers reloading")
    assert set(fetch_on_new_connections(node.base, MASTER)) == {403}
    node.config_path.write_text("[server]\nworkers = 'many'\n")
    os.kill(node.proc.pid, signal.SIGHUP)
    wait_for(lambda: "reload refused" in node.log(), what="the refusal")
    time.sleep(0.5)
    assert node.log().count("reload refused") == 1, node.log()
    assert set(fetch_on_new_connections(node.base, MASTER)) == {403}


def test_an_admin_change_applies_in_every_worker(node) -> None:
    block = {"rules": [{"then": [{"block": "closed"}]}]}
    answer = httpx.put(f"{node.base}/admin/partners/demo/profiles/p", json=block,
                       headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert set(fetch_on_new_connections(node.base, MASTER)) == {403}


def test_a_killed_worker_is_replaced_and_the_node_keeps_serving(node) -> None:
    pids = worker_pids(node.proc.pid)
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: len(worker_pids(node.proc.pid)) == 2 and pids[0] not in worker_pids(node.proc.pid), what="a new worker")
    wait_for(lambda: metric(node.base, "vodgate_workers", state="answering") == 2, what="the new worker answering")
    assert set(fetch_on_new_connections(node.base, MASTER)) == {200}
    assert "exited with code -9" in node.log_path.read_text()


def test_a_replacement_worker_runs_the_config_its_siblings_run_not_an_edit_nobody_reloaded(node, media_library) -> None:
    node.config_path.write_text(config(media_library, node.tmp, '{ then = [{ block = "closed" }] }'))  # no SIGHUP
    for victim in worker_pids(node.proc.pid):
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(worker_pids(node.proc.pid)) == 2 and victim not in worker_pids(node.proc.pid), what="a new worker")
    wait_for(lambda: metric(node.base, "vodgate_workers", state="answering") == 2, what="the new workers answering")
    assert set(fetch_on_new_connections(node.base, MASTER)) == {200}  # still the rules the node was started with
    node.config_path.write_text("[server]\nworkers = 'many'\n")  # even a broken edit does not stop a replacement
    victim = worker_pids(node.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(worker_pids(node.proc.pid)) == 2 and victim not in worker_pids(node.proc.pid), what="a new worker")
    wait_for(lambda: metric(node.base, "vodgate_workers", state="answering") == 2, what="the new worker answering")
    assert set(fetch_on_new_connections(node.base, MASTER)) == {200}


def test_workers_stop_when_their_supervisor_is_killed(node) -> None:
    pids = worker_pids(node.proc.pid)
    node.proc.kill()
    node.proc.wait(10)
    wait_for(lambda: not any(alive(p) for p in pids), timeout=15, what="orphaned workers to stop")


def test_sigterm_lets_a_request_in_flight_finish_and_loses_no_play_event(node) -> None:
    url = f"{node.base}/p/demo/e/ladder/mp4/hi.mp4"
    size = int(httpx.head(url, timeout=10, headers={"User-Agent": "ffmpeg-like"}).headers["content-length"])
    statuses = fetch_on_new_connections(node.base, MASTER, 12, **{"User-Agent": "ffmpeg-like"})
    with httpx.Client(timeout=30, headers={"User-Agent": "ffmpeg-like"}) as slow, slow.stream("GET", url) as streaming:
        chunks = streaming.iter_bytes(16 * 1024)
        got = len(next(chunks))
        node.proc.send_signal(signal.SIGTERM)  # while the body is on its way
        time.sleep(0.3)
        got += sum(len(c) for c in chunks)
    assert got == size
    assert node.proc.wait(30) == 0, node.log()
    events = [line for f in (node.tmp / "events").glob("*.jsonl") for line in f.read_text().splitlines()]
    kinds = [json.loads(line)["kind"] for line in events]
    assert statuses == [200] * 12
    assert kinds.count("play_requested") == 1  # one session (same IP + UA) over two workers: one play
    assert kinds.count("progressive_range") + kinds.count("progressive") >= 1


def test_ctrl_c_in_a_terminal_stops_every_worker_once_and_gracefully(tmp_path, media_library) -> None:
    """SIGINT to the whole process group (what a terminal sends): workers are in their own group, so they get
    one SIGTERM from the supervisor, not the SIGINT too (a second signal would make uvicorn force-quit)."""
    port = free_port()
    log = tmp_path / "log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--media", str(media_library), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "2"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: _up(base), timeout=30, what="the node")
            wait_for(lambda: metric(base, "vodgate_workers", state="answering") == 2, what="both workers")
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert text.count("Finished server process") == 2, text
    assert "force" not in text.lower() and "Traceback" not in text, text


def test_a_worker_that_cannot_start_stops_the_node_instead_of_looping(tmp_path, media_library) -> None:
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: no worker can bind beside it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--media", str(media_library), "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "2"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "keeps dying at start" in done.stderr
    assert "Address already in use" in done.stderr


def test_a_worker_stuck_at_stop_is_killed_after_the_stop_timeout(node) -> None:
    from edge.workers import STOP_TIMEOUT

    stuck, other = worker_pids(node.proc.pid)
    os.kill(stuck, signal.SIGSTOP)  # it can neither finish nor exit
    started = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(STOP_TIMEOUT + 15) == 0
    assert STOP_TIMEOUT <= time.monotonic() - started < STOP_TIMEOUT + 15
    assert not alive(stuck) and not alive(other)
    assert f"worker pid {stuck} did not stop within" in node.log_path.read_text()


def test_one_scrape_merges_counters_gauges_and_per_process_series() -> None:
    from edge.siblings import merge_metrics

    one = ("# HELP vodgate_purges_total p\n# TYPE vodgate_purges_total counter\nvodgate_purges_total 2\n"
           "# HELP vodgate_upstream_up u\n# TYPE vodgate_upstream_up gauge\nvodgate_upstream_up{upstream=\"a\"} 1\n"
           "# HELP vodgate_segment_cache_memory_bytes m\n# TYPE vodgate_segment_cache_memory_bytes gauge\n"
           "vodgate_segment_cache_memory_bytes 100\n"
           "# HELP vodgate_process_open_fds f\n# TYPE vodgate_process_open_fds gauge\nvodgate_process_open_fds 7\n"
           "# HELP vodgate_packaging_seconds s\n# TYPE vodgate_packaging_seconds histogram\n"
           "vodgate_packaging_seconds_bucket{format=\"hls\",le=\"0.1\"} 1\nvodgate_packaging_seconds_bucket{format=\"hls\",le=\"+Inf\"} 2\n"
           "vodgate_packaging_seconds_count{format=\"hls\"} 2\nvodgate_packaging_seconds_sum{format=\"hls\"} 0.5\n")
    two = one.replace("vodgate_purges_total 2", "vodgate_purges_total 3").replace('upstream="a"} 1', 'upstream="a"} 0') \
        .replace("open_fds 7", "open_fds 9").replace("memory_bytes 100", "memory_bytes 50")
    merged = merge_metrics([one, two], [0, 1]).decode()
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for family in text_string_to_metric_families(merged) for s in family.samples}
    assert found[("vodgate_purges_total", ())] == 5
    assert found[("vodgate_upstream_up", (("upstream", "a"),))] == 0  # down in one worker: down for the node
    assert found[("vodgate_segment_cache_memory_bytes", ())] == 150
    assert found[("vodgate_process_open_fds", (("worker", "0"),))] == 7
    assert found[("vodgate_process_open_fds", (("worker", "1"),))] == 9
    assert found[("vodgate_packaging_seconds_bucket", (("format", "hls"), ("le", "+Inf")))] == 4
    assert found[("vodgate_packaging_seconds_sum", (("format", "hls"),))] == 1.0
    assert "# TYPE vodgate_purges_total counter" in merged


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's worker processes (spawned interpreters; not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == supervisor and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_default_is_one_worker_per_cpu_this_process_may_use(tmp_path) -> None:
    from config.settings import workers_for

    cpus = len(os.sched_getaffinity(0))
    no_quota = tmp_path / "cpu.max"
    no_quota.write_text("max 100000\n")
    assert workers_for(0, no_quota) == cpus
    assert workers_for(0, tmp_path / "absent") == cpus
    (tmp_path / "quota").write_text("150000 100000\n")  # docker run --cpus 1.5
    assert workers_for(0, tmp_path / "quota") == min(cpus, 2)
    (tmp_path / "small").write_text("20000 100000\n")  # --cpus 0.2: still one worker
    assert workers_for(0, tmp_path / "small") == 1
    assert workers_for(3, no_quota) == 3  # a configured count is taken as given


def test_a_stopped_worker_is_killed_and_replaced_so_no_connection_hangs(node) -> None:
    from edge.workers import PING_EVERY, PINGS_MISSED_ALLOWED

    stuck = worker_pids(node.proc.pid)[0]
    os.kill(stuck, signal.SIGSTOP)  # wedged: the kernel still hands it connections
    limit = PING_EVERY * (PINGS_MISSED_ALLOWED + 2) + 10
    wait_for(lambda: stuck not in worker_pids(node.proc.pid) and len(worker_pids(node.proc.pid)) == 2, timeout=limit,
             what="the stopped worker to be replaced")
    wait_for(lambda: metric(node.base, "vodgate_workers", state="answering") == 2, what="the new worker answering")
    assert set(fetch_on_new_connections(node.base, MASTER)) == {200}
    assert "has not answered for" in node.log_path.read_text()


def test_disk_files_follow_the_worker_count_when_the_node_restarts_with_another(tmp_path) -> None:
    from edge.cache import DiskTier

    root = tmp_path / "disk"
    keys = [f"/p/demo/e/x/hls/lo/seg-{n}.ts|etag" for n in range(12)]
    two = [DiskTier(root, 10**6, (i, 2)) for i in range(2)]
    for n, key in enumerate(keys):
        two[n % 2].put(key, key.encode() * 10)
    assert all(two[(n + 1) % 2].get(key) == key.encode() * 10 for n, key in enumerate(keys))  # a sibling's copy read
    one = DiskTier(root, 10**6)  # the node restarted with one process: it takes every worker's files
    assert [one.get(key) for key in keys] == [key.encode() * 10 for key in keys]
    assert one.size == sum(f.stat().st_size for f in root.rglob("*.seg")) and not list(root.glob("w*"))
    three = [DiskTier(root, 10**6, (i, 3)) for i in range(3)]  # and back to several: worker 0 takes them
    assert [three[1].get(key) for key in keys] == [key.encode() * 10 for key in keys]
    assert sum(t.size for t in three) == sum(f.stat().st_size for f in root.rglob("*.seg"))  # each file counted once


def test_run_folders_of_killed_supervisors_are_removed_at_the_next_start(tmp_path, monkeypatch) -> None:
    import tempfile

    from edge.workers import RUN_DIR_PREFIX, remove_abandoned_run_dirs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    abandoned = tmp_path / f"{RUN_DIR_PREFIX}{dead.pid}-abc"
    alive = tmp_path / f"{RUN_DIR_PREFIX}{os.getpid()}-def"
    for folder in (abandoned, alive):
        folder.mkdir()
        (folder / "worker-0.sock").write_text("")
    remove_abandoned_run_dirs()
    assert not abandoned.exists() and alive.exists()
