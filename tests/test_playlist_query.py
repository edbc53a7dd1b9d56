"""Per-viewer query propagation into playlists, judged by the m3u8 parser."""

from __future__ import annotations

import m3u8

from packager.hls.uris import with_query

MASTER = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="eng",DEFAULT=YES,AUTOSELECT=YES,URI="hi/a1/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=100,CODECS="avc1.64001f,mp4a.40.2",AUDIO="audio"
hi/index.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=10,CODECS="avc1.64001f",URI="hi/iframes.m3u8"
"""

MEDIA = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:6
#EXT-X-MAP:URI="init.mp4"
#EXTINF:6.000000,
seg-1.m4s
#EXTINF:2.500000,
seg-2.m4s?x=1
#EXT-X-ENDLIST
"""


def test_every_uri_of_a_master_carries_the_query():
    parsed = m3u8.loads(with_query(MASTER, "token=abc%3D&playSessionId=s1"))
    assert parsed.playlists[0].uri == "hi/index.m3u8?token=abc%3D&playSessionId=s1"
    assert parsed.media[0].uri == "hi/a1/index.m3u8?token=abc%3D&playSessionId=s1"
    assert parsed.iframe_playlists[0].uri == "hi/iframes.m3u8?token=abc%3D&playSessionId=s1"


def test_media_playlist_segments_and_map():
    parsed = m3u8.loads(with_query(MEDIA, "token=t"))
    assert [s.uri for s in parsed.segments] == ["seg-1.m4s?token=t", "seg-2.m4s?x=1&token=t"]
    assert parsed.segment_map[0].uri == "init.mp4?token=t"
    assert [float(s.duration) for s in parsed.segments] == [6.0, 2.5]


def test_no_query_leaves_the_playlist_untouched():
    assert with_query(MEDIA, "") == MEDIA
