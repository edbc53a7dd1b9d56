"""SAMPLE-AES over fMP4: 'cbcs' common encryption (docs/CONTENT_PROTECTION.md, "SAMPLE-AES over fMP4 (cbcs)").

Real servers and ffmpeg's decryptor: ffmpeg's mov demuxer decrypts cbcs itself (``-decryption_key``), and its
HLS demuxer fetches the playlist's key and hands it over, so the decisive checks are decodes, frame by frame,
against the source. The box layout is read back here independently (ISO/IEC 23001-7 and 14496-12), and every
encrypted sample is decrypted by this file's own reading of the scheme and compared with the clear partner's.

Partners over the same fixtures: ``cenc`` (SAMPLE-AES, token required, one key per entry), ``crot`` (keys
rotated every 2 segments), ``plain`` (clear: the differential oracle).
"""

from __future__ import annotations

import re
import struct
import subprocess
from urllib.parse import urljoin

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import media_fixtures as mf
import oracle
from protection_support import encrypting_origin, token_for

SECRET = "c5" * 32
FIXTURES = ("h264_baseline", "h264_high_bframes", "h264_ac3", "hevc")
KEY_LINE = re.compile(r'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="([^"]+)",IV=0x([0-9a-f]{32}),KEYFORMAT="identity"$')
COMMON_SYSTEM_ID = bytes.fromhex("1077efecc0b24d02ace33c1e52e2fb4b")


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    srv = encrypting_origin(tmp_path_factory, "cbcs", {"cenc": 0, "crot": 2}, FIXTURES, SECRET)
    yield srv
    srv.stop()


def token(entry: str, partner: str = "cenc") -> str:
    return token_for(partner, entry)


def get(url: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, url, timeout=60)


def playlist(origin, partner: str, entry: str, rendition: str = "main") -> tuple[str, str]:
    url = f"{origin.base}/p/{partner}/e/{entry}/cmaf/{rendition}/index.m3u8?token={token(entry, partner)}"
    answer = get(url)
    assert answer.status_code == 200, answer.text
    return url, answer.text


def media_urls(url: str, text: str) -> list[str]:
    return [urljoin(url, line) for line in text.splitlines() if line and not line.startswith("#")]


def init_url(url: str, text: str) -> str:
    return urljoin(url, re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)[1])


def keys_of(url: str, text: str) -> dict[int, tuple[str, bytes, bytes]]:
    """Segment number -> (the kid of its EXT-X-KEY's URI, the key fetched over HTTP, the IV it writes)."""
    out, current, n = {}, None, 0
    for line in text.splitlines():
        match = KEY_LINE.match(line)
        if match:
            kid = re.search(r"keys/([0-9a-f]{16})\.key", match[1])[1]
            current = kid, get(urljoin(url, match[1])).content, bytes.fromhex(match[2])
        elif line and not line.startswith("#"):
            n += 1
            out[n] = current
    return out


# --------------------------------------------------------------------------- an independent box reading


def boxes(data: bytes, start: int = 0, end: int | None = None):
    """(fourcc, body start, box end) of the boxes in data[start:end]."""
    end = len(data) if end is None else end
    while start < end:
        size, kind = struct.unpack_from(">I4s", data, start)
        assert size >= 8 and start + size <= end, (kind, size)
        yield kind, start + 8, start + size
        start += size


