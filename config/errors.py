"""Configuration errors, the two messages every section shares (an unknown key, a wrong type) and
the check of a section's keys.

A leaf module: every section parser (config/, and the sections edge/ and analytics/ parse) imports
it, and it imports nothing of the project's.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterable


class ConfigError(Exception):
    """A configuration value is missing, of the wrong type or out of range."""


# What a TOML value of each Python type is called in a message ("expected an integer", never "a int").
_KINDS = {
    bool: "true or false (a TOML boolean, unquoted)",
    int: "an integer",
    float: "a number",
    str: "a string (quoted)",
    list: "a list, like [\"a\", \"b\"]",
    dict: "a table",
}


def expected(kind: type) -> str:
    """``an integer``, ``a string (quoted)``...: the words for a TOML value of ``kind``."""
    return _KINDS.get(kind, f"a {kind.__name__}")


def unknown_keys(where: str, unknown: Iterable[str], known: Iterable[str], source: str) -> ConfigError:
    """``server.prot (did you mean server.port?)``: every unknown key by its dotted name, with the
    nearest known key when one is close (a typo), then the known keys."""
    known = sorted(known)
    named = []
    for key in sorted(map(str, unknown)):
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.65)  # "tll" finds ttl, "colour" not country
        hint = f" (did you mean {_dotted(where, near[0])}?)" if near else ""
        named.append(_dotted(where, key) + hint)
    return ConfigError(f"{source}: unknown key(s) {', '.join(named)}; known: {', '.join(known)}")


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def wrong_type(where: str, value: Any, kind: type, source: str) -> ConfigError:
    return ConfigError(f"{source}: {where} has value {value!r}; expected {expected(kind)}")


# A URL's user and password: after "//" up to the last "@" of that word (a password may hold a raw "/"),
# then any word ending in "@" left (a malformed URL such as "redis:/:pw@host").
_AFTER_SLASHES = re.compile(r"//[^'\"\s]*@")
_BEFORE_AT = re.compile(r"(^|['\"\s/])[^'\"\s/@]+@")


def without_credentials(text: str) -> str:
    """``redis://:pw@host`` -> ``redis://***@host``. An error shows the value it refuses, and a refused URL
    (a redis, storage or upstream URL with a typo in its scheme) may carry a password: never print it."""
    return _BEFORE_AT.sub(lambda m: m.group(1) + "***@", _AFTER_SLASHES.sub("//***@", text))


def check_table(table: Any, name: str, known: set[str], source: str) -> dict[str, Any]:
    """A config section: {} when absent; ConfigError for a non-table or an unknown key (naming the known ones)."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: '{name}' must be a table ([{name}])")
    unknown = set(table) - known
    if unknown:
        raise unknown_keys(name, unknown, known, source)
    return table
