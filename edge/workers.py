"""Serving on every core: a supervisor process and N worker processes sharing one port.

    vodgate serve --workers 4        ([server] workers; 0 = one per CPU, the default)

The supervisor binds nothing and serves nothing. It starts N workers (fresh interpreters: ``spawn``, so
no lock or thread of the supervisor is ever copied into a worker), restarts one that dies, forwards
SIGHUP (after checking the file itself, so a bad config is refused once), and on SIGTERM or SIGINT stops
them gracefully: each finishes its requests in flight and flushes its play events, then exits.

Each worker is the whole server (routes, memory cache, hot lane) on its own listening socket bound with
SO_REUSEPORT to the same address: the kernel spreads new connections over the workers, and a slow
worker holds only its own connections. What must be one per node is arranged here:

- play events: one event builder per node, in the supervisor (analytics/relay.py), so sessions spread
  over workers count once;
- purges and admin changes reach every worker (edge/siblings.py control sockets);
- one /metrics scrape answers for the node: the scraped worker merges every worker's figures;
- the disk tier is one folder; each worker keeps its share of ``cache.disk_mb`` (edge/cache.py).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .siblings import Siblings, merge_metrics, serve_control, socket_path

log = logging.getLogger("vodgate.workers")

STOP_TIMEOUT = 30.0  # seconds a worker may take to finish its requests and flush, then it is killed
QUICK_DEATH = 5.0  # a worker that dies sooner than this after its start is failing to start
QUICK_DEATHS_ALLOWED = 3  # in a row, for one worker slot: then the node stops (a restart loop helps no one)
LISTEN_BACKLOG = 2048


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is told at start (pickled to the new interpreter)."""

    index: int
    count: int
    run_dir: Path
    node_id: str  # one purge-bus identity per node: the workers take a node's own purges from each other
    host: str
    port: int
    relay: Path | None  # the supervisor's play-event socket (analytics on), else None
    # the config file's document as the supervisor last accepted it (at start or a SIGHUP): a worker started
    # later (a replacement) runs what its siblings run, not an edit nobody has reloaded yet (None: no file)
    config: dict | None = None
    reloaded: dict | None = None  # the last document a SIGHUP brought since the node started, to apply at start

    @property
    def siblings(self) -> Siblings:
        return Siblings(self.run_dir, self.index, self.count)


