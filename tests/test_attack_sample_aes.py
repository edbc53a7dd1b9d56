"""Attack review of HLS SAMPLE-AES (docs/CONTENT_PROTECTION.md, "SAMPLE-AES"; packager/ts/sample_aes.py).

One finding fails now (marked FINDING); every other test pins a property the review tried to break and that held.
Partners: ``senc`` (SAMPLE-AES, a token gives the whole entry, no token a 3 s preview, keys every 2 segments),
``plain`` (clear, the differential oracle).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import media_fixtures as mf
from auth.tokens import sign_native
from conftest import ServerProcess
from packager.media import SampleBatch
from packager.ts import mux_segment, segment_size
from packager.ts.sample_aes import SampleAesUnsupported, SampleEncryptor, audio_blocks, check_track
from test_sample_aes import KEY_LINE, adts_frames, decrypt_nal, nal_units, pmt_and_payload, pmt_stream
from test_ts_muxer import audio_batch, audio_track, video_track

TOKEN_KEY = "00112233445566778899aabbccddeeff"
SECRET = "d4" * 32
FIXTURES = ("h264_baseline", "h264_high_bframes", "h264_mp3", "h264_eac3", "audio_only", "video_only", "ladder_hi")


def partners(method: str) -> str:
    return (f'[partners.senc]\ntoken_keys = {{ k1 = "{TOKEN_KEY}" }}\nencryption = "{method}"\nkey_secrets = ["{SECRET}"]\n'
            'key_rotation_segments = 2\ndefault_profile = "prev"\n'
            '[partners.senc.profiles.prev]\nrules = [ { unless = { authenticated = true }, then = [{ preview = 3 }] } ]\n')


def make_origin(folder: Path, method: str = "sample-aes") -> tuple[ServerProcess, Path]:
    library = folder / "library"
    for partner in ("senc", "plain"):
        for entry in FIXTURES:
            (library / partner / entry).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mf.fixture_path(entry), library / partner / entry / "main.mp4")
    config = folder / "vodgate.toml"
    config.write_text(f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\n' + partners(method))
    return ServerProcess(["--config", str(config), "--workers", "1"], folder / "server.log"), config


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    srv, _ = make_origin(tmp_path_factory.mktemp("attack-sample-aes"))
    yield srv
    srv.stop()


def token(entry: str, expires_in: int = 600) -> str:
    return sign_native("k1", bytes.fromhex(TOKEN_KEY), f"/p/senc/e/{entry}", int(time.time()) + expires_in)


def get(url: str, method: str = "GET", **kw) -> httpx.Response:
    return httpx.request(method, url, timeout=60, **kw)


def keyed_segments(url: str) -> tuple[httpx.Response, list[tuple[str, tuple[int, bytes, bytes] | None]], list[str]]:
    """The playlist, each segment URL with (key status, key bytes, IV) of its EXT-X-KEY, and the key URIs."""
    playlist = get(url)
    out, current, uris = [], None, []
    for line in playlist.text.splitlines():
        match = KEY_LINE.match(line)
        if match:
            uris.append(urljoin(str(playlist.url), match[1]))
            key = get(uris[-1])
            current = key.status_code, key.content, bytes.fromhex(match[2])
        elif line and not line.startswith("#"):
            out.append((urljoin(str(playlist.url), line), current))
    return playlist, out, uris


def clear_twin(url: str) -> str:
    return re.sub(r"-k[0-9a-f]+", "", url.replace("/p/senc/", "/p/plain/")).split("?")[0]


def assert_decrypts_to_clear(segment_url: str, key: bytes, iv: bytes) -> None:
    encrypted = pmt_and_payload(get(segment_url).content)[1]
    clear = pmt_and_payload(get(clear_twin(segment_url)).content)[1]
    assert len(encrypted) == len(clear)
    for enc_pes, clear_pes in zip(encrypted, clear):
        enc_nals, clear_nals = nal_units(enc_pes), nal_units(clear_pes)
        assert len(enc_nals) == len(clear_nals)
        for enc, nal in zip(enc_nals, clear_nals):
            assert decrypt_nal(enc, key, iv) == nal


def continuity_errors(data: bytes, last: dict[int, int]) -> int:
    errors = 0
    for i in range(0, len(data), 188):
        packet = data[i : i + 188]
        assert packet[0] == 0x47
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        if (packet[3] >> 4) & 1:
            if pid in last and packet[3] & 0x0F != (last[pid] + 1) & 0x0F:
                errors += 1
            last[pid] = packet[3] & 0x0F
    return errors


# --------------------------------------------------------------------------- FINDING (fails now)


def test_emulation_prevention_growth_keeps_the_next_segments_continuity_counter():
    """Was a FINDING (correctness, medium): a SAMPLE-AES video segment can be one (or more) TS packets longer than
    the clear layout, because the emulation prevention reapplied to ciphertext grows a slice past its PES's
    adaptation stuffing. continuity_starts() counts clear packets, so the NEXT segment opened the stream PID with
    the counter the grown segment ended with: a repeated counter, which MPEG-2 TS (13818-1 2.4.3.3) defines as a
    duplicate packet a strict demuxer may drop. Here the crafted slice makes the first encrypted block's ciphertext
    16 zero bytes (7 escape bytes). Now the grown segment spreads one packet's payload over more packets
    (packets.add_continuity_packets), so its stream packets are as many as the clear layout's modulo 16: its
    last counter is the one before the next segment's first; and the PES still carries the slice intact (it
    decrypts, as players read it, to the clear one)."""
    key, iv = bytes(range(16)), (1).to_bytes(16, "big")
    block = bytes(a ^ b for a, b in zip(Cipher(algorithms.AES(key), modes.ECB()).decryptor().update(bytes(16)), iv))
    unit = bytes([0x65]) + b"\x11" * 31 + block + b"\x22" * (491 - 48)  # 3 clear packets, a 4th for the growth
    sample = len(unit).to_bytes(4, "big") + unit
    one = np.ones(1, bool)
    batch = SampleBatch(video_track(n=1), sample, np.array([len(sample)]), np.zeros(1, np.int64), np.zeros(1, np.int64),
                        np.full(1, 512, np.int64), one, 1)
    clear_packets = segment_size(batch.track, batch.sizes, batch.keyframes) // 188 - 2
    encrypted = mux_segment(batch, continuity_start=5, encryptor=SampleEncryptor(key, iv))
    packets = [encrypted[i : i + 188] for i in range(0, len(encrypted), 188)]
    stream = [p for p in packets if ((p[1] & 0x1F) << 8 | p[2]) == 0x100]
    assert len(stream) > clear_packets  # it did grow (else this test shows nothing)
    assert [p[3] & 0x0F for p in stream] == [(5 + i) % 16 for i in range(len(stream))]
    assert len(stream) % 16 == clear_packets % 16  # the next segment's counter (5 + clear_packets) follows on
    _, pes = pmt_and_payload(encrypted)
    (slice_,) = [n for n in nal_units(pes[0]) if n[0] & 0x1F == 5]
    assert decrypt_nal(slice_, key, iv) == unit


def test_finding_a_long_audio_specific_config_makes_every_audio_segment_a_500():
    """FINDING (robustness, medium): SAMPLE-AES puts the whole AudioSpecificConfig into the PMT's 'apad'
    registration descriptor, and the PMT must fit one TS packet (psi.psi_packet, "our tables are tiny").
    An AAC track whose esds carries an AudioSpecificConfig of about 136 bytes or more (the clear partner plays
    it; ffmpeg decodes it) makes every audio segment and HEAD of a SAMPLE-AES partner answer 500
    internal_error with a ValueError traceback ("PSI section does not fit one packet"; from 244 bytes
    "bytes must be in range(0, 256)" in pmt_stream). Repro on a server: audio_only with 150 zero bytes
    appended to its DecoderSpecificInfo. Expected: a coded 404 sample_aes_unsupported_codec (check_track)
    or a segment."""
    track = audio_track(asc=bytes((0x11, 0x90)) + bytes(150))
    batch = audio_batch(track, [200] * 10)
    assert len(mux_segment(batch)) % 188 == 0  # the clear segment is fine
    try:
        check_track(track)
    except SampleAesUnsupported:
        return
    assert len(mux_segment(batch, encryptor=SampleEncryptor(bytes(16), bytes(16)))) % 188 == 0


# --------------------------------------------------------------------------- held: sizes, validity


@pytest.mark.parametrize("entry", FIXTURES[:2] + ("video_only", "ladder_hi"))
def test_head_gives_get_length_and_counters_run_on_across_segments(origin, entry):
    _, segments, _ = keyed_segments(f"{origin.base}/p/senc/e/{entry}/hls/main/index.m3u8?token={token(entry)}")
    last: dict[int, int] = {}
    for url, _key in segments:
        body = get(url).content
        assert int(get(url, "HEAD").headers["content-length"]) == len(body)
        assert len(body) % 188 == 0 and continuity_errors(body, last) == 0
        assert pmt_stream(pmt_and_payload(body)[0])[0] == 0xDB


def test_a_head_after_the_first_is_answered_from_the_cache(origin):
    _, segments, _ = keyed_segments(f"{origin.base}/p/senc/e/ladder_hi/hls/main/index.m3u8?token={token('ladder_hi')}")
    url = segments[-1][0]
    get(url, "HEAD")
    assert get(url, "HEAD").headers["x-cache"] == "HIT"


# --------------------------------------------------------------------------- held: no clear copy


@pytest.mark.parametrize("path", ["cmaf/main/iframes.m3u8", "hls/main/iframes.m3u8", "mp4/main.mp4"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_no_clear_or_byte_range_representation(origin, path, method):
    answer = get(f"{origin.base}/p/senc/e/h264_baseline/{path}?token={token('h264_baseline')}", method,
                 headers={"Range": "bytes=0-999"})
    assert answer.status_code in (403, 404) and answer.headers["content-type"] == "application/json"


def test_an_unmarked_segment_url_is_refused(origin):
    answer = get(f"{origin.base}/p/senc/e/h264_baseline/hls/main/seg-1.ts?token={token('h264_baseline')}")
    assert answer.status_code == 404


@pytest.mark.parametrize("entry", ["h264_mp3", "h264_eac3"])
def test_unsupported_audio_answers_a_coded_404(origin, entry):
    for suffix in ("a1/index.m3u8", "a1/seg-1.ts"):
        answer = get(f"{origin.base}/p/senc/e/{entry}/hls/main/{suffix}?token={token(entry)}")
        assert answer.status_code == 404 and answer.json()["error"] in ("sample_aes_unsupported_codec", "not_found")
    assert "Traceback" not in origin.log()


def test_audio_only_entry_is_encrypted(origin):
    _, segments, _ = keyed_segments(f"{origin.base}/p/senc/e/audio_only/hls/main/a1/index.m3u8?token={token('audio_only')}")
    for url, (status, key, iv) in segments:
        assert status == 200
        enc = adts_frames(b"".join(pmt_and_payload(get(url).content)[1]))
        clear = adts_frames(b"".join(pmt_and_payload(get(clear_twin(url)).content)[1]))
        assert len(enc) == len(clear)
        for e, c in zip(enc, clear):
            end = 23 + 16 * audio_blocks(len(c) - 7)
            assert e[:23] == c[:23] and e[end:] == c[end:]
            assert Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor().update(e[23:end]) == c[23:end]


# --------------------------------------------------------------------------- held: keys


def test_keys_follow_the_access_rules(origin):
    entry = "h264_baseline"
    _, segments, uris = keyed_segments(f"{origin.base}/p/senc/e/{entry}/hls/main/index.m3u8?token={token(entry)}")
    assert len(uris) == 2 and [s[1][2][-1] for s in segments] == [1, 1, 3, 3]  # IV: the period's first segment
    for url, (status, key, iv) in segments:
        assert status == 200
        assert_decrypts_to_clear(url, key, iv)
    later = uris[1].split("?")[0]
    assert get(later).status_code == 403  # a preview viewer: period 0 only
    assert get(later).json()["error"] == "preview_only"
    assert get(f"{later}?token={token(entry, -3600)}").status_code == 403  # expired, past the clock skew
    assert get(f"{later}?token={token('h264_high_bframes')}").status_code == 403  # another entry's token


def test_preview_viewer_gets_its_cut_segment_encrypted_and_one_key(origin):
    _, segments, uris = keyed_segments(f"{origin.base}/p/senc/e/h264_baseline/hls/main/index.m3u8")
    assert len(uris) == 1 and len(segments) == 2 and "-p3" in segments[-1][0]
    for url, (status, key, iv) in segments:
        assert status == 200
        assert_decrypts_to_clear(url, key, iv)


def test_clip_segments_decrypt_with_the_clips_keys(origin):
    entry = "h264_baseline"
    _, segments, uris = keyed_segments(f"{origin.base}/p/senc/e/{entry}/clip-1-5/hls/main/index.m3u8?token={token(entry)}")
    assert uris and all("/clip-1-5/keys/" in u for u in uris)
    for url, (status, key, iv) in segments:
        assert status == 200
        assert_decrypts_to_clear(url, key, iv)


# --------------------------------------------------------------------------- held: reload flips


def test_a_reload_flipping_aes128_and_sample_aes_never_serves_the_other_modes_bytes(tmp_path):
    srv, config = make_origin(tmp_path, "aes-128")
    try:
        index = f"{srv.base}/p/senc/e/h264_baseline/hls/main/index.m3u8?token={token('h264_baseline')}"
        _, before, _ = keyed_segments(index)
        for _ in range(2):
            assert get(before[0][0]).status_code == 200  # cached
        config.write_text(config.read_text().replace('"aes-128"', '"sample-aes"'))
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(2)
        _, after, _ = keyed_segments(index)
        assert after[0][0] != before[0][0]  # the -k marker names the method
        assert get(before[0][0]).status_code == 404 and get(before[0][0], "HEAD").status_code == 404
        assert pmt_stream(pmt_and_payload(get(after[0][0]).content)[0])[0] == 0xDB
        config.write_text(config.read_text().replace('"sample-aes"', '"none"'))
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(2)
        assert get(after[0][0]).status_code == 404
    finally:
        srv.stop()


# --------------------------------------------------------------------------- held: the transform's edges


@pytest.mark.parametrize("length", [48, 49, 64, 160, 161, 208, 209, 210])
def test_slices_of_boundary_lengths_round_trip(length):
    key, iv = os.urandom(16), os.urandom(16)
    for first in (0x65, 0x41):
        nal = bytes([first]) + bytes((i * 37 + 1) % 251 + 4 for i in range(length - 1))
        out = SampleEncryptor(key, iv).nal_unit(nal)
        assert (out == nal) == (length <= 48)
        assert decrypt_nal(out, key, iv) == nal


@pytest.mark.parametrize("ciphertext", [bytes(16), os.urandom(14) + bytes(2), b"\x00\x00\x01" + os.urandom(13),
                                        b"\x03" + os.urandom(15), bytes(2) + b"\x03" * 14])
def test_start_code_emulation_in_ciphertext_is_escaped_and_removable(ciphertext):
    key, iv = os.urandom(16), os.urandom(16)
    block = bytes(a ^ b for a, b in zip(Cipher(algorithms.AES(key), modes.ECB()).decryptor().update(ciphertext), iv))
    for lead in (b"\x11" * 31, b"\x11" * 29 + b"\x00\x00"[:2]):
        for tail in (b"\x01" + b"\x55" * 20, b"\x00\x00\x03\x01" + b"\x55" * 20):
            nal = bytes([0x65]) + lead[:31] + block + tail
            if re.search(rb"\x00\x00[\x00-\x02]", nal):  # only valid byte streams: skip a clear-side emulation
                continue
            out = SampleEncryptor(key, iv).nal_unit(nal)
            assert not re.search(rb"\x00\x00[\x00-\x02]", out)
            assert decrypt_nal(out, key, iv) == nal


@pytest.mark.parametrize("raw", [31, 32, 33, 47, 48])
def test_adts_frames_of_boundary_sizes(raw):
    key, iv = os.urandom(16), os.urandom(16)
    frame = b"\xff\xf1" + bytes(5) + os.urandom(raw)
    out = SampleEncryptor(key, iv).adts_frames(np.frombuffer(frame, np.uint8), np.array([raw]), 7).tobytes()
    blocks = audio_blocks(raw)
    assert blocks == (0 if raw < 32 else (raw - 16) // 16)
    end = 23 + 16 * blocks
    assert out[:23] == frame[:23] and out[end:] == frame[end:]
    assert Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor().update(out[23:end]) == frame[23:end]


@pytest.mark.parametrize("extra", [1, 7, 15])
def test_continuity_packets_carry_the_same_pes_bytes_for_a_real_decoder(tmp_path, extra):
    """packets.add_continuity_packets on a real H.264 segment: ffmpeg decodes the spread segment to the same
    frames as the plain one, and its stream PID's counters run on without a gap (each packet once)."""
    import oracle
    from origin import local
    from packager.ts.packets import add_continuity_packets

    path = mf.fixture_path("h264_baseline")
    index = local.read_index_sync(path)
    keys = np.flatnonzero(index.video.keyframes)
    batch = local.read_batch_sync(path, index.video, int(keys[0]), int(keys[1]), 1)
    plain = mux_segment(batch)
    spread = add_continuity_packets(plain, 0x100, extra)
    assert len(spread) == len(plain) + extra * 188
    counters = [p[3] & 0x0F for p in (spread[i : i + 188] for i in range(0, len(spread), 188)) if ((p[1] & 0x1F) << 8 | p[2]) == 0x100]
    assert counters == [(counters[0] + i) % 16 for i in range(len(counters))]
    (tmp_path / "plain.ts").write_bytes(plain)
    (tmp_path / "spread.ts").write_bytes(spread)
    want = [f.md5 for f in oracle.framemd5(tmp_path / "plain.ts", "v:0")]
    assert want and [f.md5 for f in oracle.framemd5(tmp_path / "spread.ts", "v:0")] == want
