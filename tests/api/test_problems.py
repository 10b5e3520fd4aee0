"""Every error is an RFC 9457 problem document; no client input produces a traceback."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete

from oms.db.models import User
from tests.api.test_orders import GOOD_ORDER
from tests.conftest import Account

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


async def test_cors_preflight_from_an_allowed_origin(make_settings: object) -> None:
    from oms_api.app import create_app

    settings = await make_settings(CORS_ORIGINS="https://shop.example")  # type: ignore[operator]
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
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
