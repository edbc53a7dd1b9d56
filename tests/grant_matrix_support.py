"""The grant matrix: viewer classes, resources, answers and their comparison (tests/test_grant_matrix.py).

The claim under test: caching never changes what a viewer gets. The reference
is a server with every response cache and the hot lane off (``[cache] enabled
= false``), which decides and packages every request afresh; any server with
caches must give each viewer exactly the reference's answer for the same
(viewer class, resource, entry), whatever other viewers asked before.

An *answer* is what a player or a CDN acts on: the status, the body bytes, the
Cache-Control class (public, private, no-store or absent), the Location of a
redirect and the Content-Length of a HEAD. X-Cache, the ETag and the error's
JSON code are kept for the report only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from urllib.parse import urljoin, urlsplit

import httpx

from conftest import ServerProcess

ADMIN_SECRET = "grant-matrix-admin-secret"
TOKEN_KEY = "00112233445566778899aabbccddeeff"
SHIELD_SECRET = "grant-matrix-shield-secret-0123"
EDGE_SECRET = "matrix-edge-secret-0123456789"  # edges and origins only: vouching
SHIELD_HEADER = "X-Vodgate-Shield"  # [cdn] shield_header's default
PREVIEW = 3

# --------------------------------------------------------------------------- the partner's profiles

BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def site_rules(preview: float | None = PREVIEW) -> list[dict]:
    """Each viewer class gets exactly what its name says (checked against the reference in the tests)."""
    rules: list[dict] = [
        {"name": "bots", "if": {"user_agent": "(?i)bot"}, "then": [{"block": "bots"}]},
        {"name": "blocked_sites", "if": {"referrer": ["*.blocked.example"]}, "then": [{"block": "referrer_blocked"}]},
        {"name": "limited_sites", "if": {"referrer": ["*.limited.example"]},
         "then": [{"limit_flavors": {"max_height": 270}}, "continue"]},
    ]
    if preview is not None:
        rules.append({"name": "preview", "unless": {"authenticated": True}, "then": [{"preview": preview}]})
    return rules  # a token holder matches no deciding rule: allowed_by_default, full (or with the limits)


def toml_value(value: object) -> str:
    """A value as inline TOML (strings as JSON basic strings: the same escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def config_text(library: Path, extra: str = "") -> str:
    """The one configuration every node shares (the edge decides access itself), plus a node's own tables."""
    rules = toml_value(site_rules())
    return f"""
[server]
media_root = {json.dumps(str(library))}
segment_duration = 4
trusted_proxies = ["127.0.0.1/32"]

[partners.demo]
admin_secret = "{ADMIN_SECRET}"
token_keys = {{ k1 = "{TOKEN_KEY}" }}
default_profile = "site"

[partners.demo.profiles.site]
rules = {rules}

[partners.demo.profiles.shift]
rules = {rules}

[partners.demo.profiles.drop]
rules = {rules}

[partners.demo.entries.shift]
profile = "shift"

[partners.demo.entries.drop]
profile = "drop"

[partners.free]
admin_secret = "{ADMIN_SECRET}"
token_keys = {{ k1 = "{TOKEN_KEY}" }}
{extra}
"""


@functools.cache
def sign_token(partner: str, entry: str) -> str:
    """The entry's token: one per entry for the whole run, so every node writes the same one into playlists."""
    from auth.tokens import sign_native

    return sign_native("k1", bytes.fromhex(TOKEN_KEY), f"/p/{partner}/e/{entry}", int(time.time()) + 3600)


# --------------------------------------------------------------------------- media


def build_library(root: Path, fixtures: Mapping[str, Path], entries: Iterable[tuple[str, str]]) -> Path:
    """``root/<partner>/<entry>/{hi,mid,lo}.mp4``: the ladder fixture, once per entry (hard links when possible)."""
    from media_fixtures import LADDER

    for partner, entry in entries:
        folder = root / partner / entry
        folder.mkdir(parents=True, exist_ok=True)
        for flavor, name in LADDER.items():
            dest = folder / f"{flavor}.mp4"
            try:
                os.link(fixtures[name], dest)
            except OSError:
                shutil.copyfile(fixtures[name], dest)
    return root


# --------------------------------------------------------------------------- server processes


class Node(ServerProcess):
    """`vodgate serve` in a subprocess (conftest.ServerProcess), started without waiting; :meth:`wait` until
    /healthz answers. ``headers`` are sent with every request: the shield secret a CDN in front would add."""

    def __init__(self, name: str, args: Sequence[str], workdir: Path, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(list(args), workdir / f"{name}.log", wait=False, name=name)
        self.headers = dict(headers or {})

    def put_profile(self, partner: str, name: str, rules: list[dict]) -> None:
        response = httpx.put(f"{self.base}/admin/partners/{partner}/profiles/{name}", json={"rules": rules},
                             headers={**self.headers, "Authorization": f"Bearer {ADMIN_SECRET}"}, timeout=10)
        if response.status_code != 200:
            raise AssertionError(f"{self.name}: PUT profile {partner}/{name}: {response.status_code} {response.text[:300]}")


# --------------------------------------------------------------------------- viewers


@dataclass(frozen=True)
class Viewer:
    name: str
    token: bool  # carries ?token= (signed for the entry) on every request
    headers: tuple[tuple[str, str], ...] = ()


VIEWERS = (
    Viewer("anonymous", token=False),
    Viewer("token", token=True),
    Viewer("limited", token=True, headers=(("Referer", "https://www.limited.example/watch"),)),
    Viewer("blocked", token=True, headers=(("Referer", "https://www.blocked.example/watch"),)),
    Viewer("bot", token=False, headers=(("User-Agent", BOT_UA),)),
)
TOKEN_VIEWER = "token"


def orders() -> list[tuple[Viewer, ...]]:
    """One order per viewer class: that class first (on a cold cache), then the others."""
    return [(first, *(v for v in VIEWERS if v is not first)) for first in VIEWERS]


# --------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class Resource:
    path: str  # below /p/<partner>/e/<entry>/
    method: str = "GET"
    range: str | None = None  # "bytes=0-99"
    revalidates: str | None = None  # If-None-Match with the ETag the token viewer got for this plain GET's label

    @property
    def label(self) -> str:
        text = self.path if self.method == "GET" else f"{self.method} {self.path}"
        if self.range:
            text += f" Range:{self.range.removeprefix('bytes=')}"
        if self.revalidates:
            text += " If-None-Match:token's"
        return text

    @property
    def conditional(self) -> bool:
        return self.revalidates is not None


def _relative(base_path: str, uri: str) -> str:
    """A playlist URI, resolved against the playlist's path and without its query."""
    return urlsplit(urljoin("http://x" + base_path, uri)).path


def _uris(playlist: str) -> list[str]:
    """Every URI a playlist lists: its URI lines and the URI="..." attributes of its tags."""
    uris = []
    for line in playlist.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            uris.append(line)
        elif 'URI="' in line:
            uris.append(line.split('URI="', 1)[1].split('"', 1)[0])
    return uris


def _audio_uris(playlist: str) -> list[str]:
    return [line.split('URI="', 1)[1].split('"', 1)[0] for line in playlist.splitlines()
            if line.startswith("#EXT-X-MEDIA:") and "TYPE=AUDIO" in line and 'URI="' in line]


def marked(path: str) -> bool:
    """A preview-marked name: ``index-p3.m3u8``, ``seg-1-p3.ts``, ``hi-p3.mp4``."""
    return "-p" in path.rsplit("/", 1)[-1]


def discover(ref: httpx.Client, partner: str, entry: str) -> list[Resource]:
    """Every resource of the matrix for one entry, found in the reference's answers.

    Plain resources come from the token viewer's playlists (the audio rendition,
    the last segment); the preview-marked ones (``index-p3.m3u8``,
    ``seg-1-p3.ts``, ``hi-p3.mp4``) from the anonymous viewer's, for the hi and
    lo flavors and the audio rendition.
    """
    root = f"/p/{partner}/e/{entry}/"
    token = {"token": sign_token(partner, entry)}

    def get(path: str, params: Mapping[str, str] | None = None) -> httpx.Response:
        response = ref.get(path, params=params)
        if response.status_code not in (200, 302):
            raise AssertionError(f"reference: {path} answered {response.status_code} {response.text[:200]}")
        return response

    def rel(path: str) -> str:
        assert path.startswith(root), path
        return path[len(root):]

    plain: list[str] = []
    previews: list[str] = []
    for fmt, ext in (("hls", "ts"), ("cmaf", "m4s")):
        master_path = f"{root}{fmt}/master.m3u8"
        audio = [rel(_relative(master_path, u)) for u in _audio_uris(get(master_path, token).text)][:1]  # hi/a1/index.m3u8
        audio_dir = audio[0].rsplit("/", 1)[0] if audio else None
        hi_index = get(f"{root}{fmt}/hi/index.m3u8", token).text
        last = max(int(u.split("seg-", 1)[1].split(".", 1)[0].split("-", 1)[0]) for u in _uris(hi_index) if "seg-" in u)
        plain += [f"{fmt}/master.m3u8", f"{fmt}/hi/index.m3u8", f"{fmt}/lo/index.m3u8", *audio, f"{fmt}/hi/iframes.m3u8"]
        if fmt == "cmaf":
            plain += [f"{fmt}/hi/init.mp4", f"{fmt}/lo/init.mp4", *([f"{audio_dir}/init.mp4"] if audio_dir else [])]
        plain += [f"{fmt}/hi/seg-{n}.{ext}" for n in sorted({1, 2, last})]
        plain += [f"{fmt}/lo/seg-1.{ext}", f"{fmt}/lo/seg-2.{ext}"]
        if audio_dir:
            plain += [f"{audio_dir}/seg-1.{ext}", f"{audio_dir}/seg-2.{ext}"]
        # what the anonymous (preview) viewer's playlists list under a preview marker
        for uri in _uris(get(master_path).text):
            path = rel(_relative(master_path, uri))
            folder = path.rsplit("/", 1)[0]
            if not marked(path) or folder not in (f"{fmt}/hi", f"{fmt}/lo", audio_dir):
                continue
            previews.append(path)
            if path.rsplit("/", 1)[1].startswith("index-"):
                for seg in _uris(get(root + path).text):
                    seg_path = rel(_relative(root + path, seg))
                    if marked(seg_path):
                        previews.append(seg_path)
    redirect = get(f"{root}mp4/hi.mp4")
    if redirect.status_code == 302:
        previews.append(rel(_relative(f"{root}mp4/hi.mp4", redirect.headers["location"])))

    resources = [Resource(p) for p in dict.fromkeys([*plain, "mp4/hi.mp4", "mp4/lo.mp4", *previews])]
    for fmt, ext in (("hls", "ts"), ("cmaf", "m4s")):
        seg2 = f"{fmt}/hi/seg-2.{ext}"
        resources += [
            Resource(seg2, method="HEAD"),
            Resource(seg2, range="bytes=0-99"),
            Resource(seg2, revalidates=seg2),
            Resource(f"{fmt}/master.m3u8", revalidates=f"{fmt}/master.m3u8"),
        ]
    resources += [
        Resource("mp4/hi.mp4", method="HEAD"),
        Resource("mp4/hi.mp4", range="bytes=0-99"),
        Resource("mp4/hi.mp4", revalidates="mp4/hi.mp4"),
    ]
    return resources


# --------------------------------------------------------------------------- answers


def cache_control_class(value: str | None) -> str:
    if value is None:
        return "absent"
    directives = {part.strip().split("=", 1)[0].lower() for part in value.split(",") if part.strip()}
    for name in ("no-store", "private", "public"):
        if name in directives:
            return name
    return f"other({value})"


@dataclass(frozen=True)
class Answer:
    status: int
    body: str  # "<size> B #<sha256 prefix>"
    cache_control: str
    location: str | None
    head_length: str | None  # Content-Length of a HEAD answer
    # for the report only
    x_cache: str | None = field(default=None, compare=False)
    etag: str | None = field(default=None, compare=False)
    note: str = field(default="", compare=False)  # the error code, or what a playlist lists

    def differences(self, ref: "Answer") -> list[str]:
        out = []
        if self.status != ref.status:
            out.append(f"status {self.status} (REF {ref.status})")
        if self.body != ref.body:
            out.append(f"body {self.body} (REF {ref.body})")
        if self.cache_control != ref.cache_control:
            out.append(f"Cache-Control {self.cache_control} (REF {ref.cache_control})")
        if self.location != ref.location:
            out.append(f"Location {self.location} (REF {ref.location})")
        if self.head_length != ref.head_length:
            out.append(f"HEAD Content-Length {self.head_length} (REF {ref.head_length})")
        return out


def _note(response: httpx.Response) -> str:
    kind = response.headers.get("content-type", "")
    if kind.startswith("application/json"):
        try:
            return str(response.json().get("error"))
        except ValueError:
            return "json?"
    if "mpegurl" in kind:
        names = [urlsplit(u).path.rsplit("/", 1)[-1] for u in _uris(response.text)]
        listed = sorted({n for n in names if "-p" in n})
        folders = sorted({urlsplit(u).path.rsplit("/", 1)[0] for u in _uris(response.text) if "/" in u})
        return f"{len(names)} URIs" + (f" in {','.join(folders)}" if folders else "") + (f", marked {','.join(listed[:3])}" if listed else "")
    return ""


def answer_of(response: httpx.Response) -> Answer:
    body = response.content
    return Answer(
        status=response.status_code,
        body=f"{len(body)} B #{hashlib.sha256(body).hexdigest()[:8]}",
        cache_control=cache_control_class(response.headers.get("cache-control")),
        location=response.headers.get("location"),
        head_length=response.headers.get("content-length") if response.request.method == "HEAD" else None,
        x_cache=response.headers.get("x-cache"),
        etag=response.headers.get("etag"),
        note=_note(response),
    )


Answers = dict[tuple[str, str], Answer]  # (viewer, resource label) -> answer


def run_order(client: httpx.Client, partner: str, entry: str, order: Sequence[Viewer], resources: Sequence[Resource]) -> Answers:
    """Every viewer of ``order`` asks for every resource, viewer after viewer.

    Plain requests first (the first viewer meets a cold cache for this entry),
    then the revalidations, which send the ETag the token viewer got for the
    same resource on this server and entry.
    """
    token = sign_token(partner, entry)
    root = f"/p/{partner}/e/{entry}/"
    answers: Answers = {}
    for phase in (False, True):
        for viewer in order:
            for resource in resources:
                if resource.conditional != phase:
                    continue
                headers = dict(viewer.headers)
                if resource.range:
                    headers["Range"] = resource.range
                if resource.revalidates:
                    got = answers.get((TOKEN_VIEWER, resource.revalidates))
                    headers["If-None-Match"] = (got.etag if got is not None else None) or '"no-etag-for-token-viewer"'
                params = {"token": token} if viewer.token else None
                response = client.request(resource.method, root + resource.path, params=params, headers=headers)
                answers[(viewer.name, resource.label)] = answer_of(response)
    return answers


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Mismatch:
    role: str
    order: str  # which viewer came first, or the scenario
    viewer: str
    resource: str
    what: str


def compare(role: str, order: str, got: Answers, ref: Answers) -> list[Mismatch]:
    rows = []
    for key, expected in ref.items():
        answer = got.get(key)
        if answer is None:
            rows.append(Mismatch(role, order, key[0], key[1], "not asked"))
            continue
        diffs = answer.differences(expected)
        if diffs:
            context = f"[X-Cache {answer.x_cache}; got: {answer.note or '-'}; REF: {expected.note or '-'}]"
            rows.append(Mismatch(role, order, key[0], key[1], "; ".join(diffs) + " " + context))
    return rows


def table(rows: Sequence[Mismatch], limit: int = 400) -> str:
    """The mismatches as an aligned table, grouped by role and order."""
    if not rows:
        return "no mismatches"
    head = ("role", "order", "viewer", "resource", "differs")
    cells = [(r.role, r.order, r.viewer, r.resource, r.what) for r in rows[:limit]]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head[:4], widths)) + "  " + head[4]]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell[:4], widths)) + "  " + cell[4] for cell in cells]
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more")
    return "\n".join(lines)
