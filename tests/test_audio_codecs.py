"""Audio other than AAC (issue 9 item 6): AC-3 and E-AC-3 passed through in MPEG-TS and fMP4, Opus in fMP4
only, MP3 in both, and an audio track of a codec we cannot package left out -- with a warning -- while the
rest of its file plays.

A real server (``vodgate serve``, 4 s segments) over a library of the :data:`media_fixtures.AUDIO_CODECS`
fixtures; ffmpeg decodes our HLS audio and the source MP4's, and the decoded samples must be the same.

What "the same" means here (measured with ffmpeg 9.0.2, the imageio-ffmpeg build). Every audio encoder
leaves a delay in front of the signal (AC-3/E-AC-3 256 samples, MP3 1105 with LAME's, AAC 1024, Opus's
312 pre-skip), which the source MP4 declares in its edit list (elst media_time) and ffmpeg's mov demuxer
cuts off when decoding the MP4. MPEG-TS has no edit list, so decoding our TS presents every decoded
sample, the delay included. The exact claim is therefore: the source's decoded PCM is *contained* in
ours -- every sample equal, bit for bit (32-bit float PCM, no dithering) -- starting at an offset of
exactly the edit's delay, and ours runs on past the source's end by less than one frame (the end trim).
From fMP4 the offset depends on what the init segment tells the player (docs/URLS.md, "Edit lists"):
without an edit, the delay, as from TS; with it, ffmpeg 9.0.2 drops the frames that lie wholly before
time 0 but keeps a frame straddling it (offset: the delay modulo the frame length, so AAC 0, AC-3 256),
and a player trimming exactly would give 0. Those offsets (TS: the delay; fMP4: one of the three), and
no other, pass. Opus is the exception that proves the rule: its decoder skips the
pre-skip itself (dOps PreSkip, the edit's 312), for the MP4 and our fMP4 alike, so the two decode to
identical frames. Per-frame MD5s (``-f framemd5``) are compared too, over every frame the trims do not
touch.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import subprocess
import sys
from functools import cache
from pathlib import Path

import httpx
import m3u8
import pytest

import media_fixtures as mf
import oracle
from conftest import REPO, ServerProcess, serving
from media_fixtures import AUDIO_CODECS, FIXTURES

PCM_BYTES = 4  # f32le: one sample of one channel
TS_PACKET = 188
PMT_PID = 0x1000
AUDIO_PID = 0x0101


# --------------------------------------------------------------------------- the server and its library


@pytest.fixture(scope="module")
def library(tmp_path_factory, media_fixture_paths) -> Path:
    root = tmp_path_factory.mktemp("audio_codecs")
    for name in AUDIO_CODECS:
        dest = root / "demo" / name / "main.mp4"
        dest.parent.mkdir(parents=True)
        shutil.copyfile(media_fixture_paths[name], dest)
    return root


@pytest.fixture(scope="module")
def srv(library, tmp_path_factory):
    yield from serving(["--media", str(library), "--segment-duration", "4"], tmp_path_factory.mktemp("srv") / "server.log")


@pytest.fixture(scope="module")
def client(srv):
    with httpx.Client(base_url=srv.base, timeout=30) as c:
        yield c


def root(entry: str, fmt: str) -> str:
    return f"/p/demo/e/{entry}/{fmt}"


def master(client: httpx.Client, entry: str, fmt: str) -> m3u8.M3U8:
    response = client.get(f"{root(entry, fmt)}/master.m3u8")
    assert response.status_code == 200, response.text
    return m3u8.loads(response.text)


# --------------------------------------------------------------------------- the sources


def audio_stream(fixture: str, track: int = 1) -> str:
    """The source's stream behind our audio rendition ``a{track}``: aac_and_alac's ALAC (a:0) is left out,
    so its a1 is the source's a:1."""
    return "a:1" if fixture == "aac_and_alac" else f"a:{track - 1}"


def source_delay(fixture: str, track: int = 1) -> int:
    """Samples the source's edit list cuts from the start of that audio track (its media_time)."""
    sound = [t for t in mf.tracks(mf.fixture_path(fixture)) if t.handler == "soun"]
    info = sound[int(audio_stream(fixture, track)[2:])]
    return info.edits[0].media_time if info.edits else 0


