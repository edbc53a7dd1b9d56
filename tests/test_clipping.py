"""Clips by URL (docs/URLS.md, "Clips"): ``/p/{partner}/e/{entry}/clip-{from}-{to}/{hls|cmaf|mp4}/...``.

Real servers (``--workers 1``) and real ffmpeg:

* a clip of the ladder (TS and fMP4, every flavor) decodes to exactly the source's frames from the
  keyframe at or before ``from`` (S) to the clip's end, selected by their source timestamps; its first
  timestamp is where the unclipped entry's is (0; TS's 10 s offset), and its EXTINFs sum to ``to - S``
  within one frame (the preview machinery's common end);
* the progressive clip plays, starts at S and lasts ``to - S``;
* bad clip URLs get 400/404 JSON;
* a free preview of N seconds bounds the clip (never media past N of the entry's timeline), whichever
  viewer asked first, with the response cache on and off, and through an edge;
* a token's clip claim pins the viewer to that clip (403 for the entry or a wider clip), on an origin
  and on an edge.
"""

from __future__ import annotations

import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

import httpx
import m3u8
import pytest

import media_fixtures
import oracle
from conftest import REPO, ServerProcess
from test_preview_clip import BFRAMES, index_of, make_track, source_frames

sys.path.insert(0, str(REPO))
from auth.tokens import TokenError, decode_native_claims, sign_native  # noqa: E402
from packager.clip import clip_start, rebase_track  # noqa: E402
from packager.media_set import build_media_set  # noqa: E402
from packager.preview import clip_media_set, preview_end  # noqa: E402

KEY = "00112233445566778899aabbccddeeff"
EDGE_SECRET = "clip-edge-secret-0123456789"
PREVIEW = 5  # seconds the anonymous viewer of entry "pv" may play
FRAME = Fraction(1, 25)
PARTNER = f"""
[partners.demo]
token_keys = {{ k1 = "{KEY}" }}

[partners.demo.profiles.preview]
rules = [ {{ unless = {{ authenticated = true }}, then = [{{ preview = {PREVIEW} }}] }} ]

[partners.demo.entries.pv]
profile = "preview"
"""


def token(entry: str, clip: str | None = None) -> str:
    return sign_native("k1", bytes.fromhex(KEY), f"/p/demo/e/{entry}", int(time.time()) + 3600, clip=clip)


@pytest.fixture(scope="module")
def library(tmp_path_factory, media_fixture_paths) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for entry in ("ladder", "pv"):
        folder = root / "demo" / entry
        folder.mkdir(parents=True)
        for flavor, name in media_fixtures.LADDER.items():
            shutil.copy(media_fixture_paths[name], folder / f"{flavor}.mp4")
    return root


@pytest.fixture(scope="module")
def servers(library, tmp_path_factory):
    """{"cached": origin with the response cache, "uncached": the same with [cache] enabled = false, "edge": an
    edge in front of "cached"}."""
    tmp = tmp_path_factory.mktemp("clips-srv")
    common = f'[server]\nmedia_root = "{library}"\nsegment_duration = 4\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n'
    (tmp / "cached.toml").write_text(common + PARTNER)
    (tmp / "uncached.toml").write_text(common + "[cache]\nenabled = false\n" + PARTNER)
    (tmp / "edge.toml").write_text(f'[edge]\nhealth_interval = 0\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n' + PARTNER)
    procs = {
        "cached": ServerProcess(["--config", str(tmp / "cached.toml"), "--workers", "1"], tmp / "cached.log"),
        "uncached": ServerProcess(["--config", str(tmp / "uncached.toml"), "--workers", "1"], tmp / "uncached.log"),
    }
    procs["edge"] = ServerProcess(["--role", "edge", "--config", str(tmp / "edge.toml"), "--upstream", procs["cached"].base,
                                   "--workers", "1"], tmp / "edge.log")
    yield {name: proc.base for name, proc in procs.items()}
    for proc in procs.values():
        proc.stop()


def playlist_seconds(text: str) -> Fraction:
    return sum((Fraction(str(s.duration)) for s in m3u8.loads(text).segments), Fraction(0))


def key_times(name: str) -> list[Fraction]:
    return [Fraction(t).limit_denominator(1000) for t in oracle.keyframe_times(media_fixtures.fixture_path(name))]


