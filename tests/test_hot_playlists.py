"""Playlists on the hot lane: a query-free playlist of a partner without rules is answered like a warm segment,
and no viewer gets anything but what a server without caches gives (edge/hot.py ``query_free``).

Four real processes share one configuration and one library: REF (``[cache] enabled = false``: no response
cache, no hot lane), ALL (caches and hot lane, the defaults), and an ORIGIN with an EDGE in front. Each
viewer class asks for every kind of playlist (masters, media, audio, I-frames, subtitles; TS and fMP4; clear
and AES-128) in two orders on cold entries: the plain viewer first (so its answer is remembered before the
others ask), and the plain viewer last. Every answer must equal REF's; the plain viewer's repeats must be hot
answers (``vodgate_hot_lane_answers_total``), and no other class may get one.
"""

from __future__ import annotations

import functools
import time

import httpx
import pytest

import grant_matrix_support as gm
from conftest import ServerProcess, hot_answers_in

ADMIN = "hot-playlists-admin-0123456789"
TOKEN_KEY = "00112233445566778899aabbccddeeff"
KEY_SECRET = "ab" * 32
EDGE_SECRET = "hot-playlists-edge-secret-0123"
PARTNERS = {"free": "", "enc": f'encryption = "aes-128"\nkey_secrets = ["{KEY_SECRET}"]\n', "tok": ""}
ORDERS = ("plain-first", "plain-last")
VTT = "WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nHello\n\n00:00:03.000 --> 00:00:05.000\nAgain\n"


def config(library, extra: str = "") -> str:
    partners = ""
    for name, settings in PARTNERS.items():
        rules = ('[{ name = "paid", unless = { authenticated = true }, then = [{ block = "token_required" }] }]'
                 if name == "tok" else "[]")
        partners += (f'\n[partners.{name}]\nadmin_secret = "{ADMIN}"\ntoken_keys = {{ k1 = "{TOKEN_KEY}" }}\n{settings}'
                     f'default_profile = "p"\n\n[partners.{name}.profiles.p]\nrules = {rules}\n')
    return f'[server]\nmedia_root = "{library}"\nsegment_duration = 4\n{partners}{extra}'


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, media_fixture_paths):
    work = tmp_path_factory.mktemp("hot-playlists")
    library = gm.build_library(work / "lib", media_fixture_paths, [(p, o) for p in PARTNERS for o in ORDERS])
    for partner in PARTNERS:
        for order in ORDERS:
            (library / partner / order / "hi.en.vtt").write_text(VTT)
    edged = f'\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n'
    started: dict[str, ServerProcess] = {}
    try:
        for name, extra, args in (("ref", "\n[cache]\nenabled = false\n", []), ("all", "", []),
                                  ("origin", edged, ["--role", "origin"])):
            (work / f"{name}.toml").write_text(config(library, extra))
            started[name] = ServerProcess(["--config", str(work / f"{name}.toml"), *args], work / f"{name}.log", name=name)
        (work / "edge.toml").write_text(config(library, edged))
        started["edge"] = ServerProcess(["--config", str(work / "edge.toml"), "--role", "edge", "--upstream",
                                         started["origin"].base], work / "edge.log", name="edge")
        yield started
    finally:
        for node in started.values():
            node.stop()


def hot_answers(client: httpx.Client) -> int:
    """The node's hot answers so far (REF has no hot lane: always 0)."""
    return hot_answers_in(client.get("/metrics").text, required=False)


def playlists(partner: str, entry: str) -> list[str]:
    root = f"/p/{partner}/e/{entry}"
    paths = []
    for fmt in ("hls", "cmaf"):
        paths += [f"{root}/{fmt}/master.m3u8", f"{root}/{fmt}/hi/index.m3u8", f"{root}/{fmt}/lo/index.m3u8",
                  f"{root}/{fmt}/_subs/en/index.m3u8"]
        if partner != "enc":  # encrypted media lists no I-frame playlists
            paths.append(f"{root}/{fmt}/hi/iframes.m3u8")
    return paths


