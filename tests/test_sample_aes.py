"""HLS SAMPLE-AES over MPEG-TS (docs/CONTENT_PROTECTION.md, "SAMPLE-AES"): real servers, real ffmpeg.

Partners over the same fixtures: ``senc`` (SAMPLE-AES, a token required, one key per entry), ``srot`` (the
same, keys rotated every 2 segments), ``plain`` (clear: the differential oracle). The pure transform (packager/ts/sample_aes.py) is checked
against an independent reading of Apple's "MPEG-2 Stream Encryption Format for HTTP Live Streaming".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import media_fixtures as mf
import oracle
from conftest import REPO
from protection_support import encrypting_origin, token_for
from packager.ts.sample_aes import SampleEncryptor

SECRET = "c3" * 32
FIXTURES = ("h264_baseline", "h264_high_bframes", "h264_ac3")
KEY_LINE = re.compile(r'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="([^"]+)",IV=0x([0-9a-f]{32}),KEYFORMAT="identity"$')


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    srv = encrypting_origin(tmp_path_factory, "sample-aes", {"senc": 0, "srot": 2}, FIXTURES, SECRET)
    yield srv
    srv.stop()


def token(entry: str, partner: str = "senc") -> str:
    return token_for(partner, entry)


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=60)


def media_urls(url: str, text: str) -> list[str]:
    return [urljoin(url, line) for line in text.splitlines() if line and not line.startswith("#")]


def keys_of(url: str, text: str) -> dict[int, tuple[bytes, bytes]]:
    """Segment number -> (the key its EXT-X-KEY names, fetched over HTTP; the IV it writes)."""
    out, current, n = {}, None, 0
    for line in text.splitlines():
        match = KEY_LINE.match(line)
        if match:
            current = get(urljoin(url, match[1])).content, bytes.fromhex(match[2])
        elif line and not line.startswith("#"):
            n += 1
            out[n] = current
    return out


# --------------------------------------------------------------------------- an independent TS reading


def pmt_and_payload(ts: bytes) -> tuple[bytes, list[bytes]]:
    """The PMT section of a one-stream segment and the payloads of its PES packets (headers stripped)."""
    assert len(ts) % 188 == 0
    pmt, pes, current = b"", [], None
    for i in range(0, len(ts), 188):
        packet = ts[i : i + 188]
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        start = packet[1] & 0x40
        control = (packet[3] >> 4) & 3
        body = packet[4:]
        if control & 2:
            body = body[1 + packet[4] :]
        if pid == 0x1000:
            pmt = body[1 + body[0] :]
        elif pid in (0x100, 0x101):
            if start:
                current = bytearray()
                pes.append(current)
            current += body
    return pmt, [bytes(p[9 + p[8] :]) for p in pes]


def pmt_stream(pmt: bytes) -> tuple[int, bytes]:
    """(stream_type, ES descriptors) of the PMT's one stream."""
    program_info = ((pmt[10] & 0x0F) << 8) | pmt[11]
    at = 12 + program_info
    es_info = ((pmt[at + 3] & 0x0F) << 8) | pmt[at + 4]
    return pmt[at], pmt[at + 5 : at + 5 + es_info]


def nal_units(stream: bytes) -> list[bytes]:
    return [n for n in re.split(rb"\x00\x00\x00\x01", stream) if n]


def unescape(nal: bytes) -> bytes:
    out, zeros, i = bytearray(), 0, 0
    while i < len(nal):
        b = nal[i]
        if zeros >= 2 and b == 3 and i + 1 < len(nal):
            zeros, i = 0, i + 1
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
        i += 1
    return bytes(out)


def decrypt_nal(nal: bytes, key: bytes, iv: bytes) -> bytes:
    """The spec's Listing, read as ffmpeg and hls.js do: remove emulation prevention, then type byte + 31 clear,
    then 16 encrypted and up to 144 clear while more than 16 remain."""
    data = bytearray(unescape(nal))
    if data[0] & 0x1F not in (1, 5) or len(nal) <= 48:
        return nal
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    pos = 32
    while pos < len(data):
        if len(data) - pos > 16:
            data[pos : pos + 16] = decryptor.update(bytes(data[pos : pos + 16]))
            pos += 16
        pos += min(144, len(data) - pos)
    return bytes(data)


def adts_frames(stream: bytes) -> list[bytes]:
    frames, pos = [], 0
    while pos < len(stream):
        assert stream[pos] == 0xFF and stream[pos + 1] & 0xF0 == 0xF0
        length = ((stream[pos + 3] & 3) << 11) | (stream[pos + 4] << 3) | (stream[pos + 5] >> 5)
        frames.append(stream[pos : pos + length])
        pos += length
    return frames


