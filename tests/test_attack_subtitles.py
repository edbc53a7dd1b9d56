"""Attack review (subtitles): sidecar .vtt/.srt files served as HLS SUBTITLES renditions (docs/URLS.md, "Subtitles").

Each test passes when vodgate is right; findings that fail today are strict xfails naming the finding.
Real servers on 127.0.0.1; ffmpeg's WebVTT reader where parsing matters.
"""

from __future__ import annotations

import concurrent.futures
import os
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
EDGE_SECRET = "subs-edge-secret-0123456789abcdef"
PARTNERS = (f'[partners.prev]\ntoken_keys = {{ k1 = "{TOKEN_KEY}" }}\ndefault_profile = "p"\n'
            '[partners.prev.profiles.p]\nrules = [ { unless = { authenticated = true }, then = [{ preview = 3 }] } ]\n')
LONG_CUE = "WEBVTT\n\n00:00:00.500 --> 00:00:01.500\nfirst\n\n00:00:01.000 --> 00:00:05.500\nlong cue\n"
BOUNDARY = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nends on the boundary\n\n00:00:02.000 --> 00:00:03.000\nstarts on it\n"


def get(url: str, **kw) -> httpx.Response:
    return httpx.get(url, timeout=30, **kw)


def ffmpeg_cues(text: str | bytes, fmt: str = "webvtt") -> list[tuple[str, str]]:
    """(timing, text) of each cue as ffmpeg's reader reads it."""
    data = text.encode() if isinstance(text, str) else text
    out = subprocess.run([mf.ffmpeg_exe(), "-v", "error", "-f", fmt, "-i", "pipe:0", "-f", "webvtt", "pipe:1"],
                         input=data, capture_output=True, check=True).stdout.decode(errors="replace")
    cues = []
    for block in out.strip().split("\n\n")[1:]:
        timing, *lines = block.split("\n")
        cues.append((timing, "\n".join(lines)))
    return cues


def spec_blocks(segment: str) -> list[list[str]]:
    """The cue blocks of a served segment as a WebVTT (W3C) parser splits them: a block ends at a blank line, and a
    line holding "-->" always starts a new cue (its timing line)."""
    blocks: list[list[str]] = []
    for chunk in segment.split("\n\n")[1:]:
        current: list[str] = []
        for line in chunk.split("\n"):
            if "-->" in line and current:
                blocks.append(current)
                current = []
            if line:
                current.append(line)
        if current:
            blocks.append(current)
    return blocks


