"""The rate-limit key of a client: one per IPv4 address or IPv6 /64, however it is spelled."""

from __future__ import annotations

import pytest

from oms_api.ratelimit import INVALID_CLIENT, client_key, parse_hop, parse_networks

TRUSTED = parse_networks(["10.0.0.0/8", "::1/128", "::ffff:192.0.2.0/120"])


def key(peer: str | None, forwarded: str | None = None, ipv6_prefix: int = 64) -> str:
    return client_key(peer, forwarded, TRUSTED, ipv6_prefix)


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("198.51.100.1", None, "198.51.100.1"),
        ("198.51.100.1", "203.0.113.5", "198.51.100.1"),  # untrusted peer: header ignored
        ("10.1.2.3", "203.0.113.5", "203.0.113.5"),
        ("10.1.2.3", "203.0.113.5, 10.9.9.9", "203.0.113.5"),  # skip our own proxies
        ("10.1.2.3", "1.1.1.1, 203.0.113.5", "203.0.113.5"),  # spoofed left part ignored
        ("10.1.2.3", "10.0.0.1, 10.0.0.2", "10.0.0.1"),  # all trusted: the farthest
        ("10.1.2.3", " , ", "10.1.2.3"),  # no hop at all: the peer
        ("::1", "2001:db8::1", "2001:db8::/64"),
        (None, "203.0.113.5", "unknown"),
        ("testclient", None, "testclient"),  # not an IP socket: named by the server
    ],
)
def test_client_key(peer: str | None, forwarded: str | None, expected: str) -> None:
    assert key(peer, forwarded) == expected


@pytest.mark.parametrize(
    "spelling",
    [
        "2001:db8::1",
        "2001:0db8:0:0::1",
        "2001:DB8::1",
        "2001:db8::ffff:1234",  # another address of the same /64
        "[2001:db8::1]",
        "[2001:db8::1]:443",
        " 2001:db8:0:0:0:0:0:1 ",
    ],
)
def test_every_spelling_of_an_ipv6_network_is_one_client(spelling: str) -> None:
    assert key(spelling) == "2001:db8::/64"
    assert key("10.0.0.1", spelling) == "2001:db8::/64"


def test_another_ipv6_network_is_another_client() -> None:
    assert key("2001:db8:0:1::1") == "2001:db8:0:1::/64"


def test_the_ipv6_prefix_is_configurable() -> None:
    assert key("2001:db8:0:1::1", ipv6_prefix=48) == "2001:db8::/48"
    assert key("2001:db8::1", ipv6_prefix=128) == "2001:db8::1/128"


@pytest.mark.parametrize(
    "spelling", ["203.0.113.7", "::ffff:203.0.113.7", "::FFFF:cb00:7107", "::203.0.113.7"]
)
def test_ipv4_mapped_and_compatible_addresses_are_the_ipv4_client(spelling: str) -> None:
    assert key(spelling) == "203.0.113.7"
    assert key("10.0.0.1", spelling) == "203.0.113.7"


def test_a_port_makes_no_client_of_its_own() -> None:
    assert key("10.0.0.1", "203.0.113.7:5555") == "203.0.113.7"
    assert key("10.0.0.1", "203.0.113.7:6666") == "203.0.113.7"


def test_trust_is_judged_on_the_parsed_address() -> None:
    # A trusted proxy's hop with a port, or in the mapped form, is still a trusted proxy: the
    # walk goes on past it to the client.
    assert key("10.0.0.1", "203.0.113.7, 10.0.0.2:8080") == "203.0.113.7"
    assert key("10.0.0.1", "203.0.113.7, [::ffff:10.0.0.2]:8080") == "203.0.113.7"
    assert key("::ffff:10.0.0.1", "203.0.113.7") == "203.0.113.7"
    # A mapped CIDR in TRUSTED_PROXIES trusts the IPv4 addresses it names.
    assert key("192.0.2.9", "203.0.113.7") == "203.0.113.7"


@pytest.mark.parametrize(
    "garbage", ["not-an-ip", "unknown", "203.0.113.7:http", "[2001:db8::1", "[::1]x", "1.2.3"]
)
def test_a_garbage_hop_is_one_untrusted_client(garbage: str) -> None:
    # Every garbage string shares one key: a key per string would give whoever writes the
    # header a fresh budget per request.
    assert key("10.0.0.1", garbage) == INVALID_CLIENT
    assert key("10.0.0.1", f"{garbage}, 10.0.0.2") == INVALID_CLIENT
    # Left of the client's own hop it is never reached.
    assert key("10.0.0.1", f"{garbage}, 203.0.113.7") == "203.0.113.7"


@pytest.mark.parametrize(
    ("hop", "parsed"),
    [("::", "::"), ("::1", "::1"), ("[::1]:80", "::1"), ("0.0.0.0:1", "0.0.0.0")],
)
def test_unspecified_and_loopback_are_not_taken_for_ipv4(hop: str, parsed: str) -> None:
    assert str(parse_hop(hop)) == parsed