# --------------------------------------------------------------------------- playback


# ffmpeg decrypts SAMPLE-AES per demuxed packet, with the key and IV of the segment its HLS reader is in when
# the packet comes out (libavformat/hls.c). Its TS demuxer holds a video PES until the next one starts and its
# H.264 parser holds an access unit until the next one, so the last two access units of a segment come out
# while the reader is in the next segment: with a key and IV per period (written as IV=) that is harmless
# within a period, but after the entry's last segment there is no segment, and ffmpeg passes them on still
# encrypted. Those last frames are checked byte for byte by the differential tests below instead.
FFMPEG_UNDECRYPTED_TAIL = 2


@pytest.mark.parametrize("entry", ["h264_baseline", "h264_high_bframes"])
def test_ffmpeg_plays_sample_aes_hls_bit_exactly(origin, entry):
    """ffmpeg fetches the keys itself (token included) and decodes the video frames and the audio as the source."""
    master = f"{origin.base}/p/senc/e/{entry}/hls/master.m3u8?token={token(entry)}"
    ours = oracle.framemd5(master, "v:0")
    source = oracle.framemd5(mf.fixture_path(entry), "v:0")
    assert len(ours) == len(source) > 0
    mismatch = [i for i, (a, b) in enumerate(zip(source, ours)) if a.md5 != b.md5]
    # presentation order: with B-frames the last access units decoded are among the last 3 frames shown
    assert all(i >= len(source) - FFMPEG_UNDECRYPTED_TAIL - 1 for i in mismatch), f"differing frames: {mismatch} of {len(source)}"
    assert len(mismatch) <= FFMPEG_UNDECRYPTED_TAIL
    audio = oracle.framemd5(master, "a:0")
    match = oracle.audio_hashes_match(oracle.framemd5(mf.fixture_path(entry), "a:0"), audio)
    assert match, match.reason


def test_playlist_names_sample_aes_keys_every_two_segments_each_with_its_iv(origin):
    url = f"{origin.base}/p/srot/e/h264_baseline/hls/main/index.m3u8?token={token('h264_baseline', 'srot')}"
    text = get(url).text
    assert "#EXT-X-VERSION:5" in text and "AES-128" not in text
    keys = [KEY_LINE.match(line) for line in text.splitlines() if line.startswith("#EXT-X-KEY")]
    assert len(keys) == 2 and all(keys), text
    # the IV is the media sequence number of the key's first segment: 1, then 3
    assert [int(k[2], 16) for k in keys] == [1, 3] and keys[0][1] != keys[1][1]
    single = get(f"{origin.base}/p/senc/e/h264_baseline/hls/main/index.m3u8?token={token('h264_baseline')}").text
    assert [int(KEY_LINE.match(line)[2], 16) for line in single.splitlines() if line.startswith("#EXT-X-KEY")] == [1]


# --------------------------------------------------------------------------- signalling and bytes


@pytest.mark.parametrize("rendition, stream_type, clear_type", [("main", 0xDB, 0x1B), ("main/a1", 0xCF, 0x0F)])
def test_the_pmt_signals_sample_aes(origin, rendition, stream_type, clear_type):
    url = f"{origin.base}/p/senc/e/h264_baseline/hls/{rendition}/index.m3u8?token={token('h264_baseline')}"
    segment = get(media_urls(url, get(url).text)[0]).content
    found, descriptors = pmt_stream(pmt_and_payload(segment)[0])
    assert found == stream_type
    if stream_type == 0xDB:
        assert descriptors == b"\x0f\x04zavc"
    else:
        assert descriptors[:6] == b"\x0f\x04aacd"
        assert descriptors[6] == 0x05 and descriptors[8:16] == b"apadzaac"
        assert descriptors[16:18] == b"\x00\x00" and descriptors[19] == len(descriptors) - 20  # priming, setup length
    clear = get(f"{origin.base}/p/plain/e/h264_baseline/hls/{rendition}/seg-1.ts").content
    assert pmt_stream(pmt_and_payload(clear)[0])[0] == clear_type
    probed = oracle.probe_streams(media_urls(url, get(url).text)[0])  # ffmpeg reads the stream type as the codec
    assert [p.codec for p in probed] == ["h264" if stream_type == 0xDB else "aac"]


