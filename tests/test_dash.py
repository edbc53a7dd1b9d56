"""DASH (docs/URLS.md, "DASH"): /p/{partner}/e/{entry}/dash/manifest.mpd over the /cmaf/ init and segments.

Real servers, real ffmpeg (its DASH demuxer), the MPD read back as XML. ffmpeg's DASH demuxer treats the
init's edit list unlike its HLS and MP4 readers, and the checks say exactly how: video decodes to the
source's frames as the source decodes without its edit list (every frame, a start trim's pre-roll included;
the same as with it where there is no pre-roll), and AAC audio is the source's except at each later segment's
start, where it drops the first frame (it trims the priming at every segment) and so the frame before differs.
"""

from __future__ import annotations

import re
import shutil
import time
import xml.etree.ElementTree as ET
from urllib.parse import urljoin

import httpx
import pytest

import media_fixtures as mf
import oracle
from auth.tokens import sign_native
from conftest import ServerProcess

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
TOKEN_KEY = "00112233445566778899aabbccddeeff"
EDGE_SECRET = "dash-edge-secret-0123456789abcdef"
ENTRIES = {"h264_baseline": "h264_baseline", "bframes": "h264_high_bframes", "trimmed": "start_trimmed",
           "langs": "two_languages"}


# the partners' rules (an edge in front of the origin has the same, without encryption settings)
PARTNERS = (
    f'[partners.tok]\ntoken_keys = {{ k1 = "{TOKEN_KEY}" }}\ndefault_profile = "t"\n'
    '[partners.tok.profiles.t]\nrules = [ { unless = { authenticated = true }, then = ["block"] } ]\n'
    f'[partners.prev]\ntoken_keys = {{ k1 = "{TOKEN_KEY}" }}\ndefault_profile = "p"\n'
    '[partners.prev.profiles.p]\nrules = [ { unless = { authenticated = true }, then = [{ preview = 3 }] } ]\n'
    f'[partners.enc]\nencryption = "aes-128"\nkey_secrets = ["{"ab" * 32}"]\n')


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    library = tmp_path_factory.mktemp("dash-library")
    for partner in ("open", "tok", "prev", "enc"):
        for entry, fixture in ENTRIES.items():
            (library / partner / entry).mkdir(parents=True)
            shutil.copyfile(mf.fixture_path(fixture), library / partner / entry / "main.mp4")
    for flavor in ("hi", "mid", "lo"):
        (library / "open" / "ladder").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mf.fixture_path(f"ladder_{flavor}"), library / "open" / "ladder" / f"{flavor}.mp4")
    folder = tmp_path_factory.mktemp("dash-origin")
    config = folder / "vodgate.toml"
    config.write_text(
        f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n' + PARTNERS)
    srv = ServerProcess(["--config", str(config), "--workers", "1"], folder / "server.log")
    yield srv
    srv.stop()


def token(partner: str, entry: str) -> str:
    return sign_native("k1", bytes.fromhex(TOKEN_KEY), f"/p/{partner}/e/{entry}", int(time.time()) + 600)


def mpd_url(srv, partner: str, entry: str, query: str = "") -> str:
    return f"{srv.base}/p/{partner}/e/{entry}/dash/manifest.mpd" + (f"?{query}" if query else "")


def representations(text: str) -> list[ET.Element]:
    return ET.fromstring(text).findall(".//d:Representation", NS)


def test_ffmpeg_decodes_the_video_as_the_source(origin):
    """The ladder (its first Representation is hi) and a B-frame fixture: every frame bit for bit."""
    for entry, fixture in (("ladder", "ladder_hi"), ("bframes", "h264_high_bframes"), ("h264_baseline", "h264_baseline")):
        assert oracle.video_hashes(mpd_url(origin, "open", entry)) == oracle.video_hashes(mf.fixture_path(fixture)), entry


def test_a_start_trim_decodes_as_the_source_without_its_edit_list(origin):
    """start_trimmed keeps 33 pre-roll frames before its edit: ffmpeg's DASH demuxer shows them (it does not apply
    the init's edit list to video), and the rest are the source's presented frames."""
    got = [f.md5 for f in oracle.framemd5(mpd_url(origin, "open", "trimmed"), "v:0")]
    every = [f.md5 for f in oracle.framemd5(mf.fixture_path("start_trimmed"), "v:0", extra_input_args=["-ignore_editlist", "1"])]
    presented = [f.md5 for f in oracle.framemd5(mf.fixture_path("start_trimmed"), "v:0")]
    assert got == every and got[len(got) - len(presented):] == presented and len(got) > len(presented)


def test_audio_is_the_sources_but_for_ffmpegs_trim_at_each_segment(origin):
    """AAC with 2 s segments: ffmpeg's DASH demuxer applies the init's priming trim at every segment, so each later
    segment's first frame is missing and the one before it differs; every other frame is the source's, in order."""
    text = httpx.get(mpd_url(origin, "open", "h264_baseline"), timeout=30).text
    (audio,) = [r for r in representations(text) if r.get("id").endswith(":a1")]
    timeline = audio.find(".//d:SegmentTimeline", NS)
    durations = [int(s.get("d")) for s in timeline for _ in range(int(s.get("r", 0)) + 1)]
    starts, at = [], 0
    for d in durations[:-1]:
        at += d // 1024  # AAC frames per segment (the track's samples)
        starts.append(at)
    got = [f.md5 for f in oracle.framemd5(mpd_url(origin, "open", "h264_baseline"), "a:0")]
    source = [f.md5 for f in oracle.framemd5(mf.fixture_path("h264_baseline"), "a:0")]
    expected = [m for i, m in enumerate(source) if i not in starts and i + 1 not in starts]
    assert len(got) == len(source) - len(starts)
    assert [m for m in got if m in set(expected)] == expected  # the rest, in order


def test_the_mpd_lists_what_the_hls_master_does(origin):
    """Flavors, codecs and bandwidths as in the /cmaf/ master; segments as its media playlists; URLs that resolve."""
    url = mpd_url(origin, "open", "ladder")
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/dash+xml"
    mpd = ET.fromstring(answer.text)
    assert mpd.get("type") == "static"
    master = httpx.get(f"{origin.base}/p/open/e/ladder/cmaf/master.m3u8", timeout=30).text
    videos = [r for r in representations(answer.text) if r.get("width")]
    assert sorted(r.get("id") for r in videos) == ["hi", "lo", "mid"]
    for rep in videos:
        line = next(l for l in master.splitlines() if l.startswith("#EXT-X-STREAM-INF") and f"RESOLUTION={rep.get('width')}x" in l)
        assert rep.get("codecs") in line
        template = rep.find("d:SegmentTemplate", NS)
        segments = sum(int(s.get("r", 0)) + 1 for s in template.find("d:SegmentTimeline", NS))
        playlist = httpx.get(f"{origin.base}/p/open/e/ladder/cmaf/{rep.get('id')}/index.m3u8", timeout=30).text
        assert segments == playlist.count("#EXTINF")
        assert httpx.get(urljoin(url, template.get("initialization")), timeout=30).status_code == 200
        assert httpx.get(urljoin(url, template.get("media").replace("$Number$", str(segments))), timeout=30).status_code == 200


def test_the_viewers_token_is_on_every_url_and_ffmpeg_plays_with_it(origin):
    tok = token("tok", "h264_baseline")
    assert httpx.get(mpd_url(origin, "tok", "h264_baseline"), timeout=30).status_code == 403
    url = mpd_url(origin, "tok", "h264_baseline", f"token={tok}&playSessionId=s-1")
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200 and answer.headers["cache-control"].startswith("private")  # as a tokenised playlist
    links = re.findall(r'(?:initialization|media)="([^"]+)"', answer.text)
    assert links and all(link.endswith(f"?token={tok}&amp;playSessionId=s-1") for link in links), links
    time.sleep(1.1)  # another viewer's token (another expiry): the cached MPD carries neither
    second = token("tok", "h264_baseline")
    assert second != tok
    text = httpx.get(mpd_url(origin, "tok", "h264_baseline", f"token={second}"), timeout=30).text
    assert second in text and tok not in text and "playSessionId" not in text
    assert oracle.video_hashes(url) == oracle.video_hashes(mf.fixture_path("h264_baseline"))


def test_a_preview_viewer_gets_a_segment_list_ending_at_the_preview(origin):
    """Without a token the prev partner grants 3 s: the MPD lists the segments the HLS preview does, its last one
    under the clipped URL (SegmentList: a template cannot name it), and ffmpeg decodes as many frames as the HLS
    preview."""
    url = mpd_url(origin, "prev", "h264_baseline")
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200
    (video,) = [r for r in representations(answer.text) if r.get("width")]
    segment_list = video.find("d:SegmentList", NS)
    names = [u.get("media") for u in segment_list.findall("d:SegmentURL", NS)]
    assert names[-1].endswith(".m4s") and re.search(r"seg-2-p3\.m4s$", names[-1]), names
    hls = f"{origin.base}/p/prev/e/h264_baseline/cmaf/master.m3u8"
    assert oracle.video_hashes(url) == oracle.video_hashes(hls)
    assert httpx.get(urljoin(url, names[-1].replace("-p3", "")), timeout=30).status_code == 403


def test_encrypted_media_is_not_offered_over_dash(origin):
    answer = httpx.get(mpd_url(origin, "enc", "h264_baseline"), timeout=30)
    assert answer.status_code == 404 and answer.json()["error"] == "dash_encrypted"


@pytest.mark.parametrize("path", ["dash/index.m3u8", "dash/main/seg-1.m4s", "dash/manifest.mpd/x", "dash/Manifest.mpd"])
def test_nothing_else_is_under_dash(origin, path):
    answer = httpx.get(f"{origin.base}/p/open/e/h264_baseline/{path}", timeout=30)
    assert answer.status_code == 404 and answer.headers["content-type"] == "application/json"


def test_an_edge_forwards_mpds_uncached_to_each_viewer(origin, tmp_path):
    """An edge decides access, then asks the origin for the MPD as the viewer, never from its cache: two viewers'
    tokens are never mixed, a preview viewer gets the origin's preview MPD, and ffmpeg plays through the edge."""
    config = tmp_path / "edge.toml"
    config.write_text(f'[server]\ntrusted_proxies = ["127.0.0.1/32"]\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n[edge]\nttl = 600\n'
                      + PARTNERS.replace('encryption = "aes-128"', "").replace(f'key_secrets = ["{"ab" * 32}"]', ""))
    edge = ServerProcess(["--config", str(config), "--role", "edge", "--upstream", origin.base, "--workers", "1"], tmp_path / "edge.log")
    try:
        first = token("tok", "h264_baseline")
        time.sleep(1.1)
        second = token("tok", "h264_baseline")
        answers = [httpx.get(mpd_url(edge, "tok", "h264_baseline", f"token={t}"), timeout=30) for t in (first, second, first)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert [a.headers["x-cache"] for a in answers] == ["MISS", "MISS", "MISS"]
        assert first in answers[0].text and second not in answers[0].text
        assert second in answers[1].text and first not in answers[1].text
        assert httpx.get(mpd_url(edge, "tok", "h264_baseline"), timeout=30).status_code == 403
        preview = httpx.get(mpd_url(edge, "prev", "h264_baseline"), timeout=30)
        assert preview.text == httpx.get(mpd_url(origin, "prev", "h264_baseline"), timeout=30).text
        url = mpd_url(edge, "tok", "h264_baseline", f"token={second}")
        assert oracle.video_hashes(url) == oracle.video_hashes(mf.fixture_path("h264_baseline"))
    finally:
        edge.stop()


def test_the_dash_url_vodgate_serve_prints_plays(server):
    """`vodgate serve --media DIR` (what `make serve` runs) prints a DASH URL per entry; the ladder's decodes."""
    printed = [line.split()[-1] for line in server.log_path.read_text(errors="replace").splitlines()
               if line.strip().startswith("DASH ") and "/p/demo/e/ladder/" in line]
    assert printed == [f"{server.base}/p/demo/e/ladder/dash/manifest.mpd"]
    assert oracle.video_hashes(printed[0]) == oracle.video_hashes(mf.fixture_path("ladder_hi"))