def assert_source_is(fixture: str) -> None:
    """The fixture holds the codecs its recipe claims (so a pass means what it says)."""
    streams = oracle.probe_streams(mf.fixture_path(fixture))
    assert [s.codec for s in streams if s.kind == "Audio"] == list(FIXTURES[fixture].expect.audio_codecs)
    assert [s.codec for s in streams if s.kind == "Video"] == (["h264"] if FIXTURES[fixture].expect.video_codec else [])


def pcm(source: str | Path, stream: str) -> bytes:
    """Every sample ffmpeg presents for ``stream`` of ``source``, as interleaved 32-bit float PCM."""
    result = oracle.run_ffmpeg(
        ["-v", "error", "-i", str(source), "-map", f"0:{stream}", "-c:a", "pcm_f32le", "-f", "f32le", "-"], text=False
    )
    return result.stdout


@cache
def source_decode(fixture: str, track: int = 1) -> tuple[bytes, list[oracle.FrameHash]]:
    path = mf.fixture_path(fixture)
    stream = audio_stream(fixture, track)
    return pcm(path, stream), oracle.framemd5(path, stream)


# --------------------------------------------------------------------------- decoded audio equals the source's


@dataclasses.dataclass(frozen=True)
class Case:
    fixture: str
    fmt: str
    channels: int
    exact: bool = False  # identical frames (Opus: the decoder's pre-skip is the edit list's delay)
    track: int = 1  # our rendition a{track}

    @property
    def id(self) -> str:
        return f"{self.fixture}-a{self.track}-{self.fmt}"


CASES = [
    Case("h264_ac3", "hls", 6), Case("h264_ac3", "cmaf", 6),
    Case("h264_eac3", "hls", 2), Case("h264_eac3", "cmaf", 2),
    Case("h264_opus", "cmaf", 2, exact=True),
    Case("h264_mp3", "hls", 2), Case("h264_mp3", "cmaf", 2),
    Case("aac_and_alac", "hls", 2), Case("aac_and_alac", "cmaf", 2),
    Case("aac_and_ac3", "hls", 6, track=2), Case("aac_and_ac3", "cmaf", 6, track=2),  # in the audio-ac-3 group
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decoded_audio_equals_source(case: Case, srv, client):
    assert_source_is(case.fixture)
    uri = f"main/a{case.track}/index.m3u8"
    assert uri in [m.uri for m in master(client, case.fixture, case.fmt).media if m.type == "AUDIO"]
    url = f"{srv.base}{root(case.fixture, case.fmt)}/{uri}"
    ours_pcm, ours = pcm(url, "a:0"), oracle.framemd5(url, "a:0")
    src_pcm, src = source_decode(case.fixture, case.track)
    frame_bytes = case.channels * PCM_BYTES
    assert len(src_pcm) % frame_bytes == 0 and len(src_pcm) > 3 * 48000 * frame_bytes  # over 3 s of sound
    if case.exact:
        assert [f.md5 for f in ours] == [f.md5 for f in src]
        assert ours_pcm == src_pcm
        return
    # the source's samples are ours from the edit list's delay on, every one of them
    delay = source_delay(case.fixture, case.track)
    samples_per_frame = ours[1].duration
    assert 0 < delay and samples_per_frame > 0
    # where the source's samples start in ours: at the delay (TS, and fMP4 without an edit in its init:
    # every decoded sample is presented); from fMP4 with the edit, past the frames wholly before 0 (ffmpeg
    # drops those; AAC: all of the delay) or at 0 (trimmed exactly, as the source)
    allowed = [delay] if case.fmt == "hls" else sorted({delay, delay % samples_per_frame, 0})
    found = ours_pcm.find(src_pcm)
    assert found >= 0 and found % frame_bytes == 0, (
        f"the source's samples are not in ours; at offset {delay} the first difference is at byte "
        f"{_first_difference(ours_pcm[delay * frame_bytes:], src_pcm)}"
    )
    offset = found // frame_bytes
    assert offset in allowed, f"the source's samples start {offset} samples into ours, not at one of {allowed}"
    at = offset * frame_bytes
    assert 0 <= len(ours_pcm) - at - len(src_pcm) < samples_per_frame * frame_bytes  # the end trim: under a frame
    # frame for frame: the source's first frame is ours with the delay cut (whole frames of it: gone), its
    # last is cut at the edit's end; every frame in between is identical
    lead, partial = divmod(offset, samples_per_frame)
    first = 1 if partial else 0
    middle = [f.md5 for f in src[first:-1]]
    assert [f.md5 for f in ours[lead + first : lead + first + len(middle)]] == middle
    assert len(middle) >= len(src) - 2


def _first_difference(a: bytes, b: bytes) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) >= len(b) else min(len(a), len(b)))