def test_video_segments_differ_from_the_clear_ones_exactly_where_the_spec_says(origin):
    url = f"{origin.base}/p/srot/e/h264_high_bframes/hls/main/index.m3u8?token={token('h264_high_bframes', 'srot')}"
    text = get(url).text
    keys = keys_of(url, text)
    slices = 0
    for n, segment_url in enumerate(media_urls(url, text), 1):
        body = get(segment_url).content
        assert int(httpx.head(segment_url, timeout=60).headers["content-length"]) == len(body)
        encrypted = pmt_and_payload(body)[1]
        clear = pmt_and_payload(get(f"{origin.base}/p/plain/e/h264_high_bframes/hls/main/seg-{n}.ts").content)[1]
        assert len(encrypted) == len(clear)
        for enc_pes, clear_pes in zip(encrypted, clear):
            enc_nals, clear_nals = nal_units(enc_pes), nal_units(clear_pes)
            assert len(enc_nals) == len(clear_nals)
            for enc, nal in zip(enc_nals, clear_nals):
                if nal[0] & 0x1F not in (1, 5) or len(nal) <= 48:
                    assert enc == nal
                    continue
                slices += 1
                assert enc[:32] == nal[:32] and enc != nal
                assert decrypt_nal(enc, *keys[n]) == nal
    assert slices > 100


def test_audio_segments_differ_from_the_clear_ones_exactly_where_the_spec_says(origin):
    url = f"{origin.base}/p/srot/e/h264_baseline/hls/main/a1/index.m3u8?token={token('h264_baseline', 'srot')}"
    text = get(url).text
    keys = keys_of(url, text)
    for n, segment_url in enumerate(media_urls(url, text), 1):
        encrypted = adts_frames(b"".join(pmt_and_payload(get(segment_url).content)[1]))
        clear = adts_frames(b"".join(pmt_and_payload(get(f"{origin.base}/p/plain/e/h264_baseline/hls/main/a1/seg-{n}.ts").content)[1]))
        assert len(encrypted) == len(clear) > 10
        for enc, frame in zip(encrypted, clear):
            assert len(enc) == len(frame) and enc[:7 + 16] == frame[:7 + 16]
            blocks = (len(frame) - 7 - 16) // 16
            end = 7 + 16 + 16 * blocks
            assert enc[end:] == frame[end:]
            decryptor = Cipher(algorithms.AES(keys[n][0]), modes.CBC(keys[n][1])).decryptor()
            assert decryptor.update(enc[23:end]) + decryptor.finalize() == frame[23:end]


@pytest.mark.parametrize("rendition", ["main", "main/a1"])
def test_head_states_the_length_get_sends(origin, rendition):
    """Audio HEADs are answered from the clear layout (encrypted in place); video's from the muxed bytes."""
    url = f"{origin.base}/p/srot/e/h264_high_bframes/hls/{rendition}/index.m3u8?token={token('h264_high_bframes', 'srot')}"
    for segment_url in media_urls(url, get(url).text):
        head = httpx.head(segment_url, timeout=60)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(get(segment_url).content)


# --------------------------------------------------------------------------- access and refusals


def test_no_key_without_a_token(origin):
    url = f"{origin.base}/p/senc/e/h264_baseline/hls/main/index.m3u8?token={token('h264_baseline')}"
    key_uri = KEY_LINE.match(next(l for l in get(url).text.splitlines() if l.startswith("#EXT-X-KEY")))[1]
    with_token = get(urljoin(url, key_uri))
    assert with_token.status_code == 200 and len(with_token.content) == 16
    bare = get(urljoin(url, key_uri).split("?")[0])
    assert bare.status_code == 403 and len(bare.content) != 16 and with_token.content not in bare.content


def test_an_ac3_rendition_is_refused_for_sample_aes(origin):
    base = f"{origin.base}/p/senc/e/h264_ac3/hls"
    response = get(f"{base}/main/a1/index.m3u8?token={token('h264_ac3')}")
    assert response.status_code == 404 and response.json()["error"] == "sample_aes_unsupported_codec"
    assert get(f"{base}/main/index.m3u8?token={token('h264_ac3')}").status_code == 200  # its H.264 video plays


