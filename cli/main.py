"""The `vodgate` command: serve, check, config check, bench, token, access, report, aggregate."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from config.errors import without_credentials
from config.settings import ConfigError, Settings, load_settings, read_toml, segment_duration

from . import access as access_cli

DEMO_DIR = Path("demo-media")
PASSTHROUGH = ("bench", "report", "aggregate")  # commands that parse their own options


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else argv
    ns, rest = parser.parse_known_args(argv)
    ns.argv = argv
    if rest and ns.command not in PASSTHROUGH:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return _run(ns, rest)
    except ConfigError as exc:
        print(f"vodgate: configuration error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vodgate", description="On-the-fly HLS packaging origin and video edge.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--config", type=Path, help="TOML config file (see docs/CONFIGURATION.md)")
    serve.add_argument("--media", type=Path, help="media folder: DIR/<partner>/<entry>/<flavor>.mp4")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--segment-duration", help="target segment duration in seconds (default 6)")
    serve.add_argument("--role", choices=("all", "origin", "edge"), help="all (default): package and cache; edge: pull from --upstream")
    serve.add_argument("--upstream", action="append", default=[], metavar="URL", help="an origin for the edge role (repeat for failover)")
    serve.add_argument("--redis", metavar="URL", help="Redis for purges across nodes, e.g. redis://127.0.0.1:6379/0")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="serving processes sharing the port (default: server.workers, else one per CPU)")

    check = commands.add_parser("check", help="validate a media library and report unplayable files")
    check.add_argument("dir", type=Path)
    check.add_argument("--segment-duration", help="target segment duration in seconds (default: the config's, else 6)")
    check.add_argument("--config", type=Path, help="TOML config file: check as this server would serve (server.follow_symlinks)")

    config = commands.add_parser("config", help="configuration commands")
    config_commands = config.add_subparsers(dest="action", required=True)
    config_check = config_commands.add_parser(
        "check", help="load a TOML config as `vodgate serve` would, without serving (like nginx -t): "
                      "exit 0 when it would start, 2 with the error otherwise")
    config_check.add_argument("file", type=Path)

    commands.add_parser("bench", help="cold packaging benchmark (see docs/PERFORMANCE.md; --help for its options)", add_help=False)
    access_cli.add_token_commands(commands)
    access_cli.add_access_commands(commands)
    commands.add_parser("report", help="play analytics report (--help for its options)", add_help=False)
    commands.add_parser("aggregate", help="consume the Redis event stream into aggregates (--help for options)", add_help=False)

    return parser


def _run(ns: argparse.Namespace, rest: list[str]) -> int:
    if ns.command == "serve":
        return _serve(ns)
    if ns.command == "check":
        return _check(ns)
    if ns.command == "config":
        return _config_check(ns)
    if ns.command in ("token", "access"):
        return access_cli.run(ns)
    if ns.command == "report":
        from analytics.report import main as report_main

        return report_main(rest)
    if ns.command == "aggregate":
        from analytics.aggregator import main as aggregate_main

        return aggregate_main(rest)
    from loadtests.bench import main as bench_main

    return bench_main(rest)


def _settings(ns: argparse.Namespace, config: dict | None = None) -> Settings:
    """Settings from --config (or ``config``, that file's document as already read: by ``serve`` at start, or as a
    worker's supervisor accepted it) and the command line's overrides."""
    settings = load_settings(ns.config, config) if ns.config else Settings()
    overrides = {"host": ns.host, "port": ns.port, "media_root": ns.media}
    if ns.segment_duration is not None:
        overrides["segment_duration"] = segment_duration(ns.segment_duration, "--segment-duration")
    return settings.with_overrides(**overrides)


def _serve(ns: argparse.Namespace) -> int:
    # read once: the settings served, the reload baseline and (with workers) what every worker starts from
    config = read_toml(ns.config) if ns.config else None
    settings, role, edge_config = _serving(ns, announce=True, config=config)
    count = settings.workers
    if count == 1:
        import uvicorn

        served, http, _, _ = _build_served(ns, settings, role, edge_config, config=config)
        uvicorn.run(served, **_uvicorn_options(settings, http))
        return 0
    from edge.workers import Supervisor

    # the supervisor serves nothing: each worker builds the whole server from the same argv (run_worker).
    # It builds the app once, unserved, so a config that would stop a worker (a bad GeoIP database, an edge
    # without edge_secrets) stops the node here, with its message, before any worker starts.
    probe = _build_app(ns, dataclasses.replace(settings, cache_disk_path=None), role, edge_config)  # not its disk tier
    probe.state.access.close()
    return Supervisor(run_worker, ns.argv, count, settings.host, settings.port,
                      make_analytics=lambda: _node_analytics(settings, probe),
                      config=config,
                      read_config=lambda: _accepted_config(ns.config)).run()


def run_worker(argv: list[str], spec) -> None:
    """One worker process of ``vodgate serve --workers N`` (edge/workers.py starts it in a fresh interpreter)."""
    import os
    import signal

    os.setpgrp()  # a terminal's Ctrl-C reaches the supervisor only, which stops the workers once, gracefully
    # until its reload handler is installed, a SIGHUP would kill this worker (Python's default): the supervisor
    # sends none before the worker answers on its control socket, this covers one sent meanwhile by hand
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    ns, _ = _parser().parse_known_args(argv)
    ns.argv = argv
    settings, role, edge_config = _serving(ns, announce=False, config=spec.config)
    settings = settings.with_overrides(workers=spec.count, worker=spec.index, port=spec.port, run_dir=spec.run_dir)
    if not (ns.redis or settings.redis_url) and (settings.admin is None or settings.admin.state_file is None):
        from config.admin import AdminConfig

        # admin API changes must reach every worker: without Redis or a state file of the operator's, the
        # workers share a file in the node's private run folder (lost at exit, as memory is; warned once)
        settings = settings.with_overrides(admin=AdminConfig(spec.run_dir / "admin-changes.json", temporary=True))
    served, http, app, metrics = _build_served(ns, settings, role, edge_config, relay_to=spec.relay,
                                                 config=spec.config)
    if spec.reloaded is not None:  # what its siblings applied since the node started, applied as they did
        app.state.reloader.reload(spec.reloaded)
    import uvicorn

    from edge.workers import connect_worker, serve_worker

    handlers = connect_worker(spec, app, metrics)
    serve_worker(uvicorn.Config(served, **_uvicorn_options(settings, http)), spec, handlers)


def _serving(ns: argparse.Namespace, *, announce: bool, config: dict | None = None):
    """The settings, role and [edge] config ``serve`` runs with; ``announce`` prints what is served (once per node)."""
    from config.edge import parse_edge_section
    from config.settings import MAX_WORKERS, workers_for
    from .logs import install as redact_tokens_in_logs

    settings = _settings(ns, config)
    if ns.workers is not None and not 1 <= ns.workers <= MAX_WORKERS:
        raise ConfigError(f"--workers has value {ns.workers}; expected 1 to {MAX_WORKERS}")
    settings = settings.with_overrides(workers=ns.workers or workers_for(settings.workers))
    role, edge_config = parse_edge_section(settings.edge_table, settings.source, role=ns.role, upstreams=ns.upstream)
    redact_tokens_in_logs()  # every record of every logger (uvicorn's, httpx's, ours): cli/logs.py
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if role == "edge":
        if announce:
            print(f"vodgate: edge on http://{settings.host}:{settings.port}, pulling from {without_credentials(', '.join(edge_config.upstreams))}")
        return settings, role, edge_config
    if ns.config is None and ns.media is None:
        settings = settings.with_overrides(media_root=_demo_library() if announce else DEMO_DIR)
    _require_media(settings)
    if announce:
        _print_urls(settings)
    return settings, role, edge_config


def _build_served(ns: argparse.Namespace, settings: Settings, role: str, edge_config, relay_to: Path | None = None,
                  config: dict | None = None):
    """(what uvicorn runs, its protocol class, the app, its Metrics or None) for one serving process."""
    from analytics.middleware import wrap
    from edge.access_log import with_access_log
    from edge.app import with_hot_lane
    from .logs import redact_text as redact_log_text

    app = _build_app(ns, settings, role, edge_config)
    _reload_on_sighup(ns.config, settings, app, role, config)
    wrapped = wrap(app, settings.analytics, settings.metrics, relay_to=relay_to)
    served, http = with_hot_lane(app, wrapped)  # events, /metrics, hot lane
    # one access line per request, hot lane included (edge/access_log.py); uvicorn's own line is off (access_log=False)
    served, http = with_access_log(served, http, settings.access_log, app.state.access.viewer_ip, redact_log_text)
    return served, http, app, getattr(wrapped, "metrics", None)


def _build_app(ns: argparse.Namespace, settings: Settings, role: str, edge_config):
    from edge.app import create_app, create_edge

    redis_url = ns.redis or settings.redis_url
    return create_edge(settings, edge_config, redis_url) if role == "edge" else create_app(settings, redis_url=redis_url)


def _uvicorn_options(settings: Settings, http) -> dict:
    # proxy_headers=False: uvicorn would otherwise believe X-Forwarded-For from any local peer;
    # vodgate applies its own trusted-proxy rule (server.trusted_proxies) in auth/client_ip.py
    # HTTP limits (docs/CONFIGURATION.md [server]): head time and size and body time in edge/http_limits.py's
    # protocol (h11, the fallback without httptools, bounds the head size itself); uvicorn answers 503 once
    # connections reach limit_concurrency, counting the asking one, hence + 1 for max_connections served
    return dict(host=settings.host, port=settings.port, log_level=settings.log_level, proxy_headers=False, access_log=False,
                http=http or "auto", timeout_keep_alive=settings.keep_alive_timeout,
                limit_concurrency=settings.max_connections + 1, h11_max_incomplete_event_size=settings.max_header_bytes)


def _node_analytics(settings: Settings, app):
    """The node's one event builder when it runs workers (analytics/relay.py); None with analytics off."""
    config = settings.analytics
    if config is None or not config.enabled:
        return None
    from analytics.service import Analytics

    # an origin resolves progressive ranges to media time from its (cached) indexes, as one process does
    return Analytics.from_config(config, media=getattr(app.state, "media", None))


def _accepted_config(path: Path | None) -> dict | None:
    """The config file's document, once it loads as a reload would load it (ConfigError otherwise)."""
    if path is None:
        return None
    from edge.reload import accepted_config

    return accepted_config(path)[0]


def _reload_on_sighup(path: Path | None, settings: Settings, app, role: str, config: dict | None = None) -> None:
    """SIGHUP re-reads the config file (edge/reload.py); without one it is logged and ignored, never fatal."""
    import signal

    if path is None:
        signal.signal(signal.SIGHUP, lambda *_: logging.getLogger("vodgate.reload").warning(
            "SIGHUP ignored: started without --config, there is no file to reload"))
        return
    from edge.reload import Reloader

    # a worker: what its supervisor accepted (edge/workers.py WorkerSpec)
    started_with = load_settings(path, config) if config is not None else None
    app.state.reloader = Reloader(path, settings, app.state.access, role, started_with,
                                  on_protection_change=lambda partners: _purge_partners(app, partners))
    app.state.reloader.install()


def _purge_partners(app, partners: list[str]) -> None:
    """After a reload changed these partners' content protection (edge/reload.py): drop their cached objects on this
    node and, with Redis, on every node of the purge bus, as a task of the running loop (the reload is a loop
    callback). Without a running loop (a worker applying its siblings' reload before it serves) nothing is cached yet."""
    import asyncio

    from edge.purge import PurgeRequest

    purger = getattr(app.state, "purger", None)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if purger is None:
        return
    tasks = getattr(app.state, "protection_purges", None)  # a reference until done (the loop keeps weak ones)
    if tasks is None:
        tasks = app.state.protection_purges = set()

    async def purge() -> None:
        log = logging.getLogger("vodgate.reload")
        for partner in partners:
            try:
                result = await purger.purge(PurgeRequest(partner=partner))
            except Exception:  # noqa: BLE001 - logged; the next reload or an admin purge can do it again
                log.exception("reload: purging partner %s's cached objects failed", partner)
                continue
            log.info("reload: purged partner %s after its protection changed: %s", partner, result.to_dict())

    task = loop.create_task(purge(), name="vodgate-protection-purge")
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def _require_media(settings: Settings) -> None:
    if settings.catalog is None and not settings.media_root.is_dir():
        raise ConfigError(f"media folder {settings.media_root} does not exist (set server.media_root or --media)")


def _config_check(ns: argparse.Namespace) -> int:
    """Every check `vodgate serve` makes of its config before it listens, and nothing else: no socket,
    no cache folder, no media parsed. The GeoIP database is opened (a bad one stops serve too)."""
    from auth.access import AccessControl
    from config.partners import AccessConfig
    from edge.app import require_edge_secrets
    from config.edge import parse_edge_section

    settings = load_settings(ns.file)
    role, edge_config = parse_edge_section(settings.edge_table, settings.source)
    access = AccessControl.from_config(settings.access or AccessConfig())
    if role == "edge":
        require_edge_secrets(settings, access)
        serves = f"pulling from {without_credentials(', '.join(edge_config.upstreams))}"
    else:
        _require_media(settings)
        serves = f"media from {settings.media_root}" if settings.catalog is None else "media of its [catalog]"
    partners = len(access.config.partners)
    print(f"vodgate: {ns.file}: configuration OK: role {role} on {settings.host}:{settings.port}, {serves}, "
          f"{partners} partner(s)")
    for pid, partner in access.config.partners.items():
        # the partner's method and any its profiles set for their entries
        methods = sorted(({partner.protection.method} | {p.encryption for p in partner.profiles.values() if p.encryption}) - {"none"})
        if methods and partner.clear_progressive:
            print(f"vodgate: warning: partner {pid} encrypts its HLS ({', '.join(methods)}) but sets "
                  f"clear_progressive = true: its progressive MP4 (/mp4/, clips included) is the clear file, served "
                  f"to every viewer its rules admit (docs/CONTENT_PROTECTION.md)", file=sys.stderr)
        if "sample-aes" in methods and partner.protection.rotation_segments:
            print(f"vodgate: warning: partner {pid} rotates SAMPLE-AES keys every {partner.protection.rotation_segments} "
                  f"segments: ffmpeg decrypts a TS segment's last frames with the next segment's key, so it shows 1-2 "
                  f"broken frames at every key change, and takes one key per stream for fMP4 (cbcs), so rotated cbcs "
                  f"does not play in ffmpeg (docs/CONTENT_PROTECTION.md, SAMPLE-AES)", file=sys.stderr)
    held = _secrets_held(settings)
    if held and ns.file.stat().st_mode & 0o004:  # systemd runs this check at every start and reload: the journal says it
        print(f"vodgate: warning: {ns.file} holds {', '.join(held)} and every user of this machine can read it: "
              f"make it readable by the server's group only (chown root:vodgate; chmod 640)", file=sys.stderr)
    return 0


def _secrets_held(settings: Settings) -> list[str]:
    """The kinds of secret a config holds (names only), for the file-mode warning of `config check`."""
    partners = settings.access.partners.values() if settings.access is not None else ()
    edge = settings.edge_table
    held = {
        "cdn.shield_secrets": bool(settings.shield_secrets),
        "cdn.edge_secrets": bool(settings.edge_secrets),
        "token keys": any(p.keys.keys for p in partners),
        "admin secrets": any(p.admin_secret for p in partners),
        "key secrets": any(p.protection.secrets for p in partners),
        "edge.upstream_headers": bool(edge.get("upstream_headers")),
        "storage.headers": bool(settings.storage is not None and settings.storage.headers),
        "a password in a URL": any("@" in url for url in (
            settings.redis_url or "", *edge.get("upstreams", ()), settings.storage.base_url if settings.storage else "",
            settings.analytics.redis_url if settings.analytics else "")),
    }
    return [name for name, present in held.items() if present]


def _demo_library() -> Path:
    from origin.demo_media import make_demo_library

    print(f"vodgate: using the demo library in {DEMO_DIR}/ (generated on first run)")
    return make_demo_library(DEMO_DIR)


def _print_urls(settings: Settings) -> None:
    from edge import urls

    base = f"http://{settings.host}:{settings.port}"
    root = settings.media_root
    entries = sorted(p for p in root.glob("*/*") if p.is_dir())
    print(f"vodgate: serving {root} on {base}")
    for entry_dir in entries[:20]:
        partner, entry = entry_dir.parent.name, entry_dir.name
        links = [p for p in (entry_dir.parent, entry_dir, *sorted(entry_dir.glob("*.mp4"))) if p.is_symlink()]
        if links and not settings.follow_symlinks:
            names = ", ".join(str(p.relative_to(root)) for p in links)
            print(f"  {partner}/{entry}: symbolic links not followed (server.follow_symlinks = false), answered 404: {names}")
            if all(p.is_symlink() for p in sorted(entry_dir.glob("*.mp4"))) or entry_dir.is_symlink() or entry_dir.parent.is_symlink():
                continue
        print(f"  {partner}/{entry}:")
        print(f"    HLS (TS)   {base}{urls.master_path(partner, entry, 'hls')}")
        print(f"    HLS (fMP4) {base}{urls.master_path(partner, entry, 'cmaf')}")
        print(f"    DASH       {base}{urls.mpd_path(partner, entry)}")
        for flavor in sorted(entry_dir.glob("*.mp4"))[:1]:
            print(f"    MP4        {base}{urls.progressive_path(partner, entry, flavor.stem)}")
    if len(entries) > 20:
        print(f"  ... and {len(entries) - 20} more entries")


def _check(ns: argparse.Namespace) -> int:
    from origin.check import check_library

    settings = load_settings(ns.config) if ns.config else Settings()
    target = segment_duration(ns.segment_duration, "--segment-duration") if ns.segment_duration else settings.segment_duration
    if not ns.dir.is_dir():
        print(f"vodgate check: {ns.dir} is not a folder", file=sys.stderr)
        return 2
    reports = check_library(ns.dir, target, settings.follow_symlinks)
    for report in reports:
        name = _printable(str(report.path.relative_to(ns.dir)))
        print(f"{report.status:4}  {name}  {_printable(report.summary)}")
        for error in report.errors:
            print(f"      error: {_printable(error)}")
        for warning in report.warnings:
            print(f"      warning: {_printable(warning)}")
    failed = sum(1 for r in reports if r.errors)
    warned = sum(1 for r in reports if r.warnings and not r.errors)
    print(f"{len(reports)} files: {len(reports) - failed - warned} ok, {warned} with warnings, {failed} unplayable")
    return 1 if failed else 0


def _printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``, ``\\n``): file names in a library are anyone's
    who can upload to it, and one holding a newline or a terminal escape sequence would forge report lines or
    drive the operator's terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


if __name__ == "__main__":
    sys.exit(main())
