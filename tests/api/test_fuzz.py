"""Schema-driven fuzzing of the running API: no generated request may get a 5xx."""

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

from tests.live import LiveApi, live_api


@pytest.fixture(scope="module")
def fuzz_target(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveApi, dict[str, str]]]:
    with live_api(tmp_path_factory.mktemp("fuzz"), RATE_LIMIT_ENABLED="false") as api:
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
