"""The worker processes of one node talking to each other (edge/workers.py starts them).

Each worker listens on its own Unix socket in the node's private run folder (mode 0700, so only this
user's processes reach it) and answers one JSON line per request with one JSON line:

    {"op": "metrics"}                 -> {"text": "<this worker's /metrics text>"}
    {"op": "purge", "request": {...}} -> {"removed": N}      (edge/purge.py PurgeRequest.to_dict())
    {"op": "admin_sync"}              -> {"changed": bool}   (re-read the admin changes store)

    siblings = Siblings(run_dir, index=0, count=2)
    await siblings.ask_others({"op": "purge", "request": {...}})   # {index: answer} of every other live worker
    merge_metrics([text_0, text_1])                                 # one scrape for the node

Nothing here is reachable over TCP: a request from the network can never ask a worker to purge or sync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

log = logging.getLogger("vodgate.workers")

MAX_LINE = 64 * 2**20  # a metrics text of a busy worker is tens of KiB; the bound only stops a runaway
ASK_TIMEOUT = 3.0

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def socket_path(run_dir: Path, index: int) -> Path:
    return run_dir / f"worker-{index}.sock"


@dataclass(frozen=True)
class Siblings:
    """The other workers of this node, by index."""

    run_dir: Path
    index: int
    count: int

    def others(self) -> list[int]:
        return [i for i in range(self.count) if i != self.index]

    async def ask_others(self, request: dict[str, Any], timeout: float = ASK_TIMEOUT) -> dict[int, dict[str, Any]]:
        """Every other worker's answer to ``request``, by worker index; a worker that is down (restarting) is left
        out, logged."""
        others = self.others()
        answers = await asyncio.gather(*(self.ask(i, request, timeout) for i in others), return_exceptions=True)
        found = {}
        for index, answer in zip(others, answers):
            if isinstance(answer, BaseException):
                log.warning("workers: worker %d did not answer %s: %s", index, request.get("op"), answer)
            else:
                found[index] = answer
        return found

    async def ask(self, index: int, request: dict[str, Any], timeout: float = ASK_TIMEOUT) -> dict[str, Any]:
        return await asyncio.wait_for(_ask(socket_path(self.run_dir, index), request), timeout)


async def _ask(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed without an answer")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer
    finally:
        writer.close()


async def serve_control(path: Path, handlers: dict[str, Handler]) -> asyncio.AbstractServer:
    """Answer sibling requests on ``path`` with ``handlers[op]`` (see the module docstring)."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            request = json.loads(line)
            handler = handlers.get(request.get("op")) if isinstance(request, dict) else None
            if handler is None:
                answer: dict[str, Any] = {"error": f"unknown op {str(request)[:60]!r}"}
            else:
                answer = await handler(request)
        except Exception as exc:  # noqa: BLE001 - a sibling's bad request must not hurt this worker
            log.exception("workers: control request failed")
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    path.unlink(missing_ok=True)  # a previous life of this worker index
    server = await asyncio.start_unix_server(on_connection, str(path), limit=MAX_LINE)
    os.chmod(path, 0o600)
    return server


# --------------------------------------------------------------------------- one scrape for the node

# Gauges that are a state of each worker, not an amount: the node's value is the worst worker's.
LOWEST_OF = {"vodgate_upstream_up", "vodgate_purge_bus_subscribed"}
# Per-process figures: kept apart with a worker label (a sum of start times or of fd limits means nothing).
PER_WORKER_PREFIX = "vodgate_process_"


def merge_metrics(texts: Iterable[str], workers: Iterable[int]) -> bytes:
    """The node's /metrics from each worker's own text (``workers`` names each text's worker index).

    Counters and histograms add up; gauges add up too (cache bytes, queued events: the node holds the sum)
    except LOWEST_OF; process metrics keep one series per worker with a ``worker`` label.
    """
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Any] = {}
    values: dict[str, dict[tuple, float]] = {}
    for text, worker in zip(texts, workers):
        for family in text_string_to_metric_families(text):
            per_worker = family.name.startswith(PER_WORKER_PREFIX)
            families.setdefault(family.name, family)
            table = values.setdefault(family.name, {})
            for sample in family.samples:
                labels = dict(sample.labels)
                if per_worker:
                    labels["worker"] = str(worker)
                key = (sample.name, tuple(sorted(labels.items())))
                if key not in table:
                    table[key] = sample.value
                elif family.name in LOWEST_OF:
                    table[key] = min(table[key], sample.value)
                else:
                    table[key] += sample.value
    return _render(families, values)


def _render(families: dict[str, Any], values: dict[str, dict[tuple, float]]) -> bytes:
    lines = []
    for name, family in families.items():
        shown = f"{name}_total" if family.type == "counter" else name  # as prometheus_client writes it
        lines.append(f"# HELP {shown} {_escape_help(family.documentation)}")
        lines.append(f"# TYPE {shown} {family.type}")
        for (sample_name, labels), value in values[name].items():
            rendered = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            lines.append(f"{sample_name}{{{rendered}}} {_number(value)}" if rendered else f"{sample_name} {_number(value)}")
    return ("\n".join(lines) + "\n").encode()


def _number(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
