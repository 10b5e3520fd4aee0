from __future__ import annotations

import pytest

from oms_api.ratelimit import client_ip, parse_networks

TRUSTED = parse_networks(["10.0.0.0/8", "::1/128"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("198.51.100.1", None, "198.51.100.1"),
        ("198.51.100.1", "203.0.113.5", "198.51.100.1"),  # untrusted peer: header ignored
        ("10.1.2.3", "203.0.113.5", "203.0.113.5"),
        ("10.1.2.3", "203.0.113.5, 10.9.9.9", "203.0.113.5"),  # skip our own proxies
        ("10.1.2.3", "1.1.1.1, 203.0.113.5", "203.0.113.5"),  # spoofed left part ignored
        ("10.1.2.3", "10.0.0.1, 10.0.0.2", "10.0.0.1"),  # all trusted: the farthest
        ("10.1.2.3", "not-an-ip", "not-an-ip"),
        ("::1", "2001:db8::1", "2001:db8::1"),
        (None, "203.0.113.5", "unknown"),
    ],
)
def test_client_ip(peer: str | None, forwarded: str | None, expected: str) -> None:
    assert client_ip(peer, forwarded, TRUSTED) == expected
