"""Attacks on DASH (/p/P/e/E[/clip-a-b]/dash/manifest.mpd): caches and tokens, XML injection through the query,
flavors, previews, clips, per-profile encryption, HEAD/304, and the SegmentTimeline against the served fragments.

Real servers on 127.0.0.1 (an origin and an edge in front of it), real ffmpeg where decoding matters. Three were
findings when written, now fixed: an edge dropped ?flavors= on MPDs, an audio Representation id could equal a
flavor's ("main-a1"; now "main:a1"), and segmentAlignment was claimed for flavors cut at different times.
"""

from __future__ import annotations

import re
import shutil
import struct
import time
import xml.etree.ElementTree as ET
from urllib.parse import quote, urljoin

import httpx
import pytest

import media_fixtures as mf
import oracle
from auth.tokens import sign_native
from conftest import ServerProcess

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
TOKEN_KEY = "00112233445566778899aabbccddeeff"
EDGE_SECRET = "dash-attack-edge-secret-0123456789ab"
SECRET = "a9" * 32
TIMELINE_FIXTURES = ("h264_2997", "open_gop", "irregular_gop", "edit_list", "start_trimmed", "two_languages",
                     "audio_only", "video_only", "h264_high_bframes")

PARTNERS = (
    f'[partners.tok]\ntoken_keys = {{ k1 = "{TOKEN_KEY}" }}\ndefault_profile = "t"\n'
    '[partners.tok.profiles.t]\nrules = [ { unless = { authenticated = true }, then = ["block"] } ]\n'
    f'[partners.prev]\ntoken_keys = {{ k1 = "{TOKEN_KEY}" }}\ndefault_profile = "p"\n'
    '[partners.prev.profiles.p]\nrules = [ { unless = { authenticated = true }, then = [{ preview = 3 }] } ]\n'
    '[partners.p4]\ndefault_profile = "p"\n[partners.p4.profiles.p]\nrules = [ { then = [{ preview = 4 }] } ]\n'
    '[partners.p100]\ndefault_profile = "p"\n[partners.p100.profiles.p]\nrules = [ { then = [{ preview = 100 }] } ]\n'
    f'[partners.lim]\ntoken_keys = {{ k1 = "{TOKEN_KEY}" }}\ndefault_profile = "l"\n'
    '[partners.lim.profiles.l]\nrules = [ { unless = { authenticated = true }, then = [{ limit_flavors = { max_height = 270 } }] } ]\n'
)
ADMIN = "dash-attack-admin-secret-0123456789"
PP = (f'[partners.pp]\nadmin_secret = "{ADMIN}"\nkey_secrets = ["{SECRET}"]\n'
      '[partners.pp.profiles.paid]\nencryption = "aes-128"\nrules = []\n'
      '[partners.pp.entries.premium]\nprofile = "paid"\n'
      f'[partners.encp]\nencryption = "aes-128"\nkey_secrets = ["{SECRET}"]\n'
      '[partners.encp.profiles.clear]\nencryption = "none"\nrules = []\n'
      '[partners.encp.entries.freebie]\nprofile = "clear"\n')


def _copy(library, partner, entry, fixture, flavor="main"):
    (library / partner / entry).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mf.fixture_path(fixture), library / partner / entry / f"{flavor}.mp4")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    library = tmp_path_factory.mktemp("dash-attack-library")
    for fixture in TIMELINE_FIXTURES + ("h264_baseline",):
        _copy(library, "open", fixture, fixture)
    for partner in ("tok", "prev", "lim", "open"):
        for flavor in ("hi", "mid", "lo"):
            _copy(library, partner, "ladder", f"ladder_{flavor}", flavor)
    for partner in ("tok", "prev", "p4", "p100"):
        _copy(library, partner, "h264_baseline", "h264_baseline")
    _copy(library, "pp", "premium", "h264_baseline")
    _copy(library, "pp", "free", "h264_baseline")
    _copy(library, "encp", "freebie", "h264_baseline")
    _copy(library, "open", "mixed", "h264_baseline", "a")  # flavors that are no ladder: keyframes at other times
    _copy(library, "open", "mixed", "irregular_gop", "b")
    _copy(library, "encp", "paid", "h264_baseline")
    # a flavor whose name is another flavor's audio Representation id ("main" + "-a1")
    _copy(library, "open", "collide", "h264_baseline", "main")
    _copy(library, "open", "collide", "video_only", "main-a1")  # no audio: main's is the first
    folder = tmp_path_factory.mktemp("dash-attack")
    config = folder / "origin.toml"
    config.write_text(f'[server]\nmedia_root = "{library}"\nsegment_duration = 2\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n'
                      + PARTNERS + PP)
    origin = ServerProcess(["--config", str(config), "--workers", "1"], folder / "origin.log", wait=False, name="origin")
    edge_config = folder / "edge.toml"
    edge_config.write_text(f'[server]\ntrusted_proxies = ["127.0.0.1/32"]\n[cdn]\nedge_secrets = ["{EDGE_SECRET}"]\n'
                           '[edge]\nttl = 600\n' + PARTNERS)
    try:
        origin.wait()
        edge = ServerProcess(["--config", str(edge_config), "--role", "edge", "--upstream", origin.base, "--workers", "1"],
                             folder / "edge.log", name="edge")
    except Exception:
        origin.stop()
        raise
    yield {"origin": origin, "edge": edge}
    edge.stop()
    origin.stop()