@functools.cache
def token_for(partner: str, entry: str) -> str:
    """One token per entry for the whole run: every node then writes the same one into playlists."""
    from auth.tokens import sign_native

    return sign_native("k1", bytes.fromhex(TOKEN_KEY), f"/p/{partner}/e/{entry}", int(time.time()) + 3600)


def viewer_requests(partner: str, entry: str, etag: str | None) -> dict[str, tuple[str, dict]]:
    """Every class but the plain one: what each sends besides the path (query, headers)."""
    token = token_for(partner, entry)
    return {
        "session": ("?playSessionId=0f1e2d3c-aaaa-bbbb-cccc-1234567890ab", {}),
        # session ids the hot lane must leave to the full path: encoded, repeated, beside another parameter,
        # empty, too long, outside the alphabet
        "session-encoded": ("?playSessionId=abc%2Ddef", {}),
        "session-twice": ("?playSessionId=one&playSessionId=two", {}),
        "session-and-more": ("?playSessionId=abc&flavors=lo", {}),
        "session-empty": ("?playSessionId=", {}),
        "session-long": ("?playSessionId=" + "a" * 65, {}),
        "session-odd": ("?playSessionId=a+b", {}),
        "session-case": ("?playsessionid=abc", {}),
        "flavors": ("?flavors=lo", {}),
        "token": (f"?token={token}", {}),
        "cors": ("", {"Origin": "https://player.example"}),
        "revalidating": ("", {"If-None-Match": etag} if etag else {"If-None-Match": '"x"'}),
    }


def answer(response: httpx.Response) -> tuple:
    """What a player or CDN acts on. Not the ETag: an edge names a viewer's personal copy its own way, and
    each node's validators are checked by the revalidating class (a 304 for its own ETag)."""
    headers = response.headers
    return (response.status_code, response.content, headers.get("content-type"), headers.get("cache-control"),
            headers.get("access-control-allow-origin"), headers.get("content-location"))


def ask(client: httpx.Client, path: str, query: str = "", headers: dict | None = None) -> tuple[tuple, int]:
    """The answer and how many hot answers it took (0 or 1: requests are serial)."""
    before = hot_answers(client)
    response = client.get(path + query, headers=headers or {})
    return answer(response), hot_answers(client) - before


# the one class besides the plain viewer the origin's hot lane may answer (edge/hot.py SessionForm); an edge
# answers it on the full path
SESSION = "session"


def run(client: httpx.Client, partner: str, order: str) -> tuple[dict, list[str]]:
    """Every class's answer for every playlist of ``partner``/``order``; and the classes a hot answer went to."""
    answers, hot_for = {}, []
    for path in playlists(partner, order):
        etag = client.get(path).headers.get("etag") if order == "plain-first" else None
        if order == "plain-first":
            answers[("plain", path)], _ = ask(client, path)
        for name, (query, headers) in viewer_requests(partner, order, etag).items():
            answers[(name, path)], hot = ask(client, path, query, headers)
            if hot:
                hot_for.append(f"{name} {path}")
        answers[("plain-again", path)], _ = ask(client, path)
    return answers, hot_for


@pytest.mark.parametrize("partner", list(PARTNERS))
@pytest.mark.parametrize("role", ["all", "edge"])
def test_every_viewer_gets_the_reference_answer(nodes, role, partner):
    differences, wrongly_hot = [], []
    for order in ORDERS:
        with httpx.Client(base_url=nodes["ref"].base, timeout=30) as ref:
            expected, _ = run(ref, partner, order)
        with httpx.Client(base_url=nodes[role].base, timeout=30) as client:
            got, hot = run(client, partner, order)
        wrongly_hot += [f"{order}: {h}" for h in hot if not (role == "all" and h.startswith(SESSION + " "))]
        for key, ref_answer in expected.items():
            if got[key] != ref_answer:
                body = "same body" if got[key][1] == ref_answer[1] else "OTHER BODY"
                differences.append(f"{order} {key[0]} {key[1]}: {body}, {got[key][:1] + got[key][2:]} (REF {ref_answer[:1] + ref_answer[2:]})")
    assert not differences, "\n".join(differences)
    assert not wrongly_hot, "hot answers to requests that must take the full path:\n" + "\n".join(wrongly_hot)