def test_config_check_accepts_sample_aes(tmp_path):
    path = tmp_path / "vodgate.toml"
    path.write_text(f'[server]\nmedia_root = "{tmp_path}"\n[partners.demo]\nencryption = "sample-aes"\nkey_secrets = ["{SECRET}"]\n')
    result = subprocess.run([sys.executable, "-m", "cli.main", "config", "check", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    assert SECRET not in result.stderr + result.stdout


# --------------------------------------------------------------------------- the pure transform

KEY = bytes(range(16))
IV = (7).to_bytes(16, "big")


@pytest.mark.parametrize("length", [33, 48, 49, 64, 65, 208, 209, 500, 1601])
def test_a_slice_is_clear_but_one_block_in_ten_after_a_32_byte_leader(length):
    rng = np.random.default_rng(length)
    nal = bytes([0x65]) + bytes(rng.integers(4, 256, length - 1, dtype=np.uint8))  # no zeros: no escaping at all
    out = SampleEncryptor(KEY, IV).nal_unit(nal)
    expected = [pos for pos in range(32, length, 160) if length - pos > 16]  # the spec's Listing, read directly
    assert decrypt_nal(out, KEY, IV) == nal
    if not expected:
        assert out == nal
    if len(out) == length:  # no emulation prevention needed: every byte stays in place
        encrypted = {i for p in expected for i in range(p, p + 16)}
        assert all(out[i] == nal[i] for i in range(length) if i not in encrypted)
        # the CBC chain runs on across the encrypted blocks of one NAL unit, from the IV
        chained = Cipher(algorithms.AES(KEY), modes.CBC(IV)).encryptor().update(b"".join(nal[p : p + 16] for p in expected))
        assert b"".join(out[p : p + 16] for p in expected) == chained


def test_other_nal_units_stay_clear():
    enc = SampleEncryptor(KEY, IV)
    for header in (0x67, 0x68, 0x06, 0x09, 0x41 & 0xE0 | 2):
        nal = bytes([header]) + bytes(range(1, 200))
        assert enc.nal_unit(nal) == nal
    assert enc.nal_unit(bytes([0x41]) + bytes(range(1, 200))) != bytes([0x41]) + bytes(range(1, 200))


def test_emulation_prevention_is_removed_before_and_applied_after_encryption():
    enc = SampleEncryptor(KEY, IV)
    rbsp = bytearray([0x65]) + bytearray(range(1, 255)) * 4
    rbsp[40:44] = b"\x00\x00\x01\x07"  # in the first encrypted block
    rbsp[10:13] = b"\x00\x00\x02"  # in the clear leader
    escaped = bytes(rbsp).replace(b"\x00\x00\x01", b"\x00\x00\x03\x01").replace(b"\x00\x00\x02", b"\x00\x00\x03\x02")
    out = enc.nal_unit(escaped)
    assert not re.search(rb"\x00\x00[\x00-\x02]", out)  # no start code emulated
    assert decrypt_nal(out, KEY, IV) == escaped  # the NAL unit as the encoder wrote it, its own escapes kept
    assert out[:10] == escaped[:10] and out[10:15] == b"\x00\x00\x03\x03\x02"  # escaped once more
    for _ in range(200):  # ciphertext that emulates start codes gets emulation prevention bytes
        rng = np.random.default_rng(_)
        nal = bytes([0x41]) + bytes(rng.integers(1, 256, 3000, dtype=np.uint8))
        out = enc.nal_unit(nal)
        assert not re.search(rb"\x00\x00[\x00-\x02]", out)
        assert decrypt_nal(out, KEY, IV) == nal


def test_adts_frames_keep_header_and_16_bytes_clear_then_whole_blocks():
    sizes = np.array([10, 31, 32, 47, 48, 200, 371])
    rng = np.random.default_rng(1)
    frames = []
    for size in sizes.tolist():
        frames.append(bytes(7) + bytes(rng.integers(0, 256, size, dtype=np.uint8)))
    data = np.frombuffer(b"".join(frames), dtype=np.uint8)
    out = SampleEncryptor(KEY, IV).adts_frames(data, sizes, 7).tobytes()
    pos = 0
    for size, frame in zip(sizes.tolist(), frames):
        enc = out[pos : pos + 7 + size]
        blocks = 0 if size < 32 else (size - 16) // 16
        end = 23 + 16 * blocks
        assert enc[:23] == frame[:23] and enc[end:] == frame[end:]
        if blocks:
            assert enc[23:end] == Cipher(algorithms.AES(KEY), modes.CBC(IV)).encryptor().update(frame[23:end])
        else:
            assert enc == frame
        pos += 7 + size


def test_config_check_warns_about_rotated_sample_aes_keys(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    path = tmp_path / "vodgate.toml"
    path.write_text(f'[server]\nmedia_root = "{tmp_path}"\n[partners.s]\nencryption = "sample-aes"\n'
                    f'key_secrets = ["{"ab" * 32}"]\nkey_rotation_segments = 2\n')
    path.chmod(0o600)
    rotated = subprocess.run([sys.executable, "-m", "cli.main", "config", "check", str(path)], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert rotated.returncode == 0 and "rotates SAMPLE-AES keys every 2 segments" in rotated.stderr, rotated.stderr
    path.write_text(path.read_text().replace("key_rotation_segments = 2", "key_rotation_segments = 0"))
    single = subprocess.run([sys.executable, "-m", "cli.main", "config", "check", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert single.returncode == 0 and "SAMPLE-AES" not in single.stderr, single.stderr