ROLES = ("origin", "edge")


def token(partner: str, entry: str, **kw) -> str:
    return sign_native("k1", bytes.fromhex(TOKEN_KEY), f"/p/{partner}/e/{entry}", int(time.time()) + 600, **kw)


def mpd_url(srv, partner: str, entry: str, query: str = "", clip: str | None = None) -> str:
    folder = f"{clip}/" if clip else ""
    return f"{srv.base}/p/{partner}/e/{entry}/{folder}dash/manifest.mpd" + (f"?{query}" if query else "")


def get(url: str, **kw) -> httpx.Response:
    return httpx.get(url, timeout=60, **kw)


def reps(text: str) -> list[ET.Element]:
    return ET.fromstring(text).findall(".//d:Representation", NS)


def links(text: str) -> list[str]:
    root = ET.fromstring(text)
    out = []
    for el in root.iter():
        for name in ("initialization", "media", "sourceURL"):
            if el.get(name) is not None:
                out.append(el.get(name))
    return out


def timeline(node: ET.Element) -> list[tuple[int, int]]:
    out, at = [], 0
    for s in node.find("d:SegmentTimeline", NS):
        t = int(s.get("t", at))
        d = int(s.get("d"))
        for _ in range(int(s.get("r", 0)) + 1):
            out.append((t, d))
            t += d
        at = t
    return out


def segment_urls(mpd_address: str, rep: ET.Element) -> tuple[str, list[tuple[str, int, int]], int, int]:
    """(init URL, [(segment URL, t, d)], timescale, presentationTimeOffset) of a Representation."""
    template = rep.find("d:SegmentTemplate", NS)
    if template is not None:
        times = timeline(template)
        start = int(template.get("startNumber", 1))
        segs = [(urljoin(mpd_address, template.get("media").replace("$Number$", str(start + i))), t, d)
                for i, (t, d) in enumerate(times)]
        return (urljoin(mpd_address, template.get("initialization")), segs, int(template.get("timescale")),
                int(template.get("presentationTimeOffset", 0)))
    seglist = rep.find("d:SegmentList", NS)
    times = timeline(seglist)
    names = [u.get("media") for u in seglist.findall("d:SegmentURL", NS)]
    assert len(names) == len(times)
    init = seglist.find("d:Initialization", NS).get("sourceURL")
    return (urljoin(mpd_address, init), [(urljoin(mpd_address, n), t, d) for n, (t, d) in zip(names, times)],
            int(seglist.get("timescale")), int(seglist.get("presentationTimeOffset", 0)))


# --------------------------------------------------------------------------- fMP4 reading


def _full(data: bytes, box: mf.Box) -> tuple[int, int]:
    (vf,) = struct.unpack_from(">I", data, box.payload_offset)
    return vf >> 24, vf & 0xFFFFFF


def trex_default_duration(init: bytes) -> int:
    (trex,) = mf.find_boxes(init, "moov/mvex/trex")
    return struct.unpack_from(">I", init, trex.payload_offset + 12)[0]


def fragment(data: bytes, default_duration: int) -> tuple[int, list[int], list[int]]:
    """(tfdt, sample durations, composition offsets) of a one-traf media segment."""
    (tfdt,) = mf.find_boxes(data, "moof/traf/tfdt")
    version, _ = _full(data, tfdt)
    base = struct.unpack_from(">Q" if version else ">I", data, tfdt.payload_offset + 4)[0]
    (tfhd,) = mf.find_boxes(data, "moof/traf/tfhd")
    _, flags = _full(data, tfhd)
    pos = tfhd.payload_offset + 8
    pos += 8 if flags & 0x1 else 0
    pos += 4 if flags & 0x2 else 0
    if flags & 0x8:
        default_duration = struct.unpack_from(">I", data, pos)[0]
    durations, offsets = [], []
    for trun in mf.find_boxes(data, "moof/traf/trun"):
        version, flags = _full(data, trun)
        (count,) = struct.unpack_from(">I", data, trun.payload_offset + 4)
        pos = trun.payload_offset + 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
        for _ in range(count):
            d = default_duration
            if flags & 0x100:
                d = struct.unpack_from(">I", data, pos)[0]
                pos += 4
            pos += 4 if flags & 0x200 else 0
            pos += 4 if flags & 0x400 else 0
            o = 0
            if flags & 0x800:
                o = struct.unpack_from(">i" if version else ">I", data, pos)[0]
                pos += 4
            durations.append(d)
            offsets.append(o)
    return base, durations, offsets


