"""A vodgate server with analytics wired exactly as ``vodgate serve`` will wire it.

Used by the analytics tests (a real server subprocess: SIGTERM drills) and by
loadtests/bench_analytics.py until the ``[analytics]`` config section is wired
into ``vodgate serve``; it is also the reference for that wiring:

    app = create_app(settings)
    served, http = with_hot_lane(app, wrap(app, analytics_config, metrics_config))
    uvicorn.run(served, host=..., port=..., log_level=..., http=http or "auto")

    python -m analytics.devserver --media DIR --port 8080 --events jsonl:/tmp/ev [--redis URL ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from config.settings import Settings, segment_duration

from config.analytics import AnalyticsConfig, MetricsConfig
from .middleware import wrap


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analytics.devserver")
    p.add_argument("--media", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--segment-duration", default="6")
    p.add_argument("--events", default="off", help="off | jsonl:DIR | redis:URL | jsonl:DIR,redis:URL")
    p.add_argument("--stream", default="vodgate:events")
    p.add_argument("--metrics", choices=("on", "off"), default="on")
    p.add_argument("--node-id", default="dev")
    p.add_argument("--queue-size", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--flush-interval", type=float, default=1.0)
    p.add_argument("--sink-delay", type=float, default=0.0, help="seconds each sink write waits (shutdown drills)")
    p.add_argument("--log-level", default="info")
    p.add_argument("--access-log", choices=("on", "off"), default="on")
    p.add_argument("--hot-lane", choices=("on", "off"), default="on", help="as [cache] hot_lane (default on, as serve)")
    ns = p.parse_args(argv)

    cfg = AnalyticsConfig(node_id=ns.node_id, queue_size=ns.queue_size, batch_size=ns.batch_size,
                          flush_interval=ns.flush_interval, stream=ns.stream)
    if ns.events != "off":
        sinks = []
        for spec in ns.events.split(","):
            kind, _, target = spec.partition(":")
            if kind == "jsonl":
                cfg = replace(cfg, path=Path(target))
            elif kind == "redis":
                cfg = replace(cfg, redis_url=target)
            else:
                p.error(f"--events: unknown sink {spec!r}")
            sinks.append(kind)
        cfg = replace(cfg, enabled=True, sinks=tuple(sinks))
    logging.basicConfig(level=ns.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from edge.app import create_app, with_hot_lane

    settings = Settings(media_root=ns.media, segment_duration=segment_duration(ns.segment_duration, "--segment-duration"),
                        hot_lane=ns.hot_lane == "on")
    app = create_app(settings)
    served, http = with_hot_lane(app, wrap(app, cfg, MetricsConfig(enabled=ns.metrics == "on"), sink_delay=ns.sink_delay))

    import uvicorn

    uvicorn.run(served, host=ns.host, port=ns.port, log_level=ns.log_level, access_log=ns.access_log == "on",
                http=http or "auto")
    return 0


if __name__ == "__main__":
    sys.exit(main())