def names_of(playlist: str) -> list[str]:
    return [line.split("?")[0] for line in playlist.splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    library = tmp_path_factory.mktemp("attack-subs")
    for partner in ("open", "prev"):
        folder = library / partner / "subbed"
        folder.mkdir(parents=True)
        shutil.copyfile(mf.fixture_path("h264_baseline"), folder / "main.mp4")
        (folder / "subs.en.vtt").write_text(LONG_CUE)
        (folder / "subs.fr.vtt").write_text(BOUNDARY)
        (folder / "subs.es.vtt").write_text("WEBVTT\n\n00:00:01.000 --> 01:00:00.000\nspans the end\n\n"
                                            "00:50:00.000 --> 00:51:00.000\nafter the end\n")
    odd = library / "open" / "odd"
    odd.mkdir()
    shutil.copyfile(mf.fixture_path("h264_baseline"), odd / "main.mp4")
    (odd / "my subs.en.vtt").write_text(LONG_CUE)
    (odd / "s\u00fc\u00df.de.vtt").write_text(LONG_CUE)
    (odd / "x.EN.vtt").write_text(LONG_CUE)  # a track id differing from "en" only in case
    (odd / "a.fr.default.vtt").write_text(LONG_CUE)
    (odd / "b.it.default.vtt").write_text(LONG_CUE)  # a second DEFAULT
    (odd / "..es.vtt").write_text(LONG_CUE)  # not a sidecar name
    (odd / "q.zh-Hans-CN-x-abcdefghi.vtt").write_text(LONG_CUE)  # too long a tag: not a sidecar
    outside = tmp_path_factory.mktemp("outside") / "secret.vtt"
    outside.write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nsecret outside the library\n")
    os.symlink(outside, odd / "z.ja.vtt")  # followed, as flavor links are (server.follow_symlinks defaults to true)
    (odd / "d.ko.vtt").mkdir()  # a folder named like a sidecar
    many = library / "open" / "many"
    many.mkdir()
    shutil.copyfile(mf.fixture_path("h264_baseline"), many / "main.mp4")
    letters = "abcdefghijklmnopqrstuvwxyz"
    for i in range(1000):
        (many / f"s.{letters[i // 676 % 26]}{letters[i // 26 % 26]}{letters[i % 26]}.vtt").write_text(LONG_CUE)
    live = library / "open" / "live"
    live.mkdir()
    shutil.copyfile(mf.fixture_path("h264_baseline"), live / "main.mp4")
    (live / "s.en.vtt").write_text(LONG_CUE)
    (live / "s.fr.vtt").write_text(LONG_CUE)
    audio = library / "open" / "radio"
    audio.mkdir()
    shutil.copyfile(mf.fixture_path("audio_only"), audio / "main.mp4")
    (audio / "s.en.vtt").write_text(LONG_CUE)
    big = library / "open" / "big"
    big.mkdir()
    shutil.copyfile(mf.fixture_path("h264_baseline"), big / "main.mp4")
    lines = ["WEBVTT", ""]
    for i in range(110000):  # ~4 MB of 0.5 s cues at every second: within MAX_BYTES
        s = i % 36000
        lines += [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.000 --> {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.500", "ab", ""]
    (big / "s.en.vtt").write_text("\n".join(lines))
    config = tmp_path_factory.mktemp("attack-subs-origin") / "vodgate.toml"
    config.write_text(
        f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n' + PARTNERS)
    srv = ServerProcess(["--config", str(config), "--workers", "1"], config.parent / "server.log")
    srv.library = library
    yield srv
    srv.stop()


# --------------------------------------------------------------------------- WebVTT injection (pure and served)


def test_no_served_payload_line_holds_an_arrow():
    for text in ("a ---> b", "a ----> b", "-->-->", "a --> b"):
        cues = parse_subtitles(f"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n{text}\n".encode(), "vtt")
        segment = webvtt_segment(cues, Fraction(0), Fraction(4), 900000)
        blocks = spec_blocks(segment)
        assert len(blocks) == 1 and all("-->" not in line for line in blocks[0][1:]), (text, segment)


def test_header_lines_style_and_markup_inside_cues_stay_cue_text():
    """WEBVTT / X-TIMESTAMP-MAP / STYLE lines inside a cue, deep markup and a long line: one cue each, as written."""
    deep = "<i>" * 2000 + "x" + "</i>" * 2000
    huge = "y" * 200_000
    source = ("WEBVTT\n\nSTYLE\n::cue { color: red }\n\n00:00:01.000 --> 00:00:02.000\nWEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n"
              "STYLE\n\n00:00:02.000 --> 00:00:03.000\n" + deep + "\n\n00:00:03.000 --> 00:00:03.500\n" + huge + "\n")
    cues = parse_subtitles(source.encode(), "vtt")
    assert len(cues) == 3
    segment = webvtt_segment(cues, Fraction(0), Fraction(4), 900000)
    assert segment.count("X-TIMESTAMP-MAP") == 2 and segment.startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:900000,")
    read = ffmpeg_cues(segment)
    assert [t for t, _ in read] == ["00:01.000 --> 00:02.000", "00:02.000 --> 00:03.000", "00:03.000 --> 00:03.500"]
    assert read[0][1] == "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\nSTYLE"
    assert len(read[2][1]) == 200_000
    assert [len(b) for b in spec_blocks(segment)] == [4, 2, 2]


def test_a_nul_in_cue_text_does_not_cut_the_cue():
    cues = parse_subtitles(b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nbefore\x00after\n", "vtt")
    segment = webvtt_segment(cues, Fraction(0), Fraction(4), 900000)
    assert "after" in ffmpeg_cues(segment)[0][1]


def test_a_timing_line_in_cue_text_stays_one_cue():
    """A second timing line inside a cue (after CR, CRLF or LF) is that cue's text, served without its arrow."""
    for sep in ("\r", "\r\n", "\n"):
        source = f"WEBVTT\n\n00:00:01.000 --> 00:00:02.000 align:start{sep}00:00:05.000 --> 00:00:06.000\ntext\n"
        segment = webvtt_segment(parse_subtitles(source.encode(), "vtt"), Fraction(0), Fraction(8), 900000)
        assert len(spec_blocks(segment)) == 1, segment
        assert [t for t, _ in ffmpeg_cues(segment)] == ["00:01.000 --> 00:02.000"]


# --------------------------------------------------------------------------- SRT edge cases


def test_srt_edge_cases_read_like_ffmpeg():
    no_index = b"00:00:01,000 --> 00:00:02,000\nno index\n"
    cr_only = b"1\r00:00:01,000 --> 00:00:02,000\rcr only\r\r2\r00:00:03,000 --> 00:00:04,000\rsecond"
    hours = b"1\n100:00:01,000 --> 100:00:02,000\nlate\n"
    assert [c.text for c in parse_subtitles(no_index, "srt")] == ["no index"]
    assert [(c.start, c.text) for c in parse_subtitles(cr_only, "srt")] == [(1, "cr only"), (3, "second")]
    late = parse_subtitles(hours, "srt")
    assert late[0].start == 360001
    assert webvtt_segment(late, Fraction(360000), Fraction(360002), 0).count("100:00:01.000 --> 100:00:02.000") == 1


def test_srt_with_a_trailing_index_only_block_keeps_its_cues():
    data = b"1\n00:00:01,000 --> 00:00:02,000\nhello\n\n2\n"
    assert [t for t, _ in ffmpeg_cues(data, "srt")] == ["00:01.000 --> 00:02.000"]
    assert [c.text for c in parse_subtitles(data, "srt")] == ["hello"]


# --------------------------------------------------------------------------- timing on the grid


def test_a_cue_ending_on_a_boundary_is_not_in_the_next_segment(origin):
    base = f"{origin.base}/p/open/e/subbed/hls/_subs/fr"
    names = names_of(get(f"{base}/index.m3u8").text)
    assert names[:2] == ["seg-1.vtt", "seg-2.vtt"]
    first, second = (ffmpeg_cues(get(f"{base}/{n}").text) for n in names[:2])
    assert [t for _, t in first] == ["ends on the boundary"]
    assert [t for _, t in second] == ["starts on it"]


def test_cues_past_the_end_are_cut_at_the_media_end_and_zero_markers_are_clean(origin):
    """A cue longer than the entry is cut at its end in the last segment; nothing past the end is offered."""
    media_end = 10**6
    folder = origin.library / "open" / "subbed"
    playlist = get(f"{origin.base}/p/open/e/subbed/hls/_subs/en/index.m3u8").text
    total = sum(Fraction(d) for d in re.findall(r"#EXTINF:([0-9.]+)", playlist))
    assert folder.exists() and total < media_end
    last = names_of(playlist)[-1]
    assert get(f"{origin.base}/p/open/e/subbed/hls/_subs/en/{last}").status_code == 200
    n = int(re.match(r"seg-(\d+)", last)[1])
    assert get(f"{origin.base}/p/open/e/subbed/hls/_subs/en/seg-{n + 1}.vtt").status_code == 404
    base = f"{origin.base}/p/open/e/subbed/hls/_subs/es"
    read = [c for name in names_of(get(f"{base}/index.m3u8").text) for c in ffmpeg_cues(get(f"{base}/{name}").text)]
    assert read and all(text == "spans the end" for _, text in read)
    assert {timing for timing, _ in read} == {f"00:01.000 --> 00:{float(total):06.3f}"}
    for name in ("index-p0.m3u8", "seg-1-p0.vtt", "seg-1-p0.001.vtt", "index-p0.001.m3u8", "seg-1-p999999.vtt"):
        answer = get(f"{base}/{name}")
        assert answer.status_code < 500, (name, answer.text)


# --------------------------------------------------------------------------- previews


def test_other_markers_and_names_give_a_preview_viewer_nothing_past_its_preview(origin):
    base = f"{origin.base}/p/prev/e/subbed/hls/_subs/en"
    for path in ("seg-2-p10.vtt", "seg-3-p10.vtt", "seg-3.vtt", "seg-2.vtt", "seg-3-p3.vtt", "index-p10.m3u8",
                 "seg-2-p3.000.vtt0"):
        answer = get(f"{base}/{path}")
        assert answer.status_code in (403, 404), (path, answer.status_code)
        assert "long cue" not in answer.text and "json" in answer.headers["content-type"]
    cut = get(f"{base}/seg-2-p3.vtt")
    assert cut.status_code == 200 and all(t.split(" --> ")[1] <= "00:03.000" for t, _ in ffmpeg_cues(cut.text))
    respelled = get(f"{base}/seg-2-p03.vtt")  # the same clip end spelled otherwise: the same bytes, named
    assert respelled.status_code == 200 and respelled.text == cut.text and respelled.headers["etag"] == cut.headers["etag"]
    # a shorter marker than the grant is allowed and cuts there
    shorter = get(f"{base}/seg-2-p2.5.vtt")
    assert shorter.status_code in (200, 403, 404)
    if shorter.status_code == 200:
        assert all(t.split(" --> ")[1] <= "00:02.500" for t, _ in ffmpeg_cues(shorter.text))
    # a 304 never answers what a 200 would refuse
    full = get(f"{base}/seg-3.vtt?token=" + sign_native("k1", bytes.fromhex(TOKEN_KEY), "/p/prev/e/subbed", int(time.time()) + 600))
    assert full.status_code == 200
    assert get(f"{base}/seg-3.vtt", headers={"If-None-Match": full.headers["etag"]}).status_code == 403


def test_one_etag_names_one_body_for_previews_and_full_viewers(origin):
    base = f"{origin.base}/p/prev/e/subbed/hls/_subs/en"
    tok = sign_native("k1", bytes.fromhex(TOKEN_KEY), "/p/prev/e/subbed", int(time.time()) + 600)
    preview = get(f"{base}/seg-1.vtt")
    full = get(f"{base}/seg-1.vtt?token={tok}")
    assert preview.status_code == full.status_code == 200
    assert "long cue" in preview.text and "long cue" in full.text
    if preview.headers["etag"] == full.headers["etag"]:
        assert preview.text == full.text


def token(**kw) -> str:
    return sign_native("k1", bytes.fromhex(TOKEN_KEY), "/p/prev/e/subbed", int(time.time()) + 600, **kw)


def test_a_clip_pinned_token_gets_its_clip_s_subtitles_only(origin):
    tok = token(clip="2-6")
    base = f"{origin.base}/p/prev/e/subbed"
    for path in ("hls/_subs/en/index.m3u8", "hls/_subs/en/seg-1.vtt", "clip-0-8/hls/_subs/en/index.m3u8",
                 "clip-0-8/hls/_subs/en/seg-1.vtt", "cmaf/_subs/en/seg-3.vtt"):
        answer = get(f"{base}/{path}?token={tok}")
        assert answer.status_code == 403 and answer.json()["error"] == "clip_not_allowed", (path, answer.text)
    playlist = get(f"{base}/clip-2-6/hls/_subs/en/index.m3u8?token={tok}")
    assert playlist.status_code == 200
    for name in names_of(playlist.text):
        assert get(f"{base}/clip-2-6/hls/_subs/en/{name}?token={tok}").status_code == 200


def test_a_preview_viewer_s_clip_stops_at_the_preview(origin):
    """clip-2-6 for a 3 s preview: cue times on the clip's clock (from S, the keyframe at or before 2 s), cut at 3 - S."""
    from origin import local

    video = local.read_index_sync(mf.fixture_path("h264_baseline")).video
    start = max(Fraction(int(video.pts[k]), video.timescale) for k in range(video.sample_count)
                if video.keyframes[k] and Fraction(int(video.pts[k]), video.timescale) <= 2)
    base = f"{origin.base}/p/prev/e/subbed/clip-2-6/hls/_subs/en"
    names = names_of(get(f"{base}/index.m3u8").text)
    read = {c for name in names for c in ffmpeg_cues(get(f"{base}/{name}").text)}
    limit = float(3 - start)
    assert read and all(float(Fraction(t.split(" --> ")[1].split(":")[1])) <= limit + 1e-9 for t, _ in read), (read, limit)
    n = len(names)
    assert get(f"{base}/seg-{n + 1}.vtt").status_code in (403, 404)
    if not names[-1].startswith(f"seg-{n}.vtt"):
        assert get(f"{base}/seg-{n}.vtt").status_code == 403


def test_an_edge_never_gives_a_preview_viewer_cues_past_its_preview(origin, tmp_path):
    """Both orders: full viewers fill the edge's cache first, or the preview viewer asks first."""
    config = tmp_path / "edge.toml"
    config.write_text(f'[server]\ntrusted_proxies = ["127.0.0.1/32"]\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n[edge]\nttl = 600\n' + PARTNERS)
    edge = ServerProcess(["--config", str(config), "--role", "edge", "--upstream", origin.base, "--workers", "1"], tmp_path / "edge.log")
    try:
        for track, full_first in (("en", True), ("fr", False)):
            base = f"{edge.base}/p/prev/e/subbed/hls/_subs/{track}"
            names = ["index.m3u8", "index-p3.m3u8", "seg-1.vtt", "seg-2.vtt", "seg-3.vtt", "seg-2-p3.vtt", "seg-2-p10.vtt"]
            full_answers = {}

            def full() -> None:
                for name in names:
                    full_answers[name] = get(f"{base}/{name}?token={token()}")

            def preview() -> None:
                for name in names:
                    answer = get(f"{base}/{name}")
                    direct = get(f"{origin.base}/p/prev/e/subbed/hls/_subs/{track}/{name}")
                    assert answer.status_code == direct.status_code, name
                    if answer.status_code == 200:
                        if name.endswith(".vtt"):
                            # no cue that starts at or after the preview end; a cue that starts before it keeps its
                            # end outside the segment the preview cuts (one URL, one body: a full viewer's too)
                            cues = ffmpeg_cues(answer.text)
                            assert all(t.split(" --> ")[0] < "00:03.000" for t, _ in cues), (name, answer.text)
                            if "-p3" in name:
                                assert all(t.split(" --> ")[1] <= "00:03.000" for t, _ in cues), (name, answer.text)
                            assert answer.text == direct.text
                        else:
                            assert names_of(answer.text) == ["seg-1.vtt", "seg-2-p3.vtt"], (name, answer.text)
                    else:
                        assert "-->" not in answer.text

            (full if full_first else preview)()
            (preview if full_first else full)()
            assert full_answers["seg-3.vtt"].status_code == 200
    finally:
        edge.stop()


# --------------------------------------------------------------------------- master and names


def test_odd_file_names_never_a_traceback(origin):
    base = f"{origin.base}/p/open/e/odd/hls"
    master = get(f"{base}/master.m3u8")
    assert master.status_code == 200
    uris = re.findall(r'TYPE=SUBTITLES,.*URI="([^"]+)"', master.text)
    # "EN" and "en" are one language (BCP 47 is case-insensitive): one track; no ko, es, zh
    assert sorted(uris) == sorted(f"_subs/{t}/index.m3u8" for t in ("de", "en", "fr", "it", "ja"))
    for uri in uris:
        playlist = get(f"{base}/{uri}")
        assert playlist.status_code == 200
        seg = get(f"{base}/{uri.rsplit('/', 1)[0]}/{names_of(playlist.text)[0]}")
        assert seg.status_code == 200 and ("first" in seg.text or "secret outside" in seg.text)
    for path in ("_subs/es/index.m3u8", "_subs/ko/index.m3u8", "_subs/..%2F..%2Fmain/index.m3u8", "_subs/en/..%2Fseg-1.vtt",
                 "_subs/" + "a" * 41 + "/index.m3u8", "_subs/zh-Hans-CN-x-abcdefghi/index.m3u8"):
        answer = get(f"{base}/{path}")
        assert answer.status_code in (400, 404) and answer.json()["error"], (path, answer.text)


def test_one_group_has_distinct_names_and_at_most_one_default(origin):
    master = get(f"{origin.base}/p/open/e/odd/hls/master.m3u8").text
    media = [line for line in master.splitlines() if line.startswith("#EXT-X-MEDIA:TYPE=SUBTITLES")]
    names = [re.search(r'NAME="([^"]*)"', line)[1] for line in media]
    assert len(set(names)) == len(names), names
    assert sum("DEFAULT=YES" in line for line in media) <= 1


def test_head_answers_get_headers(origin):
    base = f"{origin.base}/p/open/e/subbed/hls/_subs/en"
    for name in ("index.m3u8", "seg-1.vtt"):
        got, head = get(f"{base}/{name}"), httpx.head(f"{base}/{name}", timeout=30)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["etag"] == got.headers["etag"]
        assert head.headers["content-length"] == str(len(got.content))


def test_audio_only_entries_follow_the_audio_grid(origin):
    base = f"{origin.base}/p/open/e/radio/hls"
    master = get(f"{base}/master.m3u8").text
    assert 'URI="_subs/en/index.m3u8"' in master
    audio_uri = next(line for line in master.splitlines() if line and not line.startswith("#"))
    audio = get(f"{base}/{audio_uri}").text
    subs = get(f"{base}/_subs/en/index.m3u8").text
    assert re.findall(r"#EXTINF:([0-9.]+)", subs) == re.findall(r"#EXTINF:([0-9.]+)", audio)
    assert "long cue" in get(f"{base}/_subs/en/seg-1.vtt").text


def test_a_thousand_sidecars_keep_the_master_fast(origin):
    base = f"{origin.base}/p/open/e/many/hls"
    started = time.monotonic()
    first = get(f"{base}/master.m3u8")
    cold = time.monotonic() - started
    assert first.status_code == 200 and first.text.count("TYPE=SUBTITLES") == 1000
    times = []
    for _ in range(3):
        time.sleep(1.1)  # past STAT_TTL: every sidecar is asked again
        started = time.monotonic()
        again = get(f"{base}/master.m3u8")
        times.append(time.monotonic() - started)
        assert again.text == first.text and again.headers["etag"] == first.headers["etag"]
    assert cold < 5 and max(times) < 1, (cold, times)


# --------------------------------------------------------------------------- files changing under a running server


def test_a_replaced_or_deleted_file_is_noticed_without_a_restart(origin):
    folder = origin.library / "open" / "live"
    base = f"{origin.base}/p/open/e/live/hls"
    master = get(f"{base}/master.m3u8")
    assert "long cue" in get(f"{base}/_subs/en/seg-1.vtt").text
    (folder / "s.en.vtt").write_text("WEBVTT\n\n00:00:00.100 --> 00:00:01.000\nreplaced in place, longer\n")
    time.sleep(1.3)  # STAT_TTL
    assert "replaced in place" in get(f"{base}/_subs/en/seg-1.vtt").text
    again = get(f"{base}/master.m3u8")
    assert again.headers["etag"] != master.headers["etag"]
    assert get(f"{base}/master.m3u8", headers={"If-None-Match": master.headers["etag"]}).status_code == 200
    os.remove(folder / "s.fr.vtt")
    for _ in range(2):
        answer = get(f"{base}/_subs/fr/seg-1.vtt")
        assert answer.status_code in (404, 500) and answer.json()["error"], answer.text
        assert get(f"{base}/master.m3u8").status_code == 200
        time.sleep(1.3)
    assert answer.status_code == 404
    assert "_subs/fr/" not in get(f"{base}/master.m3u8").text
    assert "Traceback" not in origin.log_path.read_text()


# --------------------------------------------------------------------------- cost


def test_a_big_sidecar_does_not_stall_the_node(origin):
    base = f"{origin.base}/p/open/e/big/hls/_subs/en"
    assert get(f"{base}/seg-1.vtt").status_code == 200  # parsed and cached once
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        started = time.monotonic()
        futures = [pool.submit(get, f"{base}/seg-{1 + i % 3}.vtt") for i in range(6)]
        time.sleep(0.05)
        probe = time.monotonic()
        assert get(f"{origin.base}/healthz").status_code == 200
        stalled = time.monotonic() - probe
        assert all(f.result().status_code == 200 for f in futures)
        total = time.monotonic() - started
    # the claim is that the node keeps answering while big cues are cut (parsing and cutting are off the event loop);
    # how long the six take is the machine's business (a wall-clock bound here failed on a loaded CI machine), so
    # their total is bounded only against a hang
    assert stalled < 0.5 and total < 30, (stalled, total)


def test_a_forced_track_is_not_hidden_by_a_language_tag_spelling_its_id(tmp_path):
    from origin.catalog import FileCatalog

    folder = tmp_path / "p" / "e"
    folder.mkdir(parents=True)
    (folder / "main.mp4").write_bytes(b"")
    for name in ("a.en-forced.vtt", "b.en.forced.vtt"):
        (folder / name).write_text("WEBVTT\n")
    entry = FileCatalog(tmp_path).entry_sync("p", "e")
    assert any(s.forced for s in entry.subtitles), entry.subtitles
