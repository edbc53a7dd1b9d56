"""Differential check of clips, encrypted (-k) segments and key URLs across viewer classes and orders.

Pins a property no other test covered: tests/test_grant_matrix.py crawls the unclipped tree of a clear
partner only. Here a reference server (`[cache] enabled = false`, one process) and a node under test
(`--workers 2`, a shared disk tier, hot lane on, memory cache on) both serve:

- ``enc``: AES-128 with the site rules (preview 3 s for the anonymous, flavor limits per referrer,
  bots and a referrer blocked), ``key_rotation_segments = 2``;
- ``sae``: SAMPLE-AES with the same rules;
- ``open``: AES-128 with no rules at all (the hot lane may answer its warm segments).

Both nodes are shielded; every viewer class (no token, valid token, expired token, flavor-limited,
shield missing) asks for the whole tree of a clip folder (masters, media playlists, segments with their
-k marker, key URLs, GET and HEAD, an If-None-Match revalidation) and of the unclipped entry, in two
orders: privileged viewers first, then unprivileged, and the reverse (each order on its own entry, so
caches are warmed only by that order). Connections are not kept alive, so the kernel spreads the
requests of one viewer over both workers. Every answer must equal the reference's.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import m3u8
import pytest

from conftest import REPO, ServerProcess  # noqa: F401

import sys

sys.path.insert(0, str(REPO))
from auth.tokens import sign_native  # noqa: E402

TOKEN_KEY = "00112233445566778899aabbccddeeff"
SECRET = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
SHIELD = "attack-final-shield-secret-01234"
SHIELD_HEADER = "X-Vodgate-Shield"
PARTNERS = ("enc", "sae", "open")
ORDERS = {"priv_first": ("token", "limited", "expired", "anon", "noshield", "bot"),
          "unpriv_first": ("bot", "noshield", "anon", "expired", "limited", "token")}
ROOTS = ("clip-1-9/", "")  # a clip folder and the entry itself
FORMATS = ("hls", "cmaf")

RULES = """[
  { name = "bots", if = { user_agent = "(?i)bot" }, then = [{ block = "bots" }] },
  { name = "limited_sites", if = { referrer = ["*.limited.example"] }, then = [{ limit_flavors = { max_height = 270 } }, "continue"] },
  { name = "preview", unless = { authenticated = true }, then = [{ preview = 3 }] },
]"""


def config(library: Path, extra: str) -> str:
    return f"""
[server]
media_root = {json.dumps(str(library))}
segment_duration = 4

[cdn]
shield_secrets = ["{SHIELD}"]
{extra}
[partners.enc]
token_keys = {{ k1 = "{TOKEN_KEY}" }}
encryption = "aes-128"
key_secrets = ["{SECRET}"]
key_rotation_segments = 2
default_profile = "site"
[partners.enc.profiles.site]
rules = {RULES}

[partners.sae]
token_keys = {{ k1 = "{TOKEN_KEY}" }}
encryption = "sample-aes"
key_secrets = ["{SECRET}"]
key_rotation_segments = 2
default_profile = "site"
[partners.sae.profiles.site]
rules = {RULES}

