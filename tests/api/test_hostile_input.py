"""Hostile input, answered with a 4xx problem document and never a 500, on both backends.

Each case was found by attacking the API; the numbers follow the findings of the issue.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest

from oms.settings import Settings
from oms_api.app import create_app
from oms_api.routing import route
from tests.conftest import Account, ServeFactory, SettingsFactory, register, serving

PROBLEM = "application/problem+json"
ORDER = {"items": [{"name": "pen", "quantity": 1}], "total_price": "3.10"}


def assert_problem(
    response: httpx.Response, status: int, kind: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers.get("x-request-id")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    if kind is not None:
        assert body["type"] == f"urn:oms:problem:{kind}"
    return body


def raw_json(client: httpx.AsyncClient, path: str, body: bytes, **headers: str) -> Any:
    return client.post(path, content=body, headers={"content-type": "application/json", **headers})


# --- 1. size limits -------------------------------------------------------------------------


async def test_a_declared_oversized_body_is_refused_before_authentication(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = b'{"items": [' + b" " * settings.MAX_REQUEST_BODY_BYTES + b"]}"
    response = await raw_json(client, "/orders/", body)  # no token: the 413 comes first
    problem = assert_problem(response, 413, "payload-too-large")
    assert problem["max_bytes"] == settings.MAX_REQUEST_BODY_BYTES


async def test_a_chunked_body_is_cut_off_at_the_limit(
    client: httpx.AsyncClient, alice: Account, settings: Settings
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"items": ['
        for _ in range(64):  # 4 MiB offered in all
            sent += 65536
            yield b" " * 65536
        yield b"]}"

    response = await client.post(
        "/orders/",
        content=chunks(),
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload-too-large")
    # The server stopped asking for more shortly after the limit.
    assert sent <= settings.MAX_REQUEST_BODY_BYTES + 2 * 65536


async def test_the_largest_order_the_item_rules_allow_is_refused_by_the_body_limit(
    client: httpx.AsyncClient, alice: Account
) -> None:
    items = [{"name": "n" * 200, "quantity": 1_000_000} for _ in range(500)]
    response = await client.post(
        "/orders/", json={"items": items, "total_price": "1.00"}, headers=alice.headers
    )
    assert_problem(response, 413)


async def test_an_order_just_under_the_limit_is_stored_and_read_back(
    client: httpx.AsyncClient, alice: Account
) -> None:
    items = [{"name": f"item {i} " + "n" * 180, "quantity": 1} for i in range(250)]
    created = await client.post(
        "/orders/", json={"items": items, "total_price": "1.00"}, headers=alice.headers
    )
    assert created.status_code == 201, created.text
    read = await client.get(f"/orders/{created.json()['id']}/", headers=alice.headers)
    assert read.json()["items"] == items


# --- 2. strict order items ------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        {"name": "x", "quantity": 1, "blob": "anything"},
        {"name": "x", "quantity": 1, "sku": {"nested": True}},
        {"name": "x", "quantity": 1.5},
        {"name": "x", "quantity": "1"},
        {"name": "x", "quantity": True},
        {"name": "x", "quantity": 18446744073709551616},
        {"name": "x", "quantity": 0},
        {"name": "", "quantity": 1},
        {"name": "tab\there", "quantity": 1},
        {"name": "x" * 201, "quantity": 1},
        {"name": "x", "quantity": 1, "sku": "has space"},
        {"name": "x", "quantity": 1, "unit_price": "-1"},
        {"name": "x", "quantity": 1, "unit_price": "0.001"},
        {"name": "x", "quantity": 1, "note": "n" * 501},
        {"name": "x", "quantity": 1, "note": "bell\x07"},
    ],
)
async def test_items_hold_only_known_bounded_fields(
    client: httpx.AsyncClient, alice: Account, item: dict[str, Any]
) -> None:
    response = await client.post(
        "/orders/", json={"items": [item], "total_price": "1.00"}, headers=alice.headers
    )
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["loc"][:3] == ["body", "items", "0"]


async def test_every_item_field_round_trips(client: httpx.AsyncClient, alice: Account) -> None:
    item = {
        "name": "Keyboard",
        "quantity": 2,
        "sku": "KB-101",
        "unit_price": "9.99",
        "note": "gift wrap\nplease",
    }
    created = await client.post(
        "/orders/", json={"items": [item], "total_price": "19.98"}, headers=alice.headers
    )
    assert created.status_code == 201, created.text
    assert created.json()["items"] == [item]


# `note` was an arbitrary extra field before items were strict: the findings used fields like it.
@pytest.mark.parametrize(
    "body",
    [
        rb'{"items": [{"name": "x", "quantity": 1, "note": "\udfff"}], "total_price": 1}',
        rb'{"items": [{"name": "x", "quantity": 1, "note": "a\ud800b"}], "total_price": 1}',
        rb'{"items": [{"name": "\udfff", "quantity": 1}], "total_price": 1}',
        rb'{"items": [{"name": "x", "quantity": 1, "note": "a\u0000b"}], "total_price": 1}',
        rb'{"items": [{"name": "x", "quantity": 1}], "total_price": 1, "\u0000": 1}',
        rb'{"items": [{"name": "x", "quantity": 1, "note": NaN}], "total_price": 1}',
        b'{"items": [{"name": "x", "quantity": 1, "note": "\xff"}], "total_price": 1}',
    ],
    ids=["lone-low", "lone-high", "lone-in-name", "nul", "nul-key", "nan", "bad-utf8"],
)
async def test_strings_with_surrogates_nul_or_bad_encoding_are_refused(
    client: httpx.AsyncClient, alice: Account, body: bytes
) -> None:
    response = await raw_json(client, "/orders/", body, **alice.headers)
    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize("depth", [16, 256, 900, 5000])
async def test_deep_nesting_is_refused_without_recursion_or_log_floods(
    client: httpx.AsyncClient, alice: Account, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    nested = b"[" * depth + b"]" * depth
    body = b'{"items": [{"name": "x", "quantity": 1, "note": ' + nested + b'}], "total_price": 1}'
    with caplog.at_level(logging.INFO):
        response = await raw_json(client, "/orders/", body, **alice.headers)
    problem = assert_problem(response, 422, "validation-error")
    assert "nest" in problem["errors"][0]["msg"] or "depth" in problem["errors"][0]["msg"]
    assert sum(len(record.getMessage()) for record in caplog.records) < 5_000


async def test_huge_numbers_with_an_idempotency_key_are_a_422(
    client: httpx.AsyncClient, alice: Account
) -> None:
    body = (
        b'{"items": [{"name": "x", "quantity": 1, "note": 1' + b"0" * 400 + b'}], "total_price": 1}'
    )
    response = await raw_json(client, "/orders/", body, **alice.headers, **{"Idempotency-Key": "k"})
    assert_problem(response, 422)
    price = b'{"items": [{"name": "x", "quantity": 1}], "total_price": 1' + b"0" * 400 + b"}"
    response = await raw_json(
        client, "/orders/", price, **alice.headers, **{"Idempotency-Key": "k"}
    )
    assert_problem(response, 422)


# --- 3. other inputs that were 500s -----------------------------------------------------------


def cursor(moment: str) -> str:
    raw = f"{moment}|{uuid.uuid4()}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "moment",
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "1999-12-31T23:59:59+00:00",
        "2026-01-01T00:00:00",
    ],
)
async def test_cursors_outside_any_time_we_issue_are_a_422(
    client: httpx.AsyncClient, alice: Account, moment: str
) -> None:
    response = await client.get(
        f"/orders/user/{alice.id}", params={"cursor": cursor(moment)}, headers=alice.headers
    )
    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize("user_id", [99999999999, 2**31, 2**63, 2**64, 0, -1])
async def test_user_ids_beyond_the_database_range_are_a_422(
    client: httpx.AsyncClient, admin: Account, user_id: int
) -> None:
    response = await client.get(f"/orders/user/{user_id}", headers=admin.headers)
    assert_problem(response, 422, "validation-error")


async def test_the_page_size_follows_orders_page_max(
    serve: ServeFactory,
) -> None:
    async with serve(ORDERS_PAGE_MAX=250) as client:
        account = await register(client, "pager@example.com")
        ok = await client.get(
            f"/orders/user/{account.id}", params={"limit": 250}, headers=account.headers
        )
        assert ok.status_code == 200, ok.text
        over = await client.get(
            f"/orders/user/{account.id}", params={"limit": 251}, headers=account.headers
        )
        assert_problem(over, 422)


# --- 4. brute-force limits stay per IP ----------------------------------------------------------


async def test_a_token_does_not_buy_more_password_guesses(
    serve: ServeFactory,
) -> None:
    async with serve(RATE_LIMIT_TOKEN="3/minute", RATE_LIMIT_REGISTER="100/minute") as client:
        attacker = await register(client, "attacker@example.com")  # one /token hit
        await client.post("/register", json={"email": "victim@example.com", "password": "victim1"})
        guesses = []
        for _ in range(4):
            guess = await client.post(
                "/token",
                data={"username": "victim@example.com", "password": "wrong1"},
                headers=attacker.headers,
            )
            guesses.append(guess.status_code)
        assert guesses == [401, 401, 429, 429]


async def test_register_is_limited_per_ip_whatever_token_is_sent(
    serve: ServeFactory,
) -> None:
    async with serve(RATE_LIMIT_REGISTER="2/minute") as client:
        owner = await register(client, "owner@example.com")
        second = await client.post(
            "/register",
            json={"email": "two@example.com", "password": "secret123"},
            headers=owner.headers,
        )
        assert second.status_code == 201
        third = await client.post(
            "/register",
            json={"email": "three@example.com", "password": "secret123"},
            headers=owner.headers,
        )
        assert_problem(third, 429, "rate-limited")


# --- 5. an unexpected error -------------------------------------------------------------------


async def test_a_bug_is_a_500_with_request_id_and_limit_headers_logged_once(
    settings: Settings, caplog: pytest.LogCaptureFixture, alice: Account
) -> None:
    app = create_app(settings)
    broken = app.router

    @route(broken, "GET", "/broken/", limit="get_order")
    async def explode() -> None:
        raise RuntimeError("a bug")

    messages: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/broken/",
        "raw_path": b"/broken/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"x-request-id", b"trace-me-1")],
        "client": ("203.0.113.9", 5000),
        "server": ("testserver", 80),
    }
    async with app.router.lifespan_context(app):
        with caplog.at_level(logging.ERROR):
            # Returning normally (not raising) is what keeps uvicorn's connection open.
            await app(scope, receive, send)
    start = messages[0]
    assert start["status"] == 500
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    assert headers["x-request-id"] == "trace-me-1"
    assert headers["content-type"] == PROBLEM
    assert headers["x-ratelimit-limit"] == "10"
    assert "connection" not in headers
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None


# --- 6. revocation ----------------------------------------------------------------------------


async def test_a_deleted_users_token_stops_reading_cached_orders_at_once(
    settings: Settings, client: httpx.AsyncClient, alice: Account
) -> None:
    from oms.cli import manage_user

    created = await client.post("/orders/", json=ORDER, headers=alice.headers)
    order_id = created.json()["id"]
    warm = await client.get(f"/orders/{order_id}/", headers=alice.headers)
    assert warm.status_code == 200
    assert await manage_user(settings, "delete", alice.email) == 0
    for response in (
        await client.get(f"/orders/{order_id}/", headers=alice.headers),
        await client.get(f"/orders/user/{alice.id}", headers=alice.headers),
        await client.patch(
            f"/orders/{order_id}/", json={"status": "CANCELED"}, headers=alice.headers
        ),
        await client.post("/orders/", json=ORDER, headers=alice.headers),
    ):
        assert_problem(response, 401, "invalid-token")


async def test_disable_enable_and_revoke(
    settings: Settings, client: httpx.AsyncClient, alice: Account
) -> None:
    from oms.cli import manage_user

    login = {"username": alice.email, "password": alice.password}
    assert (await client.get(f"/orders/user/{alice.id}", headers=alice.headers)).status_code == 200
    assert await manage_user(settings, "disable", alice.email) == 0
    assert_problem(await client.get(f"/orders/user/{alice.id}", headers=alice.headers), 401)
    assert_problem(await client.post("/token", data=login), 403, "account-disabled")

    assert await manage_user(settings, "enable", alice.email) == 0
    # Re-enabling does not bring back tokens issued before the account was disabled.
    assert_problem(await client.get(f"/orders/user/{alice.id}", headers=alice.headers), 401)
    fresh = (await client.post("/token", data=login)).json()["access_token"]
    fresh_headers = {"Authorization": f"Bearer {fresh}"}
    assert (await client.get(f"/orders/user/{alice.id}", headers=fresh_headers)).status_code == 200

    assert await manage_user(settings, "revoke", alice.email) == 0
    assert_problem(await client.get(f"/orders/user/{alice.id}", headers=fresh_headers), 401)


async def test_revocation_reaches_every_api_process_at_once(
    make_settings: SettingsFactory, backend: str
) -> None:
    from oms.cli import manage_user

    settings = await make_settings()
    async with serving(settings) as first, serving(settings) as second:
        account = await register(first, "shared@example.com")
        for client in (first, second):
            listed = await client.get(f"/orders/user/{account.id}", headers=account.headers)
            assert listed.status_code == 200
        assert await manage_user(settings, "revoke", account.email) == 0
        for client in (first, second):
            listed = await client.get(f"/orders/user/{account.id}", headers=account.headers)
            assert_problem(listed, 401)


# --- 7-9 and the smaller findings ---------------------------------------------------------------


def test_wildcard_origins_with_credentials_refuse_to_start() -> None:
    from pydantic import ValidationError

    for origins in ("*", "https://shop.example,null"):
        with pytest.raises(ValidationError, match="CORS_ALLOW_CREDENTIALS"):
            Settings(_env_file=None, CORS_ORIGINS=origins, CORS_ALLOW_CREDENTIALS=True)


async def test_token_answers_are_not_stored(client: httpx.AsyncClient, alice: Account) -> None:
    good = await client.post("/token", data={"username": alice.email, "password": alice.password})
    bad = await client.post("/token", data={"username": alice.email, "password": "wrong1"})
    for response in (good, bad):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/orders/user/{me}", None, 200),
        ("GET", "/orders/{missing}/", None, 404),
        ("GET", "/orders/not-a-uuid/", None, 422),
        ("POST", "/orders/", {"items": []}, 422),
        ("PATCH", "/orders/{missing}/", {"status": "PAID"}, 404),
    ],
)
async def test_limited_routes_carry_rate_limit_headers_on_every_answer(
    client: httpx.AsyncClient, alice: Account, method: str, path: str, body: Any, status: int
) -> None:
    url = path.format(me=alice.id, missing=uuid.uuid4())
    response = await client.request(method, url, json=body, headers=alice.headers)
    assert response.status_code == status
    assert response.headers["x-ratelimit-limit"]
    assert response.headers["x-ratelimit-remaining"]
    unauthenticated = await client.request(method, url, json=body)
    assert unauthenticated.status_code in (401, 422)
    assert unauthenticated.headers["x-ratelimit-limit"]


async def test_bodies_refused_before_the_route_ran_are_counted_too(
    serve: ServeFactory,
) -> None:
    async with serve(RATE_LIMIT_CREATE_ORDER="2/minute") as client:
        account = await register(client, "counted@example.com")
        answers = []

        async def streamed() -> AsyncIterator[bytes]:
            # Without a Content-Length: refused inside the route, once past the limit. (A
            # declared length over it is refused before routing, with no route to count.)
            yield b'{"items": [' + b" " * 70_000 + b"]}"

        for body in (b"{not json", streamed(), b"[[["):
            answer = await client.post(
                "/orders/",
                content=body,
                headers={**account.headers, "content-type": "application/json"},
            )
            answers.append(answer)
            assert answer.headers["x-ratelimit-limit"] == "2"
        assert [answer.status_code for answer in answers] == [422, 413, 429]


async def test_a_refused_cors_preflight_is_a_problem(serve: ServeFactory) -> None:
    async with serve(CORS_ORIGINS="https://shop.example") as client:
        refused = await client.options(
            "/orders/",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert_problem(refused, 400, "cors-refused")
        allowed = await client.options(
            "/orders/",
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
        )
        assert allowed.status_code == 200


async def test_docs_and_metrics_can_leave_the_public_port(serve: ServeFactory) -> None:
    async with serve(API_DOCS_ENABLED=False, API_METRICS_PORT=9999) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/metrics"):
            assert_problem(await client.get(path), 404)
        assert (await client.get("/health")).status_code == 200


async def test_several_workers_with_process_local_state_refuse_to_start() -> None:
    from oms_api.server import unsafe_configuration

    local = Settings(_env_file=None, API_WORKERS=2)
    problems = unsafe_configuration(local)
    assert any("REDIS_URL:" in problem for problem in problems)
    assert any("REDIS_URL_RATE_LIMIT" in problem for problem in problems)
    shared = Settings(
        _env_file=None,
        API_WORKERS=2,
        REDIS_URL="redis://127.0.0.1:6379/0",
        REDIS_URL_RATE_LIMIT="redis://127.0.0.1:6379/1",
    )
    assert unsafe_configuration(shared) == []


# --- 10. the HTTP protocol itself: trailers and pipelined heads ------------------------------
# In process, byte for byte; tests/api/test_http_guards.py attacks the real server the same way
# (timeouts, memory, the connection limit).


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        peers = {"sockname": ("127.0.0.1", 8000), "peername": ("203.0.113.7", 50000)}
        return peers.get(name, default)


async def serve_bytes(
    monkeypatch: pytest.MonkeyPatch, data: bytes, head_limit: int = 1024
) -> tuple[bytes, list[dict[str, str]]]:
    """Feed `data` to the protocol in one read; what it wrote, and the headers each request
    that reached the app carried."""
    import uvicorn
    from uvicorn.server import ServerState

    from oms_api import server

    limits = Settings(_env_file=None, MAX_REQUEST_HEADER_BYTES=head_limit)
    monkeypatch.setattr(server, "get_api_settings", lambda: limits)
    seen: list[dict[str, str]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        seen.append({name.decode(): value.decode() for name, value in scope["headers"]})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(app, log_config=None, lifespan="off")
    protocol = server.GuardedHttpToolsProtocol(config, ServerState(), {})
    transport = RecordingTransport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    protocol.data_received(data)
    for _ in range(100):  # until every answer is out (each takes a few loop turns)
        if transport.closed:
            break
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return bytes(transport.written), seen


async def test_trailers_are_dropped_not_merged_into_the_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request = (
        b"POST /orders/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n2\r\n{}\r\n0\r\n"
        b"Authorization: Bearer from-a-trailer\r\nX-Request-ID: from-a-trailer\r\n\r\n"
    )
    written, seen = await serve_bytes(monkeypatch, request)
    assert written.startswith(b"HTTP/1.1 200 ")
    assert len(seen) == 1
    assert "authorization" not in seen[0]
    assert "x-request-id" not in seen[0]


@pytest.mark.parametrize("where", ["headers", "trailers"])
async def test_a_pipelined_head_or_trailers_over_the_limit_never_reach_the_app(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    first = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"f" * 200) for i in range(20))  # 4x the limit
    if where == "headers":
        second = b"GET /health HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    else:
        second = (
            b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\n" + fields + b"\r\n"
        )
    written, seen = await serve_bytes(monkeypatch, first + second)
    assert written.startswith(b"HTTP/1.1 200 ")  # the first is answered first
    assert written.count(b"HTTP/1.1 ") == 2
    assert b"HTTP/1.1 431 " in written
    assert b"application/problem+json" in written
    assert len(seen) == 1