def check_timeline(mpd_address: str, text: str) -> None:
    """Every S@t is the served fragment's tfdt, every S@d its samples' durations, back to back."""
    for rep in reps(text):
        init_url, segs, _, _ = segment_urls(mpd_address, rep)
        init = get(init_url)
        assert init.status_code == 200, (init_url, init.text)
        default = trex_default_duration(init.content)
        previous_end = None
        for url, t, d in segs:
            answer = get(url)
            assert answer.status_code == 200, (url, answer.text)
            base, durations, _ = fragment(answer.content, default)
            assert (base, sum(durations)) == (t, d), (rep.get("id"), url)
            if previous_end is not None:
                assert t == previous_end, (rep.get("id"), url)
            previous_end = t + d


# --------------------------------------------------------------------------- the timeline against the fragments


@pytest.mark.parametrize("fixture", TIMELINE_FIXTURES)
def test_every_s_element_is_the_served_fragments_tfdt_and_duration(servers, fixture):
    url = mpd_url(servers["origin"], "open", fixture)
    answer = get(url)
    assert answer.status_code == 200, answer.text
    check_timeline(url, answer.text)


def test_preview_and_clip_timelines_match_their_fragments(servers):
    """The preview's clipped last segment (SegmentList) and a clip's rebased tracks: the same exactness."""
    o = servers["origin"]
    for url in (mpd_url(o, "prev", "h264_baseline"), mpd_url(o, "open", "h264_baseline", clip="clip-2-6"),
                mpd_url(o, "prev", "ladder", clip="clip-1-8"), mpd_url(o, "open", "edit_list", clip="clip-1-5"),
                mpd_url(o, "open", "start_trimmed", clip="clip-3-7"), mpd_url(o, "open", "audio_only", clip="clip-2.5-7.25"),
                mpd_url(o, "open", "two_languages", clip="clip-1-3"), mpd_url(o, "open", "irregular_gop", clip="clip-3-9")):
        answer = get(url)
        assert answer.status_code == 200, (url, answer.text)
        check_timeline(url, answer.text)


# --------------------------------------------------------------------------- viewers' queries never mix


def _only_query(text: str, expected: str) -> None:
    """Every URL of the MPD ends with exactly ``expected`` (as XML gives it back), and nothing else is appended."""
    found = links(text)
    assert found
    for link in found:
        path, mark, query = link.partition("?")
        assert query == expected and ("?" in link) == bool(expected), (link, expected)


@pytest.mark.parametrize("role", ROLES)
def test_two_token_viewers_and_an_anonymous_one_never_see_each_others_query(servers, role):
    srv = servers[role]
    first = token("prev", "h264_baseline")
    time.sleep(1.05)
    second = token("prev", "h264_baseline")
    assert first != second
    viewers = [(f"token={first}&playSessionId=s-first", f"token={first}&playSessionId=s-first"),
               ("", ""), (f"token={second}", f"token={second}"), ("playSessionId=anon-1", "playSessionId=anon-1"),
               (f"token={first}&playSessionId=s-first", f"token={first}&playSessionId=s-first"), ("", "")]
    for order in (viewers, viewers[::-1]):
        for query, expected in order:
            answer = get(mpd_url(srv, "prev", "h264_baseline", query))
            assert answer.status_code == 200, answer.text
            _only_query(answer.text, expected)
            for other in (first, second, "s-first", "anon-1"):
                if other not in expected:
                    assert other not in answer.text
            if expected:
                assert answer.headers["cache-control"].startswith("private")
            # the anonymous viewers get the 3 s preview, the token holders the whole entry, in either order
            duration = float(ET.fromstring(answer.text).get("mediaPresentationDuration")[2:-1])
            assert (duration > 3.001) == ("token=" in expected), (query, duration)


@pytest.mark.parametrize("role", ROLES)
def test_a_cookie_viewers_mpd_carries_no_token_and_no_other_viewers(servers, role):
    srv = servers[role]
    query_token = token("tok", "h264_baseline")
    time.sleep(1.05)
    cookie_token = token("tok", "h264_baseline")
    for _ in range(2):
        with_query = get(mpd_url(srv, "tok", "h264_baseline", f"token={query_token}"))
        _only_query(with_query.text, f"token={query_token}")
        cookie = get(mpd_url(srv, "tok", "h264_baseline"), cookies={"vodgate_token": cookie_token})
        assert cookie.status_code == 200 and cookie.headers["cache-control"].startswith("private")
        _only_query(cookie.text, "")
        assert query_token not in cookie.text and cookie_token not in cookie.text
        sessioned = get(mpd_url(srv, "tok", "h264_baseline", "playSessionId=c-1"), cookies={"vodgate_token": cookie_token})
        _only_query(sessioned.text, "playSessionId=c-1")


