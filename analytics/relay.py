"""Play events of a node with several worker processes: one event builder for the node.

Sessions (one play per session, the bytes and media time already sent) are state of the event builder.
With one builder per worker, a viewer whose connections land on two workers would count two plays and
its progressive ranges twice, so workers build nothing: each worker's queue hands the raw observations
to the node's supervisor (edge/workers.py), which runs the one ``Analytics`` (builder, queue, sink).

    worker:      Analytics(RelaySink(path), ..., relay=True)     observations -> the supervisor
    supervisor:  await serve_relay(path, analytics)              observations -> analytics.capture

Frames are a 4-byte big-endian length and a pickled list of observation tuples; each frame is answered
with one byte once its observations are queued at the supervisor, so a worker counts a batch written only
when the supervisor holds it (a worker's clean stop loses nothing). Pickle is safe here only because the
socket lives in the node's private run folder (mode 0700): only this user's processes can connect.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
from pathlib import Path
from typing import Any

log = logging.getLogger("vodgate.analytics")

ACK = b"k"
MAX_FRAME = 256 * 2**20  # a batch of 500 observations is well under 1 MiB


class RelaySink:
    """A worker's sink: batches of observation tuples to the supervisor's relay socket."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def write(self, batch: list[Any]) -> None:
        frame = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            reader, writer = self._stream or await asyncio.open_unix_connection(self.path)
            self._stream = (reader, writer)
            writer.write(struct.pack(">I", len(frame)) + frame)
            await writer.drain()
            if await reader.readexactly(1) != ACK:
                raise ConnectionError("the supervisor did not acknowledge the batch")
        except BaseException:
            await self.close()  # reconnect on the queue's retry
            raise

    async def close(self) -> None:
        if self._stream is not None:
            self._stream[1].close()
            self._stream = None


async def serve_relay(path: Path, analytics: Any) -> asyncio.AbstractServer:
    """Queue every worker's observations on the supervisor's ``analytics`` (an analytics.service.Analytics)."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(4)
                (size,) = struct.unpack(">I", head)
                if size > MAX_FRAME:
                    raise ValueError(f"frame of {size} bytes")
                for item in pickle.loads(await reader.readexactly(size)):
                    analytics.capture(item)
                writer.write(ACK)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # the worker closed its end (a clean stop after its last flush)
        except Exception:  # noqa: BLE001 - one worker's bad frame must not stop the relay
            log.exception("analytics relay: dropping a worker connection")
        finally:
            writer.close()

    path.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(on_connection, str(path))
    path.chmod(0o600)
    return server
