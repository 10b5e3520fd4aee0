"""Order routes: create, read (cached), change status, list a user's orders."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status

from oms.orders.service import (
    AccessDeniedError,
    IdempotencyKeyReusedError,
    InvalidCursorError,
    OrderNotFoundError,
    TransitionRejectedError,
    UserNotFoundError,
)
from oms.schemas import OrderCreate, OrderOut, OrderPage, OrderStatusUpdate
from oms.telemetry import current_trace_headers
from oms_api.deps import CurrentUser, OrderServiceDep, StateDep, rate_limited
from oms_api.metrics import ORDERS_CREATED, STATUS_TRANSITIONS
from oms_api.problems import ProblemError, problem_openapi

router = APIRouter(prefix="/orders", tags=["orders"])

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retry-safe creation: the same key and body return the first order.",
    ),
]


def _not_found(order_id: uuid.UUID) -> ProblemError:
    return ProblemError(404, f"Order {order_id} does not exist.", kind="order-not-found")


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderOut,
    responses=problem_openapi(401, 422, 429),
    dependencies=[Depends(rate_limited("create_order", lambda p: p.create_order))],
    summary="Create an order",
)
@router.post(
    "",
    status_code=201,
    response_model=OrderOut,
    include_in_schema=False,
    dependencies=[Depends(rate_limited("create_order", lambda p: p.create_order))],
)
async def create_order(
    body: OrderCreate,
    user: CurrentUser,
    orders: OrderServiceDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> OrderOut:
    try:
        created = await orders.create(
            user.user_id, body, idempotency_key, trace_headers=current_trace_headers()
        )
    except IdempotencyKeyReusedError as error:
        raise ProblemError(
            422,
            "This Idempotency-Key was already used with a different request body.",
            kind="idempotency-key-reused",
            title="Idempotency key reused",
        ) from error
    except UserNotFoundError as error:
        raise ProblemError(
            401,
            "The account behind this token no longer exists.",
            kind="invalid-token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from error
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        ORDERS_CREATED.inc()
    response.headers["Location"] = f"/orders/{created.order.id}/"
    return OrderOut.model_validate(created.order)


@router.get(
    "/{order_id}/",
    response_model=OrderOut,
    responses=problem_openapi(401, 404, 422, 429),
    dependencies=[Depends(rate_limited("get_order", lambda p: p.get_order))],
    summary="Get one of your orders (served from the cache when possible)",
)
@router.get(
    "/{order_id}",
    response_model=OrderOut,
    include_in_schema=False,
    dependencies=[Depends(rate_limited("get_order", lambda p: p.get_order))],
)
async def get_order(order_id: uuid.UUID, user: CurrentUser, orders: OrderServiceDep) -> Response:
    try:
        body = await orders.get_json(order_id, user)
    except OrderNotFoundError as error:
        raise _not_found(order_id) from error
    return Response(body, media_type="application/json")


@router.patch(
    "/{order_id}/",
    response_model=OrderOut,
    responses=problem_openapi(401, 403, 404, 409, 422, 429),
    dependencies=[Depends(rate_limited("update_order", lambda p: p.update_order))],
    summary="Change an order's status (owner: cancel; admin: any legal transition)",
)
@router.patch(
    "/{order_id}",
    response_model=OrderOut,
    include_in_schema=False,
    dependencies=[Depends(rate_limited("update_order", lambda p: p.update_order))],
)
async def update_order(
    order_id: uuid.UUID, body: OrderStatusUpdate, user: CurrentUser, orders: OrderServiceDep
) -> OrderOut:
    try:
        order, previous = await orders.change_status(order_id, body.status, user)
    except OrderNotFoundError as error:
        raise _not_found(order_id) from error
    except TransitionRejectedError as rejected:
        allowed = [target.value for target in rejected.allowed]
        if rejected.illegal:
            raise ProblemError(
                409,
                f"An order in status {rejected.current.value} cannot become "
                f"{rejected.target.value}.",
                kind="illegal-transition",
                title="Illegal status transition",
                current_status=rejected.current.value,
                allowed_transitions=allowed,
            ) from rejected
        raise ProblemError(
            403,
            f"Only an admin may change an order from {rejected.current.value} to "
            f"{rejected.target.value}; an owner may only cancel.",
            kind="transition-forbidden",
            title="Transition not permitted",
            current_status=rejected.current.value,
            allowed_transitions=allowed,
        ) from rejected
    STATUS_TRANSITIONS.labels(previous.value, order.status.value).inc()
    return OrderOut.model_validate(order)


@router.get(
    "/user/{user_id}",
    response_model=OrderPage,
    responses=problem_openapi(401, 403, 404, 422, 429),
    dependencies=[Depends(rate_limited("list_orders", lambda p: p.list_orders))],
    summary="A user's orders, newest first, keyset-paginated",
)
@router.get(
    "/user/{user_id}/",
    response_model=OrderPage,
    include_in_schema=False,
    dependencies=[Depends(rate_limited("list_orders", lambda p: p.list_orders))],
)
async def list_user_orders(
    user_id: int,
    user: CurrentUser,
    orders: OrderServiceDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> OrderPage:
    try:
        return await orders.list_for_user(
            user_id, user, min(limit, state.settings.ORDERS_PAGE_MAX), cursor
        )
    except AccessDeniedError as error:
        raise ProblemError(403, "You may only list your own orders.") from error
    except UserNotFoundError as error:
        raise ProblemError(404, f"User {user_id} does not exist.", kind="user-not-found") from error
    except InvalidCursorError as error:
        raise ProblemError(
            422,
            str(error),
            kind="validation-error",
            errors=[{"loc": ["query", "cursor"], "msg": str(error), "type": "value_error"}],
        ) from error
