"""What writing a viewer's token into a cached playlist costs: a pass over every line (with_query) against filling
the slots of a cached template (query_template once, fill_query per response), for media playlists of 5 minutes,
1 hour and 3 hours of 2 s segments and a master. Both run on the same playlists, alternating rounds, in one process;
the figures are per response, and their ratio is the point (these machines are noisy).

    python -m loadtests.bench_playlists [--rounds 5] [--calls 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from fractions import Fraction

from packager.hls.playlists import PlaylistSegment, media_playlist
from packager.hls.uris import fill_query, query_template, with_query

QUERY = "token=vg1.k1.eyJhY2wiOiIvcC9kZW1vL2UvbGFkZGVyIiwiZXhwIjoxNzk2NDMyMTU4fQ.q6s1w_kMSmjDNYkrtlKT52uToF41Nqs4jS0tUYkF9gQ&playSessionId=s-1"


def media(segments: int) -> str:
    return media_playlist([PlaylistSegment(f"seg-{n}.ts", Fraction(2)) for n in range(1, segments + 1)], target_duration=2, version=3)


def master(variants: int = 6) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="English",URI="hi/a1/index.m3u8"']
    for i in range(variants):
        lines += [f'#EXT-X-STREAM-INF:BANDWIDTH={1_000_000 * (i + 1)},CODECS="avc1.64001f,mp4a.40.2",AUDIO="audio"', f"v{i}/index.m3u8"]
    return "\n".join(lines) + "\n"


def per_call(fn, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args(argv)
    cases = {"master (6 variants)": master(), "5 min (150 segments)": media(150), "1 h (1,800 segments)": media(1800),
             "3 h (5,400 segments)": media(5400)}
    print(f"{'playlist':24} {'with_query ms':>14} {'template ms':>12} {'ratio':>7}")
    for name, text in cases.items():
        template = query_template(text).encode()
        assert fill_query(template, QUERY).decode() == with_query(text, QUERY)  # the same answer, or the figure means nothing
        old, new = [], []
        for _ in range(args.rounds):  # alternating: noise hits both
            old.append(per_call(lambda: with_query(text, QUERY).encode(), args.calls))
            new.append(per_call(lambda: fill_query(template, QUERY), args.calls))
        a, b = statistics.median(old), statistics.median(new)
        print(f"{name:24} {a:14.4f} {b:12.4f} {a / b:6.1f}x")


if __name__ == "__main__":
    main()