def _passive_socket(host: str, port: int) -> tuple[socket.socket, Any]:
    """An unbound TCP socket for (host, port) and the address to bind it to."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return socket.socket(family, kind, proto), address


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port) that the node's other workers may bind too (SO_REUSEPORT)."""
    sock, address = _passive_socket(host, port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(False)
    return sock


def resolve_port(host: str, port: int) -> int:
    """``port``, or for 0 a free port every worker can then bind (they must all share one)."""
    if port:
        return port
    probe, address = _passive_socket(host, 0)
    with probe:
        probe.bind(address)
        return probe.getsockname()[1]


# --------------------------------------------------------------------------- the supervisor

PING_EVERY = 5.0  # seconds between liveness pings of each worker over its control socket
PINGS_MISSED_ALLOWED = 2  # a worker that misses more in a row (stopped, wedged) is killed and replaced


class Supervisor:
    """Starts, watches, restarts and stops the workers of one node.

    ``target(argv, spec)`` is the worker's entry point (cli/main.py run_worker); ``make_analytics()``
    builds the node's analytics (None when play events are off); ``config`` is the config file's document
    the node starts with, ``read_config()`` reads it again at a SIGHUP, raising when a reload would refuse it.

    A replacement worker starts from the document its siblings started from and then applies the last one a
    SIGHUP brought (``WorkerSpec.reloaded``), as its siblings did: settings a reload does not change stay as
    they are in every worker until the node restarts.
    """

    def __init__(self, target: Callable[..., None], argv: list[str], count: int, host: str, port: int, *,
                 make_analytics: Callable[[], Any] = lambda: None, config: dict | None = None,
                 read_config: Callable[[], dict | None] = lambda: None) -> None:
        self.target = target
        self.argv = argv
        self.count = count
        self.host = host
        self.port = resolve_port(host, port)
        self.make_analytics = make_analytics
        self.read_config = read_config
        self.config = config
        self.reloaded: dict | None = None  # the last document a SIGHUP brought (None: none since start)
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[Any] = [None] * count
        self.started_at = [0.0] * count
        self.quick_deaths = [0] * count
        self.ready = [False] * count  # its control socket answers: its SIGHUP handler is installed
        self.reload_pending = [False] * count  # a SIGHUP it must get once ready
        self.missed_pings = [0] * count
        self.restarts = 0
        self._stopping: asyncio.Event | None = None
        self.failed = False

    def run(self) -> int:
        remove_abandoned_run_dirs()
        # mode 0700: the control and relay sockets live here; the pid in the name tells a later node it is stale
        run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-"))
        try:
            return asyncio.run(self._run(run_dir))
        finally:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the loop's handler is gone: a late SIGHUP must not kill us
            shutil.rmtree(run_dir, ignore_errors=True)

    async def _run(self, run_dir: Path) -> int:
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward_reload)
        analytics = self.make_analytics()
        relay_server = None
        relay = None
        if analytics is not None:
            from analytics.relay import serve_relay

            relay = run_dir / "events.sock"
            await analytics.startup()
            relay_server = await serve_relay(relay, analytics)
        node_id = os.urandom(16).hex()
        specs = [WorkerSpec(i, self.count, run_dir, node_id, self.host, self.port, relay) for i in range(self.count)]
        log.info("workers: starting %d on %s:%d (supervisor pid %d)", self.count, self.host, self.port, os.getpid())
        for spec in specs:
            self._start(spec)
        pinger = loop.create_task(self._ping_forever(specs))
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), 0.2)
            except asyncio.TimeoutError:
                self._replace_dead(specs)
                self._mark_ready(specs)
        pinger.cancel()
        await self._stop_all()
        if relay_server is not None:
            relay_server.close()
            await relay_server.wait_closed()
        if analytics is not None:
            await analytics.shutdown()  # every worker flushed into it before exiting
        log.info("workers: stopped (%d restarts)", self.restarts)
        return 1 if self.failed else 0

    def _start(self, spec: WorkerSpec) -> None:
        spec = replace(spec, config=self.config, reloaded=self.reloaded)
        socket_path(spec.run_dir, spec.index).unlink(missing_ok=True)  # ready again once the new worker listens
        process = self.context.Process(target=self.target, args=(self.argv, spec), name=f"vodgate-worker-{spec.index}")
        process.start()
        self.processes[spec.index] = process
        self.started_at[spec.index] = time.monotonic()
        self.ready[spec.index] = False
        self.reload_pending[spec.index] = False  # it starts with the latest document (spec.reloaded)
        self.missed_pings[spec.index] = 0

    def _mark_ready(self, specs: list[WorkerSpec]) -> None:
        for spec in specs:
            if not self.ready[spec.index] and socket_path(spec.run_dir, spec.index).exists():
                self.ready[spec.index] = True
                if self.reload_pending[spec.index]:  # a SIGHUP came while it was starting
                    self.reload_pending[spec.index] = False
                    self._signal(spec.index, signal.SIGHUP)

    def _replace_dead(self, specs: list[WorkerSpec]) -> None:
        for spec in specs:
            process = self.processes[spec.index]
            if process is None or process.exitcode is None:
                continue
            lived = time.monotonic() - self.started_at[spec.index]
            self.quick_deaths[spec.index] = self.quick_deaths[spec.index] + 1 if lived < QUICK_DEATH else 0
            if self.quick_deaths[spec.index] > QUICK_DEATHS_ALLOWED:
                log.error("workers: worker %d keeps dying at start (exit code %s); stopping the node",
                          spec.index, process.exitcode)
                self.failed = True
                assert self._stopping is not None
                self._stopping.set()
                return
            log.error("workers: worker %d (pid %d) exited with code %s after %.1f s; starting a new one",
                      spec.index, process.pid, process.exitcode, lived)
            self.restarts += 1
            self._start(spec)

    async def _ping_forever(self, specs: list[WorkerSpec]) -> None:
        """Kill a worker that stops answering its control socket (stopped, wedged): it would hold the
        connections the kernel gives it without ever answering them. _replace_dead then replaces it."""
        while True:
            await asyncio.sleep(PING_EVERY)
            live = [s for s in specs if self.ready[s.index] and self.processes[s.index].exitcode is None]
            answers = await asyncio.gather(*(_ping(s) for s in live), return_exceptions=True)
            for spec, answer in zip(live, answers):
                if answer is True:
                    self.missed_pings[spec.index] = 0
                    continue
                self.missed_pings[spec.index] += 1
                if self.missed_pings[spec.index] > PINGS_MISSED_ALLOWED:
                    log.error("workers: worker %d (pid %d) has not answered for %.0f s; killing it",
                              spec.index, self.processes[spec.index].pid, PING_EVERY * self.missed_pings[spec.index])
                    self.processes[spec.index].kill()

    def _forward_reload(self) -> None:
        try:
            document = self.read_config()
        except Exception as exc:  # noqa: BLE001 - a refused reload keeps every worker on the old config
            log.error("reload refused, every worker keeps its configuration: %s", exc)
            return
        self.reloaded = document
        for index, process in enumerate(self.processes):
            if process is None or process.exitcode is not None:
                continue
            if self.ready[index]:
                self._signal(index, signal.SIGHUP)
            else:  # still importing: SIGHUP is ignored until its handler is installed; send it once ready
                self.reload_pending[index] = True

    def _signal(self, index: int, signum: int) -> None:
        try:
            os.kill(self.processes[index].pid, signum)
        except ProcessLookupError:
            pass  # it just died: _replace_dead starts its successor with the latest document

    async def _stop_all(self) -> None:
        live = [p for p in self.processes if p is not None and p.exitcode is None]
        for process in live:
            os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(p.exitcode is None for p in live) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for process in live:
            if process.exitcode is None:
                log.error("workers: worker pid %d did not stop within %.0f s; killing it", process.pid, STOP_TIMEOUT)
                process.kill()
            process.join(5)


