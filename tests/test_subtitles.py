"""Sidecar subtitles (docs/URLS.md, "Subtitles"): <name>.<language>[.default][.forced].vtt / .srt in an entry's
folder, offered as HLS SUBTITLES renditions with segmented WebVTT.

Pure checks of the reader (packager/subtitles.py), then real servers: the master's EXT-X-MEDIA, the track
playlists on the media's segment grid, segments ffmpeg's WebVTT reader parses to the file's cues, previews and
clips, and (tests/test_browser.py) hls.js showing every cue at its time in Chromium.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from fractions import Fraction

import httpx
import pytest

import media_fixtures as mf
from auth.tokens import sign_native
from conftest import ServerProcess
from packager.subtitles import Cue, MalformedSubtitles, parse_subtitles, webvtt_segment

TOKEN_KEY = "00112233445566778899aabbccddeeff"
ENGLISH = """WEBVTT - the English track

NOTE a comment block
over two lines

STYLE
::cue { color: yellow }

intro
00:00:00.500 --> 00:00:02.500 line:90% align:start
Hello <b>world</b>

00:00:03.000 --> 00:00:05.200
Second cue
over two lines

00:00:06.100 --> 00:00:07.900
Third
"""
FRENCH_SRT = "\ufeff1\r\n00:00:01,000 --> 00:00:04,000\r\nBonjour\r\n\r\n2\r\n00:00:05,000 --> 00:00:06,500\r\nAu revoir\r\n"
SOURCE_EN = [(Fraction(1, 2), Fraction(5, 2), "Hello <b>world</b>"), (Fraction(3), Fraction(26, 5), "Second cue\nover two lines"),
             (Fraction(61, 10), Fraction(79, 10), "Third")]


# --------------------------------------------------------------------------- the reader


def test_webvtt_and_srt_read_to_the_same_cues():
    cues = parse_subtitles(ENGLISH.encode(), "vtt")
    assert [(c.start, c.end, c.text) for c in cues] == SOURCE_EN
    assert cues[0].settings == "line:90% align:start"
    srt = parse_subtitles(FRENCH_SRT.encode(), "srt")
    assert [(c.start, c.end, c.text, c.settings) for c in srt] == [(1, 4, "Bonjour", ""), (5, Fraction(13, 2), "Au revoir", "")]


@pytest.mark.parametrize("data,fmt,message", [
    (b"00:00:01.000 --> 00:00:02.000\nno header\n", "vtt", "WEBVTT"),
    (b"WEBVTT\n\n00:00:02.000 --> 00:00:01.000\nbackwards\n", "vtt", "ends at or before"),
    (b"WEBVTT\n\n00:00:01.000 -> 00:00:02.000\nbad arrow\n", "vtt", "not a cue timing line"),
    (b"1\n00:00:01,000 --> 00:00:02,000\n\xff\xfe\n", "srt", "UTF-8"),
    (b"WEBVTT\n\n00:61:00.000 --> 00:62:00.000\nx\n", "vtt", "run to 59"),
])
def test_malformed_files_are_refused_naming_the_problem(data, fmt, message):
    with pytest.raises(MalformedSubtitles) as error:
        parse_subtitles(data, fmt)
    assert message in str(error.value)


def test_a_segment_holds_the_cues_that_overlap_it():
    cues = [Cue(Fraction(1), Fraction(3), "a"), Cue(Fraction(5), Fraction(7), "b --> c"), Cue(Fraction(9), Fraction(10), "d")]
    text = webvtt_segment(cues, Fraction(2), Fraction(6), 900000, limit=Fraction(27, 4))
    assert text.startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:900000,LOCAL:00:00:00.000\n\n")
    assert "00:00:01.000 --> 00:00:03.000\na" in text and "00:00:05.000 --> 00:00:06.750\nb -> c" in text and "\nd" not in text


# --------------------------------------------------------------------------- served


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    library = tmp_path_factory.mktemp("subs-library")
    for partner in ("open", "prev"):
        folder = library / partner / "subbed"
        folder.mkdir(parents=True)
        shutil.copyfile(mf.fixture_path("h264_baseline"), folder / "main.mp4")
        (folder / "subs.en.default.vtt").write_text(ENGLISH)
        (folder / "subs.fr.forced.srt").write_bytes(FRENCH_SRT.encode())
        (folder / "subs.de.vtt").write_text("not a subtitle file")  # malformed: left out
    config = tmp_path_factory.mktemp("subs-origin") / "vodgate.toml"
    config.write_text(
        f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\n'
        f'[partners.prev]\ntoken_keys = {{ k1 = "{TOKEN_KEY}" }}\ndefault_profile = "p"\n'
        '[partners.prev.profiles.p]\nrules = [ { unless = { authenticated = true }, then = [{ preview = 3 }] } ]\n')
    srv = ServerProcess(["--config", str(config), "--workers", "1"], config.parent / "server.log")
    yield srv
    srv.stop()


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=30)


def vtt_cues(text: str) -> list[tuple[Fraction, Fraction, str]]:
    """Cues of a WebVTT segment as ffmpeg's WebVTT reader parses them (start, end, text)."""
    out = subprocess.run([mf.ffmpeg_exe(), "-v", "error", "-f", "webvtt", "-i", "pipe:0", "-f", "webvtt", "pipe:1"],
                         input=text.encode(), capture_output=True, check=True).stdout.decode()
    cues = []
    for block in out.strip().split("\n\n")[1:]:
        timing, *lines = block.split("\n")
        start, end = (_seconds(t) for t in timing.split(" --> "))
        cues.append((start, end, "\n".join(lines)))
    return cues