def expected_start(first: Fraction) -> Fraction:
    """S: the ladder's keyframe at or before ``first`` (its keyframes are aligned, every 2 s)."""
    return max(t for t in key_times("ladder_hi") if t <= first)


# --------------------------------------------------------------------------- the start rule (pure)


def test_clip_start_is_a_keyframe_every_video_track_has():
    every_4 = [i % 4 == 0 for i in range(12)]
    every_3 = [i % 3 == 0 for i in range(12)]
    a = make_track("video", range(12), keyframes=every_4)
    b = make_track("video", range(12), keyframes=every_3)
    assert clip_start([a], 7) == 4
    assert clip_start([a, a], Fraction(8)) == 8
    assert clip_start([a, b], 11) == 0  # 8 and 9, 4 and 6...: only 0 is common, the unclipped start
    assert clip_start([make_track("video", range(12), keyframes=every_4), make_track("video", range(12), keyframes=[
        i % 2 == 0 for i in range(12)])], 11) == 8


def test_rebase_track_presents_the_keyframe_at_0_and_keeps_offsets():
    track = make_track("video", BFRAMES, keyframes=[i in (0, 4) for i in range(10)], shift=0)
    rebased = rebase_track(track, Fraction(6))
    assert rebased.pts.tolist() == [p - 6 for p in BFRAMES[4:]]
    assert rebased.dts[0] == 0 and rebased.offsets.tolist() == track.offsets[4:].tolist()
    audio = make_track("audio", [i * 3 for i in range(10)], timescale=2, durations=[3] * 10)
    shifted = rebase_track(audio, Fraction(5, 2))  # 2.5 s = 5 ticks: the first frame at or after it is at 6
    assert shifted.pts.tolist()[:2] == [1, 4] and shifted.late_start == 1


# --------------------------------------------------------------------------- decode equality


def ladder_end(seconds: Fraction) -> Fraction:
    """Where a free preview of ``seconds`` ends the ladder: the last time <= it where every rendition can be cut
    exactly (packager/preview.py; with the ladder's differing B-frame patterns up to ~0.8 s before it)."""
    ladder = build_media_set([(f, index_of(n)) for f, n in media_fixtures.LADDER.items()], Fraction(4))
    return preview_end(clip_media_set(ladder, seconds)) or ladder.duration


CLIPS = [(Fraction(3), Fraction("7.5")), (Fraction("4.5"), Fraction(10)), (Fraction(0), Fraction("3.3"))]


@pytest.mark.parametrize("fmt", ["hls", "cmaf"])
@pytest.mark.parametrize("first,last", CLIPS)
def test_a_clip_decodes_to_the_source_frames_from_the_keyframe_before_from(servers, fmt, first, last):
    base = servers["cached"]
    clip = f"clip-{float(first):g}-{float(last):g}"
    master = httpx.get(f"{base}/p/demo/e/ladder/{clip}/{fmt}/master.m3u8", timeout=30)
    assert master.status_code == 200, master.text
    start = expected_start(first)
    for flavor, name in media_fixtures.LADDER.items():
        url = f"{base}/p/demo/e/ladder/{clip}/{fmt}/{flavor}/index.m3u8"
        text = httpx.get(url, timeout=30).text
        length = playlist_seconds(text)
        assert length == ladder_end(last) - start, (flavor, float(length))  # the free preview's end at ``to``
        decoded = oracle.framemd5(url, "v:0", extra_input_args=["-copyts"], video_time_base="1:90000")
        source = [f for f in source_frames(name, "video", 90000) if start <= f.pts * f.tb < start + length]
        assert [f.md5 for f in decoded] == [f.md5 for f in source], flavor
        # rebased: the clip's first frame sits where the unclipped entry's first frame does
        whole = oracle.framemd5(f"{base}/p/demo/e/ladder/{fmt}/{flavor}/index.m3u8", "v:0",
                                extra_input_args=["-copyts"], video_time_base="1:90000")
        assert decoded[0].pts == whole[0].pts  # (TS: 10 s, the MPEG-TS start; fMP4: 0 behind the B-frame delay)
        if fmt == "hls":
            assert decoded[0].pts == 900000
    audio = f"{base}/p/demo/e/ladder/{clip}/{fmt}/hi/a1/index.m3u8"
    sound = oracle.framemd5(audio, "a:0", extra_input_args=["-copyts"])
    heard = sum(f.duration * f.tb for f in sound)
    assert abs(heard - length) <= Fraction(1, 20), float(heard)  # the audio cut at the same times


