"""Load tests for a running vodgate server (see loadtests/README.md).

Two kinds of users:

* ``Viewer`` plays one entry like an HLS player: master playlist, one variant
  (``--variant``) and its audio rendition, the init segments (``cmaf``), then
  segment 1, 2, ... of video and audio in order. With ``--realtime`` it fetches
  segment n when segment n-1 has "played" (EXTINF pacing, one segment ahead of
  the playhead); without it, as fast as the server answers. At the end of the
  entry it starts over on a random entry.
* ``CdnPull`` is a CDN filling its cache: every URL of an entry exactly once --
  master, every media and I-frame playlist, every init segment and every
  segment of every rendition -- in both ``hls`` and ``cmaf``, then the next
  entry (round robin).

Requests are named ``"<format> <type>"`` with type master, playlist, init or
segment, so the statistics and ``--csv`` files group them. When the test stops,
the responses' ``X-Cache`` values (the server's segment cache) are printed
per request name.

    locust -f loadtests/locustfile.py --headless -u 20 -r 5 -t 30s \\
        --host http://127.0.0.1:8080 --csv out/run \\
        --entries demo/ladder --format hls --variant random [--realtime] [Viewer|CdnPull]
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urljoin

import gevent
import m3u8
from locust import HttpUser, constant, events, task

FORMATS = ("hls", "cmaf")

#: (request name, X-Cache header) -> responses, printed when the test stops: how much of the
#: load the server's segment cache absorbed (HIT / MISS / COALESCED; "-" when the header is absent).
CACHE_STATUS: Counter[tuple[str, str]] = Counter()


@events.test_stop.add_listener
def _print_cache_status(environment, **_kwargs) -> None:
    if not CACHE_STATUS:
        return
    print("\nX-Cache by request name:")
    for name in sorted({name for name, _ in CACHE_STATUS}):
        counts = {status: n for (n_name, status), n in CACHE_STATUS.items() if n_name == name}
        total = sum(counts.values())
        parts = ", ".join(f"{status} {n} ({100 * n / total:.0f}%)" for status, n in sorted(counts.items()))
        print(f"  {name:16} {parts}")


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--entries", type=str, default="demo/ladder", env_var="VODGATE_ENTRIES",
                        help="comma-separated partner/entry list to play (default demo/ladder)")
    parser.add_argument("--format", type=str, choices=list(FORMATS), default="hls", env_var="VODGATE_FORMAT",
                        help="Viewer: hls (MPEG-TS segments) or cmaf (fMP4 segments); CdnPull always pulls both")
    parser.add_argument("--variant", type=str, choices=["random", "highest", "lowest"], default="random",
                        env_var="VODGATE_VARIANT", help="Viewer: which variant of the master playlist to play")
    parser.add_argument("--realtime", action="store_true", default=False, env_var="VODGATE_REALTIME",
                        help="Viewer: pace segment fetches at their EXTINF durations (default: as fast as possible)")


def _entries(environment) -> list[tuple[str, str]]:
    raw = environment.parsed_options.entries if environment.parsed_options else "demo/ladder"
    entries = []
    for item in raw.split(","):
        item = item.strip().strip("/")
        if not item:
            continue
        partner, sep, entry = item.partition("/")
        if not sep or not partner or not entry or "/" in entry:
            raise ValueError(f"--entries: {item!r} is not partner/entry")
        entries.append((partner, entry))
    if not entries:
        raise ValueError("--entries: no entry given")
    return entries


def master_path(partner: str, entry: str, fmt: str) -> str:
    return f"/p/{partner}/e/{entry}/{fmt}/master.m3u8"


class _Fetcher(HttpUser):
    """Shared GET helpers: every response is checked, and named by its type."""

    abstract = True

    def get_text(self, path: str, name: str) -> str | None:
        with self.client.get(path, name=name, catch_response=True) as resp:
            CACHE_STATUS[name, resp.headers.get("X-Cache", "-")] += 1
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code} for {path}: {resp.text[:200]}")
                return None
            if not resp.text.startswith("#EXTM3U"):
                resp.failure(f"{path}: not an M3U8 playlist")
                return None
            resp.success()
            return resp.text

    def get_playlist(self, path: str, name: str) -> m3u8.M3U8 | None:
        text = self.get_text(path, name)
        return None if text is None else m3u8.loads(text)

    def get_binary(self, path: str, name: str, fmt: str) -> bool:
        with self.client.get(path, name=name, catch_response=True) as resp:
            CACHE_STATUS[name, resp.headers.get("X-Cache", "-")] += 1
            body = resp.content or b""
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code} for {path}")
                return False
            if not body:
                resp.failure(f"{path}: empty body")
                return False
            if name.endswith("segment") and fmt == "hls" and (len(body) % 188 or body[0] != 0x47):
                resp.failure(f"{path}: not MPEG-TS ({len(body)} bytes)")
                return False
            declared = resp.headers.get("Content-Length")
            if declared is not None and int(declared) != len(body):
                resp.failure(f"{path}: Content-Length {declared} but {len(body)} bytes")
                return False
            resp.success()
            return True


@dataclass
class _Session:
    """One playback: the segment URLs of the chosen variant and audio, in order."""

    fmt: str
    steps: list[tuple[list[str], float]]  # per segment number: the URLs to fetch, the EXTINF to pace on
    position: int = 0
    started: float | None = None
    played: float = 0.0  # seconds of media before the next segment
    inits: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.position >= len(self.steps)


class Viewer(_Fetcher):
    weight = 9
    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.entries = _entries(self.environment)
        self.fmt = options.format if options else "hls"
        self.variant_rule = options.variant if options else "random"
        self.realtime = bool(options.realtime) if options else False
        self.session: _Session | None = None

    @task
    def play(self) -> None:
        if self.session is None or self.session.done:
            self.session = self._open(*random.choice(self.entries))
            if self.session is None:
                gevent.sleep(1)  # the failure is recorded; don't spin on a broken entry
            return
        self._next_segment(self.session)

    def _choose(self, variants: list) -> object:
        if self.variant_rule == "highest":
            return max(variants, key=lambda v: v.stream_info.bandwidth or 0)
        if self.variant_rule == "lowest":
            return min(variants, key=lambda v: v.stream_info.bandwidth or 0)
        return random.choice(variants)

    def _open(self, partner: str, entry: str) -> _Session | None:
        fmt = self.fmt
        master_url = master_path(partner, entry, fmt)
        master = self.get_playlist(master_url, f"{fmt} master")
        if master is None:
            return None
        renditions: list[str] = []  # media playlist URLs: the variant's, then its audio
        if master.playlists:
            variant = self._choose(list(master.playlists))
            renditions.append(urljoin(master_url, variant.uri))
            group = variant.stream_info.audio
            audios = [m for m in master.media if m.type == "AUDIO" and m.group_id == group and m.uri]
            if audios:
                audio = next((m for m in audios if (m.default or "").upper() == "YES"), audios[0])
                renditions.append(urljoin(master_url, audio.uri))
        if not renditions:
            return None
        tracks = []
        inits = []
        for url in renditions:
            playlist = self.get_playlist(url, f"{fmt} playlist")
            if playlist is None:
                return None
            for section in playlist.segment_map or []:
                inits.append(urljoin(url, section.uri))
            tracks.append([(urljoin(url, s.uri), float(s.duration)) for s in playlist.segments])
        for init in dict.fromkeys(inits):
            if not self.get_binary(init, f"{fmt} init", fmt):
                return None
        count = max(len(t) for t in tracks)
        steps = []
        for n in range(count):
            urls = [t[n][0] for t in tracks if n < len(t)]
            extinf = next(t[n][1] for t in tracks if n < len(t))  # the video's (first rendition) when present
            steps.append((urls, extinf))
        return _Session(fmt, steps, inits=inits)

    def _next_segment(self, session: _Session) -> None:
        urls, extinf = session.steps[session.position]
        if self.realtime:
            now = time.monotonic()
            if session.started is None:
                session.started = now
            due = session.started + session.played - extinf  # stay one segment ahead of the playhead
            if due > now:
                gevent.sleep(due - now)
        for url in urls:
            self.get_binary(url, f"{session.fmt} segment", session.fmt)
        session.played += extinf
        session.position += 1


class CdnPull(_Fetcher):
    weight = 1
    wait_time = constant(0)
    _counter = itertools.count()  # shared: CdnPull users spread over the entries

    def on_start(self) -> None:
        self.entries = _entries(self.environment)

    @task
    def pull_entry(self) -> None:
        partner, entry = self.entries[next(self._counter) % len(self.entries)]
        for fmt in FORMATS:
            self._pull(partner, entry, fmt)

    def _pull(self, partner: str, entry: str, fmt: str) -> None:
        master_url = master_path(partner, entry, fmt)
        master = self.get_playlist(master_url, f"{fmt} master")
        if master is None:
            return
        playlists = [v.uri for v in master.playlists] + [m.uri for m in master.media if m.uri]
        playlists += [i.uri for i in master.iframe_playlists]
        seen: set[str] = set()
        for uri in dict.fromkeys(playlists):
            url = urljoin(master_url, uri)
            playlist = self.get_playlist(url, f"{fmt} playlist")
            if playlist is None:
                continue
            for section in playlist.segment_map or []:
                init = urljoin(url, section.uri)
                if init not in seen:
                    seen.add(init)
                    self.get_binary(init, f"{fmt} init", fmt)
            for segment in playlist.segments:  # I-frame playlists name the same segments (byte ranges): once
                seg = urljoin(url, segment.uri)
                if seg not in seen:
                    seen.add(seg)
                    self.get_binary(seg, f"{fmt} segment", fmt)