@pytest.mark.parametrize("role", ROLES)
def test_an_open_partners_hot_mpd_keeps_no_session_id(servers, role):
    """An unrestricted partner: segments are shared (hot lane, edge cache), the MPD must still be per viewer."""
    srv = servers[role]
    for _ in range(4):  # warm every lane a plain request could take
        plain = get(mpd_url(srv, "open", "h264_baseline"))
        assert plain.status_code == 200
        _only_query(plain.text, "")
    for session in ("sess-a", "sess-b", "sess-a"):
        answer = get(mpd_url(srv, "open", "h264_baseline", f"playSessionId={session}"))
        _only_query(answer.text, f"playSessionId={session}")
        init, segs, _, _ = segment_urls(mpd_url(srv, "open", "h264_baseline"), reps(answer.text)[0])
        for url in (init, segs[0][0], segs[0][0]):  # the segments it names are served (hot lane or not)
            assert get(url).status_code == 200
    _only_query(get(mpd_url(srv, "open", "h264_baseline")).text, "")


# --------------------------------------------------------------------------- XML injection through the query

INJECTIONS = ['"', "'", "<Evil/>", "&amp;", "]]>", "\x01", "\x01\x01", "$Number$", "a\"/><BaseURL>http://evil/</BaseURL><x a=\"",
              "\x00", "\n", "%01", "%22%3E%3CEvil%2F%3E"]


@pytest.mark.parametrize("role", ROLES)
def test_a_query_cannot_inject_into_the_mpd(servers, role):
    """playSessionId and token values with quotes, tags, entities, CDATA ends, control characters (the slot
    character \\x01 among them) and template identifiers: the MPD stays well-formed, lists only its own elements,
    and every URL carries the valid token and nothing of the rest."""
    srv = servers[role]
    good = token("tok", "h264_baseline")
    clean = get(mpd_url(srv, "tok", "h264_baseline", f"token={good}")).text
    shape = [el.tag for el in ET.fromstring(clean).iter()]
    for bad in INJECTIONS:
        for query in (f"token={good}&playSessionId={quote(bad, safe='')}",
                      f"token={good}&playSessionId=ok&playSessionId={quote(bad, safe='')}",
                      f"token={good}&token={quote(good + bad, safe='')}",
                      f"token={good}&hdnts={quote(bad, safe='')}&x={quote(bad, safe='')}",
                      f"playSessionId={quote(bad, safe='')}&token={good}"):
            answer = get(mpd_url(srv, "tok", "h264_baseline", query))
            if answer.status_code == 403:  # the token was spoiled: refused, no MPD
                assert answer.headers["content-type"] == "application/json"
                continue
            assert answer.status_code == 200, (query, answer.text)
            assert "\x01" not in answer.text and "\x00" not in answer.text
            root = ET.fromstring(answer.text)
            assert [el.tag for el in root.iter()] == shape, query
            for link in links(answer.text):
                _, _, q = link.partition("?")
                assert q.split("&")[0] == f"token={good}" and "$" not in q and "<" not in q and '"' not in q, (query, link)


def test_the_slot_character_in_a_token_on_an_open_partner(servers):
    """An open partner verifies no token: a ``token=`` of XML and slot characters is not propagated raw."""
    for bad in INJECTIONS:
        answer = get(mpd_url(servers["origin"], "open", "h264_baseline", f"token={quote(bad, safe='')}"))
        assert answer.status_code == 200
        assert "\x01" not in answer.text
        ET.fromstring(answer.text)
        _only_query(answer.text, "")


# --------------------------------------------------------------------------- flavors and limits


def video_ids(text: str) -> list[str]:
    return sorted(r.get("id") for r in reps(text) if r.get("width"))


def master_flavors(srv, partner: str, entry: str, query: str = "") -> list[str]:
    text = get(f"{srv.base}/p/{partner}/e/{entry}/cmaf/master.m3u8" + (f"?{query}" if query else "")).text
    return sorted(re.findall(r"^([A-Za-z0-9_-]+)/index[^/]*\.m3u8", text, re.M))


def test_flavors_subset_on_the_origin_is_the_masters(servers):
    o = servers["origin"]
    for query in ("flavors=lo", "flavors=lo,mid", "flavors=mid,hi,nope", "flavors=hi"):
        answer = get(mpd_url(o, "open", "ladder", query))
        assert answer.status_code == 200
        assert video_ids(answer.text) == master_flavors(o, "open", "ladder", query), query
    assert get(mpd_url(o, "open", "ladder", "flavors=nope")).status_code == 404


def test_flavors_subset_through_the_edge(servers):
    e, o = servers["edge"], servers["origin"]
    for query in ("flavors=lo", "flavors=lo,mid"):
        answer = get(mpd_url(e, "open", "ladder", query))
        assert answer.status_code == 200
        assert video_ids(answer.text) == video_ids(get(mpd_url(o, "open", "ladder", query)).text), query
    above = get(mpd_url(e, "lim", "ladder", "flavors=hi"))  # as on the origin: nothing within the limit was asked for
    assert above.status_code == 403 and above.json()["error"] == "flavor_not_allowed"