# --------------------------------------------------------------------------- master playlists


# entry -> (audio CODECS, CHANNELS) of its one audio rendition in each format; None: no audio offered
EXPECTED_AUDIO = {
    "h264_ac3": {"hls": ("ac-3", "6"), "cmaf": ("ac-3", "6")},
    "h264_eac3": {"hls": ("ec-3", "2"), "cmaf": ("ec-3", "2")},
    "h264_opus": {"hls": None, "cmaf": ("opus", "2")},  # Opus over fMP4 only
    "h264_mp3": {"hls": ("mp4a.40.34", "2"), "cmaf": ("mp4a.40.34", "2")},
    "aac_and_alac": {"hls": ("mp4a.40.2", "2"), "cmaf": ("mp4a.40.2", "2")},  # the ALAC track left out
}
MASTER_CASES = [(entry, fmt) for entry in EXPECTED_AUDIO for fmt in ("hls", "cmaf")]


@pytest.mark.parametrize("entry, fmt", MASTER_CASES, ids=[f"{e}-{f}" for e, f in MASTER_CASES])
def test_master_codecs_and_channels(entry, fmt, client):
    text = client.get(f"{root(entry, fmt)}/master.m3u8").text
    playlist = m3u8.loads(text)
    (variant,) = playlist.playlists
    video_codec, *audio_codecs = variant.stream_info.codecs.split(",")
    assert video_codec.startswith("avc1.")
    media = [m for m in playlist.media if m.type == "AUDIO"]
    expected = EXPECTED_AUDIO[entry][fmt]
    if expected is None:
        assert audio_codecs == [] and media == [] and variant.stream_info.audio is None, text
        return
    codec, channels = expected
    assert audio_codecs == [codec], text
    (rendition,) = media
    assert rendition.channels == channels and rendition.uri == "main/a1/index.m3u8", text
    assert variant.stream_info.audio == rendition.group_id
    if entry == "aac_and_alac":
        assert rendition.language == "en"  # the AAC track (eng); the ALAC one (fra) is not offered


@pytest.mark.parametrize("fmt", ("hls", "cmaf"))
def test_one_audio_group_per_codec(fmt, client):
    """AAC (eng) and AC-3 (fra) in one file: a group per codec and a variant of the video per group, each
    naming its own audio codec and covering that group's audio in its BANDWIDTH (not one group whose CODECS
    would make a player without AC-3 refuse the AAC too)."""
    assert_source_is("aac_and_ac3")
    text = client.get(f"{root('aac_and_ac3', fmt)}/master.m3u8").text
    playlist = m3u8.loads(text)
    media = [(m.group_id, m.language, m.channels, m.default, m.uri) for m in playlist.media if m.type == "AUDIO"]
    assert media == [
        ("audio", "en", "2", "YES", "main/a1/index.m3u8"),
        ("audio-ac-3", "fr", "6", "YES", "main/a2/index.m3u8"),
    ], text
    variants = [(p.uri, p.stream_info.audio, p.stream_info.codecs.split(",")[1:]) for p in playlist.playlists]
    assert variants == [("main/index.m3u8", "audio", ["mp4a.40.2"]), ("main/index.m3u8", "audio-ac-3", ["ac-3"])], text
    aac, ac3 = playlist.playlists
    assert ac3.stream_info.bandwidth > aac.stream_info.bandwidth  # 256 kbit/s AC-3 against 128 kbit/s AAC
    assert len(playlist.iframe_playlists) == 1  # trick play is video only: one per video, not per group


# --------------------------------------------------------------------------- MPEG-TS: PMT and PES


