"""Caches never change what a viewer gets: a differential grant matrix over real processes.

Four `vodgate serve` processes share one partner configuration (tests/grant_matrix_support.py):

* REF: role all, ``[cache] enabled = false`` (no response cache, no hot lane): what a fresh server
  gives each viewer. The reference.
* ALL: role all with its caches and hot lane (the defaults).
* ORIGIN + EDGE: an origin and an edge in front of it (``cdn.shield_secrets`` on both, so the edge
  vouches for viewers it checked); viewers talk to the edge.

Viewer classes: anonymous (a 3 s preview), token (everything), limited (token, but a referrer that
limits flavors to 270 lines), blocked (a blocked referrer) and bot (a bot User-Agent). The library
holds the ladder once per *order*: in order ``N`` the class ``VIEWERS[N-1]`` asks first, on a cold
cache, then the other classes; every class asks for every resource (playlists, init and media
segments, the preview-marked URLs the anonymous viewer's playlists list, progressive files, HEAD,
ranges, and revalidations with the ETag the token viewer got from the same node, asked after every
plain request). Each answer must equal REF's answer for the same (class, resource, entry): status,
body bytes, Cache-Control class, Location, a HEAD's Content-Length. Every mismatch is collected and
reported in one table.

Orders run in parallel (one thread per entry and node): they share no cache object.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

import grant_matrix_support as gm
from grant_matrix_support import VIEWERS, Answers, Mismatch, Node, Resource

ORDER_ENTRIES = [f"order{i}" for i, _ in enumerate(VIEWERS, start=1)]
# the admin test's entries: a profile whose preview grows, one whose preview goes, and a partner
# without rules (the hot lane's case) that gets the site's rules
CHANGED = [("demo", "shift"), ("demo", "drop"), ("free", "open1")]


@dataclass
class Cluster:
    ref: Node
    all: Node
    origin: Node
    edge: Node

    @property
    def nodes(self) -> list[Node]:
        return [self.ref, self.all, self.origin, self.edge]

    def served(self) -> dict[str, Node]:
        """The roles under test, by the name the report uses: where viewers send their requests."""
        return {"ALL": self.all, "EDGE": self.edge}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, media_fixture_paths) -> Cluster:
    work = tmp_path_factory.mktemp("grant-matrix")
    library = gm.build_library(work / "library", media_fixture_paths, [("demo", e) for e in ORDER_ENTRIES] + CHANGED)
    shield = f'\n[cdn]\nshield_secrets = ["{gm.SHIELD_SECRET}"]\nedge_secrets = ["{gm.EDGE_SECRET}"]\n'
    configs = {
        "ref": "\n[cache]\nenabled = false\n",
        "all": "",
        "origin": shield,
        "edge": shield,
    }
    for name, extra in configs.items():
        (work / f"{name}.toml").write_text(gm.config_text(library, extra))
    nodes: list[Node] = []
    try:
        shielded = {gm.SHIELD_HEADER: gm.SHIELD_SECRET}  # the admin calls to both; viewers reach the edge via a CDN
        nodes.append(Node("ref", ["--config", str(work / "ref.toml")], work))
        nodes.append(Node("all", ["--config", str(work / "all.toml")], work))
        origin = Node("origin", ["--config", str(work / "origin.toml"), "--role", "origin"], work, headers=shielded)
        nodes.append(origin)
        origin.wait()  # before the edge's first health probe: it starts with its upstream up
        nodes.append(Node("edge", ["--config", str(work / "edge.toml"), "--role", "edge", "--upstream", origin.base], work,
                          headers=shielded))
        for node in nodes:
            node.wait()
        yield Cluster(*nodes)
    finally:
        for node in nodes:
            node.stop()


def run(node: Node, partner: str, entry: str, order, resources: list[Resource]) -> Answers:
    with httpx.Client(base_url=node.base, headers=node.headers, timeout=30) as client:
        return gm.run_order(client, partner, entry, order, resources)


def in_parallel(jobs: dict, workers: int = 4) -> dict:
    """``{key: (function, *args)}`` -> ``{key: result}``; jobs on different entries share no cache object."""
    with ThreadPoolExecutor(workers) as pool:
        futures = {key: pool.submit(fn, *args) for key, (fn, *args) in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.fixture(scope="module")
def resources(cluster) -> list[Resource]:
    with httpx.Client(base_url=cluster.ref.base, timeout=30) as client:
        return gm.discover(client, "demo", ORDER_ENTRIES[0])  # the same paths in every order's entry


@pytest.fixture(scope="module")
def matrix(cluster, resources) -> dict[tuple[str, str], Answers]:
    """``(role, entry) -> answers``, REF included; every order runs once, all at the same time."""
    jobs = {}
    for entry, order in zip(ORDER_ENTRIES, gm.orders()):
        jobs[("REF", entry)] = (run, cluster.ref, "demo", entry, order, resources)
        for role, node in cluster.served().items():
            jobs[(role, entry)] = (run, node, "demo", entry, order, resources)
    return in_parallel(jobs)


def order_name(entry: str) -> str:
    return f"{VIEWERS[ORDER_ENTRIES.index(entry)].name} first"


# --------------------------------------------------------------------------- the reference itself


def contract(viewer: str, resource: Resource, audio_dirs: set[str]) -> tuple[int, ...] | None:
    """Statuses docs/ACCESS_CONTROL.md promises this class for this resource (None: not stated here).

    Preview 3 s with 4 s segments: segment 1 is the clipped one, so the anonymous viewer gets its
    ``-p3`` URL and 403 for the unmarked one and everything later.
    """
    path = resource.path
    folder, name = path.rsplit("/", 1)
    marked = gm.marked(path)
    ok = (304,) if resource.revalidates and not marked else (206,) if resource.range else (200,)
    if viewer in ("blocked", "bot"):
        return (403,)
    if viewer == "token":
        return ok
    if viewer == "limited":
        hi_video = path.startswith("mp4/hi") or (folder.endswith("/hi") and folder not in audio_dirs)
        if hi_video:
            return (403,)
        return (200,) if resource.revalidates and name == "master.m3u8" else ok  # its master lists less: another ETag
    # anonymous: a 3 s preview
    if path.startswith("mp4/"):
        return (302,) if not marked else (206,) if resource.range else (200,)
    if name.startswith("seg-") and not marked:
        return (403,)
    if resource.revalidates:  # the master: another ETag (the token's), so the whole clipped playlist
        return (200,)
    return (206,) if resource.range else (200,)


def test_the_reference_gives_each_class_what_its_name_says(matrix, resources):
    """A guard on the comparison below: REF (and so the rules) mean what the class names say."""
    ref = matrix[("REF", ORDER_ENTRIES[0])]
    audio_dirs = {r.path.rsplit("/", 1)[0] for r in resources if "/a1/" in r.path}
    wrong = []
    for (viewer, label), answer in ref.items():
        resource = next(r for r in resources if r.label == label)
        expected = contract(viewer, resource, audio_dirs)
        if expected is not None and answer.status not in expected:
            wrong.append(Mismatch("REF", order_name(ORDER_ENTRIES[0]), viewer, label,
                                  f"status {answer.status}, expected {'/'.join(map(str, expected))} [{answer.note or '-'}]"))
    assert not wrong, "the reference breaks the access contract:\n" + gm.table(wrong)


# --------------------------------------------------------------------------- the matrix


def test_caches_never_change_a_viewers_answer(matrix):
    rows: list[Mismatch] = []
    for (role, entry), answers in matrix.items():
        if role != "REF":
            rows += gm.compare(role, order_name(entry), answers, matrix[("REF", entry)])
    assert not rows, f"{len(rows)} answers differ from the reference (caches and hot lane off):\n" + gm.table(rows)


def test_after_an_admin_profile_change(cluster):
    """Caches warmed under the old profile must not answer under the new one (each node holds its own profiles).

    demo/shift: preview 3 -> 7; demo/drop: the preview removed; free/open1: a partner without rules
    (the hot lane answers its segments) gets the site's rules.
    """
    with httpx.Client(base_url=cluster.ref.base, timeout=30) as client:
        before = {(p, e): gm.discover(client, p, e) for p, e in CHANGED}
    warm = {(role, p, e): (run, node, p, e, VIEWERS, before[(p, e)]) for role, node in cluster.served().items() for p, e in CHANGED}
    in_parallel(warm)

    changes = [("demo", "shift", gm.site_rules(preview=7)), ("demo", "drop", gm.site_rules(preview=None)),
               ("free", "open", gm.site_rules())]
    for node in cluster.nodes:
        for partner, profile, rules in changes:
            node.put_profile(partner, profile, rules)

    with httpx.Client(base_url=cluster.ref.base, timeout=30) as client:
        after = {}
        for key in CHANGED:
            found = gm.discover(client, *key)
            after[key] = list({r.label: r for r in [*before[key], *found]}.values())
    jobs = {(role, p, e): (run, node, p, e, VIEWERS, after[(p, e)])
            for role, node in {"REF": cluster.ref, **cluster.served()}.items() for p, e in CHANGED}
    answers = in_parallel(jobs)
    rows: list[Mismatch] = []
    for (role, partner, entry), got in answers.items():
        if role != "REF":
            rows += gm.compare(role, f"{partner}/{entry} changed", got, answers[("REF", partner, entry)])
    assert not rows, f"{len(rows)} answers after the profile change differ from the reference:\n" + gm.table(rows)
