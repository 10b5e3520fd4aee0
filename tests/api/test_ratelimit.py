"""Rate limits: per user with a token, per client IP without, trusted proxies only."""

from __future__ import annotations

import asyncio
import contextlib
import time
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


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # Two spellings of one address, two source ports, two addresses of one /64.
        (("10.0.0.5", "[2001:db8::1]:443"), ("10.0.0.6", "2001:0DB8:0:0::1")),
        (("10.0.0.5", "203.0.113.7:5555"), ("10.0.0.5", "203.0.113.7:6666")),
        (("10.0.0.5", "2001:db8::1"), ("10.0.0.5", "2001:db8::abcd")),
        # A dual-stack socket reports an IPv4 client in the mapped form.
        (("::ffff:198.51.100.4", ""), ("198.51.100.4", "")),
    ],
)
async def test_one_client_is_one_bucket_however_its_address_is_written(
    make_settings: SettingsFactory, first: tuple[str, str], second: tuple[str, str]
) -> None:
    async with (
        running_app(
            make_settings, RATE_LIMIT_REGISTER="1/minute", TRUSTED_PROXIES="10.0.0.0/8"
        ) as app,
        from_ip(app, first[0]) as first_client,
        from_ip(app, second[0]) as second_client,
    ):
        forwarded = [{"X-Forwarded-For": hop} if hop else {} for _, hop in (first, second)]
        assert await register(first_client, "s0@example.com", **forwarded[0]) == 201
        assert await register(second_client, "s1@example.com", **forwarded[1]) == 429


def login_throttled_app(
    make_settings: SettingsFactory, failures: str = "5/minute"
) -> contextlib.AbstractAsyncContextManager[FastAPI]:
    """An app that throttles failed logins at `failures`; `/token` itself is left loose."""
    return running_app(
        make_settings, RATE_LIMIT_TOKEN="1000/minute", RATE_LIMIT_LOGIN_FAILURES=failures
    )


async def log_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/token", data={"username": email, "password": password})


async def fail_logins(client: httpx.AsyncClient, email: str, times: int) -> None:
    for attempt in range(times):
        response = await log_in(client, email, f"wrong{attempt}")
        assert response.status_code == 401, response.text


@pytest.mark.parametrize("registered", [True, False], ids=["known", "unknown"])
async def test_failed_logins_throttle_the_account_for_that_client_only(
    make_settings: SettingsFactory, registered: bool
) -> None:
    email = "owner@example.com"
    async with (
        login_throttled_app(make_settings) as app,
        from_ip(app, "198.51.100.10") as guesser,
        from_ip(app, "198.51.100.20") as owner,
    ):
        if registered:
            assert await register(owner, email) == 201
        await fail_logins(guesser, email, 5)
        # Out of tries on this account: refused whatever the password, known account or not.
        refused = await log_in(guesser, email, "abc12")
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "urn:oms:problem:rate-limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # Another account from the same client, and the same account from another client.
        assert (await log_in(guesser, "other@example.com", "abc12")).status_code == 401
        assert (await log_in(owner, email, "abc12")).status_code == (200 if registered else 401)


async def test_a_successful_login_clears_that_clients_failures(
    make_settings: SettingsFactory,
) -> None:
    email = "forgetful@example.com"
    async with (
        login_throttled_app(make_settings) as app,
        from_ip(app, "198.51.100.30") as client,
    ):
        assert await register(client, email) == 201
        await fail_logins(client, email, 4)
        assert (await log_in(client, email, "abc12")).status_code == 200
        await fail_logins(client, email, 5)  # a whole budget again
        assert (await log_in(client, email, "abc12")).status_code == 429


async def test_the_throttled_client_logs_in_once_its_window_has_passed(
    make_settings: SettingsFactory,
) -> None:
    email = "patient@example.com"
    async with (
        login_throttled_app(make_settings, "3/3seconds") as app,
        from_ip(app, "198.51.100.40") as client,
    ):
        assert await register(client, email) == 201
        await fail_logins(client, email, 3)
        codes = [(await log_in(client, email, "abc12")).status_code]
        deadline = time.monotonic() + 10
        while codes[-1] == 429 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            codes.append((await log_in(client, email, "abc12")).status_code)
    assert codes[0] == 429
    assert codes[-1] == 200