def _packets(segment: bytes, pid: int) -> list[bytes]:
    assert len(segment) % TS_PACKET == 0 and segment[0] == 0x47
    packets = [segment[i : i + TS_PACKET] for i in range(0, len(segment), TS_PACKET)]
    return [p for p in packets if ((p[1] & 0x1F) << 8) | p[2] == pid]


def _payload(packet: bytes) -> bytes:
    control = (packet[3] >> 4) & 0x3
    start = 4 + (1 + packet[4] if control & 0x2 else 0)
    return packet[start:]


def parse_pmt(segment: bytes) -> list[tuple[int, int, list[tuple[int, bytes]]]]:
    """(stream_type, elementary PID, [(descriptor tag, body)]) of each stream in the segment's PMT."""
    (pmt,) = _packets(segment, PMT_PID)
    payload = _payload(pmt)
    section = payload[1 + payload[0] :]  # pointer_field
    assert section[0] == 0x02  # table_id: program map section
    length = ((section[1] & 0x0F) << 8) | section[2]
    body = section[3 : 3 + length - 4]  # up to the CRC
    assert oracle_crc_ok(section[: 3 + length])
    program_info = ((body[7] & 0x0F) << 8) | body[8]
    pos, streams = 9 + program_info, []
    while pos < len(body):
        stream_type, pid, es_length = body[pos], ((body[pos + 1] & 0x1F) << 8) | body[pos + 2], ((body[pos + 3] & 0x0F) << 8) | body[pos + 4]
        descriptors, at = [], pos + 5
        while at < pos + 5 + es_length:
            descriptors.append((body[at], body[at + 2 : at + 2 + body[at + 1]]))
            at += 2 + body[at + 1]
        streams.append((stream_type, pid, descriptors))
        pos += 5 + es_length
    return streams


def oracle_crc_ok(section: bytes) -> bool:
    """CRC-32/MPEG-2 over a whole section, its CRC included, is 0 (13818-1 annex A), computed bit by bit."""
    crc = 0xFFFFFFFF
    for byte in section:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc == 0


def first_pes(segment: bytes) -> tuple[int, bytes]:
    """(stream_id, payload) of the segment's first audio PES."""
    packets = _packets(segment, AUDIO_PID)
    assert packets[0][1] & 0x40  # payload_unit_start_indicator
    data = _payload(packets[0])
    for packet in packets[1:]:
        if packet[1] & 0x40:
            break
        data += _payload(packet)
    assert data[:3] == b"\x00\x00\x01"
    (length,) = struct.unpack_from(">H", data, 4)
    return data[3], data[9 + data[8] : 6 + length]


TS_CASES = {
    # fixture: (stream_type, registration descriptor, PES stream_id, the first frame's sync bytes)
    "h264_ac3": (0x81, b"AC-3", 0xBD, b"\x0b\x77"),
    "h264_eac3": (0x87, b"EAC3", 0xBD, b"\x0b\x77"),
    "h264_mp3": (0x03, None, 0xC0, None),
}


@pytest.mark.parametrize("fixture", sorted(TS_CASES))
def test_ts_pmt_and_pes(fixture, client):
    stream_type, registration, stream_id, sync = TS_CASES[fixture]
    response = client.get(f"{root(fixture, 'hls')}/main/a1/seg-1.ts")
    assert response.status_code == 200, response.text
    segment = response.content
    ((kind, pid, descriptors),) = parse_pmt(segment)
    assert (kind, pid) == (stream_type, AUDIO_PID)
    registrations = [body for tag, body in descriptors if tag == 0x05]
    assert registrations == ([registration] if registration else [])
    sid, payload = first_pes(segment)
    assert sid == stream_id
    # the source's first sample, as it is: no ADTS header in front
    track = next(t for t in mf.tracks(mf.fixture_path(fixture)) if t.handler == "soun")
    first = _first_sample(mf.fixture_path(fixture), track)
    assert payload.startswith(first)
    if sync:
        assert first[:2] == sync
    else:  # MPEG audio frame header: 11-bit sync, then layer III ('01'), not ADTS's layer '00'
        assert first[0] == 0xFF and first[1] & 0xE0 == 0xE0 and (first[1] >> 1) & 0x3 == 0x1


