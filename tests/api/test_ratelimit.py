"""Rate limits: per user with a token, per client IP without, trusted proxies only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from oms_api.app import create_app
from tests.api.test_orders import GOOD_ORDER
from tests.conftest import Account, SettingsFactory


@asynccontextmanager
async def running_app(make_settings: SettingsFactory, **overrides: Any) -> AsyncIterator[FastAPI]:
    app = create_app(await make_settings(**overrides))
    async with app.router.lifespan_context(app):
        yield app


def from_ip(app: FastAPI, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_sixth_create_within_a_minute_is_429(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    for attempt in range(5):
        response = await client.post("/orders/", json=GOOD_ORDER, headers=alice.headers)
        assert response.status_code == 201
        assert response.headers["x-ratelimit-limit"] == "5"
        assert response.headers["x-ratelimit-remaining"] == str(4 - attempt)
    limited = await client.post("/orders/", json=GOOD_ORDER, headers=alice.headers)
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert limited.json()["type"] == "urn:oms:problem:rate-limited"
    # Another user on the same IP has a budget of their own.
    assert (await client.post("/orders/", json=GOOD_ORDER, headers=bob.headers)).status_code == 201


async def test_limits_are_per_route(client: httpx.AsyncClient, alice: Account) -> None:
    for _ in range(5):
        await client.post("/orders/", json=GOOD_ORDER, headers=alice.headers)
    listing = await client.get(f"/orders/user/{alice.id}", headers=alice.headers)
    assert listing.status_code == 200
    assert listing.headers["x-ratelimit-limit"] == "10"


async def register(client: httpx.AsyncClient, email: str, **headers: str) -> int:
    response = await client.post(
        "/register", json={"email": email, "password": "abc12"}, headers=headers
    )
    return response.status_code


async def test_anonymous_requests_are_limited_per_ip(make_settings: SettingsFactory) -> None:
    async with (
        running_app(make_settings, RATE_LIMIT_REGISTER="2/minute") as app,
        from_ip(app, "198.51.100.1") as first_ip,
        from_ip(app, "198.51.100.2") as second_ip,
    ):
        assert await register(first_ip, "a0@example.com") == 201
        assert await register(first_ip, "a1@example.com") == 201
        assert await register(first_ip, "a2@example.com") == 429
        assert await register(second_ip, "b0@example.com") == 201


async def test_token_endpoint_is_limited_against_brute_force(
    make_settings: SettingsFactory,
) -> None:
    async with (
        running_app(make_settings, RATE_LIMIT_TOKEN="3/minute") as app,
        from_ip(app, "198.51.100.7") as client,
    ):
        codes = []
        for n in range(4):
            response = await client.post(
                "/token", data={"username": "x@example.com", "password": f"guess{n}"}
            )
            codes.append(response.status_code)
    assert codes == [401, 401, 401, 429]


@pytest.mark.parametrize(("peer", "trusted"), [("10.0.0.5", True), ("198.51.100.9", False)])
async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    make_settings: SettingsFactory, peer: str, trusted: bool
) -> None:
    async with (
        running_app(
            make_settings, RATE_LIMIT_REGISTER="1/minute", TRUSTED_PROXIES="10.0.0.0/8"
        ) as app,
        from_ip(app, peer) as client,
    ):
        first = await register(client, "p0@example.com", **{"X-Forwarded-For": "192.0.2.1"})
        second = await register(client, "p1@example.com", **{"X-Forwarded-For": "192.0.2.2"})
    # Through a trusted proxy the two clients are told apart; from anyone else the header
    # is ignored and both requests count against the peer.
    assert (first, second) == ((201, 201) if trusted else (201, 429))


async def test_rate_limits_can_be_disabled(make_settings: SettingsFactory) -> None:
    async with (
        running_app(make_settings, RATE_LIMIT_ENABLED=False) as app,
        from_ip(app, "198.51.100.3") as client,
    ):
        codes = set()
        for _ in range(12):
            response = await client.post(
                "/token", data={"username": "x@example.com", "password": "guess1"}
            )
            codes.add(response.status_code)
    assert codes == {401}