@pytest.mark.parametrize("role", ROLES)
def test_flavor_limits_apply_to_the_mpd_as_to_the_master(servers, role):
    srv = servers[role]
    anon = get(mpd_url(srv, "lim", "ladder"))
    assert anon.status_code == 200 and video_ids(anon.text) == ["lo", "mid"] == master_flavors(srv, "lim", "ladder")
    full = get(mpd_url(srv, "lim", "ladder", f"token={token('lim', 'ladder')}"))
    assert video_ids(full.text) == ["hi", "lo", "mid"]
    # the limited viewer's ETag is not the full one's, and asking only for what is above the limit is refused
    assert anon.headers["etag"] != full.headers["etag"]
    above = get(mpd_url(srv, "lim", "ladder", "flavors=hi"))
    if role == "origin":
        assert above.status_code == 403 and above.json()["error"] == "flavor_not_allowed"
    else:  # the edge drops flavors= (test_flavors_subset_through_the_edge): never hi all the same
        assert above.status_code == 403 or "hi" not in video_ids(above.text)
    # the limited viewer cannot reach hi through the names the MPD uses
    init, segs, _, _ = segment_urls(mpd_url(srv, "lim", "ladder"), reps(anon.text)[0])
    hi = init.replace("/cmaf/" + reps(anon.text)[0].get("id") + "/", "/cmaf/hi/")
    assert get(hi).status_code == 403


def test_a_flavor_subsets_etag_never_validates_another_subset(servers):
    o = servers["origin"]
    lo = get(mpd_url(o, "open", "ladder", "flavors=lo"))
    for query in ("", "flavors=mid"):
        again = get(mpd_url(o, "open", "ladder", query), headers={"If-None-Match": lo.headers["etag"]})
        assert again.status_code == 200 and video_ids(again.text) != ["lo"]


# --------------------------------------------------------------------------- previews


def hls_preview_segments(srv, partner: str, entry: str, query: str = "", clip: str | None = None) -> set[str]:
    folder = f"{clip}/" if clip else ""
    master_url = f"{srv.base}/p/{partner}/e/{entry}/{folder}cmaf/master.m3u8" + (f"?{query}" if query else "")
    master = get(master_url).text
    out = set()
    for line in master.splitlines():
        uris = re.findall(r'URI="([^"]+)"', line) if line.startswith("#EXT-X-MEDIA") else ([] if line.startswith("#") or not line else [line])
        for uri in uris:
            playlist_url = urljoin(master_url, uri)
            for seg in get(playlist_url).text.splitlines():
                if seg and not seg.startswith("#"):
                    out.add(urljoin(playlist_url, seg).split("?")[0])
                for init in re.findall(r'#EXT-X-MAP:URI="([^"]+)"', seg):
                    out.add(urljoin(playlist_url, init).split("?")[0])
    return out


def mpd_files(url: str, text: str) -> set[str]:
    out = set()
    for rep in reps(text):
        init, segs, _, _ = segment_urls(url, rep)
        out.add(init.split("?")[0])
        out.update(s.split("?")[0] for s, _, _ in segs)
    return out


@pytest.mark.parametrize("role", ROLES)
def test_a_preview_mpd_lists_exactly_the_hls_previews_files(servers, role):
    srv = servers[role]
    for entry, clip in (("h264_baseline", None), ("ladder", None), ("ladder", "clip-1-8"), ("ladder", "clip-2-3")):
        url = mpd_url(srv, "prev", entry, clip=clip)
        answer = get(url)
        assert answer.status_code == 200, (entry, clip, answer.text)
        assert mpd_files(url, answer.text) == hls_preview_segments(srv, "prev", entry, clip=clip), (entry, clip)
        duration = ET.fromstring(answer.text).get("mediaPresentationDuration")
        assert float(duration[2:-1]) <= 3.0 + 0.001, duration
        for rep in reps(answer.text):  # one past the last listed one, and the unmarked last one: refused
            _, segs, _, _ = segment_urls(url, rep)
            last = segs[-1][0].split("?")[0]
            number = int(re.search(r"seg-(\d+)", last).group(1))
            folder = last.rsplit("/", 1)[0]
            assert get(f"{folder}/seg-{number + 1}.m4s").status_code in ((403,) if clip is None else (403, 404))
            if "-p" in last.rsplit("/", 1)[1]:
                assert get(f"{folder}/seg-{number}.m4s").status_code == 403


