"""Attack review of HLS AES-128 keys and clips by URL (commit b030430): real origins and edges.

Findings (each test named ``test_finding_*`` fails until it is fixed; its docstring says what it shows):

* F1 clip segments are encrypted with the *entry's* period keys by *clip* numbering, so the period-0 key
  that every preview viewer gets decrypts the first segments of any clip, i.e. content anywhere in the entry;
* F2 an edge (and any CDN: segments are ``immutable`` for a year) keeps serving clear segments of a partner
  after a SIGHUP switched it to AES-128, under the very URLs the new encrypted playlists list; F2b the same root
  makes the documented master-secret rotation serve old ciphertext next to playlists naming the new keys;
* F3 a clip-pinned token is refused every key (``clip_not_allowed``): encrypted clips cannot be played with
  the token the docs describe for them;
* F4 (product) an encrypted partner's progressive MP4 is served clear and publicly cacheable for a year.

The rest pin properties that held under attack: keys refused without a valid token, for another entry or
partner, past a preview, through odd spellings, via an edge and with two workers; keys never stored; clips
with odd values answer clean 400/404; a pinned token never widens; a preview caps a clip in every spelling.
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

import media_fixtures as mf
from auth.content_keys import key_id
from auth.tokens import sign_native
from conftest import ServerProcess
from test_content_protection import (  # the protected partners and the helpers to read what they serve
    ENC_PREV_PARTNERS, FIXTURE, KEY_LINE, SECRET, TOKEN_KEY, absolute, decrypt, segment_urls,
)

# FIXTURE: 8 s, GOP 2 s; 2 s segments: 4 segments, keys rotated every 2 (2 periods)
EDGE_SECRET = "attack-edge-secret-0123456789"
PARTNERS = ENC_PREV_PARTNERS
FLIP_CLEAR = '[partners.flip]\nencryption = "none"\n'
FLIP_AES = f'[partners.flip]\nencryption = "aes-128"\nkey_secrets = ["{SECRET}"]\n'


def kid(partner: str, period: int, entry: str = "e1") -> str:
    return key_id(bytes.fromhex(SECRET), partner, entry, period)


def token(partner: str, entry: str = "e1", ttl: int = 600, clip: str | None = None, key: str = TOKEN_KEY) -> str:
    return sign_native("k1", bytes.fromhex(key), f"/p/{partner}/e/{entry}", int(time.time()) + ttl, clip=clip)


def is_ts(body: bytes) -> bool:
    return len(body) > 0 and len(body) % 188 == 0 and all(body[i] == 0x47 for i in range(0, len(body), 188))


def first_segment_url(playlist_url: str, text: str) -> str:
    """The first segment URI the playlist lists (an encrypted partner's carry a -k marker), made absolute."""
    return segment_urls(playlist_url, text)[0]


def first_key_url(playlist_url: str, text: str) -> str:
    found = KEY_LINE.search(text)
    assert found, text
    return absolute(playlist_url, found[1])


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("attack-protection-library")
    for partner in ("enc", "prev", "flip"):
        for entry in ("e1", "e2"):
            folder = root / partner / entry
            folder.mkdir(parents=True)
            shutil.copyfile(mf.fixture_path(FIXTURE), folder / "main.mp4")
    return root


def _origin_toml(library: Path, extra: str = "") -> str:
    return (f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n'
            + extra + PARTNERS)


@pytest.fixture(scope="module")
def nodes(library, tmp_path_factory):
    """origin (1 worker, cache on), origin2 (2 workers, cache off), edge (2 workers, in front of origin)."""
    tmp = tmp_path_factory.mktemp("attack-protection")
    (tmp / "o1.toml").write_text(_origin_toml(library))
    (tmp / "o2.toml").write_text(_origin_toml(library, "[cache]\nenabled = false\n"))
    (tmp / "edge.toml").write_text(f'[edge]\nhealth_interval = 0\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n' + PARTNERS)
    procs = {
        "origin": ServerProcess(["--config", str(tmp / "o1.toml"), "--workers", "1"], tmp / "o1.log"),
        "origin2": ServerProcess(["--config", str(tmp / "o2.toml"), "--workers", "2"], tmp / "o2.log"),
    }
    procs["edge"] = ServerProcess(["--role", "edge", "--config", str(tmp / "edge.toml"), "--upstream", procs["origin"].base,
                                   "--workers", "2"], tmp / "edge.log")
    yield procs
    for proc in procs.values():
        proc.stop()


NODES = ["origin", "origin2", "edge"]


# --------------------------------------------------------------------------- findings


@pytest.mark.parametrize("node", NODES)
def test_finding_F1_a_preview_viewers_key_decrypts_a_clip_past_its_preview(nodes, node):
    """F1 (high). A clip's segments are numbered from 1 and encrypted with the entry's key of *that number's*
    period (and the same sequence-number IV), so clip-4-8's seg-1 (entry seconds 4-6) is encrypted with the
    entry's period-0 key, which every preview viewer of the entry is given (its preview plays segment 1).
    The preview-only key rule ("a preview viewer gets only the keys of periods that begin inside its preview")
    is thereby void: a preview viewer decrypts any copied clip segment (they are public, immutable objects)
    of content past its preview. It also reuses (key, IV) across different plaintexts (entry seg-n vs every
    clip's seg-n). Fix: derive clip keys from the clip too (info "...|P|E|clip-a-b|p", served only to viewers
    the clip is granted to), or keep the entry's numbering for keys and IVs (EXT-X-MEDIA-SEQUENCE and
    period of the entry segment the clip segment starts in)."""
    base = nodes[node].base
    playlist_url = f"{base}/p/prev/e/e1/clip-4-8/hls/main/index.m3u8?token={token('prev')}"
    listed = httpx.get(playlist_url, timeout=30)
    assert listed.status_code == 200
    segment = httpx.get(first_segment_url(playlist_url, listed.text), timeout=30)
    assert segment.status_code == 200
    # the preview viewer (no token) asks for the key the clip's playlist names (token stripped), and for the
    # entry's period-0 key, which its own preview is given
    for key_url in (first_key_url(playlist_url, listed.text).split("?")[0], f"{base}/p/prev/e/e1/keys/{kid('prev', 0)}.key"):
        as_preview = httpx.get(key_url, timeout=30)
        leaked = False
        if as_preview.status_code == 200:
            try:
                leaked = is_ts(decrypt(segment.content, as_preview.content, 1))
            except ValueError:
                leaked = False
        assert not leaked, f"a 3 s preview viewer's key {key_url} decrypts entry seconds 4-6 (clip-4-8 seg-1)"


def test_finding_F2_an_edge_serves_clear_segments_after_encryption_is_switched_on(library, tmp_path):
    """F2 (medium). Switching a partner to AES-128 by SIGHUP changes what a segment URL's bytes are, but not the
    URL: the origin's own caches and ETags follow (protection tag), an edge that cached the clear segment keeps
    answering it (X-Cache HIT, the old ETag) next to the new playlists' EXT-X-KEY, and so would any CDN, since
    segments are sent `immutable, max-age=31536000`. Clear copies of the now-protected media stay served, and
    players decrypting them fail until someone purges. Fix: make the protection part of segment URLs (e.g. a
    `k{first kid}` query or folder, as -p markers are), or purge the partner's surrogate key on a flip and say
    so in docs/CONTENT_PROTECTION.md; at least document that an edge/CDN purge is required."""
    config = tmp_path / "flip.toml"
    config.write_text(_origin_toml(library, FLIP_CLEAR))
    origin = ServerProcess(["--config", str(config), "--workers", "1"], tmp_path / "flip.log")
    edge_config = tmp_path / "edge.toml"
    edge_config.write_text(f'[edge]\nhealth_interval = 0\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n' + FLIP_CLEAR + PARTNERS)
    edge = ServerProcess(["--role", "edge", "--config", str(edge_config), "--upstream", origin.base, "--workers", "1"],
                         tmp_path / "edge.log")
    try:
        url = "/p/flip/e/e1/hls/main/seg-1.ts"
        clear = httpx.get(edge.base + url, timeout=30)
        assert clear.status_code == 200 and is_ts(clear.content)
        config.write_text(_origin_toml(library, FLIP_AES))
        origin.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while "EXT-X-KEY" not in httpx.get(origin.base + "/p/flip/e/e1/hls/main/index.m3u8", timeout=30).text:
            assert time.monotonic() < deadline, "the reload did not switch encryption on"
            time.sleep(0.2)
        playlist_url = edge.base + "/p/flip/e/e1/hls/main/index.m3u8"
        text = httpx.get(playlist_url, timeout=30).text
        assert "EXT-X-KEY" in text
        # what the new playlist lists is a new object (-k marker): no edge or CDN copy of the clear one can answer it
        listed = first_segment_url(playlist_url, text)
        assert listed != edge.base + url
        after = httpx.get(listed, timeout=30)
        key = httpx.get(first_key_url(playlist_url, text), timeout=30).content
        assert after.content != clear.content and decrypt(after.content, key, 1) == clear.content
    finally:
        edge.stop()
        origin.stop()


@pytest.mark.parametrize("node", NODES)
def test_finding_F3_a_clip_pinned_token_gets_the_key_its_clip_names(nodes, node):
    """F3 (medium, availability). Key URIs are entry-level (/p/P/e/E/keys/K.key) and check_clip(None, grant)
    refuses a pinned token anything outside a clip folder, so a token pinned with `--clip` plays the clip's
    playlist and segments but gets 403 clip_not_allowed for every key: encrypted clips cannot be played by
    the very tokens the docs describe for them. Fix (without widening): accept a key request from a pinned
    token only for kids of periods its clip uses (or serve clip keys under the clip folder, see F1)."""
    base, pinned = nodes[node].base, token("enc", clip="0-4")
    playlist_url = f"{base}/p/enc/e/e1/clip-0-4/hls/main/index.m3u8?token={pinned}"
    listed = httpx.get(playlist_url, timeout=30)
    assert listed.status_code == 200
    key = httpx.get(first_key_url(playlist_url, listed.text), timeout=30)
    assert key.status_code == 200, key.text
    segment = httpx.get(first_segment_url(playlist_url, listed.text), timeout=30)
    assert is_ts(decrypt(segment.content, key.content, 1))


@pytest.mark.parametrize("node", ["origin", "edge"])
def test_finding_F4_an_encrypted_partners_progressive_mp4_is_not_a_public_clear_copy(nodes, node):
    """F4 (product decision, medium). docs/CONTENT_PROTECTION.md promises "a copied segment or playlist is useless
    without a key", yet /mp4/{flavor}.mp4 of an AES-128 partner is the whole clear file, `public, immutable,
    max-age=31536000`: every CDN copy is a clear copy of the protected media, and any token for the entry
    fetches it without ever touching a key. An operator turning encryption on will expect progressive
    download to be off. Suggest: refuse /mp4/ (403/404 `progressive_disabled`) for encrypted partners unless an
    explicit `progressive = true` opts in, with `vodgate config check` warning about that combination."""
    answer = httpx.get(f"{nodes[node].base}/p/enc/e/e1/mp4/main.mp4?token={token('enc')}", timeout=30)
    clear_and_public = answer.status_code == 200 and answer.content[4:8] == b"ftyp" and "public" in answer.headers.get(
        "cache-control", "")
    assert not clear_and_public


# --------------------------------------------------------------------------- properties that held


def _no_key(answer: httpx.Response) -> bool:
    return answer.status_code in (403, 404) and answer.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("node", NODES)
def test_keys_are_refused_without_a_valid_token_for_this_entry(nodes, node):
    base = nodes[node].base
    forged = token("enc")[:-2] + ("AA" if not token("enc").endswith("AA") else "BB")
    wrong_key = token("enc", key="ff" * 16)
    for k in (kid("enc", 0), kid("enc", 1)):
        url = f"{base}/p/enc/e/e1/keys/{k}.key"
        for query in ("", f"?token={forged}", f"?token={wrong_key}", f"?token={token('enc', ttl=-600)}",
                      f"?token={token('enc', 'e2')}", f"?token={token('prev')}"):
            assert _no_key(httpx.get(url + query, timeout=30)), query
            assert httpx.head(url + query, timeout=30).status_code in (403, 404)
        good = httpx.get(f"{url}?token={token('enc')}", timeout=30)
        assert good.status_code == 200 and len(good.content) == 16
        assert good.headers["cache-control"] == "no-store, private"
        assert "etag" not in good.headers and "last-modified" not in good.headers


@pytest.mark.parametrize("node", NODES)
def test_keys_of_other_entries_partners_and_odd_spellings_are_not_found(nodes, node):
    base, t = nodes[node].base, token("enc")
    k1 = kid("enc", 1)
    for path in (f"/p/enc/e/e2/keys/{k1}.key", f"/p/enc/e/e1/keys/{kid('prev', 1)}.key",
                 f"/p/enc/e/e1/keys/{k1.upper()}.key", f"/p/enc/e/e1/keys/{k1}.KEY", f"/p/enc/e/e1/keys/{k1}.key/",
                 f"/p/enc/e/e1/keys/{k1}", f"/p/enc/e/e1/keys/{k1}0.key", f"/p/enc/e/e1/clip-0-8/keys/{k1}.key",
                 f"/p/enc/e/e1/hls/keys/{k1}.key", f"/p/enc/e/e1/keys/{kid('enc', 2)}.key"):
        answer = httpx.get(f"{base}{path}?token={t}", timeout=30)
        assert answer.status_code in (400, 403, 404) and len(answer.content) != 16, path  # e2: the token is e1's


@pytest.mark.parametrize("node", NODES)
def test_a_preview_viewer_gets_no_key_past_its_preview_in_any_spelling(nodes, node):
    base, k1 = nodes[node].base, kid("prev", 1)
    for path in (f"/p/prev/e/e1/keys/{k1}.key", f"/p/prev/e/e1/keys/%63{k1[1:]}.key", f"/p/prev/e/e1/keys/{k1}.key?x=1"):
        answer = httpx.get(base + path, timeout=30)
        assert answer.status_code == 403 and b"preview_only" in answer.content, path
    assert httpx.get(f"{base}/p/prev/e/e1/keys/{k1}.key", headers={"Range": "bytes=0-3"}, timeout=30).status_code == 403
    assert httpx.get(f"{base}/p/prev/e/e1/keys/{k1}.key?token={token('prev')}", timeout=30).status_code == 200
    # a key served to a token holder is not remembered for the next viewer (edge, hot lane, cache)
    assert httpx.get(f"{base}/p/prev/e/e1/keys/{k1}.key", timeout=30).status_code == 403


@pytest.mark.parametrize("node", NODES)
def test_odd_clips_answer_clean_errors(nodes, node):
    base, t = nodes[node].base, token("enc")
    cases = {"clip-99999999-1": 400, "clip-5-5": 400, "clip-8-4": 400, "clip-1e3-2": 400, "clip--1-2": 400,
             "clip-nan-2": 400, "clip-1.0001-2": 400, "clip-": 400, "clip-1-2-3": 400, "clip-%D9%A1-2": 400,
             "clip-100-200": 404, "clip-8-9": 404, "clip-9999999-9999999.999": 404}
    for clip, status in cases.items():
        for fmt, name in (("hls", "index.m3u8"), ("cmaf", "main/seg-1.m4s"), ("mp4", "main.mp4")):
            rest = name if fmt != "hls" else f"main/{name}"
            answer = httpx.get(f"{base}/p/enc/e/e1/{clip}/{fmt}/{rest}?token={t}", timeout=30)
            # an encrypted partner serves no progressive MP4 at all (403 progressive_clear), clipped or not
            expected = 403 if fmt == "mp4" and status == 404 else status
            assert answer.status_code == expected, (clip, fmt, answer.text)
            assert answer.headers["content-type"].startswith("application/json")
    assert "Traceback" not in nodes[node].log()


@pytest.mark.parametrize("node", NODES)
def test_a_pinned_token_never_widens(nodes, node):
    base, pinned = nodes[node].base, token("enc", clip="2-6")
    ok = httpx.get(f"{base}/p/enc/e/e1/clip-2-6/hls/main/index.m3u8?token={pinned}", timeout=30)
    assert ok.status_code == 200
    for path in ("hls/main/index.m3u8", "hls/master.m3u8", "hls/main/seg-1.ts", "mp4/main.mp4", "clip-0-6/hls/main/index.m3u8",
                 "clip-2-8/hls/main/seg-1.ts", "clip-1.999-6/mp4/main.mp4", "clip-2-6.001/hls/main/index.m3u8",
                 "clip-0-2/cmaf/main/init.mp4", f"keys/{kid('enc', 1)}.key"):
        answer = httpx.get(f"{base}/p/enc/e/e1/{path}?token={pinned}", timeout=30)
        assert answer.status_code == 403 and b"clip_not_allowed" in answer.content, path
    for spelling in ("clip-02-6", "clip-2.000-6.0", "clip-3-5"):  # the same or a narrower clip: allowed
        assert httpx.get(f"{base}/p/enc/e/e1/{spelling}/hls/main/index.m3u8?token={pinned}", timeout=30).status_code == 200


@pytest.mark.parametrize("node", NODES)
def test_a_preview_caps_every_clip_spelling(nodes, node):
    base = nodes[node].base
    for clip in ("clip-2-8", "clip-2.9-8", "clip-0-8", "clip-02.900-8"):
        text = httpx.get(f"{base}/p/prev/e/e1/{clip}/hls/main/index.m3u8", timeout=30).text
        segments = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert segments and all(re.fullmatch(r"seg-\d+(-p3)?-k[0-9a-f]{8}\.ts", s) for s in segments), (clip, text)
        assert sum(float(x) for x in re.findall(r"#EXTINF:([0-9.]+)", text)) <= 3.0
    for clip in ("clip-3-8", "clip-4-8", "clip-3.000-4"):
        assert httpx.get(f"{base}/p/prev/e/e1/{clip}/hls/main/index.m3u8", timeout=30).status_code == 403
        assert httpx.get(f"{base}/p/prev/e/e1/{clip}/mp4/main.mp4", timeout=30).status_code == 403
    text = httpx.get(f"{base}/p/prev/e/e1/clip-2-8/hls/main/index.m3u8", timeout=30).text
    cut = next(line for line in text.splitlines() if "-p3" in line)
    unmarked = cut.replace("-p3", "")  # the cut segment without its preview marker
    assert httpx.get(f"{base}/p/prev/e/e1/clip-2-8/hls/main/{unmarked}", timeout=30).status_code == 403


@pytest.mark.parametrize("node", NODES)
def test_no_iframe_playlists_for_encrypted_partners(nodes, node):
    base, t = nodes[node].base, token("enc")
    for prefix in ("", "clip-0-8/"):
        master = httpx.get(f"{base}/p/enc/e/e1/{prefix}hls/master.m3u8?token={t}", timeout=30).text
        assert "I-FRAME" not in master
        for fmt in ("hls", "cmaf"):
            assert httpx.get(f"{base}/p/enc/e/e1/{prefix}{fmt}/main/iframes.m3u8?token={t}", timeout=30).status_code == 404


def test_logs_hold_no_key_bytes_or_tokens(nodes):
    key = httpx.get(f"{nodes['edge'].base}/p/enc/e/e1/keys/{kid('enc', 0)}.key?token={token('enc')}", timeout=30).content
    assert len(key) == 16
    time.sleep(0.5)
    for proc in nodes.values():
        text = proc.log_path.read_bytes()
        assert key not in text and key.hex().encode() not in text and SECRET.encode() not in text
        assert b"vg1.k1." not in text


def test_finding_F2b_a_master_secret_rotation_breaks_playback_through_an_edge(library, tmp_path):
    """F2b (medium, availability; same root as F2). docs/CONTENT_PROTECTION.md's rotation procedure (new secret
    first, old kept) changes every key, hence every segment's bytes, under unchanged segment URLs. An edge (or
    CDN: `immutable`, one year) keeps the segment encrypted under the old secret, while the playlist now names
    the new secret's kid: a player fetches the new key and decrypts the cached ciphertext into garbage. The
    doc's "fine because players fetch the keys a playlist names" does not hold behind any shared cache. Fix as
    F2 (the first kid / protection tag in segment URLs makes old and new segments different objects)."""
    new_secret = "c3" * 32
    aes = f'[partners.flip]\nencryption = "aes-128"\nkey_secrets = ["{SECRET}"]\nkey_rotation_segments = 2\n'
    config = tmp_path / "rot.toml"
    config.write_text(_origin_toml(library, aes))
    origin = ServerProcess(["--config", str(config), "--workers", "1"], tmp_path / "rot.log")
    edge_config = tmp_path / "edge.toml"
    edge_config.write_text(f'[edge]\nhealth_interval = 0\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n' + FLIP_CLEAR + PARTNERS)
    edge = ServerProcess(["--role", "edge", "--config", str(edge_config), "--upstream", origin.base, "--workers", "1"],
                         tmp_path / "edge.log")
    try:
        playlist_url = f"{edge.base}/p/flip/e/e1/hls/main/index.m3u8"
        before = httpx.get(playlist_url, timeout=30).text
        assert httpx.get(first_segment_url(playlist_url, before), timeout=30).status_code == 200  # now cached
        config.write_text(_origin_toml(library, aes.replace(f'["{SECRET}"]', f'["{new_secret}", "{SECRET}"]')))
        origin.proc.send_signal(signal.SIGHUP)
        new_kid = key_id(bytes.fromhex(new_secret), "flip", "e1", 0)
        deadline = time.monotonic() + 15
        while new_kid not in httpx.get(origin.base + "/p/flip/e/e1/hls/main/index.m3u8", timeout=30).text:
            assert time.monotonic() < deadline, "the reload did not rotate the secret"
            time.sleep(0.2)
        text = httpx.get(playlist_url, timeout=30).text
        key = httpx.get(first_key_url(playlist_url, text), timeout=30)
        assert key.status_code == 200
        segment = httpx.get(first_segment_url(playlist_url, text), timeout=30)
        try:
            plays = is_ts(decrypt(segment.content, key.content, 1))
        except ValueError:
            plays = False
        assert plays, f"the playlist's key does not decrypt the edge's seg-1 (X-Cache {segment.headers.get('x-cache')})"
    finally:
        edge.stop()
        origin.stop()