def _seconds(text: str) -> Fraction:
    parts = text.strip().split(":")
    whole, ms = parts[-1].split(".")
    minutes = int(parts[-2]) + (60 * int(parts[-3]) if len(parts) > 2 else 0)
    return Fraction(minutes * 60 + int(whole)) + Fraction(int(ms), 1000)


@pytest.mark.parametrize("fmt", ["hls", "cmaf"])
def test_the_master_lists_each_track_and_every_variant_names_the_group(origin, fmt):
    master = get(f"{origin.base}/p/open/e/subbed/{fmt}/master.m3u8").text
    media = [line for line in master.splitlines() if line.startswith("#EXT-X-MEDIA:TYPE=SUBTITLES")]
    assert media == [
        '#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="English",LANGUAGE="en",DEFAULT=YES,AUTOSELECT=YES,FORCED=NO,URI="_subs/en/index.m3u8"',
        '#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="French (forced)",LANGUAGE="fr",DEFAULT=NO,AUTOSELECT=YES,FORCED=YES,URI="_subs/fr_forced/index.m3u8"',
    ]  # the malformed German file is left out
    assert all('SUBTITLES="subs"' in line for line in master.splitlines() if line.startswith("#EXT-X-STREAM-INF"))


@pytest.mark.parametrize("fmt", ["hls", "cmaf"])
def test_segments_follow_the_media_and_carry_every_cue(origin, fmt):
    """The track's playlist has the video's segment durations; its segments, read by ffmpeg, hold every cue of the
    file at the file's times (a cue across a boundary in both); X-TIMESTAMP-MAP ties time 0 to the media's."""
    base = f"{origin.base}/p/open/e/subbed/{fmt}"
    video = get(f"{base}/main/index.m3u8").text
    subs = get(f"{base}/_subs/en/index.m3u8").text
    assert re.findall(r"#EXTINF:([0-9.]+)", subs) == re.findall(r"#EXTINF:([0-9.]+)", video)
    names = [line for line in subs.splitlines() if line and not line.startswith("#")]
    seen = []
    for name in names:
        answer = get(f"{base}/_subs/en/{name}")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/vtt")
        mpegts = int(re.search(r"X-TIMESTAMP-MAP=MPEGTS:(\d+),LOCAL:00:00:00.000", answer.text)[1])
        assert mpegts == (900000 if fmt == "hls" else 0)
        seen += [c for c in vtt_cues(answer.text) if c not in seen]
    assert seen == SOURCE_EN
    french = [c for name in names for c in vtt_cues(get(f"{base}/_subs/fr_forced/{name}").text)]
    assert sorted(set(french)) == [(1, 4, "Bonjour"), (5, Fraction(13, 2), "Au revoir")]


def test_a_preview_viewer_gets_cues_up_to_the_preview_only(origin):
    base = f"{origin.base}/p/prev/e/subbed/hls"
    master = get(f"{base}/master.m3u8").text
    assert 'URI="_subs/en/index-p3.m3u8"' in master
    playlist = get(f"{base}/_subs/en/index-p3.m3u8").text
    names = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    assert names == ["seg-1.vtt", "seg-2-p3.vtt"]
    cues = [c for name in names for c in vtt_cues(get(f"{base}/_subs/en/{name}").text)]
    assert (Fraction(1, 2), Fraction(5, 2), "Hello <b>world</b>") in cues
    assert all(end <= 3 for _, end, _ in cues) and not any("Third" in text for _, _, text in cues)
    for refused in ("seg-3.vtt", "seg-2.vtt"):  # past the preview, or the cut segment under its uncut name
        assert get(f"{base}/_subs/en/{refused}").status_code == 403
    unmarked = get(f"{base}/_subs/en/index.m3u8")  # as for media playlists: the preview's, saying so
    assert unmarked.status_code == 200 and unmarked.text == playlist
    tok = sign_native("k1", bytes.fromhex(TOKEN_KEY), "/p/prev/e/subbed", int(time.time()) + 600)
    full = get(f"{base}/_subs/en/index.m3u8?token={tok}").text
    assert f"seg-4.vtt?token={tok}" in full