@pytest.mark.parametrize("role", ROLES)
def test_a_preview_viewer_cannot_widen_the_mpd(servers, role):
    """Clips past the preview, flavors, a bogus token: never more than the 3 s preview."""
    srv = servers[role]
    refused = get(mpd_url(srv, "prev", "ladder", clip="clip-4-8"))
    assert refused.status_code == 403 and refused.json()["error"] == "preview_only"
    for query in ("flavors=hi", "token=bogus", f"token={token('tok', 'ladder')}", "preview=100"):
        answer = get(mpd_url(srv, "prev", "ladder", query))
        if answer.status_code != 200:
            assert answer.status_code in (401, 403), (query, answer.status_code)
            continue
        duration = ET.fromstring(answer.text).get("mediaPresentationDuration")
        assert float(duration[2:-1]) <= 3.001, (query, duration)
    full = get(mpd_url(srv, "prev", "ladder", f"token={token('prev', 'ladder')}"))
    assert float(ET.fromstring(full.text).get("mediaPresentationDuration")[2:-1]) > 10


@pytest.mark.parametrize("role", ROLES)
def test_a_preview_on_a_segment_boundary_and_one_past_the_end(servers, role):
    """preview = 4 with 2 s segments: two whole segments (a template may name them), nothing after; preview = 100
    on an 8 s entry: the whole entry, as the HLS master lists it."""
    srv = servers[role]
    url = mpd_url(srv, "p4", "h264_baseline")
    answer = get(url)
    assert answer.status_code == 200
    assert mpd_files(url, answer.text) == hls_preview_segments(srv, "p4", "h264_baseline")
    assert float(ET.fromstring(answer.text).get("mediaPresentationDuration")[2:-1]) <= 4.001
    for rep in reps(answer.text):
        _, segs, _, _ = segment_urls(url, rep)
        folder = segs[-1][0].split("?")[0].rsplit("/", 1)[0]
        assert get(f"{folder}/seg-{len(segs) + 1}.m4s").status_code == 403
    check_timeline(url, answer.text)
    whole = get(mpd_url(srv, "p100", "h264_baseline"))
    assert whole.status_code == 200
    assert (whole.text.replace("p100", "open")
            == get(mpd_url(servers["origin"], "open", "h264_baseline")).text.replace("p100", "open"))


def test_ffmpeg_decodes_a_clip_within_a_preview_as_the_hls_one(servers):
    o = servers["origin"]
    url = mpd_url(o, "prev", "ladder", clip="clip-1-8")
    assert oracle.video_hashes(url) == oracle.video_hashes(f"{o.base}/p/prev/e/ladder/clip-1-8/cmaf/master.m3u8")


# --------------------------------------------------------------------------- clips and clip-pinned tokens


@pytest.mark.parametrize("role", ROLES)
def test_a_clip_pinned_token_gets_only_its_clips_mpd(servers, role):
    srv = servers[role]
    pinned = token("tok", "h264_baseline", clip="2-6")
    query = f"token={pinned}"
    whole = get(mpd_url(srv, "tok", "h264_baseline", query))
    assert whole.status_code == 403 and whole.json()["error"] == "clip_not_allowed"
    for clip in ("clip-1-6", "clip-2-7", "clip-0-10"):
        answer = get(mpd_url(srv, "tok", "h264_baseline", query, clip=clip))
        assert answer.status_code == 403 and answer.json()["error"] == "clip_not_allowed", clip
    for clip in ("clip-2-6", "clip-3-5"):
        url = mpd_url(srv, "tok", "h264_baseline", query, clip=clip)
        answer = get(url)
        assert answer.status_code == 200, (clip, answer.text)
        duration = float(ET.fromstring(answer.text).get("mediaPresentationDuration")[2:-1])
        assert duration <= 4.001 + 0.5, duration  # a clip starts at a keyframe at or before `from`
        for link in links(answer.text):
            target = urljoin(url, link)
            assert f"/p/tok/e/h264_baseline/{clip}/cmaf/" in target and target.endswith(f"?token={pinned}"), link
        init, segs, _, _ = segment_urls(url, reps(answer.text)[0])
        assert get(init).status_code == 200 and get(segs[-1][0]).status_code == 200
        # the same files of the whole entry stay refused to this token
        assert get(init.replace(f"/{clip}/", "/")).status_code == 403


def test_ffmpeg_decodes_a_clip_mpd_as_the_clips_hls(servers):
    o = servers["origin"]
    assert (oracle.video_hashes(mpd_url(o, "open", "h264_baseline", clip="clip-2-6"))
            == oracle.video_hashes(f"{o.base}/p/open/e/h264_baseline/clip-2-6/cmaf/master.m3u8"))


# --------------------------------------------------------------------------- encryption per profile


