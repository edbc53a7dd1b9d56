"""The client address: X-Forwarded-For only behind trusted proxies, rightmost untrusted hop."""

from ipaddress import ip_address, ip_network

import pytest

from auth.client_ip import UNSPECIFIED, client_ip, normalize_ip, parse_ip

PROXIES = [ip_network("10.0.0.0/8"), ip_network("2001:db8:ffff::/48")]


def ip(text: str):
    return ip_address(text)


def test_no_header_is_the_peer():
    assert client_ip("203.0.113.7", None, PROXIES) == ip("203.0.113.7")


def test_spoofed_header_from_untrusted_peer_is_ignored():
    # any client can write X-Forwarded-For: only a trusted proxy's copy counts
    assert client_ip("203.0.113.7", "198.51.100.1", PROXIES) == ip("203.0.113.7")
    assert client_ip("203.0.113.7", "10.0.0.1", PROXIES) == ip("203.0.113.7")


def test_spoofed_header_without_any_trusted_proxy_is_ignored():
    assert client_ip("10.1.1.1", "198.51.100.1", []) == ip("10.1.1.1")


def test_trusted_peer_gives_the_rightmost_hop():
    assert client_ip("10.0.0.2", "198.51.100.1", PROXIES) == ip("198.51.100.1")


def test_client_written_prefix_is_ignored_behind_a_proxy():
    # the client sent "X-Forwarded-For: 1.2.3.4"; the proxy appended the real address
    assert client_ip("10.0.0.2", "1.2.3.4, 198.51.100.1", PROXIES) == ip("198.51.100.1")


def test_chain_of_trusted_proxies_is_skipped():
    assert client_ip("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.9.9.9, 10.0.0.3", PROXIES) == ip("198.51.100.1")


def test_all_hops_trusted_gives_the_leftmost():
    assert client_ip("10.0.0.2", "10.0.0.7, 10.0.0.8", PROXIES) == ip("10.0.0.7")


def test_malformed_hop_stops_at_the_last_good_hop():
    assert client_ip("10.0.0.2", "198.51.100.1, garbage", PROXIES) == ip("10.0.0.2")
    assert client_ip("10.0.0.2", "198.51.100.1, unknown, 10.0.0.9", PROXIES) == ip("10.0.0.9")
    assert client_ip("10.0.0.2", "198.51.100.1,", PROXIES) == ip("10.0.0.2")


def test_ipv6_peer_and_hops():
    assert client_ip("2001:db8:ffff::1", "2001:db8:1::7", PROXIES) == ip("2001:db8:1::7")
    assert client_ip("2001:db8:1::1", "198.51.100.1", PROXIES) == ip("2001:db8:1::1")
    assert client_ip("10.0.0.2", "[2001:db8:1::7]:4711", PROXIES) == ip("2001:db8:1::7")


def test_ipv4_mapped_addresses_become_ipv4():
    assert client_ip("::ffff:10.0.0.2", "::ffff:198.51.100.1", PROXIES) == ip("198.51.100.1")
    assert client_ip("::ffff:203.0.113.7", None, PROXIES) == ip("203.0.113.7")
    assert normalize_ip(ip("::ffff:192.0.2.1")) == ip("192.0.2.1")


def test_ported_forms():
    assert parse_ip("198.51.100.1:8080") == ip("198.51.100.1")
    assert parse_ip("[2001:db8::1]") == ip("2001:db8::1")
    assert parse_ip("[2001:db8::1]:443") == ip("2001:db8::1")
    assert parse_ip("[2001:db8::1]x") is None
    assert parse_ip("198.51.100.1:http") is None


def test_zone_id_is_dropped():
    assert parse_ip("fe80::1%eth0") == ip("fe80::1")


@pytest.mark.parametrize("peer", [None, "", "testclient", "unix:/tmp/sock"])
def test_peer_that_is_not_an_address(peer):
    assert client_ip(peer, "198.51.100.1", PROXIES) == UNSPECIFIED


def test_very_long_header_walks_a_bounded_number_of_hops():
    header = ", ".join(["10.0.0.5"] * 10000)
    assert client_ip("10.0.0.2", header, PROXIES) == ip("10.0.0.5")