def test_a_clip_shifts_the_cues_to_its_clock(origin):
    """clip-2-6 starts at the keyframe at or before 2 s (S): its cues are the file's from S on, S earlier."""
    from origin import local

    video = local.read_index_sync(mf.fixture_path("h264_baseline")).video
    starts = sorted(Fraction(int(video.pts[k]), video.timescale) for k in range(video.sample_count) if video.keyframes[k])
    clip_start = max(t for t in starts if t <= 2)
    base = f"{origin.base}/p/open/e/subbed/clip-2-6/hls"
    playlist = get(f"{base}/_subs/en/index.m3u8").text
    names = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    cues = sorted({c for name in names for c in vtt_cues(get(f"{base}/_subs/en/{name}").text)})
    expected = sorted((max(a - clip_start, Fraction(0)), min(b, Fraction(6)) - clip_start, text)
                      for a, b, text in SOURCE_EN if b > clip_start and a < 6)
    assert cues == expected


@pytest.mark.parametrize("path,status,code", [
    ("hls/_subs/es/index.m3u8", 404, "unknown_subtitles"), ("hls/_subs/de/index.m3u8", 500, "malformed_subtitles"),
    ("hls/_subs/en/seg-99.vtt", 404, "segment_not_found"), ("hls/_subs/en/seg-01.vtt", 404, "not_found"),
    ("hls/_subs/en/other.txt", 404, "not_found"),
])
def test_unknown_tracks_and_segments(origin, path, status, code):
    answer = get(f"{origin.base}/p/open/e/subbed/{path}")
    assert answer.status_code == status and answer.json()["error"] == code, answer.text


def test_a_file_over_the_size_limit_is_refused():
    from packager.subtitles import MAX_BYTES

    with pytest.raises(MalformedSubtitles, match="not read"):
        parse_subtitles(b"WEBVTT\n\n" + b" " * MAX_BYTES, "vtt")


def test_sidecar_names_and_the_first_of_one_track(tmp_path):
    from origin.catalog import FileCatalog

    folder = tmp_path / "p" / "e"
    folder.mkdir(parents=True)
    (folder / "main.mp4").write_bytes(b"")
    for name in ("a.en.vtt", "b.en.srt", "c.en.forced.vtt", "d.pt-BR.default.srt", "notes.txt", "e.english.vtt", "f.vtt"):
        (folder / name).write_text("WEBVTT\n")
    entry = FileCatalog(tmp_path).entry_sync("p", "e")
    assert [(s.track, s.language, s.default, s.forced, s.key) for s in entry.subtitles] == [
        ("en", "en", False, False, "p/e/a.en.vtt"), ("en_forced", "en", False, True, "p/e/c.en.forced.vtt"),
        ("pt-BR", "pt-BR", True, False, "p/e/d.pt-BR.default.srt")]


def test_a_malformed_file_is_logged_once(origin):
    for _ in range(3):
        get(f"{origin.base}/p/open/e/subbed/hls/master.m3u8")
        get(f"{origin.base}/p/open/e/subbed/hls/_subs/de/index.m3u8")
    assert origin.log_path.read_text().count("subtitles open/subbed/subs.de.vtt left out") == 1


def test_dash_names_each_track_as_one_webvtt_file(origin):
    """The MPD has a text AdaptationSet per track (lang, Role subtitle / forced-subtitle) whose BaseURL is the whole
    track in one WebVTT file on the presentation's clock (no X-TIMESTAMP-MAP); a preview's is cut at its end."""
    import xml.etree.ElementTree as ET
    from urllib.parse import urljoin

    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    url = f"{origin.base}/p/open/e/subbed/dash/manifest.mpd"
    mpd = ET.fromstring(get(url).text)
    texts = [a for a in mpd.findall(".//d:AdaptationSet", ns) if a.get("contentType") == "text"]
    assert [(a.get("lang"), a.find("d:Role", ns).get("value")) for a in texts] == [("en", "subtitle"), ("fr", "forced-subtitle")]
    whole = get(urljoin(url, texts[0].find(".//d:BaseURL", ns).text))
    assert whole.status_code == 200 and "X-TIMESTAMP-MAP" not in whole.text
    assert vtt_cues(whole.text) == SOURCE_EN
    preview = ET.fromstring(get(f"{origin.base}/p/prev/e/subbed/dash/manifest.mpd").text)
    link = [a for a in preview.findall(".//d:AdaptationSet", ns) if a.get("lang") == "en"][0].find(".//d:BaseURL", ns).text
    assert link.endswith("_subs/en/all-p3.vtt")
    cut = vtt_cues(get(urljoin(url, link)).text)
    assert cut == [(Fraction(1, 2), Fraction(5, 2), "Hello <b>world</b>")]  # the second cue starts at the 3 s end
    assert get(f"{origin.base}/p/prev/e/subbed/cmaf/_subs/en/all.vtt").status_code == 403
