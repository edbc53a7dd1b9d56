"""Playlists over HTTP: well-formed, and every number in them true to the media.

Judged against the source files (decoded by ffmpeg) and against the bytes
the server really sends:

* every master / media / I-frame playlist parses with the ``m3u8`` library
  (strict mode: no unknown line);
* multivariant: BANDWIDTH >= AVERAGE-BANDWIDTH > 0, RFC 6381 CODECS naming
  the source's codec/profile, RESOLUTION and FRAME-RATE as ffmpeg decodes the
  source; BANDWIDTH covers the measured peak and AVERAGE-BANDWIDTH is the
  measured average (all segments fetched);
* media playlists: EXT-X-VERSION, TARGETDURATION, VOD, ENDLIST, and the EXTINF
  sum equals the source duration within a frame;
* each video segment, decoded ALONE, starts with a keyframe and gives exactly
  the source's frames for its time span (so segments are never empty and
  EXTINF is the real duration); the ladder's flavors are cut identically;
* each I-frame playlist byte range, fetched with a Range request, decodes to
  exactly one frame: the source's keyframe at that segment's start.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import tempfile
from pathlib import Path

import httpx
import m3u8
import pytest
from m3u8 import parser as m3u8_parser

import media_fixtures as mf
import oracle
from media_fixtures import FIXTURES, LADDER
from test_hls_decode import ENTRIES, FORMATS, LADDER_ENTRY, MEMO, entry_flavors, prefetch_sources, source_frames

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
VIDEO_ENTRIES = tuple(e for e in ENTRIES if e == LADDER_ENTRY or FIXTURES[e].expect.video_codec)
# HEVC is offered over fMP4 only (/hls/ answers 404 hevc_needs_cmaf: test_hevc_is_not_offered_over_ts)
CASES = [(entry, fmt) for entry in ENTRIES for fmt in FORMATS if (entry, fmt) != ("hevc", "hls")]
VIDEO_CASES = [(entry, fmt) for entry in VIDEO_ENTRIES for fmt in FORMATS if (entry, fmt) != ("hevc", "hls")]
SERVER_TARGET = 4  # conftest's server runs with --segment-duration 4
H264_PROFILES = {"High": 0x64, "Main": 0x4D, "Baseline": 0x42, "Constrained Baseline": 0x42}


def _ids(cases):
    return [f"{e}-{f}" for e, f in cases]


# --------------------------------------------------------------------------- fetching


def fetch_playlist(client: httpx.Client, path: str) -> tuple[str, m3u8.M3U8]:
    response = client.get(path)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:200]}"
    assert response.headers["content-type"].startswith(PLAYLIST_TYPE), path
    text = response.text
    try:
        m3u8_parser.parse(text, strict=True)  # raises on any line it does not understand
    except Exception as exc:  # noqa: BLE001 - ParseError or ValueError
        pytest.fail(f"{path} does not parse strictly: {exc}\n{text}")
    return text, m3u8.loads(text)


@dataclasses.dataclass
class Rendition:
    uri: str  # relative to the master: "hi/index.m3u8", "main/a1/index.m3u8"
    kind: str  # "video" | "audio"
    source: str  # fixture
    stream: str  # source stream spec: "v:0", "a:1"
    text: str
    playlist: m3u8.M3U8

    @property
    def dir(self) -> str:
        return self.uri.rsplit("/", 1)[0]


@dataclasses.dataclass
class EntryPlaylists:
    entry: str
    fmt: str
    root: str  # /p/demo/e/<entry>/<fmt>
    master_text: str
    master: m3u8.M3U8
    renditions: list[Rendition]

    def videos(self) -> list[Rendition]:
        return [r for r in self.renditions if r.kind == "video"]

    def audios(self) -> list[Rendition]:
        return [r for r in self.renditions if r.kind == "audio"]

    def rendition(self, uri: str) -> Rendition:
        return next(r for r in self.renditions if r.uri == uri)


_RENDITION_URI = re.compile(r"(?P<flavor>[^/]+)/(?:a(?P<audio>\d+)/)?index\.m3u8")


def load_entry(client: httpx.Client, entry: str, fmt: str) -> EntryPlaylists:
    root = f"/p/demo/e/{entry}/{fmt}"
    master_text, master = fetch_playlist(client, f"{root}/master.m3u8")
    flavors = entry_flavors(entry)
    uris = [p.uri for p in master.playlists] + [m.uri for m in master.media if m.type == "AUDIO"]
    renditions = []
    for uri in uris:
        match = _RENDITION_URI.fullmatch(uri)
        assert match, f"unexpected rendition URI {uri!r}"
        audio = match["audio"]
        text, playlist = fetch_playlist(client, f"{root}/{uri}")
        renditions.append(
            Rendition(uri, "audio" if audio else "video", flavors[match["flavor"]],
                      f"a:{int(audio) - 1}" if audio else "v:0", text, playlist)
        )
    return EntryPlaylists(entry, fmt, root, master_text, master, renditions)


@pytest.fixture(scope="module")
def playlists(client):
    cache: dict[tuple[str, str], EntryPlaylists] = {}

    def get(entry: str, fmt: str) -> EntryPlaylists:
        if (entry, fmt) not in cache:
            cache[(entry, fmt)] = load_entry(client, entry, fmt)
        return cache[(entry, fmt)]

    return get


def source_end(fixture: str, stream: str) -> tuple[float, float]:
    """(end of the last decoded frame, one frame's duration) of a source stream, in seconds."""
    frames = source_frames(fixture, stream)
    return frames[-1].pts_time + frames[-1].duration_time, frames[-1].duration_time


def starts(playlist: m3u8.M3U8) -> list[float]:
    out, t = [], 0.0
    for segment in playlist.segments:
        out.append(t)
        t += segment.duration
    return out


# --------------------------------------------------------------------------- segments decoded alone


@dataclasses.dataclass(frozen=True)
class SegmentDecode:
    frames: list[oracle.FrameHash]  # every decoded frame, output order
    keyframes: list[oracle.FrameHash]  # with -skip_frame nokey
    stderr: str


def _decode_file(path: Path, extra_in=()) -> tuple[list[oracle.FrameHash], str]:
    res = oracle.run_ffmpeg(
        ["-v", "error", *extra_in, "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
         "-enc_time_base:v", "1:90000", "-f", "framemd5", "-"],
        timeout=60,
    )
    return oracle.parse_framemd5(res.stdout), res.stderr.strip()


def decode_segment_alone(base: str, root: str, rendition_dir: str, fmt: str, number: int) -> SegmentDecode:
    """TS: the .ts bytes alone; fMP4: init.mp4 + that .m4s, as one file."""
    with httpx.Client(base_url=base, timeout=30) as c:
        ext = "ts" if fmt == "hls" else "m4s"
        response = c.get(f"{root}/{rendition_dir}/seg-{number}.{ext}")
        assert response.status_code == 200, response.text
        data = response.content
        if fmt == "cmaf":
            init = c.get(f"{root}/{rendition_dir}/init.mp4")
            assert init.status_code == 200
            data = init.content + data
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("alone.ts" if fmt == "hls" else "alone.mp4")
        path.write_bytes(data)
        frames, stderr = _decode_file(path)
        keyframes, _ = _decode_file(path, ["-skip_frame", "nokey"])
    return SegmentDecode(frames, keyframes, stderr)


def segment_decodes(base: str, pl: EntryPlaylists, rendition: Rendition, prefetch_only: bool = False):
    futures = [
        MEMO.submit(("alone", pl.root, rendition.dir, n), decode_segment_alone, base, pl.root, rendition.dir, pl.fmt, n)
        for n in range(1, len(rendition.playlist.segments) + 1)
    ]
    return None if prefetch_only else [f.result() for f in futures]


@dataclasses.dataclass(frozen=True)
class Placed:
    """A segment's decoded frames located in the source."""

    number: int
    offset: int  # index in the source frames (output order) of the segment's first frame
    decode: SegmentDecode


def place_segments(base: str, pl: EntryPlaylists, rendition: Rendition) -> list[Placed]:
    """Decode each segment alone and check it is exactly the next run of source frames."""
    src = source_frames(rendition.source, "v:0")
    placed, offset = [], 0
    for number, dec in enumerate(segment_decodes(base, pl, rendition), 1):
        where = f"{pl.root}/{rendition.dir}/seg-{number}"
        assert dec.frames, f"{where}: no frame decoded (empty segment)"
        assert dec.stderr == "", f"{where} alone: ffmpeg reported {dec.stderr!r}"
        want = [f.md5 for f in src[offset : offset + len(dec.frames)]]
        assert [f.md5 for f in dec.frames] == want, f"{where}: frames differ from source frames {offset}.."
        placed.append(Placed(number, offset, dec))
        offset += len(dec.frames)
    assert offset == len(src), f"segments hold {offset} frames, the source {len(src)}"
    return placed


@pytest.fixture(scope="module", autouse=True)
def _prefetch(request, server, playlists):
    """Queue the source decodes and every selected case's per-segment decodes on the thread pool."""
    prefetch_sources(mf.ALL_GOOD)
    wanted = set()
    for item in request.session.items:
        if item.module.__name__ == __name__ and hasattr(item, "callspec"):
            if item.originalname in ("test_segments_start_with_keyframe", "test_iframe_playlists"):
                wanted.add((item.callspec.params["entry"], item.callspec.params["fmt"]))
            elif item.originalname in ("test_ladder_flavors_cut_identically",):
                wanted.add((LADDER_ENTRY, item.callspec.params["fmt"]))
            elif item.originalname == "test_irregular_gop":
                wanted.add(("irregular_gop", item.callspec.params["fmt"]))
    for entry, fmt in sorted(wanted):
        pl = playlists(entry, fmt)
        for rendition in pl.videos():
            segment_decodes(server.base, pl, rendition, prefetch_only=True)
    yield
    MEMO.cancel_pending()


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("entry, fmt", CASES, ids=_ids(CASES))
def test_every_playlist_parses(entry, fmt, client, playlists):
    pl = playlists(entry, fmt)  # master + every variant and audio playlist, strictly parsed
    assert pl.master.is_variant
    assert pl.renditions
    for iframe in pl.master.iframe_playlists:
        text, playlist = fetch_playlist(client, f"{pl.root}/{iframe.uri}")
        assert playlist.is_i_frames_only
        assert len(playlist.segments) == text.count("#EXTINF:") > 0
    for r in pl.renditions:
        assert not r.playlist.is_variant
        assert len(r.playlist.segments) == r.text.count("#EXTINF:") > 0


RFC6381_AVC = re.compile(r"avc1\.[0-9A-Fa-f]{6}")
RFC6381_HEVC = re.compile(r"hvc1\.[AaBbCc]?\d{1,2}\.[0-9A-Fa-f]{1,8}\.[LH]\d{1,3}(\.[0-9A-Fa-f]{1,2}){0,6}")


@functools.cache
def _source_video_line(fixture: str) -> str:
    """ffmpeg's "Stream #0:0...: Video: h264 (High) ..., 320x180 [SAR...], ..." line for the source."""
    stderr = oracle.run_ffmpeg(["-i", str(mf.fixture_path(fixture))], check=False).stderr
    return next(line for line in stderr.splitlines() if re.search(r"Stream #0:\d+.*: Video: ", line))


def _avcc_codec(fixture: str) -> str:
    """avc1.PPCCLL from the source's avcC box (profile, constraint flags, level)."""
    data = mf.fixture_path(fixture).read_bytes()
    at = data.index(b"avcC") + 4  # configurationVersion, then the three bytes
    return "avc1." + data[at + 1 : at + 4].hex()


@pytest.mark.parametrize("entry, fmt", CASES, ids=_ids(CASES))
def test_master_attributes(entry, fmt, playlists):
    pl = playlists(entry, fmt)
    assert pl.master.version is not None
    audio_media = [m for m in pl.master.media if m.type == "AUDIO"]
    for variant in pl.master.playlists:
        info = variant.stream_info
        assert info.bandwidth >= info.average_bandwidth > 0, variant.uri
        codecs = info.codecs.split(",")
        rendition = pl.rendition(variant.uri)
        src = rendition.source
        exp = FIXTURES[src].expect
        if rendition.kind == "audio":  # audio-only entry
            assert codecs == ["mp4a.40.2"]
            assert info.resolution is None
            continue
        video_codec, *audio_codecs = codecs
        line = _source_video_line(src)
        if exp.video_codec == "h264":
            assert RFC6381_AVC.fullmatch(video_codec), video_codec
            assert video_codec.lower() == _avcc_codec(src)
            profile = re.search(r"Video: h264 \(([^)]+)\)", line)[1]
            assert int(video_codec[5:7], 16) == H264_PROFILES[profile]
        else:
            assert RFC6381_HEVC.fullmatch(video_codec), video_codec
            assert "Video: hevc (Main)" in line and video_codec.startswith("hvc1.1.")
        assert audio_codecs == (["mp4a.40.2"] if exp.audio_streams else [])
        # RESOLUTION: the frame size ffmpeg decodes from the source
        width, height = map(int, re.search(r", (\d{2,5})x(\d{2,5})[ ,]", line).groups())
        assert info.resolution == (width, height)
        frames = source_frames(src, "v:0")
        assert frames[0].size == width * height * 3 // 2  # yuv420p: the decoded picture has that size
        end, _ = source_end(src, "v:0")
        fps = len(frames) / (end - frames[0].pts_time)
        assert info.frame_rate == pytest.approx(fps, abs=0.0015)
        # audio group iff the source has audio; every rendition of the group is listed
        if exp.audio_streams:
            assert info.audio and {m.group_id for m in audio_media} == {info.audio}
        else:
            assert info.audio is None and not audio_media
    if any(r.kind == "video" for r in pl.renditions):
        iframe_uris = [i.uri for i in pl.master.iframe_playlists]
        assert sorted(iframe_uris) == sorted(r.dir + "/iframes.m3u8" for r in pl.videos())
        for iframe in pl.master.iframe_playlists:
            info = iframe.iframe_stream_info
            video = pl.rendition(iframe.uri.replace("iframes.m3u8", "index.m3u8"))
            assert info.bandwidth > 0
            assert info.resolution == next(p.stream_info.resolution for p in pl.master.playlists if p.uri == video.uri)
    languages = [m.language for m in audio_media]
    if entry == "two_languages":
        assert languages == ["en", "fr"]
    assert sum(m.default == "YES" for m in audio_media) == (1 if audio_media else 0)


# Durations here come from EXTINF, which is rounded to the microsecond: over segments of >= 2 s
# that can overstate a rate by < 1e-6 relative (the server divides by the exact duration).
EXTINF_SLACK = 1 - 1e-6


def _fetch_sizes(client: httpx.Client, pl: EntryPlaylists, rendition: Rendition) -> list[int]:
    """GET every segment (and HEAD it: the announced size must be the real one)."""
    sizes = []
    for segment in rendition.playlist.segments:
        path = f"{pl.root}/{rendition.dir}/{segment.uri}"
        body = client.get(path)
        assert body.status_code == 200
        assert int(body.headers["content-length"]) == len(body.content)
        head = client.head(path)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(body.content), f"HEAD {path}"
        sizes.append(len(body.content))
    return sizes


@pytest.mark.parametrize("entry, fmt", CASES, ids=_ids(CASES))
def test_bandwidth_covers_measured_peak(entry, fmt, client, playlists):
    """BANDWIDTH >= the bit rate of every single segment lasting at least half the target
    (video + its audio over the same time); AVERAGE-BANDWIDTH within 2 % of the measured
    average (all bytes * 8 / duration, video + default audio). The server's own rule is the
    peak over runs of segments lasting 0.5-1.5x the target, which includes those single
    segments, so BANDWIDTH must be at least this."""
    pl = playlists(entry, fmt)
    sizes = {r.uri: _fetch_sizes(client, pl, r) for r in pl.renditions}

    def per_segment(r: Rendition) -> list[float]:
        return [size * 8 / s.duration for size, s in zip(sizes[r.uri], r.playlist.segments)]

    def average(r: Rendition) -> float:
        return sum(sizes[r.uri]) * 8 / sum(s.duration for s in r.playlist.segments)

    audios = pl.audios()
    default_audio = next((m.uri for m in pl.master.media if m.type == "AUDIO" and m.default == "YES"), None)
    for variant in pl.master.playlists:
        info = variant.stream_info
        main = pl.rendition(variant.uri)
        target = main.playlist.target_duration
        long_enough = [i for i, s in enumerate(main.playlist.segments) if s.duration >= target / 2]
        assert long_enough, "no segment of at least half the target duration"
        rates = per_segment(main)
        expected_average = average(main)
        if main.kind == "video" and audios:
            for audio in audios:  # any audio of the group may play along
                assert len(audio.playlist.segments) == len(main.playlist.segments)
                audio_rates = per_segment(audio)
                peak = max(rates[i] + audio_rates[i] for i in long_enough)
                assert info.bandwidth >= peak * EXTINF_SLACK, f"{variant.uri} + {audio.uri}: BANDWIDTH {info.bandwidth} < {peak:.0f}"
            expected_average += average(pl.rendition(default_audio))
        else:
            peak = max(rates[i] for i in long_enough)
            assert info.bandwidth >= peak * EXTINF_SLACK, f"{variant.uri}: BANDWIDTH {info.bandwidth} < measured {peak:.0f}"
        assert info.average_bandwidth == pytest.approx(expected_average, rel=0.02), variant.uri


def _min_version(text: str) -> int:
    """RFC 8216 section 7: the lowest EXT-X-VERSION the features in use need."""
    version = 3 if re.search(r"#EXTINF:\d+\.\d", text) else 1
    if "#EXT-X-BYTERANGE" in text or "#EXT-X-I-FRAMES-ONLY" in text:
        version = max(version, 4)
    if "#EXT-X-MAP" in text:
        version = max(version, 5 if "#EXT-X-I-FRAMES-ONLY" in text else 6)
    return version


@pytest.mark.parametrize("entry, fmt", CASES, ids=_ids(CASES))
def test_media_playlists(entry, fmt, playlists):
    pl = playlists(entry, fmt)
    for r in pl.renditions:
        p = r.playlist
        assert p.version is not None and p.version >= _min_version(r.text), r.uri
        assert p.target_duration >= max(math.floor(s.duration + 0.5) for s in p.segments), r.uri
        assert p.playlist_type == "vod" and p.is_endlist, r.uri
        assert r.text.rstrip().endswith("#EXT-X-ENDLIST")
        assert all(s.duration > 0 for s in p.segments)
        if fmt == "cmaf":
            assert [m.uri for m in p.segment_map] == ["init.mp4"], r.uri
        else:
            assert not p.segment_map, r.uri
            assert all(s.uri.endswith(".ts") for s in p.segments)
        end, frame = source_end(r.source, r.stream)
        total = sum(s.duration for s in p.segments)
        assert abs(total - end) <= frame, f"{r.uri}: EXTINF sum {total} vs source duration {end}"


@pytest.mark.parametrize("entry, fmt", VIDEO_CASES, ids=_ids(VIDEO_CASES))
def test_segments_start_with_keyframe(entry, fmt, server, playlists):
    """Each segment decoded alone: no decoder complaint, exactly the source frames of its span
    (so > 0 frames), the first of them a keyframe (the first -skip_frame nokey output), and
    that frame sits at the segment's start time in the source (EXTINF adds up to real times)."""
    pl = playlists(entry, fmt)
    for r in pl.videos():
        src = source_frames(r.source, "v:0")
        half_frame = src[0].duration_time / 2
        for placed, start in zip(place_segments(server.base, pl, r), starts(r.playlist)):
            first = src[placed.offset]
            assert placed.decode.keyframes, f"{r.uri} seg {placed.number}: no keyframe"
            assert placed.decode.keyframes[0].md5 == placed.decode.frames[0].md5 == first.md5, (
                f"{r.uri} seg {placed.number} does not start with a keyframe"
            )
            if placed.number == 1:
                assert first.pts_time >= start - half_frame
            else:
                assert abs(first.pts_time - start) < half_frame, (
                    f"{r.uri} seg {placed.number}: starts at {start} in the playlist, {first.pts_time} in the source"
                )


@pytest.mark.parametrize("fmt", FORMATS)
def test_ladder_flavors_cut_identically(fmt, server, playlists):
    pl = playlists(LADDER_ENTRY, fmt)
    extinfs = {r.uri: [s.duration for s in r.playlist.segments] for r in pl.renditions}
    assert set(extinfs) == {"hi/index.m3u8", "mid/index.m3u8", "lo/index.m3u8", "hi/a1/index.m3u8"}
    assert len({tuple(v) for v in extinfs.values()}) == 1, extinfs
    other = playlists(LADDER_ENTRY, "cmaf" if fmt == "hls" else "hls")  # and the same in the other format
    assert {r.uri: [s.duration for s in r.playlist.segments] for r in other.renditions} == extinfs
    # and the cuts are where the frames are: same source frame index at every boundary
    offsets = {r.uri: [p.offset for p in place_segments(server.base, pl, r)] for r in pl.videos()}
    assert len({tuple(v) for v in offsets.values()}) == 1, offsets


@pytest.mark.parametrize("fmt", FORMATS)
def test_irregular_gop(fmt, server, playlists):
    """Keyframes at 0, .72, 2.92, 3.2, 7.52, 8.12 s, then none for 7.88 s: with a 4 s target
    the segments are 0-7.52, 7.52-8.12 and 8.12-16 -- no empty one, the long one as it is."""
    pl = playlists("irregular_gop", fmt)
    video = pl.rendition("main/index.m3u8")
    placed = place_segments(server.base, pl, video)  # every segment decodes to >= 1 frame
    src = source_frames("irregular_gop", "v:0")
    frame = src[0].duration_time
    durations = [s.duration for s in video.playlist.segments]
    for p, extinf in zip(placed, durations):  # EXTINF is what the segment's frames last
        assert len(p.decode.frames) * frame == pytest.approx(extinf, abs=1e-3), f"seg {p.number}"
    longest = max(range(len(durations)), key=durations.__getitem__)
    assert durations[longest] > SERVER_TARGET  # one GOP longer than the target...
    assert durations[longest] == pytest.approx(16 - 8.12, abs=1e-3)
    assert video.playlist.target_duration >= round(durations[longest])
    # the audio is cut at the same times and no audio segment is empty either
    audio = pl.rendition("main/a1/index.m3u8")
    assert [s.duration for s in audio.playlist.segments] == durations
    ext = "ts" if fmt == "hls" else "m4s"
    init = httpx.get(f"{server.base}{pl.root}/main/a1/init.mp4").content if fmt == "cmaf" else b""
    for n in range(1, len(durations) + 1):
        data = httpx.get(f"{server.base}{pl.root}/main/a1/seg-{n}.{ext}").content
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / ("a.ts" if fmt == "hls" else "a.mp4")
            path.write_bytes(init + data)
            assert oracle.decoded_frame_count(path, "a:0") > 0, f"audio seg {n} is empty"


def _ranged_get(client: httpx.Client, url: str, length: int, offset: int) -> bytes:
    full_size = int(client.head(url).headers["content-length"])
    response = client.get(url, headers={"Range": f"bytes={offset}-{offset + length - 1}"})
    assert response.status_code == 206, f"{url}: Range request answered {response.status_code}"
    assert response.headers["content-range"] == f"bytes {offset}-{offset + length - 1}/{full_size}"
    assert len(response.content) == length
    return response.content


def _byterange(segment) -> tuple[int, int]:
    length, _, offset = segment.byterange.partition("@")
    return int(length), int(offset or 0)


@functools.cache
def _source_keyframes(fixture: str) -> list[oracle.FrameHash]:
    """The source's keyframes, decoded alone (-skip_frame nokey), in presentation order."""
    return oracle.framemd5(mf.fixture_path(fixture), "v:0", extra_input_args=["-skip_frame", "nokey"])


@pytest.mark.parametrize("entry, fmt", VIDEO_CASES, ids=_ids(VIDEO_CASES))
def test_iframe_playlists(entry, fmt, client, server, playlists):
    """TS: one entry per keyframe (not per segment), each a byte range of its segment, in increasing
    order, lasting until the next keyframe; EXT-X-MAP names the PAT/PMT (the first 376 bytes of segment 1).
    Fetched with a Range request (206, exactly those bytes) behind the map, each decodes as a TS to exactly
    one picture: the source's keyframe at that time. fMP4: one entry per segment (a keyframe inside a
    fragment is not decodable without its moof), decoding after init.mp4 to the segment's first keyframe."""
    pl = playlists(entry, fmt)
    for r in pl.videos():
        text, iframes = fetch_playlist(client, f"{pl.root}/{r.dir}/iframes.m3u8")
        assert iframes.is_i_frames_only and iframes.is_endlist and iframes.playlist_type == "vod"
        assert iframes.version >= _min_version(text)
        src = source_frames(r.source, "v:0")
        if fmt == "hls":
            assert [(m.uri, m.byterange) for m in iframes.segment_map] == [("seg-1.ts", "376@0")]
            psi = _ranged_get(client, f"{pl.root}/{r.dir}/seg-1.ts", 376, 0)
            keys = _source_keyframes(r.source)
            assert len(iframes.segments) == len(keys), "one I-frame entry per source keyframe"
            media = {s.uri: s.duration for s in r.playlist.segments}
            assert [s.uri for s in iframes.segments if s.uri] == sorted(
                (s.uri for s in iframes.segments), key=lambda u: int(re.search(r"seg-(\d+)", u)[1])
            )
            for uri in media:  # durations add up to the segment's; ranges increase within it
                own = [s for s in iframes.segments if s.uri == uri]
                assert own and sum(s.duration for s in own) == pytest.approx(media[uri], abs=1e-5)
                ranges = [_byterange(s) for s in own]
                assert ranges[0][1] == 376 and all(a[1] + a[0] <= b[1] for a, b in zip(ranges, ranges[1:]))
            at, starts = 0.0, []
            for segment, key in zip(iframes.segments, keys):
                length, offset = _byterange(segment)
                body = _ranged_get(client, f"{pl.root}/{r.dir}/{segment.uri}", length, offset)
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "iframe.ts"
                    path.write_bytes(psi + body)
                    frames = oracle.framemd5(path, "v:0")
                assert len(frames) == 1, f"{r.dir}/{segment.uri}@{offset} decodes to {len(frames)} frames"
                assert frames[0].md5 == key.md5, f"{r.dir}/{segment.uri}@{offset} is not the source keyframe at {at:.3f}s"
                starts.append(at - key.pts_time)
                at += segment.duration
            # each EXTINF runs to the next keyframe: entries start at their keyframe's time (the first one at
            # 0, which may precede its keyframe, e.g. under an edit list's empty edit)
            assert max(starts[1:], default=0) - min(starts[1:], default=0) < 1e-3, starts
            continue
        assert [(s.uri, s.duration) for s in iframes.segments] == [(s.uri, s.duration) for s in r.playlist.segments]
        assert [m.uri for m in iframes.segment_map] == ["init.mp4"]
        init = client.get(f"{pl.root}/{r.dir}/init.mp4").content
        placed = place_segments(server.base, pl, r)
        for segment, p in zip(iframes.segments, placed):
            length, offset = _byterange(segment)
            body = _ranged_get(client, f"{pl.root}/{r.dir}/{segment.uri}", length, offset)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "iframe.mp4"
                path.write_bytes(init + body)
                frames = oracle.framemd5(path, "v:0")
            assert len(frames) == 1, f"{r.dir}/{segment.uri} range decodes to {len(frames)} frames"
            assert frames[0].md5 == src[p.offset].md5 == p.decode.keyframes[0].md5


# --------------------------------------------------------------------------- HEVC: fMP4 only


def test_hevc_is_not_offered_over_ts(client):
    """Apple's HLS Authoring Specification requires fMP4 for HEVC: /hls/ (TS) refuses an HEVC-only entry's
    master, its video playlists and segments with a 404 naming /cmaf/; /cmaf/ offers it."""
    root = "/p/demo/e/hevc"
    paths = ("hls/master.m3u8", "hls/main/index.m3u8", "hls/main/iframes.m3u8", "hls/main/seg-1.ts", "hls/main/index-p3.m3u8")
    for path in paths:
        # a conditional request gets the same 404: there is no representation to be "not modified"
        for headers in ({}, {"If-None-Match": "*"}, {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}):
            response = client.get(f"{root}/{path}", headers=headers)
            assert response.status_code == 404, (path, headers, response.status_code, response.text)
            body = response.json()
            assert body["error"] == "hevc_needs_cmaf" and "/cmaf/" in body["detail"], body
    _, master = fetch_playlist(client, f"{root}/cmaf/master.m3u8")
    assert [p.stream_info.codecs.split(",")[0][:5] for p in master.playlists] == ["hvc1."]


def test_ts_master_leaves_hevc_variants_out():
    """An entry with an H.264 and an HEVC flavor: the TS master lists the H.264 variant (and its I-frame
    playlist) only; the fMP4 master lists both."""
    from fractions import Fraction

    from origin.local import read_index_sync
    from packager.formats import FMP4, TS
    from packager.hls.build import MasterUris, build_master
    from packager.media_set import build_media_set

    media_set = build_media_set(
        [("avc", read_index_sync(mf.fixture_path("h264_baseline"))), ("hevc", read_index_sync(mf.fixture_path("hevc")))],
        Fraction(4),
    )
    uris = MasterUris(lambda rid: f"{rid.flavor}/index.m3u8", lambda rid: f"{rid.flavor}/iframes.m3u8")
    ts, fmp4 = (m3u8.loads(build_master(media_set, fmt, uris)) for fmt in (TS, FMP4))
    assert [p.uri for p in ts.playlists] == ["avc/index.m3u8"]
    assert [p.uri for p in ts.iframe_playlists] == ["avc/iframes.m3u8"]
    assert [p.uri for p in fmp4.playlists] == ["avc/index.m3u8", "hevc/index.m3u8"]


def test_ladder_ts_iframes_list_every_keyframe(client):
    """The ladder has a keyframe every 2 s and 4 s segments: twice as many I-frames as segments, and ffmpeg
    plays the I-frame playlist itself (EXT-X-MAP of the PAT/PMT + each range)."""
    root = f"/p/demo/e/{LADDER_ENTRY}/hls/hi"
    _, media = fetch_playlist(client, f"{root}/index.m3u8")
    _, iframes = fetch_playlist(client, f"{root}/iframes.m3u8")
    assert len(iframes.segments) == 2 * len(media.segments) == len(_source_keyframes(LADDER["hi"]))
    assert [s.duration for s in iframes.segments] == [2.0] * len(iframes.segments)
    offsets = [(int(s.uri[4:-3]), _byterange(s)[1]) for s in iframes.segments]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert oracle.decoded_frame_count(f"{client.base_url}{root}/iframes.m3u8") == len(iframes.segments)