async def _ping(spec: WorkerSpec) -> bool:
    answer = await spec.siblings.ask(spec.index, {"op": "ping"}, timeout=PING_EVERY)
    return answer.get("pong") is True


RUN_DIR_PREFIX = "vodgate-"


def remove_abandoned_run_dirs() -> None:
    """Run folders of supervisors that were killed (``vodgate-<pid>-*`` whose pid is gone), ours only."""
    for folder in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*-*"):
        pid = folder.name[len(RUN_DIR_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


# --------------------------------------------------------------------------- inside a worker

def connect_worker(spec: WorkerSpec, app: Any, metrics: Any) -> dict[str, Callable]:
    """Wire one worker's app to its siblings; returns the control handlers its socket answers."""
    siblings = spec.siblings
    purger = getattr(app.state, "purger", None)
    if purger is not None:
        from .purge import PurgeRequest

        if purger.bus is not None:
            purger.bus.node_id = spec.node_id
            purger.bus.local_subscribers = spec.count
        purger.sweeps_bus_purges = spec.index == 0

        async def purge_siblings(request: PurgeRequest) -> int:
            answers = await siblings.ask_others({"op": "purge", "request": request.to_dict()})
            return sum(int(a.get("removed", 0)) for a in answers.values())

        purger.siblings = purge_siblings

    changes = getattr(app.state, "admin_changes", None)
    if changes is not None:
        async def sync_siblings() -> None:
            await siblings.ask_others({"op": "admin_sync"})

        changes.after_local_change = sync_siblings

    if metrics is not None:
        async def node_scrape(own: bytes) -> bytes:
            answers = await siblings.ask_others({"op": "metrics"})  # a worker down is left out of this scrape
            texts = [own.decode(), *(answer["text"] for answer in answers.values())]
            workers = [spec.index, *answers]
            return merge_metrics(texts, workers) + _workers_gauge(spec.count, len(workers))

        metrics.node_scrape = node_scrape

    async def on_metrics(_: dict) -> dict:
        return {"text": metrics.render()[0].decode() if metrics is not None else ""}

    async def on_purge(request: dict) -> dict:
        from .purge import PurgeRequest

        return {"removed": purger.purge_local(PurgeRequest.from_dict(request["request"])) if purger is not None else 0}

    async def on_admin_sync(_: dict) -> dict:
        return {"changed": bool(await changes.sync()) if changes is not None else False}

    async def on_ping(_: dict) -> dict:
        return {"pong": True}

    return {"metrics": on_metrics, "purge": on_purge, "admin_sync": on_admin_sync, "ping": on_ping}


def _workers_gauge(configured: int, answering: int) -> bytes:
    return (
        "# HELP vodgate_workers Worker processes of this node: configured, and answering this scrape\n"
        "# TYPE vodgate_workers gauge\n"
        f'vodgate_workers{{state="configured"}} {configured}\n'
        f'vodgate_workers{{state="answering"}} {answering}\n'
    ).encode()


def serve_worker(config: Any, spec: WorkerSpec, handlers: dict[str, Callable]) -> None:
    """Run uvicorn on this worker's own SO_REUSEPORT socket, with the control socket beside it."""
    import uvicorn

    sock = listening_socket(spec.host, spec.port)
    parent = os.getppid()

    class WorkerServer(uvicorn.Server):
        control: asyncio.AbstractServer | None = None

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            self.control = await serve_control(socket_path(spec.run_dir, spec.index), handlers)
            await super().startup(sockets=sockets)

        async def on_tick(self, counter: int) -> bool:
            if os.getppid() != parent:  # the supervisor is gone (killed): do not serve on unsupervised
                log.error("workers: worker %d lost its supervisor; stopping", spec.index)
                self.should_exit = True
            return await super().on_tick(counter)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets=sockets)
            if self.control is not None:
                self.control.close()

    WorkerServer(config).run(sockets=[sock])