def child(data: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> tuple[int, int]:
    """(body start, end) of the first box along ``path``; sample entries' own children are searched past
    their fixed fields (78 bytes for video, 28 for audio)."""
    for kind, body, stop in boxes(data, start, end):
        if kind == path[0]:
            if len(path) == 1:
                return body, stop
            skip = {b"stsd": 8, b"encv": 78, b"enca": 28}.get(kind, 0)
            return child(data, path[1:], body + skip, stop)
    raise AssertionError(f"no {path[0]!r} box")


def tenc_of(init: bytes, entry: bytes) -> tuple[int, int, bytes, bytes]:
    """(crypt, skip, KID, constant IV) of an init's tenc (version 1, Per_Sample_IV_Size 0)."""
    body, _ = child(init, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", entry, b"sinf", b"schi", b"tenc"])
    version = init[body]
    assert version == 1
    pattern, protected, iv_size, kid = init[body + 5], init[body + 6], init[body + 7], init[body + 8 : body + 24]
    assert protected == 1 and iv_size == 0 and init[body + 24] == 16
    return pattern >> 4, pattern & 15, kid, init[body + 25 : body + 41]


def fragment(segment: bytes, encrypted: bool = True) -> dict:
    """What a cbcs reader needs from one .m4s: sample sizes and data; encrypted, the seig entry and senc's
    subsamples (saio checked to point at them)."""
    moof, moof_end = child(segment, [b"moof"])
    moof_start = moof - 8
    traf, traf_end = child(segment, [b"moof", b"traf"])
    found = {kind: (body, stop) for kind, body, stop in boxes(segment, traf, traf_end)}
    body, _ = found[b"trun"]
    flags = int.from_bytes(segment[body + 1 : body + 4], "big")
    count, data_offset = struct.unpack_from(">Ii", segment, body + 4)
    fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit]
    sizes = [struct.unpack_from(">I", segment, body + 12 + 4 * (i * len(fields) + fields.index(0x200)))[0] for i in range(count)]
    data = segment[moof_start + data_offset : moof_start + data_offset + sum(sizes)]
    assert moof_end + 8 == moof_start + data_offset  # mdat right after the moof
    if not encrypted:
        assert not {b"senc", b"sgpd", b"sbgp", b"saiz", b"saio"} & set(found)
        return {"sizes": sizes, "data": data}
    body, _ = found[b"sgpd"]
    assert segment[body + 4 : body + 8] == b"seig" and segment[body] == 1  # version 1, default_length
    seig = segment[body + 16 : body + 16 + 37]
    body, stop = found[b"senc"]
    senc_flags = int.from_bytes(segment[body + 1 : body + 4], "big")
    assert struct.unpack_from(">I", segment, body + 4)[0] == count
    subsamples, at = [], body + 8
    if senc_flags & 2:
        saio, _ = found[b"saio"]
        assert struct.unpack_from(">II", segment, saio + 4) == (1, at - moof_start)  # saio points at senc's first entry
        for _ in range(count):
            n = struct.unpack_from(">H", segment, at)[0]
            subsamples.append([struct.unpack_from(">HI", segment, at + 2 + 6 * i) for i in range(n)])
            at += 2 + 6 * n
    assert at == stop
    body, _ = found[b"sbgp"]
    assert segment[body + 4 : body + 8] == b"seig" and struct.unpack_from(">III", segment, body + 8) == (1, count, 0x10001)
    return {"sizes": sizes, "seig": seig, "subsamples": subsamples, "data": data}


def decrypt_sample(sample: bytes, subsamples: list[tuple[int, int]], key: bytes, iv: bytes, crypt: int, skip: int) -> bytes:
    """23001-7 'cbcs' read independently: per protected range, CBC from the constant IV over its crypt blocks
    (crypt/skip pattern; 0:0 = every block), a partial last block clear."""
    out, at = bytearray(sample), 0
    ranges = [(clear, protected) for clear, protected in subsamples] or [(0, len(sample))]
    for clear, protected in ranges:
        at += clear
        step = 16 * (crypt + skip) if crypt else 16
        blocks = [at + i for i in range(0, protected - protected % 16, step)]
        if crypt > 1:
            raise AssertionError("only 1-block crypt runs here")
        if blocks:
            cipher = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
            clear_blocks = cipher.update(b"".join(sample[b : b + 16] for b in blocks))
            for i, b in enumerate(blocks):
                out[b : b + 16] = clear_blocks[16 * i : 16 * i + 16]
        at += protected
    assert at == len(sample)
    return bytes(out)


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    out, at = [], 0
    for size in sizes:
        out.append(data[at : at + size])
        at += size
    return out


# --------------------------------------------------------------------------- ffmpeg decodes it


@pytest.mark.parametrize("entry", ["h264_baseline", "h264_high_bframes"])
def test_ffmpeg_plays_cbcs_hls_bit_exactly(origin, entry):
    """ffmpeg's HLS demuxer fetches the key (token included) and its mov demuxer decrypts cbcs: every video
    frame and the audio decode as the source's."""
    master = f"{origin.base}/p/cenc/e/{entry}/cmaf/master.m3u8?token={token(entry)}"
    assert oracle.video_hashes(master) == oracle.video_hashes(mf.fixture_path(entry))
    match = oracle.audio_hashes_match(oracle.framemd5(mf.fixture_path(entry), "a:0"), oracle.framemd5(master, "a:0"))
    assert match, match


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_init_and_segments_decode_only_with_the_served_key(origin, kind, tmp_path):
    """init + every segment as one file: ffmpeg's mov demuxer decrypts it with the key the key route serves to
    the frames of the source, and decodes none of them with another key (the samples really are encrypted)."""
    url, text = playlist(origin, "cenc", "h264_baseline", "main" if kind == "video" else "main/a1")
    file = tmp_path / "whole.mp4"
    file.write_bytes(get(init_url(url, text)).content + b"".join(get(u).content for u in media_urls(url, text)))
    (key_hex,) = {k[1].hex() for k in keys_of(url, text).values()}
    stream = "v:0" if kind == "video" else "a:0"
    source = [h.md5 for h in oracle.framemd5(mf.fixture_path("h264_baseline"), stream)]
    clear_url, clear_text = playlist(origin, "plain", "h264_baseline", "main" if kind == "video" else "main/a1")
    clear_file = tmp_path / "clear.mp4"
    clear_file.write_bytes(get(init_url(clear_url, clear_text)).content + b"".join(get(u).content for u in media_urls(clear_url, clear_text)))
    decoded = [h.md5 for h in oracle.framemd5(file, stream, extra_input_args=["-decryption_key", key_hex])]
    assert decoded == [h.md5 for h in oracle.framemd5(clear_file, stream)]
    if kind == "video":
        assert decoded == source
    wrong = subprocess.run([oracle.ffmpeg_exe(), "-v", "quiet", "-decryption_key", "00" * 16, "-i", str(file), "-map", "0:0",
                            "-f", "framemd5", "-"], capture_output=True, text=True).stdout
    assert not set(decoded) & {line.rsplit(",", 1)[-1].strip() for line in wrong.splitlines() if not line.startswith("#")}


# --------------------------------------------------------------------------- the boxes, read independently


@pytest.mark.parametrize("rendition,entry_type,original,pattern", [
    ("main", b"encv", b"avc1", (1, 9)), ("main/a1", b"enca", b"mp4a", (0, 0))])
def test_init_declares_cbcs_with_the_first_key(origin, rendition, entry_type, original, pattern):
    url, text = playlist(origin, "crot", "h264_baseline", rendition)
    init = get(init_url(url, text)).content
    stsd, _ = child(init, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"])
    assert init[stsd + 12 : stsd + 16] == entry_type  # the one sample entry
    sinf = [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", entry_type, b"sinf"]
    frma, _ = child(init, sinf + [b"frma"])
    assert init[frma : frma + 4] == original
    schm, _ = child(init, sinf + [b"schm"])
    assert init[schm + 4 : schm + 12] == b"cbcs" + struct.pack(">I", 0x10000)
    crypt, skip, kid, iv = tenc_of(init, entry_type)
    assert (crypt, skip) == pattern
    first_kid, _, first_iv = keys_of(url, text)[1]
    assert kid.hex()[:16] == first_kid and iv == first_iv  # the kid of key URLs is the KID's first half
    pssh, _ = child(init, [b"moov", b"pssh"])
    assert init[pssh] == 1 and init[pssh + 4 : pssh + 20] == COMMON_SYSTEM_ID
    assert struct.unpack_from(">I", init, pssh + 20)[0] == 1 and init[pssh + 24 : pssh + 40] == kid


@pytest.mark.parametrize("rendition", ["main", "main/a1"])
def test_every_sample_decrypts_to_the_clear_one_with_rotated_keys(origin, rendition):
    """Each segment names its key in a seig group (KID, pattern, IV); decrypting every sample by this file's
    reading of cbcs with the key its playlist's EXT-X-KEY serves gives the clear partner's samples; keys change
    every 2 segments; video leaves each NAL unit's length, header and leader clear."""
    url, text = playlist(origin, "crot", "h264_high_bframes", rendition)
    clear_url, clear_text = playlist(origin, "plain", "h264_high_bframes", rendition)
    keys = keys_of(url, text)
    init = get(init_url(url, text)).content
    crypt, skip, _, _ = tenc_of(init, b"encv" if rendition == "main" else b"enca")
    listed, clear_listed = media_urls(url, text), media_urls(clear_url, clear_text)
    assert len(listed) == len(clear_listed) >= 4
    kids = set()
    for n, (u, cu) in enumerate(zip(listed, clear_listed), 1):
        kid, key, iv = keys[n]
        assert kid == keys[1 + (n - 1) // 2 * 2][0]  # the key of the period's first segment
        seg, clear = fragment(get(u).content), fragment(get(cu).content, encrypted=False)
        assert seg["seig"][1] == crypt << 4 | skip and seg["seig"][4:20].hex()[:16] == kid and seg["seig"][21:37] == iv
        kids.add(kid)
        assert seg["sizes"] == clear["sizes"]
        samples = split(seg["data"], seg["sizes"])
        expected = split(clear["data"], clear["sizes"])
        assert any(a != b for a, b in zip(samples, expected))  # encrypted
        for i, (sample, want) in enumerate(zip(samples, expected)):
            subs = seg["subsamples"][i] if seg["subsamples"] else []
            if subs:
                assert sum(c + p for c, p in subs) == len(sample) and all(p % 16 == 0 for _, p in subs)
                assert all(c >= 4 + 32 or p == 0 for c, p in subs)  # the length, the NAL header and 31 more bytes clear
            assert decrypt_sample(sample, subs, key, iv, crypt, skip) == want, (n, i)
    assert len(kids) == -(-len(listed) // 2)


def test_head_tells_the_size_get_sends(origin):
    for rendition in ("main", "main/a1"):
        url, text = playlist(origin, "crot", "h264_baseline", rendition)
        for u in media_urls(url, text)[:3] + [init_url(url, text)]:
            body = get(u).content
            assert int(get(u, "HEAD").headers["content-length"]) == len(body)


def test_codecs_cbcs_does_not_cover_are_refused_and_left_out_of_masters(origin):
    """HEVC and AC-3 renditions answer 404 sample_aes_unsupported_codec over /cmaf/ as over /hls/; masters
    list only what plays (an HEVC-only entry's master is that 404 itself)."""
    for entry, rendition in (("hevc", "main"), ("h264_ac3", "main/a1")):
        for fmt in ("cmaf", "hls"):
            answer = get(f"{origin.base}/p/cenc/e/{entry}/{fmt}/{rendition}/index.m3u8?token={token(entry)}")
            assert answer.status_code == 404 and answer.json()["error"] in ("sample_aes_unsupported_codec", "hevc_needs_cmaf")
    hevc = get(f"{origin.base}/p/cenc/e/hevc/cmaf/master.m3u8?token={token('hevc')}")
    assert hevc.status_code == 404 and hevc.json()["error"] == "sample_aes_unsupported_codec"
    for fmt in ("cmaf", "hls"):
        master = get(f"{origin.base}/p/cenc/e/h264_ac3/{fmt}/master.m3u8?token={token('h264_ac3')}")
        assert master.status_code == 200 and "ac-3" not in master.text and "a1/index.m3u8" not in master.text, master.text
        assert "main/index.m3u8" in master.text