def _first_sample(path: Path, track: mf.TrackInfo) -> bytes:
    data = path.read_bytes()
    boxes = {b.type: b for b in track.sample_table_boxes}
    moov = next(b for b in mf.iter_boxes(data) if b.type == "moov")
    stsz, stco = boxes["stsz"], boxes["stco"]  # offsets relative to the moov (tracks() of a path)
    (fixed,) = struct.unpack_from(">I", data, moov.offset + stsz.payload_offset + 4)
    size = fixed or struct.unpack_from(">I", data, moov.offset + stsz.payload_offset + 12)[0]
    (offset,) = struct.unpack_from(">I", data, moov.offset + stco.payload_offset + 8)
    return data[offset : offset + size]


# --------------------------------------------------------------------------- Opus: fMP4 only


def test_opus_is_refused_over_ts_with_a_clear_code(client):
    for path in ("main/a1/index.m3u8", "main/a1/seg-1.ts"):
        response = client.get(f"{root('h264_opus', 'hls')}/{path}")
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "opus_needs_cmaf"
        assert "/cmaf/" in response.json()["detail"]
    # the video of the same file still plays over TS, and the Opus audio over fMP4
    assert client.get(f"{root('h264_opus', 'hls')}/main/seg-1.ts").status_code == 200
    assert client.get(f"{root('h264_opus', 'cmaf')}/main/a1/seg-1.m4s").status_code == 200
    init = client.get(f"{root('h264_opus', 'cmaf')}/main/a1/init.mp4").content
    assert b"Opus" in init and b"dOps" in init


def test_opus_only_entry(client):
    """No video and only Opus: the /hls/ master has nothing to offer and says where to go; /cmaf/ plays it."""
    assert_source_is("opus_only")
    response = client.get(f"{root('opus_only', 'hls')}/master.m3u8")
    assert response.status_code == 404 and response.json()["error"] == "opus_needs_cmaf", response.text
    playlist = master(client, "opus_only", "cmaf")
    assert [(p.uri, p.stream_info.codecs) for p in playlist.playlists] == [("main/a1/index.m3u8", "opus")]


def test_dolby_init_segments_keep_their_configuration(client):
    for fixture, entry, config in (("h264_ac3", b"ac-3", b"dac3"), ("h264_eac3", b"ec-3", b"dec3")):
        init = client.get(f"{root(fixture, 'cmaf')}/main/a1/init.mp4").content
        source = mf.fixture_path(fixture).read_bytes()
        at = source.index(entry) - 4
        (size,) = struct.unpack_from(">I", source, at)
        assert source[at : at + size] in init and config in init  # the sample entry, copied as it is


# --------------------------------------------------------------------------- a left-out track


LEFT_OUT = {"file": "demo/aac_and_alac/main.mp4", "track": 2, "kind": "audio", "codec": "alac"}


def test_left_out_track_is_in_healthz_and_logged_once(srv, client):
    for _ in range(3):  # the index is cached: however often the file is asked for, it is parsed once
        for fmt in ("hls", "cmaf"):
            assert client.get(f"{root('aac_and_alac', fmt)}/master.m3u8").status_code == 200
            assert client.get(f"{root('aac_and_alac', fmt)}/main/a1/index.m3u8").status_code == 200
        assert client.get(f"{root('aac_and_alac', 'hls')}/main/a1/seg-1.ts").status_code == 200
    # the ALAC track is not a rendition of its own
    assert client.get(f"{root('aac_and_alac', 'hls')}/main/a2/index.m3u8").status_code == 404
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    tracks = health["skipped_tracks"]["tracks"]
    assert health["skipped_tracks"]["count"] == len(tracks) == 1
    assert {k: tracks[0][k] for k in LEFT_OUT} == LEFT_OUT and "alac" in tracks[0]["reason"]
    log = srv.log_path.read_text(errors="replace")
    lines = [line for line in log.splitlines() if "left out" in line]
    assert len(lines) == 1, log[-3000:]
    assert "demo/aac_and_alac/main.mp4" in lines[0] and "track 2" in lines[0] and "alac" in lines[0]


