"""Attack review of `vodgate serve --workers N` (edge/workers.py, edge/siblings.py, the shared disk tier).

Each test pins a finding of the review of the workers (named in its docstring; each failed before its fix) or a property that held.
"""
from __future__ import annotations

import os
import signal

import httpx

from test_workers import ADMIN, metric, node, wait_for, worker_pids  # noqa: F401 - node is the fixture

URLS = [f"/p/demo/e/ladder/{fmt}/{flavor}/{name}"
        for flavor in ("lo", "mid", "hi")
        for fmt, name in (("hls", "index.m3u8"), ("hls", "seg-1.ts"), ("hls", "seg-2.ts"), ("cmaf", "init.mp4"),
                          ("cmaf", "seg-1.m4s"), ("cmaf", "seg-2.m4s"))]


def _fetch_each_on_a_new_connection(base: str, paths: list[str]) -> None:
    for path in paths:
        for _ in range(2):
            with httpx.Client(timeout=30) as fresh:
                assert fresh.get(base + path).status_code == 200, path


def test_finding_a_purge_after_a_worker_restart_leaves_disk_files_that_are_still_served(node) -> None:  # noqa: F811
    """Found in review (fixed since): DiskTier.get() reads any file in the shared folder, but discard_prefix() (purge)
    removes only the files in this worker's own index. A replacement worker indexes the files of its *name
    shard* (hash % N == index), not the files its dead predecessor wrote, so every file the dead worker wrote
    outside its shard is in nobody's index: no purge removes it, and every worker keeps serving it from disk."""
    _fetch_each_on_a_new_connection(node.base, URLS)
    disk = node.tmp / "disk"
    assert len(list(disk.rglob("*.seg"))) == len(URLS)
    victim = worker_pids(node.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)  # a crash, an OOM kill
    wait_for(lambda: len(worker_pids(node.proc.pid)) == 2 and victim not in worker_pids(node.proc.pid), what="a new worker")
    wait_for(lambda: metric(node.base, "vodgate_workers", state="answering") == 2, what="the new worker answering")

    answer = httpx.post(f"{node.base}/admin/partners/demo/purge", json={"entry": "ladder"},
                        headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    left = sorted(p.name for p in disk.rglob("*.seg"))
    misses = metric(node.base, "vodgate_segment_cache_lookups_total", result="MISS")
    _fetch_each_on_a_new_connection(node.base, URLS)
    repackaged = metric(node.base, "vodgate_segment_cache_lookups_total", result="MISS") - misses
    assert (left, repackaged) == ([], len(URLS)), (
        f"{len(left)} of {len(URLS)} objects survived the purge on disk; only {repackaged} were packaged again, "
        "the rest were served from files the purge did not see")


def test_finding_a_replacement_worker_takes_restart_only_settings_its_siblings_refused(node, media_library) -> None:  # noqa: F811
    """Found in review (fixed since): at a SIGHUP the supervisor keeps the whole new document as "what the workers run"
    (Supervisor._forward_reload), but the workers apply only its reloadable part: a restart-only setting
    (segment_duration here; equally media_root, [storage], [edge] upstreams, [redis] url, admin.state_file,
    [cache]) is logged as "only takes effect at a restart; running with the previous values". A worker that
    dies later is replaced with the new values, so one node serves two configurations, picked per connection
    by the kernel: two different playlists for one URL (and, with admin.state_file or [redis] url changed,
    two different sets of admin profile changes, i.e. different access rules per worker)."""
    from test_workers import config

    playlist = "/p/demo/e/ladder/hls/lo/index.m3u8"
    before = {httpx.get(node.base + playlist, timeout=10).text}
    node.config_path.write_text(config(media_library, node.tmp).replace("segment_duration = 4", "segment_duration = 2"))
    os.kill(node.proc.pid, signal.SIGHUP)
    wait_for(lambda: node.log().count("only take effect at a restart") >= 2, what="both workers keeping the old value")
    victim = worker_pids(node.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(worker_pids(node.proc.pid)) == 2 and victim not in worker_pids(node.proc.pid), what="a new worker")
    wait_for(lambda: metric(node.base, "vodgate_workers", state="answering") == 2, what="the new worker answering")
    bodies = set()
    for _ in range(30):
        with httpx.Client(timeout=30) as fresh:
            bodies.add(fresh.get(node.base + playlist).text)
    assert bodies == before, f"the node answers {len(bodies)} different playlists for one URL, depending on the worker"


def test_finding_a_sighup_while_a_worker_starts_kills_it_and_a_few_stop_the_node(node) -> None:  # noqa: F811
    """Found in review (fixed since): the supervisor forwards SIGHUP to every live worker process, including one still
    importing (a replacement, or every worker in the first seconds of the node). A spawned interpreter has
    Python's default SIGHUP action until cli/main.py installs the Reloader, so the signal kills it (exit -1);
    each such death counts as a quick death, and after QUICK_DEATHS_ALLOWED of them the supervisor stops the
    whole node (exit 1). A reload now and then (`systemctl reload`, config management) landing while a crashed
    worker is being replaced is enough."""
    import time

    victim = worker_pids(node.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.3)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and node.proc.poll() is None:
        os.kill(node.proc.pid, signal.SIGHUP)  # one reload every 0.4 s (each refused or applied, never fatal)
        time.sleep(0.4)
    log = node.log_path.read_text()
    assert node.proc.poll() is None, "the node stopped:\n" + "\n".join(
        line for line in log.splitlines() if "exited with" in line or "keeps dying" in line)
    assert "exited with code -1" not in log


def test_finding_one_partner_can_push_every_other_partners_changes_out_of_the_audit(tmp_path, monkeypatch) -> None:
    """Found in review (fixed since): the audit is capped at MAX_AUDIT records per *store* (Redis list, audit file,
    memory deque), not per partner, and GET /admin/partners/<p>/changes filters that shared list. Partner B's
    admin (a secret of its own, no rate limit) makes MAX_AUDIT changes of its own profile and partner A's
    audit is empty: one tenant erases another tenant's change history. (Shown on the state-file store with the
    cap made small; the Redis LTRIM and the memory deque(maxlen) share the same cap.)"""
    import asyncio

    import edge.admin_store as store

    monkeypatch.setattr(store, "MAX_AUDIT", 20)
    log = store.FileLog(tmp_path / "admin.json")

    async def scenario() -> list:
        await log.record({"partner": "a", "op": "put", "name": "p", "profile": {"rules": []}, "at": "t", "by": "203.0.113.1"})
        for i in range(25):
            await log.record({"partner": "b", "op": "put", "name": "q", "profile": {"rules": []}, "at": "t", "by": "198.51.100.9"})
        return await log.audit("a", 50)

    assert [c.version for c in asyncio.run(scenario())] == [1], "partner a's change was pushed out of its audit by b"


def test_finding_a_stray_seg_file_with_a_non_hex_name_stops_a_node_with_workers(tmp_path) -> None:
    """Found in review (fixed since; low): DiskTier._load shards the folder by int(name[:8], 16), which raises ValueError
    for any *.seg file whose name is not hex (a README.seg, a backup copy "old-….seg"): every worker, and
    the supervisor's own start-up probe, die with a traceback, so `vodgate serve --workers 2` exits 1, while
    one process (count == 1 skips the parse) starts and drops the file as not a cache file."""
    from edge.cache import DiskTier

    (tmp_path / "README.seg").write_text("not a cache file")
    DiskTier(tmp_path, 10 * 2**20, shard=(0, 2))  # a worker of two: ValueError before the fix
    assert not (tmp_path / "README.seg").exists()  # dropped, as one process (shard (0, 1)) drops it


def test_finding_after_a_restart_only_edit_a_replacement_worker_ignores_a_blocking_admin_change(tmp_path, media_library) -> None:
    """Found in review (fixed since; the access-control form of the replacement-worker finding above): the node keeps
    admin changes in [admin] state_file A; a partner admin blocks its profile (403 on every worker). The
    operator edits state_file to B (restart-only: both workers log "only take effect at a restart") and
    reloads. A worker that dies is replaced with state_file B, where no change exists: that worker serves the
    file's open profile, so a viewer refused by the admin change plays by retrying on a new connection."""
    import time

    from conftest import ServerProcess
    from test_workers import config

    path = tmp_path / "vodgate.toml"
    path.write_text(config(media_library, tmp_path) + '\n[admin]\nstate_file = "a.json"\n')
    srv = ServerProcess(["--config", str(path), "--workers", "2"], tmp_path / "server.log")
    try:
        wait_for(lambda: metric(srv.base, "vodgate_workers", state="answering") == 2, what="both workers")
        block = {"rules": [{"then": [{"block": "closed"}]}]}
        assert httpx.put(f"{srv.base}/admin/partners/demo/profiles/p", json=block,
                         headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10).status_code == 200
        path.write_text(config(media_library, tmp_path) + '\n[admin]\nstate_file = "b.json"\n')
        os.kill(srv.proc.pid, signal.SIGHUP)
        wait_for(lambda: srv.log_path.read_text().count("only take effect at a restart") >= 2, what="both workers keeping a.json")
        victim = worker_pids(srv.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(worker_pids(srv.proc.pid)) == 2 and victim not in worker_pids(srv.proc.pid), what="a new worker")
        wait_for(lambda: metric(srv.base, "vodgate_workers", state="answering") == 2, what="the new worker answering")
        time.sleep(0.5)
        statuses = set()
        for _ in range(30):
            with httpx.Client(timeout=30) as fresh:
                statuses.add(fresh.get(srv.base + "/p/demo/e/ladder/hls/master.m3u8").status_code)
        assert statuses == {403}, f"the blocked profile answers {sorted(statuses)} depending on the worker"
    finally:
        srv.stop()


def test_finding_a_worker_starting_while_a_sibling_evicts_crashes_on_a_vanished_file(tmp_path, monkeypatch) -> None:
    """Found in review (fixed since): DiskTier._load lists the shared folder, then stat()s each listed file (the sort
    by mtime, then the size) without catching FileNotFoundError. With workers the folder is shared: a sibling
    evicting (the steady state of a full disk tier) or purging between the listing and the stat makes the
    starting worker raise at start-up; a few in a row and the supervisor stops the node ("keeps dying at
    start"). Reproduced with a real thread deleting while 20 000 files load (/tmp/attack/race.py: fails every
    run); here the deletion is placed exactly between the listing and the stat."""
    from pathlib import Path

    from edge.cache import DiskTier

    # Each worker now lists only its own folder (w<i>); what deletes there under a starting worker is a sibling's
    # purge sweep (DiskTier.sweep_prefix). The files are written by the worker's predecessor, so the listing of
    # its own folder finds them (a sibling's files, in w1, are never listed by worker 0: the race needs w0).
    predecessor = DiskTier(tmp_path, 2**30, shard=(0, 2))
    for i in range(50):
        predecessor.put(f"/p/demo/e/x/hls/lo/seg-{i}.ts|etag", b"x" * 100)
    real_glob = Path.glob
    swept = []

    def listing_then_sibling_sweeps(self, pattern):
        found = list(real_glob(self, pattern))
        if pattern.endswith(".seg") and found and not swept:
            found[0].unlink()  # the sibling's sweep lands right after the listing
            swept.append(found[0])
        return iter(found)

    monkeypatch.setattr(Path, "glob", listing_then_sibling_sweeps)
    replacement = DiskTier(tmp_path, 2**30, shard=(0, 2))  # FileNotFoundError before the fix
    assert swept and len(replacement._index) == 49  # the race did happen, and the vanished file is not indexed
