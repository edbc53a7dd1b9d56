"""Pure helpers of the HTTP layer and the config loader: URL scheme, ranges, validators, settings."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from config.settings import ConfigError, load_settings, parse_settings
from edge import urls
from edge.http import MalformedRange, RangeNotSatisfiable, if_range_matches, is_not_modified, parse_range
from packager.media_set import RenditionId

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/p/1/e/abc/hls/master.m3u8", ("master", None, None)),
        ("/p/1/e/abc/hls/hi/index.m3u8", ("index", RenditionId("hi"), None)),
        ("/p/1/e/abc/cmaf/hi/a2/index.m3u8", ("index", RenditionId("hi", 2), None)),
        ("/p/1/e/abc/hls/hi/iframes.m3u8", ("iframes", RenditionId("hi"), None)),
        ("/p/1/e/abc/hls/hi/seg-12.ts", ("segment", RenditionId("hi"), 12)),
        ("/p/1/e/abc/cmaf/hi/a1/seg-3.m4s", ("segment", RenditionId("hi", 1), 3)),
        ("/p/1/e/abc/cmaf/hi/init.mp4", ("init", RenditionId("hi"), None)),
        ("/p/1/e/abc/mp4/hi.mp4", ("progressive", RenditionId("hi"), None)),
    ],
)
def test_parse_known_paths(path, expected):
    req = urls.parse_path(path)
    assert (req.resource, req.rendition, req.number) == expected
    assert (req.partner, req.entry) == ("1", "abc")


@pytest.mark.parametrize(
    "path, error",
    [
        ("/p/1/e/../hls/master.m3u8", urls.BadRequest),
        ("/p/1/e/a b/hls/master.m3u8", urls.BadRequest),
        ("/p/1/e/abc/hls/hi/seg-0.ts", urls.BadRequest),
        ("/p/1/e/abc/hls/hi/seg--1.ts", urls.BadRequest),
        ("/p/1/e/abc/hls/hi/seg-1.m4s", urls.BadRequest),  # wrong extension for the format
        ("/p/1/e/abc/hls/hi/seg-1234567890123.ts", urls.NoSuchResource),
        ("/p/1/e/abc/hls/hi/a0/index.m3u8", urls.BadRequest),
        ("/p/1/e/abc/hls/hi/init.mp4", urls.NoSuchResource),  # TS has no init segment
        ("/p/1/e/abc/dash/index.mpd", urls.NoSuchResource),
        ("/p/1/e/abc/hls/hi/seg-\u0662.ts", urls.BadRequest),  # an Arabic-Indic 2: one spelling per URL
        ("/p/1/e/abc/hls/hi/seg-1-p\uff15.ts", urls.BadRequest),  # a fullwidth 5
        ("/p/1/e/abc/hls/hi/a\u0661/index.m3u8", urls.NoSuchResource),
    ],
)
def test_parse_rejects(path, error):
    with pytest.raises(error):
        urls.parse_path(path)


def test_builders_round_trip_through_the_parser():
    rid = RenditionId("mid", 2)
    base = urls.entry_path("p1", "e1", "cmaf")
    playlist = f"{base}/{urls.media_playlist_uri(rid)}"
    assert urls.parse_path(playlist).rendition == rid
    segment = playlist.rsplit("/", 1)[0] + "/" + urls.segment_uri("cmaf", 7)
    assert urls.parse_path(segment).number == 7
    assert urls.parse_path(urls.progressive_path("p1", "e1", "hi")).resource == "progressive"


def test_ranges():
    assert parse_range("bytes=0-99", 1000).length == 100
    assert parse_range("bytes=900-", 1000).start == 900
    assert parse_range("bytes=-100", 1000).start == 900
    assert parse_range("bytes=-5000", 1000).start == 0
    assert parse_range("bytes=990-5000", 1000).end == 999
    for malformed in ("items=0-1", "bytes=5-1", "bytes=a-b", "bytes=0-1,5-6", "bytes=-"):
        with pytest.raises(MalformedRange):
            parse_range(malformed, 1000)
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range("bytes=1000-", 1000)
    assert info.value.length == 1000


def test_conditional_helpers():
    etag, modified = '"abc"', "Fri, 27 Nov 2026 08:00:00 GMT"
    assert is_not_modified({"if-none-match": '"x", "abc"'}, etag, modified)
    assert not is_not_modified({"if-none-match": '"x"', "if-modified-since": modified}, etag, modified)
    assert is_not_modified({"if-modified-since": "Fri, 27 Nov 2026 09:00:00 GMT"}, etag, modified)
    assert not is_not_modified({"if-modified-since": "garbage"}, etag, modified)
    assert if_range_matches({}, etag, modified)
    assert if_range_matches({"if-range": etag}, etag, modified)
    assert not if_range_matches({"if-range": 'W/"abc"'}, etag, modified)
    assert not if_range_matches({"if-range": "Thu, 26 Nov 2026 08:00:00 GMT"}, etag, modified)


def test_settings_errors_name_key_value_and_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"server.port has value 70000; expected 0-65535"):
        parse_settings({"server": {"port": 70000}})
    with pytest.raises(ConfigError, match=r"server.port has value '80'; expected an integer"):
        parse_settings({"server": {"port": "80"}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) server.prot \(did you mean server.port\?\)"):
        parse_settings({"server": {"prot": 1}})
    with pytest.raises(ConfigError, match="segment_duration has value 0.5; expected between 1 and 60"):
        parse_settings({"server": {"segment_duration": 0.5}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_settings_from_toml(tmp_path):
    config = tmp_path / "vodgate.toml"
    config.write_text('[server]\nport = 9000\nmedia_root = "videos"\nsegment_duration = "4.5"\ncors_origins = ["https://a.example"]\n')
    settings = load_settings(config)
    assert settings.port == 9000
    assert settings.media_root == tmp_path / "videos"
    assert settings.segment_duration == Fraction(9, 2)
    assert settings.cors_origins == ("https://a.example",)


def test_bad_config_stops_the_server_with_a_message(tmp_path):
    config = tmp_path / "vodgate.toml"
    config.write_text("[server]\nlog_level = 'loud'\n")
    proc = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--config", str(config)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "server.log_level has value 'loud'; expected one of" in proc.stderr


def test_packager_does_not_need_the_web_stack():
    """packager/ is pure: it imports and packages with starlette, uvicorn and asyncio made unimportable."""
    code = (
        "import sys\n"
        "for name in ('starlette', 'uvicorn', 'asyncio', 'aiofiles', 'httpx'):\n"
        "    sys.modules[name] = None\n"
        "import packager.formats, packager.hls.build, packager.media_set, packager.mp4.index, packager.samples\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr
