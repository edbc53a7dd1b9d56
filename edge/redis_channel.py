"""Following a Redis pub/sub channel for as long as the server runs: the purge bus (edge/purge.py) and the
admin changes (edge/admin_store.py) both do, with the same reconnect rule.

    await follow(client, "vodgate:purge", on_subscribed=..., on_message=..., on_lost=...)   # until cancelled

Pub/sub is at-most-once: a message published while a node is disconnected never reaches it, so
``on_subscribed`` runs at every (re)subscription, for a follower to catch up on what it missed.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

FIRST_BACKOFF = 0.5  # seconds before the first reconnection; doubled after each failure
MAX_BACKOFF = 10.0


async def follow(
    client: Callable[[], Any],
    channel: str,
    *,
    on_subscribed: Callable[[], Awaitable[None]],
    on_message: Callable[[Any], Awaitable[None]],
    on_lost: Callable[[Exception, float], None],
) -> None:
    """Subscribe to ``channel`` and hand each message's data to ``on_message``; when the connection fails,
    report it (``on_lost(error, seconds until the retry)``) and subscribe again with backoff. Never returns
    but by cancellation; no failure of Redis ever stops the server."""
    backoff = FIRST_BACKOFF
    while True:
        pubsub = None
        try:
            pubsub = client().pubsub()
            await pubsub.subscribe(channel)
            async for message in pubsub.listen():
                kind = message.get("type")
                if kind == "subscribe":
                    await on_subscribed()
                    backoff = FIRST_BACKOFF
                elif kind == "message":
                    await on_message(message.get("data"))
            raise ConnectionError("subscription ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # redis.exceptions.* and OSError: retry, never crash the server
            on_lost(exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            if pubsub is not None:
                try:
                    await pubsub.aclose()
                except Exception:  # noqa: BLE001 - the connection is already gone
                    pass


async def stop(task: "asyncio.Task | None") -> None:
    """Cancel a follower task started on :func:`follow` and wait for it (its errors are already logged)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping: nothing left to report
        pass


def redacted_url(url: str) -> str:
    """A Redis URL without its user and password, for logs and answers."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"