[partners.open]
token_keys = {{ k1 = "{TOKEN_KEY}" }}
encryption = "aes-128"
key_secrets = ["{SECRET}"]
key_rotation_segments = 2
"""


_TOKENS: dict = {}


def tok(partner: str, entry: str, expired: bool = False) -> str:
    key = (partner, entry, expired)
    if key not in _TOKENS:
        exp = int(time.time()) - 60 if expired else int(time.time()) + 3600
        _TOKENS[key] = sign_native("k1", bytes.fromhex(TOKEN_KEY), f"/p/{partner}/e/{entry}", exp)
    return _TOKENS[key]


def viewer_request(viewer: str, partner: str, entry: str) -> tuple[dict, dict]:
    headers = {} if viewer == "noshield" else {SHIELD_HEADER: SHIELD}
    params: dict = {}
    if viewer in ("token", "limited"):
        params["token"] = tok(partner, entry)
    if viewer == "expired":
        params["token"] = tok(partner, entry, expired=True)
    if viewer == "limited":
        headers["Referer"] = "https://www.limited.example/watch"
    if viewer == "bot":
        headers["User-Agent"] = "Mozilla/5.0 (compatible; Googlebot/2.1)"
    return headers, params


def fresh(base: str) -> httpx.Client:
    # no keep-alive: each request a new connection, so SO_REUSEPORT spreads them over the workers
    return httpx.Client(base_url=base, timeout=60, limits=httpx.Limits(max_keepalive_connections=0))


def strip_query(uri: str) -> str:
    return uri.split("?", 1)[0]


def discover(base: str, partner: str, entry: str) -> list[str]:
    """Every path the token, limited and anonymous viewers are shown (on the reference)."""
    seen: list[str] = []
    with fresh(base) as client:
        for viewer in ("token", "limited", "anon"):
            headers, params = viewer_request(viewer, partner, entry)
            for root in ROOTS:
                for fmt in FORMATS:
                    todo = [f"/p/{partner}/e/{entry}/{root}{fmt}/master.m3u8"]
                    while todo:
                        path = todo.pop()
                        if path in seen:
                            continue
                        seen.append(path)
                        if not path.endswith(".m3u8"):
                            continue
                        r = client.get(path, headers=headers, params=params)
                        if r.status_code != 200:
                            continue
                        pl = m3u8.loads(r.text)
                        uris = [p.uri for p in pl.playlists] + [m.uri for m in pl.media if m.uri]
                        uris += [s.uri for s in pl.segments]
                        uris += [k.uri for k in pl.keys if k and k.uri]
                        if pl.segment_map:
                            uris += [m.uri for m in pl.segment_map if m.uri]
                        for uri in uris:
                            todo.append(urlsplit(urljoin(path, strip_query(uri))).path)
    return seen


def answer(r: httpx.Response) -> tuple:
    body = r.content
    try:
        code = r.json().get("error") if r.headers.get("content-type", "").startswith("application/json") else None
    except ValueError:
        code = None
    text_like = r.headers.get("content-type", "").startswith("application/vnd.apple.mpegurl")
    digest = hashlib.sha256(body).hexdigest()[:16] if not text_like else hashlib.sha256(body).hexdigest()[:16]
    cc = r.headers.get("cache-control", "")
    cc_class = "no-store" if "no-store" in cc else "private" if "private" in cc else "public" if "public" in cc else cc
    return (r.status_code, code, r.headers.get("content-type"), digest if r.status_code in (200, 206) else None,
            r.headers.get("content-length") if r.request.method == "HEAD" else None, cc_class,
            r.headers.get("content-location"))


def run_order(base: str, partner: str, entry: str, order: tuple[str, ...], paths: list[str]) -> dict:
    out = {}
    etags: dict = {}
    with fresh(base) as client:
        for viewer in order:
            headers, params = viewer_request(viewer, partner, entry)
            for path in paths:
                for method in ("GET", "HEAD"):
                    r = client.request(method, path, headers=headers, params=params)
                    out[(viewer, method, path)] = answer(r)
                    if method == "GET" and r.headers.get("etag"):
                        etags[path] = r.headers["etag"]
                # a revalidation with the ETag the previous viewer saw of this path (or none yet)
                if path in etags and not path.endswith(".m3u8"):
                    r = client.get(path, headers={**headers, "If-None-Match": etags[path]}, params=params)
                    out[(viewer, "INM", path)] = (r.status_code, answer(r)[1])
    return out


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, media_fixture_paths):
    from media_fixtures import LADDER

    work = tmp_path_factory.mktemp("attack-final")
    lib = work / "lib"
    for partner in PARTNERS:
        for order in ORDERS:
            folder = lib / partner / order
            folder.mkdir(parents=True)
            for flavor, name in LADDER.items():
                (folder / f"{flavor}.mp4").write_bytes(Path(media_fixture_paths[name]).read_bytes())
    (work / "ref.toml").write_text(config(lib, "\n[cache]\nenabled = false\n"))
    (work / "w2.toml").write_text(config(lib, f"\n[cache]\ndisk_path = {json.dumps(str(work / 'disk'))}\n"))
    ref = ServerProcess(["--config", str(work / "ref.toml")], work / "ref.log", wait=False)
    w2 = ServerProcess(["--config", str(work / "w2.toml"), "--workers", "2"], work / "w2.log", wait=False)
    try:
        ref.wait()
        w2.wait()
        yield ref, w2
    finally:
        w2.stop()
        ref.stop()


@pytest.mark.parametrize("partner", PARTNERS)
def test_clips_and_encrypted_segments_answer_as_a_fresh_single_process_origin(nodes, partner):
    ref, w2 = nodes
    paths = discover(ref.base, partner, "priv_first")
    assert any("clip-1-9" in p and "-k" in p for p in paths), paths
    assert any("/keys/" in p for p in paths), paths
    jobs = {}
    with ThreadPoolExecutor(4) as pool:
        for order, viewers in ORDERS.items():
            ps = [p.replace("/e/priv_first/", f"/e/{order}/") for p in paths]
            jobs[("REF", order)] = pool.submit(run_order, ref.base, partner, order, viewers, ps)
            jobs[("W2", order)] = pool.submit(run_order, w2.base, partner, order, viewers, ps)
        got = {k: f.result() for k, f in jobs.items()}
    diffs = []
    for order in ORDERS:
        want, have = got[("REF", order)], got[("W2", order)]
        for key, value in want.items():
            if have.get(key) != value:
                diffs.append(f"{order} {key}: W2 {have.get(key)} != REF {value}")
    assert not diffs, f"{len(diffs)} answers differ:\n" + "\n".join(diffs[:40])


def test_hot_lane_serves_a_clip_pinned_token_the_unclipped_entry(nodes):
    """FINDING: the hot lane ignores a token's clip claim on an unrestricted partner.

    A native token with ``"clip": "1-9"`` asking for the unclipped entry must answer 403
    ``clip_not_allowed`` (docs/ACCESS_CONTROL.md, "Clips"); the fresh single-process origin does, for
    every request. Once an anonymous GET has warmed the segment, the hot lane (edge/hot.py
    HotPaths.answer, keyed on the path alone, the query ignored as "a token nobody asks for") answers
    the pinned token's plain GET 200 from the segment cache. HEAD, and the same request before the
    warm-up, still answer 403: only the hot lane differs.
    """
    ref, w2 = nodes
    entry = "unpriv_first"
    seg = f"/p/open/e/{entry}/hls/hi/"
    with fresh(ref.base) as client:
        index = client.get(seg + "index.m3u8", headers={SHIELD_HEADER: SHIELD})
        seg += m3u8.loads(index.text).segments[0].uri
    pinned = {"token": sign_native("k1", bytes.fromhex(TOKEN_KEY), f"/p/open/e/{entry}", int(time.time()) + 3600,
                                   clip="1-9")}
    shield = {SHIELD_HEADER: SHIELD}
    with fresh(ref.base) as client:
        want = client.get(seg, headers=shield, params=pinned)
    assert want.status_code == 403 and want.json()["error"] == "clip_not_allowed"
    got = []
    with httpx.Client(base_url=w2.base, timeout=60) as client:  # one connection: one worker
        for _ in range(5):
            assert client.get(seg, headers=shield).status_code == 200  # anyone may: the partner has no rules
            r = client.get(seg, headers=shield, params=pinned)
            got.append((r.status_code, r.headers.get("x-cache")))
    assert all(status == 403 for status, _ in got), f"the pinned token got {got}; the fresh origin says 403"


@pytest.fixture(scope="module")
def edge_pair(nodes, tmp_path_factory):
    """A shielded origin and a 2-worker edge in front of it, over the same library as ``nodes``."""
    ref, _ = nodes
    work = tmp_path_factory.mktemp("attack-final-edge")
    lib = Path(re.search(r'media_root = "([^"]+)"', (Path(ref.log_path).parent / "ref.toml").read_text()).group(1))
    secrets = 'edge_secrets = ["attack-final-edge-secret-0123456"]\n'
    (work / "origin.toml").write_text(config(lib, secrets))
    (work / "edge.toml").write_text(config(lib, secrets + "[edge]\nhealth_interval = 0\n"))
    origin = ServerProcess(["--config", str(work / "origin.toml"), "--role", "origin"], work / "origin.log")
    try:
        edge = ServerProcess(["--role", "edge", "--config", str(work / "edge.toml"), "--upstream", origin.base,
                              "--workers", "2"], work / "edge.log")
    except Exception:
        origin.stop()
        raise
    yield ref, edge
    edge.stop()
    origin.stop()


def test_edge_hot_lane_serves_a_clip_pinned_token_another_clip(edge_pair):
    """FINDING: the edge's hot lane ignores a token's clip claim too (unrestricted partner, 2-worker edge).

    A token pinned to ``clip-2-9`` asking for ``clip-1-9/...`` (or the unclipped entry) gets 403
    ``clip_not_allowed`` from a fresh origin and from the edge's full path; once an anonymous GET warmed
    that segment on the edge, the edge's hot lane answers the pinned token 200 (X-Cache: HIT).
    """
    ref, edge = edge_pair
    entry = "priv_first"
    folder = f"/p/open/e/{entry}/clip-1-9/hls/hi/"
    shield = {SHIELD_HEADER: SHIELD}
    with fresh(ref.base) as client:
        seg = folder + m3u8.loads(client.get(folder + "index.m3u8", headers=shield).text).segments[0].uri
        pinned = {"token": sign_native("k1", bytes.fromhex(TOKEN_KEY), f"/p/open/e/{entry}", int(time.time()) + 3600,
                                       clip="2-9")}
        want = client.get(seg, headers=shield, params=pinned)
    assert want.status_code == 403 and want.json()["error"] == "clip_not_allowed"
    got = []
    with httpx.Client(base_url=edge.base, timeout=60) as client:  # one connection: one edge worker
        for _ in range(5):
            assert client.get(seg, headers=shield).status_code == 200
            r = client.get(seg, headers=shield, params=pinned)
            got.append((r.status_code, r.headers.get("x-cache")))
    assert all(status == 403 for status, _ in got), f"the pinned token got {got}; the fresh origin says 403"
