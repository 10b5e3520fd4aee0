"""Every error is an RFC 9457 problem document; no client input produces a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete

from oms.db.models import OrderStatus, User
from oms.orders import service
from oms.users.repository import EmailAlreadyRegisteredError
from oms_api.problems import DOMAIN_PROBLEMS, TYPE_PREFIX, ProblemType, status_defaults
from tests.api.test_orders import GOOD_ORDER
from tests.conftest import Account, ServeFactory

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == 404
    assert body["type"] == "urn:oms:problem:not-found"
    assert body["request_id"] == response.headers["x-request-id"]


async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient) -> None:
    response = await client.delete("/register")
    assert response.status_code == 405
    assert response.json()["type"] == "urn:oms:problem:method-not-allowed"


async def test_validation_problem_lists_fields(client: httpx.AsyncClient) -> None:
    response = await client.post("/register", json={"email": "bad", "password": "x"})
    body = response.json()
    assert body["status"] == 422
    assert {tuple(error["loc"]) for error in body["errors"]} == {
        ("body", "email"),
        ("body", "password"),
    }
    assert all(set(error) == {"loc", "msg", "type"} for error in body["errors"])


async def test_trailing_slash_variants_do_not_redirect(
    client: httpx.AsyncClient, alice: Account
) -> None:
    for path in (f"/orders/user/{alice.id}", f"/orders/user/{alice.id}/"):
        response = await client.get(path, headers=alice.headers)
        assert response.status_code == 200
    for path in ("/orders", "/orders/"):
        response = await client.post(path, json=GOOD_ORDER, headers=alice.headers)
        assert response.status_code == 201


async def test_incoming_request_id_is_kept_and_unsafe_ones_replaced(
    client: httpx.AsyncClient,
) -> None:
    kept = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    replaced = await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert replaced.headers["x-request-id"] != "bad id\twith spaces"
    assert len(replaced.headers["x-request-id"]) == 32


async def test_unexpected_errors_are_a_500_problem_without_internals(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode() -> None:
        raise RuntimeError("secret internal detail")

    app.add_api_route("/explode", explode)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/explode")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret internal detail" not in response.text
    assert response.json()["request_id"]
    assert "secret internal detail" in caplog.text  # logged for us, not shown to them


async def test_token_of_a_deleted_user_cannot_create_orders(
    client: httpx.AsyncClient, app: FastAPI, alice: Account
) -> None:
    async with app.state.oms.session_factory() as session, session.begin():
        await session.execute(delete(User).where(User.id == alice.id))
    response = await client.post("/orders/", json=GOOD_ORDER, headers=alice.headers)
    assert response.status_code == 401
    assert response.json()["type"] == "urn:oms:problem:invalid-token"


async def test_cors_preflight_from_an_allowed_origin(serve: ServeFactory) -> None:
    async with serve(CORS_ORIGINS="https://shop.example") as client:
        allowed = await client.options(
            "/orders/",
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
        )
        denied = await client.options(
            "/orders/",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert "access-control-allow-origin" not in denied.headers


async def test_openapi_documents_every_route_and_problem_codes(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert set(schema["paths"]) >= {
        "/register",
        "/token",
        "/orders/",
        "/orders/{order_id}/",
        "/orders/user/{user_id}",
        "/health",
        "/health/ready",
        "/.well-known/jwks.json",
    }
    patch = schema["paths"]["/orders/{order_id}/"]["patch"]["responses"]
    assert {"200", "401", "403", "404", "409", "422", "429"} <= set(patch)
    assert "Problem" in schema["components"]["schemas"]
    docs = await client.get("/docs")
    assert docs.status_code == 200


def _readme_problem_types() -> set[str]:
    """The types the README's "Errors" table lists (a row may name several)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("### Errors", 1)[1].split("\n### ", 1)[0]
    types: set[str] = set()
    for line in table.splitlines():
        if not line.startswith("| `urn:oms:problem:"):
            continue
        first_cell = line.split("|")[1]
        types.update(
            name.removeprefix(TYPE_PREFIX) for name in re.findall(r"`([^`]+)`", first_cell)
        )
    return types


def test_problem_types_are_exactly_the_readme_errors_table() -> None:
    documented = _readme_problem_types()
    assert len(documented) >= 15  # the table was found and read
    assert {kind.value for kind in ProblemType} == documented


def test_every_domain_error_answers_with_a_documented_problem() -> None:
    canceled, shipped = OrderStatus.CANCELED, OrderStatus.SHIPPED
    expected_status = [
        (service.OrderNotFoundError("o-1"), 404),
        (service.UserNotFoundError(7), 404),
        (service.AccountDeletedError(7), 401),
        (service.AccessDeniedError(7), 403),
        (service.IdempotencyKeyReusedError("k"), 422),
        (service.InvalidCursorError("bad cursor"), 422),
        (service.TransitionRejectedError(canceled, shipped, [], illegal=True), 409),
        (service.TransitionRejectedError(canceled, shipped, [], illegal=False), 403),
        (EmailAlreadyRegisteredError("a@example.com"), 409),
    ]
    assert {type(error) for error, _ in expected_status} == set(DOMAIN_PROBLEMS)
    for error, status in expected_status:
        problem = DOMAIN_PROBLEMS[type(error)](error)
        assert (type(error).__name__, problem.status) == (type(error).__name__, status)
        assert problem.kind in ProblemType
    order_missing = service.OrderNotFoundError("o-1")
    assert DOMAIN_PROBLEMS[type(order_missing)](order_missing).detail == "Order o-1 does not exist."


def test_a_status_without_a_type_of_its_own_is_a_client_or_server_error() -> None:
    assert status_defaults(415) == (ProblemType.BAD_REQUEST, "Unsupported Media Type")
    assert status_defaults(503) == (ProblemType.INTERNAL_ERROR, "Service Unavailable")
    assert status_defaults(404) == (ProblemType.NOT_FOUND, "Not found")