def test_a_profile_that_encrypts_is_refused_over_dash(servers):
    o = servers["origin"]
    for clip in (None, "clip-2-6"):
        refused = get(mpd_url(o, "pp", "premium", clip=clip))
        assert refused.status_code == 404 and refused.json()["error"] == "dash_encrypted", clip
        head = httpx.head(mpd_url(o, "pp", "premium", clip=clip), timeout=30)
        assert head.status_code == 404
        assert get(mpd_url(o, "pp", "free", clip=clip)).status_code == 200
    # the clear /cmaf/ URLs the free entry's MPD names do not exist for the premium entry
    free_url = mpd_url(o, "pp", "free")
    init, segs, _, _ = segment_urls(free_url, reps(get(free_url).text)[0])
    assert get(init.replace("/free/", "/premium/")).status_code == 404
    assert get(segs[0][0].replace("/free/", "/premium/")).status_code == 404


def test_a_clear_profile_of_an_encrypting_partner_plays_over_dash(servers):
    o = servers["origin"]
    refused = get(mpd_url(o, "encp", "paid"))
    assert refused.status_code == 404 and refused.json()["error"] == "dash_encrypted"
    url = mpd_url(o, "encp", "freebie")
    answer = get(url)
    assert answer.status_code == 200
    check_timeline(url, answer.text)
    assert oracle.video_hashes(url) == oracle.video_hashes(mf.fixture_path("h264_baseline"))


def test_switching_a_profiles_encryption_at_runtime_switches_dash(servers):
    """The admin API: clear -> the MPD is served; sample-aes or aes-128 -> refused at once, even to a viewer
    revalidating the clear MPD's ETag (no 304 for media that is now encrypted)."""
    o = servers["origin"]
    auth = {"Authorization": f"Bearer {ADMIN}"}
    profile = f"{o.base}/admin/partners/pp/profiles/paid"
    try:
        assert httpx.put(profile, headers=auth, json={"rules": []}, timeout=10).status_code == 200
        clear = get(mpd_url(o, "pp", "premium"))
        assert clear.status_code == 200
        for method in ("sample-aes", "aes-128"):
            assert httpx.put(profile, headers=auth, json={"encryption": method, "rules": []}, timeout=10).status_code == 200
            again = get(mpd_url(o, "pp", "premium"), headers={"If-None-Match": clear.headers["etag"]})
            assert again.status_code == 404 and again.json()["error"] == "dash_encrypted", method
            init, segs, _, _ = segment_urls(mpd_url(o, "pp", "premium"), reps(clear.text)[0])
            assert get(segs[0][0]).status_code == 404 and get(init).status_code == 404, method
    finally:
        httpx.put(profile, headers=auth, json={"encryption": "aes-128", "rules": []}, timeout=10)


# --------------------------------------------------------------------------- HEAD, 304


@pytest.mark.parametrize("role", ROLES)
def test_head_is_get_without_the_body(servers, role):
    srv = servers[role]
    for partner, query in (("open", ""), ("tok", f"token={token('tok', 'h264_baseline')}&playSessionId=h-1"),
                           ("prev", "")):
        url = mpd_url(srv, partner, "h264_baseline", query)
        got = get(url)
        head = httpx.head(url, timeout=30)
        assert head.status_code == got.status_code == 200
        assert head.content == b""
        for name in ("etag", "content-type", "cache-control"):
            assert head.headers.get(name) == got.headers.get(name), (partner, name)
        if "content-length" in head.headers:
            assert int(head.headers["content-length"]) == len(got.content), partner


@pytest.mark.parametrize("role", ROLES)
def test_an_etag_validates_only_its_own_viewers_mpd(servers, role):
    srv = servers[role]
    a = token("tok", "h264_baseline")
    time.sleep(1.05)
    b = token("tok", "h264_baseline")
    first = get(mpd_url(srv, "tok", "h264_baseline", f"token={a}"))
    tag = first.headers["etag"]
    assert get(mpd_url(srv, "tok", "h264_baseline", f"token={a}"), headers={"If-None-Match": tag}).status_code == 304
    other = get(mpd_url(srv, "tok", "h264_baseline", f"token={b}"), headers={"If-None-Match": tag})
    assert other.status_code == 200 and b in other.text and a not in other.text
    session = get(mpd_url(srv, "tok", "h264_baseline", f"token={a}&playSessionId=x-2"), headers={"If-None-Match": tag})
    assert session.status_code == 200 and "x-2" in session.text
    # a preview viewer's ETag does not validate the full MPD, nor the other way round
    preview = get(mpd_url(srv, "prev", "h264_baseline"))
    full = get(mpd_url(srv, "prev", "h264_baseline", f"token={token('prev', 'h264_baseline')}"),
               headers={"If-None-Match": preview.headers["etag"]})
    assert full.status_code == 200
    assert get(mpd_url(srv, "prev", "h264_baseline"), headers={"If-None-Match": full.headers["etag"]}).status_code == 200
    # no viewer gets a 304 for a token it does not hold
    assert get(mpd_url(srv, "tok", "h264_baseline"), headers={"If-None-Match": tag}).status_code == 403


# --------------------------------------------------------------------------- audio only, video only, ids


