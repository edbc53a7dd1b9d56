"""Admin API profile changes across the fleet (edge/admin_store.py): real `vodgate serve` processes.

Two nodes on one Redis: a change made on one is enforced by the other within a short poll, without a
restart; versions increase and the audit names who, never a secret. A restarted node loads the changes, a
SIGHUP reload keeps them, a node without Redis keeps them in its `[admin] state_file` (mode 0600), two
concurrent changes get distinct versions and one final state, a node that missed a message (or a Redis
that restarted empty) is caught up when it resubscribes, a change Redis cannot take is refused (503) and
applied nowhere, and a stored change that no longer validates on a node is skipped with a warning while
the node serves. Worker processes sharing a state file lose no change and see each other's with sync().

Redis: a real `redis-server` on a free port; without one these tests skip, unless
VODGATE_REQUIRE_SERVICES=1 (CI), where they fail.
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import httpx
import pytest

from conftest import REPO, ServerProcess, free_port
from redis_support import RedisServer, require_redis
from test_auth_geoip import build as build_mmdb  # a real MaxMind-format database

SECRET = "fleet-admin-secret-0123456789"
AUTH = {"Authorization": f"Bearer {SECRET}"}
OTHER_AUTH = {"Authorization": "Bearer other-admin-secret-0123456789"}
MASTER = "/p/demo/e/h264_baseline/hls/master.m3u8"
EVIL = {"Referer": "https://evil.example/player"}
BLOCK_EVIL = {"rules": [{"if": {"referrer": ["evil.example"]}, "then": [{"block": "evil_referrer"}]}]}
POLL = 2.0  # seconds another node has to apply a change


def _serve_accepts_workers() -> bool:
    """The multi-process mode is arriving in parallel: one worker per node here, when the option exists."""
    out = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    return "--workers" in out.stdout


WORKERS = ["--workers", "1"] if _serve_accepts_workers() else []


def config(profile_p: str = "rules = []", *, extra: str = "", partners: str = "") -> str:
    return f'''[server]
{extra}
[partners.demo]
admin_secret = "{SECRET}"
default_profile = "p"

[partners.demo.profiles.p]
{profile_p}

[partners.demo.profiles.spare]
description = "in the file, used by nothing: the admin API may delete it"
rules = []

[partners.other]
admin_secret = "{OTHER_AUTH['Authorization'].split()[1]}"
{partners}'''


def start(tmp_path: Path, name: str, document: str, media: Path, *args: str) -> ServerProcess:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    path = folder / "vodgate.toml"
    path.write_text(document)
    return ServerProcess(["--config", str(path), "--media", str(media), *WORKERS, *args], folder / "server.log", name=name)


def status(node: ServerProcess, **headers: str) -> int:
    return httpx.get(node.base + MASTER, headers=headers, timeout=30).status_code


def eventually(check: Callable[[], bool], within: float = POLL) -> float:
    """Seconds until ``check()`` held (polled every 20 ms); AssertionError past ``within``."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < within, f"not within {within} s"
        time.sleep(0.02)
    return time.monotonic() - began


