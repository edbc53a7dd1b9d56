"""Audio rendition LANGUAGE and NAME from an MP4 ``mdhd`` language code.

MP4 stores ISO 639-2/T (or /B) three-letter codes. HLS LANGUAGE is an RFC 5646
tag, and RFC 5646 section 2.2.1 wants the shortest ISO 639 code: ``en`` for
``eng``. Codes we do not map stay as they are (a three-letter ISO 639 code is
a valid tag); ``und`` (undetermined) gets no LANGUAGE attribute. NAME is for
people (RFC 8216 section 4.3.4.1: "a human-readable description"): the
language's English name, or "Audio N" when the language is unknown.
"""

from __future__ import annotations

from typing import Sequence

UNDETERMINED = "und"

# ISO 639-2 code (T and B forms) -> (ISO 639-1 code, English name)
_LANGUAGES: dict[str, tuple[str, str]] = {}
for _codes, _short, _name in (
    (("eng",), "en", "English"),
    (("fra", "fre"), "fr", "French"),
    (("deu", "ger"), "de", "German"),
    (("spa",), "es", "Spanish"),
    (("ita",), "it", "Italian"),
    (("por",), "pt", "Portuguese"),
    (("nld", "dut"), "nl", "Dutch"),
    (("rus",), "ru", "Russian"),
    (("jpn",), "ja", "Japanese"),
    (("zho", "chi"), "zh", "Chinese"),
    (("kor",), "ko", "Korean"),
    (("ara",), "ar", "Arabic"),
    (("hin",), "hi", "Hindi"),
    (("heb",), "he", "Hebrew"),
    (("pol",), "pl", "Polish"),
    (("tur",), "tr", "Turkish"),
    (("swe",), "sv", "Swedish"),
    (("dan",), "da", "Danish"),
    (("nor",), "no", "Norwegian"),
    (("fin",), "fi", "Finnish"),
    (("ces", "cze"), "cs", "Czech"),
    (("ell", "gre"), "el", "Greek"),
    (("hun",), "hu", "Hungarian"),
    (("ron", "rum"), "ro", "Romanian"),
    (("ukr",), "uk", "Ukrainian"),
    (("vie",), "vi", "Vietnamese"),
    (("tha",), "th", "Thai"),
    (("ind",), "id", "Indonesian"),
):
    for _code in _codes:
        _LANGUAGES[_code] = (_short, _name)


def language_tag(code: str) -> str | None:
    """The shortest BCP 47 tag for an ``mdhd`` code; None when undetermined."""
    code = code.strip().lower()
    if not code or code == UNDETERMINED:
        return None
    known = _LANGUAGES.get(code)
    return known[0] if known else code


def language_name(code: str) -> str | None:
    """The English name of a language, or None when we do not know it."""
    known = _LANGUAGES.get(code.strip().lower())
    return known[1] if known else None


def rendition_names(codes: Sequence[str]) -> list[str]:
    """NAMEs for the audio renditions of one group, in order, unique within it (RFC 8216 4.3.4.1.1)."""
    names = []
    for position, code in enumerate(codes, start=1):
        base = language_name(code) or (code if language_tag(code) else f"Audio {position}")
        name, n = base, 2
        while name in names:
            name, n = f"{base} {n}", n + 1
        names.append(name)
    return names


_BY_SHORT = {short: name for short, name in _LANGUAGES.values()}


def subtitle_name(tag: str, forced: bool = False) -> str:
    """NAME of a subtitle rendition from its BCP 47 tag: "English", "Portuguese (BR)", "French (forced)"; the tag
    itself for a language we have no name for."""
    primary, _, rest = tag.partition("-")
    name = _BY_SHORT.get(primary.lower()) or language_name(primary) or tag
    if rest and name != tag:
        name += f" ({rest})"
    return name + (" (forced)" if forced else "")