def test_progressive_clip_plays_from_the_keyframe_with_the_clip_duration(servers, tmp_path):
    first, last = Fraction(3), Fraction("7.5")
    answer = httpx.get(f"{servers['cached']}/p/demo/e/ladder/clip-3-7.5/mp4/hi.mp4", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "video/mp4"
    path = tmp_path / "clip.mp4"
    path.write_bytes(answer.content)
    decoded = oracle.framemd5(path, "v:0", video_time_base="1:90000")
    start = expected_start(first)
    source = [f for f in source_frames("ladder_hi", "video", 90000) if f.pts * f.tb >= start][: len(decoded)]
    assert [f.md5 for f in decoded] == [f.md5 for f in source]
    seconds = len(decoded) * FRAME
    assert last - start - 3 * FRAME <= seconds <= last - start
    assert decoded[0].pts == 0
    assert oracle.decode_ok(path)
    ranged = httpx.get(f"{servers['cached']}/p/demo/e/ladder/clip-3-7.5/mp4/hi.mp4", headers={"Range": "bytes=0-99"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == answer.content[:100]


# --------------------------------------------------------------------------- bad clips


@pytest.mark.parametrize("clip,status", [
    ("clip-9-5", 400), ("clip-5-5", 400), ("clip-a-10", 400), ("clip-1e3-2e3", 400), ("clip--1-5", 400),
    ("clip-12345678-123456789", 400), ("clip-1.2345-3", 400), ("clip-", 400), ("clip-50-60", 404),
])
def test_bad_clips_get_json_errors(servers, clip, status):
    for path in (f"{clip}/hls/master.m3u8", f"{clip}/cmaf/hi/index.m3u8", f"{clip}/mp4/hi.mp4"):
        answer = httpx.get(f"{servers['cached']}/p/demo/e/ladder/{path}", timeout=30)
        assert answer.status_code == status, (path, answer.text)
        body = answer.json()
        assert set(body) == {"error", "detail"} and "Traceback" not in answer.text
        assert body["error"] == ("bad_request" if status == 400 else "clip_out_of_range")


def test_segments_past_the_clip_are_not_found(servers):
    answer = httpx.get(f"{servers['cached']}/p/demo/e/ladder/clip-3-7.5/hls/hi/seg-3.ts", timeout=30)
    assert answer.status_code == 404 and answer.json()["error"] == "segment_not_found"


# --------------------------------------------------------------------------- previews bound clips


def _clip_media_end(base: str, clip: str, query: str, fmt: str) -> Fraction:
    """Where (entry seconds) the media a viewer gets of ``clip`` ends, fetching every URI its playlists list."""
    start = expected_start(Fraction(clip.split("-")[1]))
    with httpx.Client(base_url=base, timeout=30) as client:
        master = client.get(f"/p/demo/e/pv/{clip}/{fmt}/master.m3u8{query}")
        assert master.status_code == 200, master.text
        ends = []
        for uri in [p.uri for p in m3u8.loads(master.text).playlists]:
            media_url = f"/p/demo/e/pv/{clip}/{fmt}/{uri}"
            media = client.get(media_url)
            assert media.status_code == 200, media.text
            for segment in m3u8.loads(media.text).segments:
                folder = media_url.rsplit("/", 1)[0]
                assert client.get(f"{folder}/{segment.uri}").status_code == 200
            ends.append(start + playlist_seconds(media.text))
        return max(ends)


@pytest.mark.parametrize("cache", ["cached", "uncached"])
@pytest.mark.parametrize("order", ["clip_then_preview", "preview_then_clip"])
def test_a_preview_bounds_a_clip_in_either_order(servers, cache, order):
    """The token holder gets the clip to its end; the anonymous viewer never past N, whoever asked first."""
    base = servers[cache]
    clip = f"clip-3-{9 if order == 'clip_then_preview' else 9.5:g}"  # a clip per order: nothing cached by the other test
    viewers = [("token", f"?token={token('pv')}"), ("anonymous", "")]
    if order == "preview_then_clip":
        viewers.reverse()
    for fmt in ("hls", "cmaf"):
        for who, query in viewers:
            end = _clip_media_end(base, clip, query, fmt)
            if who == "anonymous":
                assert end <= PREVIEW, (fmt, float(end))
            else:
                assert end > PREVIEW + 2, (fmt, float(end))
    # the anonymous viewer cannot fetch the token holder's last segment, nor reach it by an unmarked name
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.get(f"/p/demo/e/pv/{clip}/hls/hi/seg-1.ts").status_code == 403
        assert client.get(f"/p/demo/e/pv/{clip}/hls/hi/seg-1-p{PREVIEW + 1}.ts").status_code == 403
        later = client.get(f"/p/demo/e/pv/clip-{PREVIEW + 1}-11/hls/master.m3u8")
        assert later.status_code == 403 and later.json()["error"] == "preview_only"


def test_a_preview_viewers_clip_decodes_to_frames_before_n(servers):
    base = servers["uncached"]
    with httpx.Client(base_url=base, timeout=30) as client:
        index = client.get("/p/demo/e/pv/clip-3-9/cmaf/hi/index.m3u8").text
    assert f"-p{float(ladder_end(Fraction(PREVIEW))):g}.m4s" in index  # marked with the preview's cut (entry seconds)
    decoded = oracle.framemd5(f"{base}/p/demo/e/pv/clip-3-9/cmaf/hi/index.m3u8", "v:0", extra_input_args=["-copyts"],
                              video_time_base="1:90000")
    start = expected_start(Fraction(3))
    source = [f for f in source_frames("ladder_hi", "video", 90000) if start <= f.pts * f.tb < PREVIEW]
    assert [f.md5 for f in decoded] == [f.md5 for f in source][: len(decoded)]
    assert start + len(decoded) * FRAME <= PREVIEW


@pytest.mark.parametrize("cache", ["cached", "uncached"])
def test_progressive_clip_of_a_preview_viewer_is_redirected_to_its_preview_cut(servers, cache, tmp_path):
    base = servers[cache]
    with httpx.Client(base_url=base, timeout=30) as client:
        full = client.get(f"/p/demo/e/pv/clip-3-9/mp4/hi.mp4?token={token('pv')}")
        assert full.status_code == 200
        moved = client.get("/p/demo/e/pv/clip-3-9/mp4/hi.mp4")
        assert moved.status_code == 302
        assert moved.headers["location"].startswith("/p/demo/e/pv/clip-3-9/mp4/hi-p")
        cut = client.get(moved.headers["location"])
        assert cut.status_code == 200 and cut.content != full.content
        assert client.get(f"/p/demo/e/pv/clip-3-9/mp4/hi-p{PREVIEW + 2}.mp4").status_code == 403
    path = tmp_path / "cut.mp4"
    path.write_bytes(cut.content)
    frames = oracle.framemd5(path, "v:0", video_time_base="1:90000")
    assert expected_start(Fraction(3)) + len(frames) * FRAME <= PREVIEW


# --------------------------------------------------------------------------- edges


def test_clips_through_an_edge(servers):
    edge = servers["edge"]
    with httpx.Client(base_url=edge, timeout=30) as client:
        master = client.get("/p/demo/e/ladder/clip-3-7.5/hls/master.m3u8")
        assert master.status_code == 200
        index = client.get("/p/demo/e/ladder/clip-3-7.5/hls/hi/index.m3u8")
        assert index.text == httpx.get(f"{servers['cached']}/p/demo/e/ladder/clip-3-7.5/hls/hi/index.m3u8").text
        assert client.get("/p/demo/e/ladder/clip-3-7.5/hls/hi/seg-1.ts").status_code == 200
        assert client.get("/p/demo/e/ladder/clip-9-5/hls/master.m3u8").status_code == 400
    assert _clip_media_end(edge, "clip-3-9", "", "hls") <= PREVIEW
    with httpx.Client(base_url=edge, timeout=30) as client:  # the progressive clip of a preview viewer, via the edge
        moved = client.get("/p/demo/e/pv/clip-3-9/mp4/hi.mp4")
        assert moved.status_code == 302 and "/clip-3-9/mp4/hi-p" in moved.headers["location"]
        cut = client.get(moved.headers["location"])
        direct = httpx.get(f"{servers['cached']}{moved.headers['location']}", timeout=30)
        assert cut.status_code == 200 and cut.content == direct.content
    assert _clip_media_end(edge, "clip-3-9", f"?token={token('pv')}", "hls") > PREVIEW + 2


# --------------------------------------------------------------------------- tokens pinning a clip


def test_the_clip_claim_round_trips_and_is_checked():
    claims = decode_native_claims(token("pv", "2-8.5").split(".")[2])
    assert claims.clip == (Fraction(2), Fraction(17, 2))
    for bad in ("8-2", "a-b", "1-2-3", "1.2345-3"):
        with pytest.raises(TokenError):
            token("pv", bad)


@pytest.mark.parametrize("node", ["cached", "edge"])
def test_a_clip_pinned_token_plays_that_clip_only(servers, node):
    query = f"?token={token('pv', '2-8')}"
    with httpx.Client(base_url=servers[node], timeout=30) as client:
        for inside in ("clip-2-8/hls/master.m3u8", "clip-3-7/cmaf/hi/index.m3u8", "clip-2-8/mp4/hi.mp4", "clip-2-8/hls/hi/seg-1.ts"):
            assert client.get(f"/p/demo/e/pv/{inside}{query}").status_code == 200, inside
        for outside in ("hls/master.m3u8", "hls/hi/seg-1.ts", "mp4/hi.mp4", "clip-1-8/hls/master.m3u8",
                        "clip-2-9/cmaf/hi/index.m3u8", "clip-0-12/mp4/hi.mp4"):
            refused = client.get(f"/p/demo/e/pv/{outside}{query}")
            assert refused.status_code == 403, outside
            assert refused.json()["error"] == "clip_not_allowed"
            assert refused.headers["cache-control"] == "no-store"
        # the playlists of the pinned clip carry the token, so a player keeps it
        master = client.get(f"/p/demo/e/pv/clip-2-8/hls/master.m3u8{query}")
        assert all(p.uri.endswith(query[1:]) for p in m3u8.loads(master.text).playlists)


def test_vodgate_token_sign_clip_option(tmp_path):
    import subprocess

    config = tmp_path / "v.toml"
    config.write_text(f'[server]\nmedia_root = "{tmp_path}"\n' + PARTNER)
    run = subprocess.run([sys.executable, "-m", "cli.main", "token", "sign", "--config", str(config), "--partner", "demo",
                          "--entry", "pv", "--ttl", "1h", "--clip", "2-8.5"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "/clip-2-8.5/" in run.stdout
    signed = next(word for word in run.stdout.split() if "token=" in word).split("token=")[1].split("&")[0]
    assert decode_native_claims(signed.split(".")[2]).clip == (Fraction(2), Fraction(17, 2))
    bad = subprocess.run([sys.executable, "-m", "cli.main", "token", "sign", "--config", str(config), "--partner", "demo",
                          "--entry", "pv", "--clip", "8-2"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "clip" in bad.stderr


@pytest.mark.parametrize("text", ["10-20.5", "0-1", "9999998.5-9999999.999", "clip-a-10", "a-10", "1e3-5", "12345678-99999999",
                                  "1.2345-3", "20-10", "5-5", "-1-2", "1-", "٢-3"])
def test_clip_urls_and_clip_claims_accept_exactly_the_same_spellings(text):
    """One parser (auth/tokens.clip_claim) for the clip claim and clip folders (edge/urls.parse_clip): a token can
    never pin a clip no URL can name, nor a URL name one no token can pin."""
    from auth.tokens import TokenError, clip_claim
    from edge.urls import BadRequest, parse_clip

    try:
        claim = clip_claim(text)
    except TokenError:
        claim = None
    try:
        clip = parse_clip(text)
        url = (clip.first, clip.last)
    except BadRequest:
        url = None
    assert claim == url
    assert (claim is None) == (text not in ("10-20.5", "0-1", "9999998.5-9999999.999"))