@pytest.mark.parametrize("role", ["all", "edge"])
def test_query_free_playlists_of_an_open_partner_are_hot(nodes, role):
    """The fast path is taken: a repeat plain request of each playlist is a hot answer, with the same bytes;
    the restricted partner's never is, whoever asks."""
    with httpx.Client(base_url=nodes[role].base, timeout=30) as client:
        for partner in ("free", "enc"):
            for path in playlists(partner, "plain-first"):
                first = client.get(path)
                assert first.status_code == 200, (path, first.text[:200])
                for _ in range(2):  # a remembered answer lapses after 1 s; the retry then counts
                    again, hot = ask(client, path)
                    if hot:
                        break
                assert hot == 1, f"{role}: {path} was never a hot answer"
                assert again[1] == first.content and again[3] == first.headers.get("cache-control")
        for path in playlists("tok", "plain-first"):
            for _ in range(2):
                got, hot = ask(client, path)
                assert got[0] == 403 and hot == 0, (path, got[0], hot)


def test_a_lone_session_id_is_hot_on_the_origin_only(nodes):
    """The origin fills the remembered playlist's template with a lone playSessionId (its ETag and
    Cache-Control as the full path writes them: the differential test above compares the rest); an edge
    leaves it to the full path."""
    query = "?playSessionId=viewer-42.a:b_c"
    for role, expected in (("all", 1), ("edge", 0)):
        with httpx.Client(base_url=nodes[role].base, timeout=30) as client:
            for path in playlists("free", "plain-first") + playlists("enc", "plain-first"):
                plain = client.get(path)
                assert plain.status_code == 200
                for _ in range(2):  # a remembered answer lapses after 1 s; the retry then counts
                    client.get(path)
                    before = hot_answers(client)
                    session = client.get(path + query)
                    if hot_answers(client) - before == expected:
                        break
                assert hot_answers(client) - before == expected, f"{role}: {path}{query}"
                assert session.headers["cache-control"] == "private, max-age=60"
                assert session.headers["etag"] != plain.headers["etag"]
                assert query[1:].encode() in session.content  # in its URIs (the differential test compares exactly)
                # the full path (a conditional request) computes the ETag the hot answer gave
                revalidated = client.get(path + query, headers={"If-None-Match": session.headers["etag"]})
                assert revalidated.status_code == 304


def test_a_new_rule_applies_to_the_next_playlist_request(nodes):
    """An admin profile change while a playlist is remembered: the very next request is refused."""
    node = nodes["all"]
    path = "/p/free/e/plain-last/hls/master.m3u8"
    with httpx.Client(base_url=node.base, timeout=30) as client:
        assert client.get(path).status_code == 200
        assert ask(client, path)[0][0] == 200
        rules = [{"name": "paid", "unless": {"authenticated": True}, "then": [{"block": "token_required"}]}]
        put = client.put("/admin/partners/free/profiles/p", json={"rules": rules}, headers={"Authorization": f"Bearer {ADMIN}"})
        assert put.status_code == 200, put.text
        try:
            got, hot = ask(client, path)
            assert got[0] == 403 and hot == 0
        finally:
            client.put("/admin/partners/free/profiles/p", json={"rules": []}, headers={"Authorization": f"Bearer {ADMIN}"})


def test_a_session_request_first_makes_the_hot_answers(nodes):
    """Where every player sends a session id, no query-free request may ever come: the answer recorded from a
    session request serves other sessions and the query-free request, each as REF answers it."""
    path = "/p/enc/e/plain-last/cmaf/hi/index.m3u8"
    with httpx.Client(base_url=nodes["all"].base, timeout=30) as client, \
            httpx.Client(base_url=nodes["ref"].base, timeout=30) as ref:
        for _ in range(2):  # a remembered answer lapses after 1 s; the retry then counts
            client.get(path + "?playSessionId=first")
            got = {q: ask(client, path, q) for q in ("?playSessionId=second", "")}
            if all(hot == 1 for _, hot in got.values()):
                break
        for query, (answer_, hot) in got.items():
            assert hot == 1, f"{path}{query} was not a hot answer"
            assert answer_ == ask(ref, path, query)[0], f"{path}{query} differs from REF"
