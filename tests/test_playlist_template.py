"""Playlists are cached as templates (packager/hls/uris.query_template): each response fills the viewer's query into
slots instead of rewriting every line (with_query). The two must give the same text for every playlist and query."""

from __future__ import annotations


import httpx
import pytest

from packager.hls.uris import QUERY_SLOT, fill_query, query_template, with_query

HANDMADE = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="English",LANGUAGE="en",DEFAULT=YES,AUTOSELECT=YES,URI="main/a1/index.m3u8"
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="French",LANGUAGE="fr",DEFAULT=NO,AUTOSELECT=YES,FORCED=NO,URI="_subs/fr/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=1000,CODECS="avc1.64001f",AUDIO="audio",SUBTITLES="subs"
main/index.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=100,CODECS="avc1.64001f",URI="main/iframes.m3u8"
#EXT-X-MAP:URI="init-k0123abcd.mp4"
#EXT-X-KEY:METHOD=SAMPLE-AES,URI="../../keys/0123456789abcdef.key",IV=0x00000000000000000000000000000001,KEYFORMAT="identity"
#EXTINF:6.000000,
seg-1-k0123abcd.m4s
#EXT-X-KEY:METHOD=AES-128,URI="data:text/plain;base64,AAAA"
#EXTINF:2.500000,
seg-2-p8.5.ts

#EXT-X-ENDLIST
"""
QUERIES = ["", "token=vg1.k1.abc.def", "token=vg1.k1.abc.def&playSessionId=s-1", "hdnts=exp%3D1~acl%3D%2F*~hmac%3Dab"]


@pytest.mark.parametrize("query", QUERIES)
def test_a_filled_template_is_what_with_query_writes(query):
    template = query_template(HANDMADE).encode()
    assert fill_query(template, query).decode() == with_query(HANDMADE, query)
    assert (QUERY_SLOT in template.decode()) and QUERY_SLOT not in fill_query(template, query).decode()


def test_served_playlists_match_with_query_for_every_kind(server):
    """Masters (both formats, with ?flavors=), media, audio and I-frame playlists of the demo library, as served
    without a query, filled with each query, equal with_query of the same text."""
    base = f"{server.base}/p/demo/e"
    paths = ["ladder/hls/master.m3u8", "ladder/cmaf/master.m3u8", "ladder/hls/master.m3u8?flavors=hi,lo", "ladder/hls/hi/index.m3u8",
             "ladder/cmaf/hi/index.m3u8", "ladder/hls/hi/iframes.m3u8", "ladder/cmaf/hi/a1/index.m3u8",
             "two_languages/cmaf/master.m3u8"]
    for path in paths:
        plain = httpx.get(f"{base}/{path}", timeout=30).text
        assert QUERY_SLOT not in plain and "?" not in "".join(l for l in plain.splitlines() if not l.startswith("#")), path
        for query in QUERIES[1:]:
            assert fill_query(query_template(plain).encode(), query).decode() == with_query(plain, query), (path, query)


def test_a_purge_by_partner_drops_cached_playlist_templates(media_library, tmp_path):
    """Template cache keys still start with the playlist's path: a partner purge (a prefix match) drops them."""
    from conftest import ServerProcess

    config = tmp_path / "vodgate.toml"
    config.write_text(f'[server]\nmedia_root = "{media_library}"\n[partners.demo]\nadmin_secret = "template-purge-secret-0123"\n')
    srv = ServerProcess(["--config", str(config), "--workers", "1"], tmp_path / "server.log")
    try:
        url = f"{srv.base}/p/demo/e/ladder/hls/hi/index.m3u8"
        assert [httpx.get(url, timeout=30).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
        purged = httpx.post(f"{srv.base}/admin/partners/demo/purge", json={}, timeout=30,
                            headers={"Authorization": "Bearer template-purge-secret-0123"})
        assert purged.status_code == 200, purged.text
        assert httpx.get(url, timeout=30).headers["x-cache"] == "MISS"
    finally:
        srv.stop()
