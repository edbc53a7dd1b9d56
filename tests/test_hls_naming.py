"""Audio renditions: LANGUAGE is the shortest RFC 5646 tag, NAME is for people (packager/hls/language.py)."""

from __future__ import annotations

import m3u8
import pytest

import oracle
from packager.hls.language import language_name, language_tag, rendition_names


@pytest.mark.parametrize(
    "code, tag, name",
    [("eng", "en", "English"), ("fra", "fr", "French"), ("fre", "fr", "French"), ("ger", "de", "German"),
     ("deu", "de", "German"), ("chi", "zh", "Chinese"), ("ind", "id", "Indonesian"), ("rum", "ro", "Romanian")],
)
def test_known_codes_map_to_the_two_letter_tag_and_english_name(code, tag, name):
    assert language_tag(code) == tag
    assert language_name(code) == name


def test_unknown_codes_stay_and_undetermined_has_no_tag():
    assert language_tag("gsw") == "gsw"  # no two-letter code: the three-letter one is the shortest tag
    assert language_name("gsw") is None
    assert language_tag("und") is None


def test_names_are_unique_within_the_group():
    assert rendition_names(["eng", "fra"]) == ["English", "French"]
    assert rendition_names(["und", "und"]) == ["Audio 1", "Audio 2"]
    assert rendition_names(["eng", "und", "gsw"]) == ["English", "Audio 2", "gsw"]
    assert rendition_names(["fra", "fre"]) == ["French", "French 2"]


@pytest.mark.parametrize("fmt", ["hls", "cmaf"])
def test_two_language_master_names_and_tags(fmt, client, server):
    path = f"/p/demo/e/two_languages/{fmt}/master.m3u8"
    response = client.get(path)
    assert response.status_code == 200
    master = m3u8.loads(response.text, uri=server.base + path)
    audio = [(m.language, m.name, m.uri) for m in master.media if m.type == "AUDIO"]
    assert audio == [("en", "English", "main/a1/index.m3u8"), ("fr", "French", "main/a2/index.m3u8")]
    assert 'LANGUAGE="en",' in response.text and 'NAME="English",' in response.text
    # ffmpeg still plays the master, both audio renditions included
    ok, stderr = oracle.decode_ok(server.base + path, maps=("0:v?", "0:a:0", "0:a:1"))
    assert ok, stderr