def put(node: ServerProcess, name: str, body: dict, **headers: str) -> int:
    answer = httpx.put(f"{node.base}/admin/partners/demo/profiles/{name}", headers={**AUTH, **headers}, json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {name: body}
    return int(answer.headers["x-vodgate-change-version"])


def profiles(node: ServerProcess) -> dict:
    answer = httpx.get(f"{node.base}/admin/partners/demo/profiles", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def healthz_changes(node: ServerProcess) -> dict:
    return httpx.get(f"{node.base}/healthz", timeout=10).json()["admin_changes"]


# --------------------------------------------------------------------------- Redis


@pytest.fixture()
def redis_server(tmp_path):
    """A fresh Redis per test: no change leaks between tests."""
    require_redis("admin fleet tests over Redis")
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture()
def two_nodes(tmp_path, media_library, redis_server):
    """Two origins over one library and one Redis (a fresh Redis per test: no change leaks between tests)."""
    nodes = []
    try:
        for name in ("node1", "node2"):
            nodes.append(start(tmp_path, name, config(), media_library, "--redis", redis_server.url))
        yield nodes
    finally:
        for node in nodes:
            node.stop()


# --------------------------------------------------------------------------- the cases


def test_a_change_on_one_node_is_enforced_by_the_other_and_audited(two_nodes):
    node1, node2 = two_nodes
    assert status(node1, **EVIL) == status(node2, **EVIL) == 200
    put_version = put(node1, "p", BLOCK_EVIL)
    assert status(node1, **EVIL) == 403  # applied here before the answer
    eventually(lambda: status(node2, **EVIL) == 403)
    assert status(node2) == 200  # only the evil referrer is refused
    refused = httpx.get(node2.base + MASTER, headers=EVIL, timeout=10)
    assert refused.json()["error"] == "evil_referrer"

    assert "spare" in profiles(node2)
    deleted = httpx.delete(f"{node1.base}/admin/partners/demo/profiles/spare", headers=AUTH, timeout=10)
    assert deleted.status_code == 204, deleted.text
    delete_version = int(deleted.headers["x-vodgate-change-version"])
    assert delete_version == put_version + 1
    eventually(lambda: "spare" not in profiles(node2))
    assert profiles(node2)["p"] == BLOCK_EVIL

    audit = httpx.get(f"{node2.base}/admin/partners/demo/changes", headers=AUTH, timeout=10)
    assert audit.status_code == 200, audit.text
    changes = audit.json()["changes"]
    assert [(c["version"], c["op"], c["name"]) for c in changes] == [(delete_version, "delete", "spare"), (put_version, "put", "p")]
    assert changes[1]["profile"] == BLOCK_EVIL and changes[0]["profile"] is None
    assert {c["by"] for c in changes} == {"127.0.0.1"} and {c["partner"] for c in changes} == {"demo"}
    assert all(c["at"].endswith("+00:00") for c in changes)
    assert SECRET not in audit.text and "Bearer" not in audit.text
    one = httpx.get(f"{node2.base}/admin/partners/demo/changes?limit=1", headers=AUTH, timeout=10).json()["changes"]
    assert [c["version"] for c in one] == [delete_version]
    assert httpx.get(f"{node2.base}/admin/partners/demo/changes?limit=0", headers=AUTH, timeout=10).status_code == 400
    assert httpx.get(f"{node2.base}/admin/partners/demo/changes", timeout=10).status_code == 401
    # partner-scoped: another partner's admin sees none of demo's changes, and cannot ask for them
    assert httpx.get(f"{node2.base}/admin/partners/other/changes", headers=OTHER_AUTH, timeout=10).json()["changes"] == []
    assert httpx.get(f"{node2.base}/admin/partners/demo/changes", headers=OTHER_AUTH, timeout=10).status_code == 403
    stats = healthz_changes(node2)
    assert stats == {"backend": "redis", "version": delete_version, "applied": 2, "skipped": 0, "subscribed": True}


def test_an_edge_enforces_a_change_made_on_its_origin(tmp_path, media_library, redis_server):
    vouch = '\n[cdn]\nedge_secrets = ["fleet-edge-secret-0123456789"]\n'
    origin = start(tmp_path, "origin", config() + vouch, media_library, "--redis", redis_server.url)
    edge = None
    try:
        edge_table = f'\n[edge]\nrole = "edge"\nupstreams = ["{origin.base}"]\n'
        edge = start(tmp_path, "edge", config() + vouch + edge_table, media_library, "--redis", redis_server.url)
        assert status(edge, **EVIL) == 200
        version = put(origin, "p", BLOCK_EVIL)
        eventually(lambda: status(edge, **EVIL) == 403)
        assert status(edge) == 200
        health = httpx.get(f"{edge.base}/healthz", timeout=10).json()
        assert health["role"] == "edge" and health["admin_changes"]["version"] == version
        assert health["admin_changes"]["backend"] == "redis" and health["admin_changes"]["subscribed"] is True
    finally:
        if edge is not None:
            edge.stop()
        origin.stop()


def test_a_node_that_missed_a_change_reads_it_when_it_resubscribes(two_nodes, redis_server):
    node1, node2 = two_nodes
    redis_server.client.client_kill_filter(_type="pubsub")  # every subscriber drops; they come back in 0.5 s
    version = put(node1, "p", BLOCK_EVIL)  # published while node2 hears nothing
    eventually(lambda: status(node2, **EVIL) == 403)
    log = node2.log()
    assert f"profile p (version {version}, from another node)" not in log  # not the message: the re-read
    assert f"following vodgate:purge:admin at version {version}" in log


def test_a_redis_that_restarts_empty_leaves_the_files_profiles_and_takes_new_changes(two_nodes, redis_server, tmp_path):
    node1, node2 = two_nodes
    put(node1, "p", BLOCK_EVIL)
    eventually(lambda: status(node2, **EVIL) == 403)
    redis_server.stop()
    (tmp_path / "empty").mkdir()
    empty = RedisServer(tmp_path / "empty", port=redis_server.port)  # no persistence: every change is gone
    try:
        eventually(lambda: status(node2, **EVIL) == 200 and status(node1, **EVIL) == 200, within=15)
        assert "it lost changes" in node2.log()
        assert put(node1, "spare", {"rules": [{"then": [{"block": "again"}]}]}) == 1  # the counter starts over...
        eventually(lambda: profiles(node2)["spare"] == {"rules": [{"then": [{"block": "again"}]}]})  # ...and is applied
    finally:
        empty.stop()


def test_a_change_redis_cannot_take_is_refused_and_applied_nowhere(two_nodes, redis_server):
    node1, _ = two_nodes
    redis_server.stop()
    answer = httpx.put(f"{node1.base}/admin/partners/demo/profiles/p", headers=AUTH, json=BLOCK_EVIL, timeout=10)
    assert answer.status_code == 503 and answer.json()["error"] == "admin_store_unavailable", answer.text
    assert str(redis_server.port) not in answer.text  # the server's Redis address is not a partner's business
    assert status(node1, **EVIL) == 200 and profiles(node1)["p"] == {"rules": []}


def test_a_restarted_node_loads_the_changes_before_it_serves(two_nodes, tmp_path, media_library, redis_server):
    node1, node2 = two_nodes
    put(node1, "p", BLOCK_EVIL)
    eventually(lambda: status(node2, **EVIL) == 403)
    node2.stop()
    again = start(tmp_path, "node2", config(), media_library, "--redis", redis_server.url)
    try:
        assert status(again, **EVIL) == 403 and status(again) == 200  # the first request after /healthz answered
        assert profiles(again)["p"] == BLOCK_EVIL
    finally:
        again.stop()


def test_a_sighup_reload_keeps_the_admin_change(two_nodes, tmp_path):
    node1, _ = two_nodes
    version = put(node1, "p", BLOCK_EVIL)
    path = tmp_path / "node1" / "vodgate.toml"
    path.write_text(config('description = "edited in the file"\nrules = []', partners="[partners.demo.profiles.filed]\nrules = []\n"))
    before = node1.log().count("reloaded ")
    os.kill(node1.proc.pid, signal.SIGHUP)
    eventually(lambda: node1.log().count("reloaded ") > before, within=10)
    listed = profiles(node1)
    assert "filed" in listed  # the file's new profile
    assert listed["p"] == BLOCK_EVIL  # the admin change, over the file's edited p
    assert status(node1, **EVIL) == 403 and status(node1) == 200
    assert healthz_changes(node1)["version"] == version


def test_concurrent_changes_on_two_nodes_get_distinct_versions_and_one_final_state(two_nodes):
    node1, node2 = two_nodes
    bodies = {node1.name: {"rules": [{"then": [{"block": "from_node1"}]}]}, node2.name: {"rules": [{"then": [{"block": "from_node2"}]}]}}
    versions: dict[str, int] = {}
    barrier = threading.Barrier(2)

    def change(node: ServerProcess) -> None:
        barrier.wait()
        versions[node.name] = put(node, "p", bodies[node.name])

    threads = [threading.Thread(target=change, args=(node,)) for node in (node1, node2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(versions.values()) == [1, 2], versions
    winner = bodies[max(versions, key=versions.get)]
    eventually(lambda: profiles(node1)["p"] == profiles(node2)["p"] == winner)
    reason = winner["rules"][0]["then"][0]["block"]
    assert [httpx.get(n.base + MASTER, timeout=10).json()["error"] for n in (node1, node2)] == [reason, reason]
    assert healthz_changes(node1)["version"] == healthz_changes(node2)["version"] == 2


def test_a_state_file_keeps_changes_across_a_restart_without_redis(tmp_path, media_library):
    document = config(extra='trusted_proxies = ["127.0.0.1/32"]', partners='\n[admin]\nstate_file = "state/admin.json"\n')
    node = start(tmp_path, "solo", document, media_library)
    try:
        version = put(node, "p", BLOCK_EVIL, **{"X-Forwarded-For": "198.51.100.9"})  # through a trusted proxy
        audit = httpx.get(f"{node.base}/admin/partners/demo/changes", headers=AUTH, timeout=10).json()["changes"]
        assert [(c["version"], c["by"]) for c in audit] == [(version, "198.51.100.9")]
        assert status(node, **EVIL) == 403
        assert healthz_changes(node) == {"backend": "file", "version": version, "applied": 1, "skipped": 0, "subscribed": None}
    finally:
        node.stop()
    state = tmp_path / "solo" / "state" / "admin.json"
    audit = state.with_name("admin.json.audit.demo.jsonl")
    for path in (state, audit):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert SECRET not in path.read_text()
    assert "evil_referrer" in state.read_text()
    again = start(tmp_path, "solo", document, media_library)
    try:
        assert status(again, **EVIL) == 403 and status(again) == 200
        assert put(again, "spare", {"rules": []}) == version + 1  # the version goes on from the file's
    finally:
        again.stop()
    assert "will not survive a restart" not in again.log()


def test_without_redis_or_a_state_file_one_warning_names_the_key(tmp_path, media_library):
    node = start(tmp_path, "memory", config(), media_library)
    try:
        put(node, "p", BLOCK_EVIL)
        assert status(node, **EVIL) == 403
    finally:
        node.stop()
    log = node.log()
    assert log.count("will not survive a restart") == 1 and "[admin] state_file" in log and "partner(s) demo" in log, log


def test_a_stored_change_that_no_longer_validates_is_skipped_with_a_warning(tmp_path, media_library):
    folder = tmp_path / "geo"
    folder.mkdir()
    build_mmdb(folder / "countries.mmdb", records=[(["81.2.69.0/24"], {"country": {"iso_code": "FR"}})])
    admin = '\n[admin]\nstate_file = "admin.json"\n'
    with_geoip = config(extra='geoip_database = "countries.mmdb"', partners=admin)
    node = start(tmp_path, "geo", with_geoip, media_library)
    try:
        by_country = {"rules": [{"if": {"country": ["FR"]}, "then": [{"block": "geo"}]}]}
        version = put(node, "p", by_country)
    finally:
        node.stop()
    again = start(tmp_path, "geo", config(partners=admin), media_library)  # the GeoIP database is gone
    try:
        assert status(again) == 200  # still serving, with the file's profile p
        assert profiles(again)["p"] == {"rules": []}
        assert healthz_changes(again) == {"backend": "file", "version": version, "applied": 0, "skipped": 1, "subscribed": None}
    finally:
        again.stop()
    warnings = [line for line in again.log().splitlines() if "WARNING" in line and f"skipping change {version}" in line]
    assert len(warnings) == 1, again.log()
    assert "profile p of partner demo" in warnings[0] and "geoip_database" in warnings[0], warnings[0]


BAD_ADMIN = {
    "typo": ('[admin]\nstate_fil = "admin.json"\n', "unknown key(s) admin.state_fil (did you mean admin.state_file?)"),
    "type": ("[admin]\nstate_file = 3\n", "admin.state_file has value 3; expected a string (quoted)"),
    "table": ('admin = "admin.json"\n', "'admin' must be a table ([admin])"),
}


@pytest.mark.parametrize("name", sorted(BAD_ADMIN))
def test_a_bad_admin_section_is_refused_by_config_check(name, tmp_path, media_library):
    document, message = BAD_ADMIN[name]
    path = tmp_path / "vodgate.toml"
    path.write_text(document + f'[server]\nmedia_root = "{media_library}"\n')
    check = subprocess.run([sys.executable, "-m", "cli.main", "config", "check", str(path)], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 2 and message in check.stderr, check.stderr


# --------------------------------------------------------------------------- worker processes of one node

WRITER = """
import asyncio, sys
from auth.access import AccessControl
from config.partners import AccessConfig, Partner, profile_from_dict
from edge.admin_store import AdminChanges, FileLog
from pathlib import Path

async def main(path, tag, count):
    access = AccessControl(AccessConfig(partners={"demo": Partner("demo")}))
    store = AdminChanges(access, FileLog(Path(path)))
    for i in range(count):
        profile = profile_from_dict(f"{tag}{i}", {"rules": []}, geoip_configured=False)
        await store.put("demo", profile, by="192.0.2.1")

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def test_processes_writing_one_state_file_at_once_lose_no_change(tmp_path):
    state = tmp_path / "admin.json"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(state), tag, "25"], cwd=REPO) for tag in ("a", "b", "c")]
    assert [w.wait(60) for w in writers] == [0, 0, 0]
    import json

    document = json.loads(state.read_text())
    assert document["version"] == 75
    assert sorted(c["version"] for c in document["changes"]) == list(range(1, 76))  # 75 distinct profiles, none lost
    lines = state.with_name("admin.json.audit.demo.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["version"] for line in lines) == list(range(1, 76))


def test_sync_applies_what_a_sibling_process_recorded(tmp_path):
    import asyncio

    from auth.access import AccessControl
    from config.partners import AccessConfig, Partner, profile_from_dict
    from edge.admin_store import AdminChanges, FileLog

    async def scenario() -> None:
        stores = [AdminChanges(AccessControl(AccessConfig(partners={"demo": Partner("demo")})), FileLog(tmp_path / "s.json"))
                  for _ in range(2)]
        here, sibling = stores
        told = []

        async def tell() -> None:
            told.append(await sibling.sync())

        here.after_local_change = tell
        change = await here.put("demo", profile_from_dict("geo", BLOCK_EVIL, geoip_configured=False), by="192.0.2.1")
        assert told == [True] and change.version == 1
        assert "geo" in sibling.access.config_partner("demo").profiles
        assert await sibling.sync() is False  # nothing newer
        await sibling.delete("demo", "geo", by="192.0.2.2")
        assert await here.sync() is True and "geo" not in here.access.config_partner("demo").profiles
        assert here.stats() == sibling.stats() == {"backend": "file", "version": 2, "applied": 2, "skipped": 0, "subscribed": None}

    asyncio.run(scenario())


@pytest.mark.parametrize("text, said", [("{", "is not JSON"), ('{"hello": 1}', "is not an admin state file")])
def test_a_state_file_this_module_did_not_write_stops_the_start(tmp_path, text, said):
    """docs/CONFIGURATION.md, [admin]: an unreadable or foreign state file is a ConfigError at start (the lifespan
    raises it, so the server does not serve), never a start from the file's profiles that would drop the changes."""
    import asyncio

    from auth.access import AccessControl
    from config.errors import ConfigError
    from config.partners import AccessConfig, Partner
    from edge.admin_store import AdminChanges, FileLog

    path = tmp_path / "admin.json"
    path.write_text(text)
    store = AdminChanges(AccessControl(AccessConfig(partners={"demo": Partner("demo")})), FileLog(path))
    with pytest.raises(ConfigError, match=f"admin state file: .*{said}.*move it away"):
        asyncio.run(store.start())
    assert path.read_text() == text  # left as it was, for the operator to look at
