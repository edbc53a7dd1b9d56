"""Attack on the playlist template cache (441815e, c7ab1b3): fill_query(query_template(p), q) vs with_query(p, q),
viewers' queries with odd characters, leakage between viewers, HEAD, 304, previews, encrypted partners, edges."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from conftest import REPO, ServerProcess  # noqa: F401
from packager.hls.uris import QUERY_SLOT, fill_query, query_template, with_query

import sys

sys.path.insert(0, str(REPO))
from auth.tokens import sign_native  # noqa: E402

TOKEN_KEY = "00112233445566778899aabbccddeeff"
SECRET = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"


def filled(p: str, q: str) -> str:
    """What edge/delivery.py answers: the filled template, or with_query where query_template declines."""
    template = query_template(p)
    return with_query(p, q) if template is None else fill_query(template.encode(), q).decode()


# --- unit: what holds -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("q", ["token=%01%0A%23%26", "token=a&playSessionId=s-1", "token=x#y", "a=\x01&b", "&", "token=\\1"])
@pytest.mark.parametrize("p", ["#EXTM3U\na.m3u8#frag\n", '#EXTM3U\r\n#EXT-X-KEY:METHOD=AES-128,URI="../../k/1.key"\r\ns.ts\r\n',
                               "#EXTM3U\na?x=1\n", '#EXT-X-KEY:METHOD=AES-128,URI="data:text/plain;base64,AA"\nseg-1-p8.5.ts\n'])
def test_fill_equals_with_query_for_odd_queries(p, q):
    assert filled(p, q) == with_query(p, q)


def test_edge_repersonalise_of_an_origin_body_equals_fill():
    p = '#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI="../../keys/ab.key"\n#EXTINF:4,\nseg-1-k0-p3.ts\n'
    template = query_template(p).encode()
    origin_body = fill_query(template, "").decode()  # what an edge caches: the origin's answer without a query
    assert origin_body == p
    assert with_query(origin_body, "token=t&playSessionId=s") == fill_query(template, "token=t&playSessionId=s").decode()


# --- unit: findings when written (no served playlist has such URIs); query_template now declines them -----------
def test_existing_param_of_the_same_name_is_replaced():
    p = "#EXTM3U\na.m3u8?token=old\n"
    assert filled(p, "token=new") == with_query(p, "token=new")


def test_no_query_keeps_uri_verbatim():
    p = "#EXTM3U\na.m3u8?\nb.m3u8?x=1&\n"
    assert filled(p, "") == with_query(p, "") == p


def test_control_char_in_text_is_not_a_slot():
    p = '#EXTM3U\n#EXT-X-MEDIA:TYPE=SUBTITLES,NAME="x?\x01",URI="s.m3u8"\na\n'
    assert filled(p, "token=t") == with_query(p, "token=t")


# --- served -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def enc(media_library, tmp_path_factory):
    d = tmp_path_factory.mktemp("tplattack")
    cfg = d / "vodgate.toml"
    cfg.write_text(f"""[server]
media_root = {json.dumps(str(media_library))}
segment_duration = 4
[partners.demo]
token_keys = {{ k1 = "{TOKEN_KEY}" }}
encryption = "aes-128"
key_secrets = ["{SECRET}"]
admin_secret = "tpl-attack-admin-secret-0123"
default_profile = "site"
[partners.demo.profiles.site]
rules = [{{ name = "preview", unless = {{ authenticated = true }}, then = [{{ preview = 3 }}] }}]
""")
    srv = ServerProcess(["--config", str(cfg), "--workers", "1"], d / "server.log")
    yield srv
    srv.stop()


PATHS = ["ladder/hls/master.m3u8", "ladder/hls/hi/index.m3u8", "ladder/cmaf/hi/index.m3u8", "ladder/cmaf/master.m3u8"]
ODD_SESSIONS = ["s-1", "a\x01b", "x&token=evil", "a#b", "a\nb", "%01", "a%26b", "\x01"]


def strip(body: str, q: str) -> str:
    return body.replace("?" + q, "").replace("&" + q, "")


def test_served_token_and_session_variants_match_with_query_and_do_not_leak(enc):
    token = sign_native("k1", bytes.fromhex(TOKEN_KEY), "/p/demo/e/ladder", int(time.time()) + 3600)
    with httpx.Client(base_url=f"{enc.base}/p/demo/e/", timeout=30) as c:
        for path in PATHS:
            first = c.get(path, params={"token": token})
            assert first.status_code == 200, (path, first.text)
            q1 = str(httpx.QueryParams({"token": token}))
            plain = strip(first.text, q1)
            assert QUERY_SLOT not in first.text and with_query(plain, q1) == first.text, path
            if "hi/" in path:
                assert "EXT-X-KEY" in plain and ".key" in plain, path
            for sid in ODD_SESSIONS:
                r = c.get(path, params={"token": token, "playSessionId": sid})
                assert r.status_code == 200 and QUERY_SLOT not in r.text, (path, sid)
                q = f"{q1}&playSessionId={sid}" if sid == "s-1" else q1  # only a checked id is carried
                assert r.text == with_query(plain, q), (path, sid)
            anon = c.get(path)  # preview viewer: no token, no other viewer's query
            assert anon.status_code == 200 and QUERY_SLOT not in anon.text
            assert "token=" not in anon.text and "playSessionId" not in anon.text and "?" not in anon.text.replace("#EXT", "")
            assert c.get(path, params={"token": token}).text == first.text  # a HIT is the same answer


def test_served_preview_markers_head_304_and_purge(enc):
    token = sign_native("k1", bytes.fromhex(TOKEN_KEY), "/p/demo/e/ladder", int(time.time()) + 3600)
    with httpx.Client(base_url=f"{enc.base}/p/demo/e/", timeout=30) as c:
        anon = c.get("ladder/hls/hi/index.m3u8")
        assert "-p3" in anon.text, anon.text  # the preview's cut segment keeps its marker
        tok = c.get("ladder/hls/hi/index.m3u8", params={"token": token, "playSessionId": "s-9"})
        assert "-p3" not in tok.text and "playSessionId=s-9" in tok.text
        head = c.head("ladder/hls/hi/index.m3u8", params={"token": token, "playSessionId": "s-9"})
        assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == tok.headers["etag"]
        nm = c.get("ladder/hls/hi/index.m3u8", params={"token": token, "playSessionId": "s-9"},
                   headers={"If-None-Match": tok.headers["etag"]})
        assert nm.status_code == 304 and nm.content == b""
        other = c.get("ladder/hls/hi/index.m3u8", params={"token": token, "playSessionId": "s-8"},
                      headers={"If-None-Match": tok.headers["etag"]})
        assert other.status_code == 200 and "s-8" in other.text and "s-9" not in other.text
        assert c.get("ladder/hls/hi/index.m3u8").headers["x-cache"] == "HIT"
        purged = c.post(f"{enc.base}/admin/partners/demo/purge", json={},
                        headers={"Authorization": "Bearer tpl-attack-admin-secret-0123"})
        assert purged.status_code == 200, purged.text
        again = c.get("ladder/hls/hi/index.m3u8")
        assert again.headers["x-cache"] == "MISS" and again.text == anon.text
