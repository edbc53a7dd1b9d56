"""The client's IP address: the socket peer, or X-Forwarded-For behind trusted proxies.

The rule (docs/ACCESS_CONTROL.md, "The client address"):

- X-Forwarded-For is read only when the direct peer is a trusted proxy (server.trusted_proxies).
  From anyone else the header is ignored: any client can send it, so honouring it would let a viewer
  pick the country and IP that the access rules see.
- Behind trusted proxies the list is walked right to left (each proxy appends the address it saw),
  skipping trusted proxies; the first address that is not one is the client. Everything to its left
  was written by the client or by proxies we do not know, and is ignored.
- A malformed entry stops the walk: the last good hop (a trusted proxy) is the answer, never a
  value to its left.
- IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``, seen on dual-stack sockets) become IPv4, so
  ``192.0.2.0/24`` in a rule or a token binding matches them. Zone ids (``fe80::1%eth0``) are dropped.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Sequence

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

UNSPECIFIED = IPv4Address("0.0.0.0")
"""The answer when the peer is not an IP address at all (a Unix socket, a test client's "testclient")."""

MAX_FORWARDED_HOPS = 32  # a longer header is someone's experiment: walk at most this many hops


def normalize_ip(address: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 -> IPv4; IPv6 zone id dropped."""
    if isinstance(address, IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped
        if address.scope_id is not None:
            return IPv6Address(address.packed)
    return address


@lru_cache(maxsize=8192)  # the same clients and proxies come back request after request
def parse_ip(text: str) -> IPAddress | None:
    """An address as written in a socket peer or an X-Forwarded-For hop, or None when malformed.

    Accepts ``192.0.2.1``, ``2001:db8::1``, and the ported forms some proxies write:
    ``192.0.2.1:4711`` and ``[2001:db8::1]:4711``.
    """
    text = text.strip()
    if not text or len(text) > 64:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and not _is_port(text[end + 1:])):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port (an IPv6 address has at least two colons)
        host, port = text.split(":")
        if not port.isdigit():
            return None
        text = host
    try:
        return normalize_ip(ipaddress.ip_address(text))
    except ValueError:
        return None


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit()


def is_trusted(address: IPAddress, trusted_proxies: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted_proxies)


def client_ip(peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[IPNetwork]) -> IPAddress:
    """The address the access rules and token IP bindings see.

    ``peer`` is the socket peer (``request.client.host``); ``forwarded_for`` the X-Forwarded-For
    header, several headers joined with ``","`` in the order received. A peer that is not an IP
    address gives :data:`UNSPECIFIED` and X-Forwarded-For is not read.
    """
    current = parse_ip(peer) if peer else None
    if current is None:
        return UNSPECIFIED
    if not forwarded_for or not is_trusted(current, trusted_proxies):
        return current
    hops = forwarded_for.split(",")
    for raw in reversed(hops[-MAX_FORWARDED_HOPS:]):
        hop = parse_ip(raw)
        if hop is None:
            return current  # malformed: stop at the last good hop, never read further left
        if not is_trusted(hop, trusted_proxies):
            return hop
        current = hop
    return current  # every hop is a trusted proxy: the leftmost one is the best we know