def test_every_representation_ends_at_the_presentation_duration(servers):
    """(last S end - presentationTimeOffset) is mediaPresentationDuration for the longest track, and no track runs past it."""
    o = servers["origin"]
    cases = ([("open", f, None) for f in TIMELINE_FIXTURES] + [("prev", "h264_baseline", None), ("prev", "ladder", None)]
             + [("open", "h264_baseline", "clip-2-6"), ("open", "edit_list", "clip-1-5"), ("open", "start_trimmed", "clip-3-7"),
                ("prev", "ladder", "clip-1-8"), ("open", "audio_only", "clip-2.5-7.25")])
    for partner, entry, clip in cases:
        url = mpd_url(o, partner, entry, clip=clip)
        text = get(url).text
        total = float(ET.fromstring(text).get("mediaPresentationDuration")[2:-1])
        ends = []
        for rep in reps(text):
            _, segs, timescale, pto = segment_urls(url, rep)
            ends.append((segs[-1][1] + segs[-1][2] - pto) / timescale)
        assert max(ends) == pytest.approx(total, abs=0.0011) and all(e <= total + 0.0011 for e in ends), (entry, total, ends)


def test_audio_only_and_video_only_mpds_decode(servers):
    o = servers["origin"]
    video = get(mpd_url(o, "open", "video_only")).text
    assert [r.get("width") is not None for r in reps(video)] == [True]
    assert oracle.video_hashes(mpd_url(o, "open", "video_only")) == oracle.video_hashes(mf.fixture_path("video_only"))
    audio = get(mpd_url(o, "open", "audio_only")).text
    root = ET.fromstring(audio)
    assert [a.get("contentType") for a in root.findall(".//d:AdaptationSet", NS)] == ["audio"]
    oracle.decode_ok(mpd_url(o, "open", "audio_only"))
    got = oracle.framemd5(mpd_url(o, "open", "audio_only"), "a:0")
    source = oracle.framemd5(mf.fixture_path("audio_only"), "a:0")
    (rep,) = reps(audio)
    _, segs, _, _ = segment_urls(mpd_url(o, "open", "audio_only"), rep)
    assert len(got) == len(source) - (len(segs) - 1)  # ffmpeg's per-segment priming trim (tests/test_dash.py)


def _unique_ids(text: str) -> None:
    ids = [r.get("id") for r in reps(text)]
    sets = [a.get("id") for a in ET.fromstring(text).findall(".//d:AdaptationSet", NS)]
    assert len(ids) == len(set(ids)) and len(sets) == len(set(sets)), ids


def test_ids_are_unique_in_the_period(servers):
    """Representation@id must be unique within a Period (ISO/IEC 23009-1 5.3.5.2)."""
    for entry in ("two_languages", "ladder", "h264_baseline"):
        _unique_ids(get(mpd_url(servers["origin"], "open", entry)).text)


def test_an_audio_representation_id_cannot_collide_with_a_flavor(servers):
    text = get(mpd_url(servers["origin"], "open", "collide")).text
    _unique_ids(text)


def _aligned(url: str) -> None:
    """An AdaptationSet that says segmentAlignment="true" has the same segment boundaries (in presentation
    time) in every Representation (ISO/IEC 23009-1 5.3.3.2)."""
    text = get(url).text
    for adaptation in ET.fromstring(text).findall(".//d:AdaptationSet", NS):
        if adaptation.get("segmentAlignment") != "true":
            continue
        bounds = set()
        for rep in adaptation.findall("d:Representation", NS):
            _, segs, timescale, pto = segment_urls(url, rep)
            bounds.add(tuple(round((t - pto) / timescale, 3) for _, t, _ in segs[1:]))
        assert len(bounds) == 1, (url, bounds)


def test_a_ladders_segments_are_aligned_as_claimed(servers):
    for entry in ("ladder", "two_languages"):
        _aligned(mpd_url(servers["origin"], "open", entry))


def test_segment_alignment_is_claimed_only_where_it_holds(servers):
    _aligned(mpd_url(servers["origin"], "open", "mixed"))


@pytest.mark.parametrize("role", ROLES)
def test_concurrent_viewers_of_a_cold_mpd_each_get_their_own_query(servers, role):
    """Twenty viewers at once on an MPD nobody asked for yet (one render, coalesced): each its own session id."""
    from concurrent.futures import ThreadPoolExecutor

    srv = servers[role]
    clip = "clip-1-7" if role == "origin" else "clip-1-6"
    sessions = [f"cc-{role}-{i}" for i in range(20)]

    def fetch(session: str) -> tuple[str, httpx.Response]:
        return session, get(mpd_url(srv, "open", "h264_2997", f"playSessionId={session}", clip=clip))

    with ThreadPoolExecutor(20) as pool:
        for session, answer in pool.map(fetch, sessions):
            assert answer.status_code == 200
            _only_query(answer.text, f"playSessionId={session}")
