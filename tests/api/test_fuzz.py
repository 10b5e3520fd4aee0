"""Fuzzing of the running API: no generated request may get a 5xx, and the HTTP layer keeps its
limits whatever the shape of the request (trailers, pipelining, requests cut short)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oms.settings import HttpServerSettings
from tests.api.test_http_guards import chunked_post, connect, exchange, read_until_closed, statuses
from tests.api.test_live_limits import status_and_body
from tests.live import LiveApi, live_api

HEAD_LIMIT: int = HttpServerSettings.model_fields["MAX_REQUEST_HEADER_BYTES"].default
# Short, so that requests cut short are answered quickly.
READ_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def fuzz_target(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveApi, dict[str, str]]]:
    with live_api(
        tmp_path_factory.mktemp("fuzz"),
        RATE_LIMIT_ENABLED="false",
        HTTP_HEAD_TIMEOUT_SECONDS=str(READ_TIMEOUT),
        HTTP_BODY_TIMEOUT_SECONDS=str(READ_TIMEOUT),
    ) as api:
        with httpx.Client(base_url=api.url) as http:
            assert (
                http.post(
                    "/register", json={"email": "fuzz@example.com", "password": "fuzz1234"}
                ).status_code
                == 201
            )
            token = http.post(
                "/token", data={"username": "fuzz@example.com", "password": "fuzz1234"}
            ).json()["access_token"]
        yield api, {"Authorization": f"Bearer {token}"}


def test_no_schema_generated_request_gets_a_server_error(
    fuzz_target: tuple[LiveApi, dict[str, str]],
) -> None:
    """Every operation of our OpenAPI document, with inputs schemathesis derives from it."""
    api, auth = fuzz_target
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 8
    cases = st.one_of([operation.as_strategy() for operation in operations])

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
        response = case.call(headers=auth)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)

    check()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
order_like = st.fixed_dictionaries(
    {},
    optional={
        "items": st.lists(
            st.fixed_dictionaries({}, optional={"name": json_values, "quantity": json_values}),
            max_size=3,
        )
        | json_values,
        "total_price": json_values | st.decimals(allow_nan=True).map(str),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=order_like | json_values)
def test_arbitrary_json_to_create_order_is_never_a_server_error(
    fuzz_target: tuple[LiveApi, dict[str, str]], body: object
) -> None:
    api, auth = fuzz_target
    response = httpx.post(f"{api.url}/orders/", json=body, headers=auth, timeout=10)
    assert response.status_code in {201, 422}, response.text


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    raw=st.binary(max_size=200),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
    ),
)
def test_arbitrary_bytes_are_never_a_server_error(
    fuzz_target: tuple[LiveApi, dict[str, str]], raw: bytes, content_type: str
) -> None:
    api, auth = fuzz_target
    for path in ("/orders/", "/register", "/token"):
        response = httpx.post(
            f"{api.url}{path}",
            content=raw,
            headers={**auth, "content-type": content_type},
            timeout=10,
        )
        assert response.status_code < 500, (path, response.text)


def test_fuzz_server_is_isolated(tmp_path: Path) -> None:
    assert not (tmp_path / "oms.db").exists()


# --- hostile shapes the schema does not describe (each once gave a 500) -------------------------

surrogate_laden = st.lists(
    st.one_of(st.integers(0xD800, 0xDFFF).map(chr), st.characters(), st.just("\x00")),
    max_size=12,
).map("".join)
huge_numbers = st.integers(min_value=-(10**80), max_value=10**80) | st.floats(allow_nan=False)
nesting = st.tuples(st.integers(1, 3000), st.sampled_from(["[]", "{}"])).map(
    lambda depth_kind: (
        "[" * depth_kind[0] + "]" * depth_kind[0]
        if depth_kind[1] == "[]"
        else '{"a":' * depth_kind[0] + "1" + "}" * depth_kind[0]
    )
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=surrogate_laden,
    extra=surrogate_laden | huge_numbers,
    nested=nesting,
    field=st.sampled_from(["name", "quantity", "sku", "unit_price", "note", "blob"]),
    idempotent=st.booleans(),
    with_nested=st.booleans(),
)
def test_surrogates_nesting_and_huge_numbers_are_never_a_server_error(
    fuzz_target: tuple[LiveApi, dict[str, str]],
    name: str,
    extra: object,
    nested: str,
    field: str,
    idempotent: bool,
    with_nested: bool,
) -> None:
    api, auth = fuzz_target
    item = json.dumps({"name": name, "quantity": 1, field: extra})  # ASCII: surrogates escaped
    if with_nested:
        item = f'{item[:-1]}, "nested": {nested}}}'
    body = f'{{"items": [{item}], "total_price": 1}}'
    headers = {**auth, "content-type": "application/json"}
    if idempotent:
        headers["Idempotency-Key"] = "fuzz-key"
    response = httpx.post(f"{api.url}/orders/", content=body.encode(), headers=headers, timeout=10)
    assert response.status_code in {201, 413, 422}, response.text


offsets = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    offset=offsets,
    user_id=st.integers(min_value=-(2**70), max_value=2**70),
)
def test_extreme_cursors_and_user_ids_are_never_a_server_error(
    fuzz_target: tuple[LiveApi, dict[str, str]], moment: datetime, offset: timezone, user_id: int
) -> None:
    api, auth = fuzz_target
    raw = f"{moment.replace(tzinfo=offset).isoformat()}|{uuid.uuid4()}".encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    for path in ("/orders/user/1", f"/orders/user/{user_id}"):
        response = httpx.get(
            f"{api.url}{path}", params={"cursor": cursor}, headers=auth, timeout=10
        )
        assert response.status_code in {200, 403, 404, 422}, (path, response.text)


# --- the HTTP layer: trailers, pipelined heads, requests cut short -------------------------------

ORDER = b'{"items": [{"name": "pen", "quantity": 1}], "total_price": "3.10"}'
field_names = st.sampled_from(["Authorization", "X-Request-ID", "Content-Type", "Expect"]) | (
    st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True)
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    fields=st.lists(st.tuples(field_names, st.integers(0, HEAD_LIMIT)), max_size=6),
    authenticated=st.booleans(),
)
def test_trailers_are_bounded_and_never_become_headers(
    fuzz_target: tuple[LiveApi, dict[str, str]],
    fields: list[tuple[str, int]],
    authenticated: bool,
) -> None:
    api, auth = fuzz_target
    token = auth["Authorization"]

    def value(name: str, size: int) -> str:
        if name == "Authorization":
            return token  # a valid token: it must still not authenticate from a trailer
        if name == "X-Request-ID":
            return f"trailer-{size}"
        return "v" * size

    trailers = "".join(f"{name}: {value(name, size)}\r\n" for name, size in fields).encode()
    headers = f"Authorization: {token}\r\n".encode() if authenticated else b""
    answer = exchange(api, chunked_post("/orders/", ORDER, headers, trailers))
    status, answer_headers, _ = status_and_body(answer)
    if len(trailers) > HEAD_LIMIT:
        assert status == 431, answer[:300]
    else:
        assert status == (201 if authenticated else 401), answer[:300]
        trailer_ids = {
            value("X-Request-ID", size) for name, size in fields if name == "X-Request-ID"
        }
        assert answer_headers["x-request-id"] not in trailer_ids


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    first_padding=st.integers(0, HEAD_LIMIT // 2),
    sizes=st.lists(st.integers(0, HEAD_LIMIT), min_size=1, max_size=6),
    in_the_path=st.booleans(),
)
def test_a_pipelined_head_is_held_to_the_limit_like_the_first(
    fuzz_target: tuple[LiveApi, dict[str, str]],
    first_padding: int,
    sizes: list[int],
    in_the_path: bool,
) -> None:
    api, _ = fuzz_target
    first = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * first_padding + b"\r\n\r\n"
    query = b"q" * sizes[0] if in_the_path else b""
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"f" * size) for i, size in enumerate(sizes))
    second = b"GET /health?" + query + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields
    codes = statuses(exchange(api, first + second + b"\r\n"))
    if len(second) <= HEAD_LIMIT:
        assert codes == [200, 200]
    elif len(second) - len(b"GET  HTTP/1.1\r\n") > HEAD_LIMIT:  # what the parser reports
        assert codes == [200, 431]
    else:
        assert codes in ([200, 200], [200, 431])


def complete_requests(token: str) -> list[bytes]:
    """Requests that each need every byte: any proper prefix leaves the server waiting."""
    declared = (
        f"POST /orders/ HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(ORDER)}\r\n\r\n"
    ).encode()
    return [
        declared + ORDER,
        chunked_post("/orders/", ORDER, f"Authorization: {token}\r\n".encode()),
    ]


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(which=st.integers(0, 1), cut=st.floats(0, 1, exclude_max=True))
def test_a_request_cut_short_is_answered_408_or_closed_in_time(
    fuzz_target: tuple[LiveApi, dict[str, str]], which: int, cut: float
) -> None:
    api, auth = fuzz_target
    request = complete_requests(auth["Authorization"])[which]
    prefix = request[: int(len(request) * cut)]
    with connect(api) as sock:
        sock.sendall(prefix)
        answer, closed = read_until_closed(sock, READ_TIMEOUT + 5)
    assert closed, f"still open after {len(prefix)} of {len(request)} bytes"
    if prefix:
        assert statuses(answer) == [408], answer[:300]
    else:
        assert answer == b""