def test_check_warns_about_the_left_out_track(library):
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "check", str(library)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    status = {line.split()[1]: line.split()[0] for line in lines if line.split() and line.split()[0] in ("OK", "WARN", "FAIL")}
    assert status == {f"demo/{name}/main.mp4": ("WARN" if name == "aac_and_alac" else "OK") for name in AUDIO_CODECS}, proc.stdout
    at = lines.index(next(line for line in lines if "demo/aac_and_alac/main.mp4" in line))
    warning = lines[at + 1].strip()
    assert warning.startswith("warning: main.mp4: audio track 2 (alac) left out"), proc.stdout


# --------------------------------------------------------------------------- channel counts from dac3 / dec3


def _bits(*fields: tuple[int, int]) -> bytes:
    """(value, width) fields, most significant first, zero-padded to whole bytes."""
    text = "".join(format(value, f"0{width}b") for value, width in fields)
    text += "0" * (-len(text) % 8)
    return int(text, 2).to_bytes(len(text) // 8, "big")


def test_dolby_channel_counts():
    from packager.mp4.sample_entry import ac3_channels, ec3_channels

    def dac3(acmod: int, lfeon: int) -> bytes:  # ETSI TS 102 366 F.4
        return _bits((0, 2), (8, 5), (0, 3), (acmod, 3), (lfeon, 1), (10, 5), (0, 5))

    assert [ac3_channels(dac3(acmod, 0)) for acmod in range(8)] == [2, 1, 2, 3, 3, 4, 4, 5]
    assert ac3_channels(dac3(7, 1)) == 6  # 5.1

    def dec3(acmod: int, lfeon: int, chan_loc: int | None = None) -> bytes:  # F.6, one independent substream
        substream = [(0, 2), (16, 5), (0, 1), (0, 1), (0, 3), (acmod, 3), (lfeon, 1), (0, 3)]
        tail = [(1, 4), (chan_loc, 9)] if chan_loc is not None else [(0, 4), (0, 1)]
        return _bits((448, 13), (0, 3), *substream, *tail)

    assert ec3_channels(dec3(2, 0)) == 2
    assert ec3_channels(dec3(7, 1)) == 6
    # 7.1 as E-AC-3 carries it: 5.1 plus a dependent substream with the Lrs/Rrs pair (chan_loc bit 1)
    assert ec3_channels(dec3(7, 1, chan_loc=0b10)) == 8
    assert ec3_channels(dec3(7, 1, chan_loc=0b100)) == 7  # plus Cs


def test_healthz_lists_nothing_for_a_clean_library(tmp_path, media_fixture_paths):
    """No key at all when no track was left out (the health body stays what load balancers already read)."""
    dest = tmp_path / "demo" / "ac3" / "main.mp4"
    dest.parent.mkdir(parents=True)
    shutil.copyfile(media_fixture_paths["h264_ac3"], dest)
    proc = ServerProcess(["--media", str(tmp_path)], tmp_path / "server.log")
    try:
        assert httpx.get(f"{proc.base}/p/demo/e/ac3/cmaf/master.m3u8", timeout=30).status_code == 200
        assert json.loads(httpx.get(f"{proc.base}/healthz", timeout=5).text) == {"status": "ok"}
    finally:
        proc.stop()


def test_mp3_stream_type_follows_the_mpeg_version():
    """MPEG-1 rates (32-48 kHz) are stream_type 0x03, MPEG-2's half rates 0x04 (ffmpeg's muxer's rule)."""
    import numpy as np

    from packager.media import AudioInfo, Track
    from packager.ts.streams import elementary_stream

    def mp3_track(rate: int) -> Track:
        empty = np.zeros(0, dtype=np.int64)
        return Track(1, "audio", "mp4a", "mp4a.40.34", rate, "und", b"", None, AudioInfo(rate, 2, b"", 0, "mp3"),
                     empty, empty, empty, empty, empty, np.zeros(0, dtype=bool), 0)

    assert [elementary_stream(mp3_track(rate)).stream_type for rate in (48000, 44100, 32000, 24000, 16000)] == [3, 3, 3, 4, 4]
    assert elementary_stream(mp3_track(48000)).frame_header_size == 0  # frames as they are: no ADTS
