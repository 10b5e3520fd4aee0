"""Structured logs: failed JWT attempts are logged without the token, request logs carry the
request id, secrets never reach the output, and lines inside a span carry its trace ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from opentelemetry.sdk.trace import TracerProvider

from oms.observability.logs import JsonFormatter
from oms.security.keys import generate_private_key
from tests.conftest import AccountFactory

PASSWORD = "HorseBattery9137"


class JsonLines:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]


@pytest.fixture
def json_logs() -> Iterator[JsonLines]:
    """Everything logged (DEBUG and up, every logger) as the services' JSON lines."""
    captured = JsonLines()
    handler = logging.StreamHandler(captured.stream)
    handler.setFormatter(JsonFormatter("api"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def forged_tokens(valid: str) -> dict[str, str]:
    header, payload, signature = valid.split(".")
    other_key = generate_private_key()
    claims = jwt.decode(valid, options={"verify_signature": False})
    return {
        "bad_signature": f"{header}.{payload}.{signature[::-1]}",
        "other_key": jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": "x"}),
        "garbage": "not-a-jwt-at-all-0123456789",
        "none_algorithm": jwt.encode(claims, "", algorithm="none"),
    }


async def test_failed_jwt_attempts_are_logged_with_reason_and_request_id_but_no_token(
    client: httpx.AsyncClient, make_account: AccountFactory, json_logs: JsonLines
) -> None:
    account = await make_account("logs@example.com", PASSWORD)
    for name, token in forged_tokens(account.token).items():
        request_id = f"req-{name}"
        response = await client.get(
            "/orders/user/1",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
        )
        assert response.status_code == 401, (name, response.text)
        assert response.headers["x-request-id"] == request_id
        rejected = [
            entry
            for entry in json_logs.entries()
            if entry["msg"] == "rejected bearer token" and entry.get("request_id") == request_id
        ]
        assert len(rejected) == 1, (name, json_logs.text[-2000:])
        assert rejected[0]["level"] == "warning"
        assert rejected[0]["service"] == "api"
        assert rejected[0]["reason"], name
        # Neither the token nor any of its parts (the signature above all) is in the output.
        for part in [token, *token.split(".")]:
            if len(part) >= 8:
                assert part not in json_logs.text, (name, part)
    # The valid token and the password were never logged either (registration, login, use).
    assert account.token not in json_logs.text
    assert account.token.split(".")[2] not in json_logs.text
    assert PASSWORD not in json_logs.text


async def test_a_request_without_an_id_gets_one_and_its_log_lines_carry_it(
    client: httpx.AsyncClient, json_logs: JsonLines
) -> None:
    response = await client.get("/orders/user/1", headers={"Authorization": "Bearer junk-token"})
    assert response.status_code == 401
    minted = response.headers["x-request-id"]
    assert len(minted) >= 16
    lines = [entry for entry in json_logs.entries() if entry.get("request_id") == minted]
    assert [entry["msg"] for entry in lines] == ["rejected bearer token"]
    # Outside a request nothing inherits that id.
    logging.getLogger("oms.test").info("after the request")
    assert "request_id" not in json_logs.entries()[-1]


def test_secret_named_fields_are_redacted_whatever_logger_emits_them(
    json_logs: JsonLines,
) -> None:
    logging.getLogger("some.library").warning(
        "login attempt",
        extra={"password": PASSWORD, "Authorization": "Bearer abc.def.ghi", "user": "ann"},
    )
    entry = json_logs.entries()[-1]
    assert entry["password"] == "[redacted]"
    assert entry["Authorization"] == "[redacted]"
    assert entry["user"] == "ann"
    assert PASSWORD not in json_logs.text
    assert "abc.def.ghi" not in json_logs.text


def test_lines_inside_a_span_carry_its_trace_and_span_ids(json_logs: JsonLines) -> None:
    tracer = TracerProvider().get_tracer("test")
    logger = logging.getLogger("oms.test")
    with tracer.start_as_current_span("outer") as span:
        logger.info("inside")
        context = span.get_span_context()
    logger.info("outside")
    inside, outside = json_logs.entries()[-2:]
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in outside
    assert inside["pid"] > 0
