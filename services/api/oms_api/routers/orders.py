"""Order routes: create, read (cached), change status, list a user's orders.

The service's domain errors (order not found, transition rejected, ...) are not caught here:
`oms_api.problems` answers each with its problem document."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status

from oms.observability.tracing import current_trace_headers
from oms.orders.service import serialize_order
from oms.schemas import OrderCreate, OrderOut, OrderPage, OrderStatusUpdate
from oms_api.deps import CurrentUser, OrderServiceDep, StateDep, cache_lookup
from oms_api.http_metrics import ORDERS_CREATED, STATUS_TRANSITIONS
from oms_api.jsonbody import StrictJSONRoute
from oms_api.problems import ProblemError
from oms_api.routing import route

router = APIRouter(prefix="/orders", tags=["orders"], route_class=StrictJSONRoute)

# User ids are 32-bit integers in the database: a larger one cannot name anybody.
USER_ID_MAX = 2**31 - 1

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retry-safe creation: the same key and body return the first order.",
    ),
]


def _json(body: bytes, carried: Response, status_code: int = status.HTTP_200_OK) -> Response:
    """An order already serialized to JSON, sent as is (no second validation against the
    response model). FastAPI drops the headers dependencies set (the X-RateLimit-* ones) from a
    Response returned directly, so they are carried over here."""
    answer = Response(body, status_code=status_code, media_type="application/json")
    answer.headers.raw.extend(carried.headers.raw)
    return answer


@route(
    router,
    "POST",
    "/",
    limit="create_order",
    problems=(401, 422, 429),
    status_code=status.HTTP_201_CREATED,
    response_model=OrderOut,
    summary="Create an order",
)
async def create_order(
    body: OrderCreate,
    user: CurrentUser,
    orders: OrderServiceDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    created = await orders.create(
        user.user_id, body, idempotency_key, trace_headers=current_trace_headers()
    )
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        ORDERS_CREATED.inc()
    response.headers["Location"] = f"/orders/{created.order.id}/"
    return _json(serialize_order(created.order), response, status.HTTP_201_CREATED)


@route(
    router,
    "GET",
    "/{order_id}/",
    limit="get_order",
    order_param="order_id",
    problems=(401, 404, 422, 429),
    response_model=OrderOut,
    summary="Get one of your orders (served from the cache when possible)",
)
async def get_order(
    order_id: uuid.UUID,
    user: CurrentUser,
    orders: OrderServiceDep,
    request: Request,
    response: Response,
) -> Response:
    lookup = cache_lookup(request, order_id)
    body = await orders.get_json(
        order_id, user, cached=lookup.body if lookup else None, cache_read=lookup is not None
    )
    return _json(body, response)


@route(
    router,
    "PATCH",
    "/{order_id}/",
    limit="update_order",
    problems=(401, 403, 404, 409, 422, 429),
    response_model=OrderOut,
    summary="Change an order's status (owner: cancel; admin: any legal transition)",
)
async def update_order(
    order_id: uuid.UUID, body: OrderStatusUpdate, user: CurrentUser, orders: OrderServiceDep
) -> OrderOut:
    order, previous = await orders.change_status(order_id, body.status, user)
    STATUS_TRANSITIONS.labels(previous.value, order.status.value).inc()
    return OrderOut.model_validate(order)


@route(
    router,
    "GET",
    "/user/{user_id}",
    limit="list_orders",
    problems=(401, 403, 404, 422, 429),
    response_model=OrderPage,
    summary="A user's orders, newest first, keyset-paginated",
)
async def list_user_orders(
    user_id: Annotated[int, Path(ge=1, le=USER_ID_MAX, description="A user's id.")],
    user: CurrentUser,
    orders: OrderServiceDep,
    state: StateDep,
    limit: Annotated[
        int, Query(ge=1, description="Page size, at most ORDERS_PAGE_MAX (default 100).")
    ] = 20,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_-]*$")] = None,
) -> OrderPage:
    page_max = state.settings.ORDERS_PAGE_MAX
    if limit > page_max:
        message = f"limit may be at most {page_max} (ORDERS_PAGE_MAX)"
        raise ProblemError(
            422,
            message,
            errors=[{"loc": ["query", "limit"], "msg": message, "type": "less_than_equal"}],
        )
    return await orders.list_for_user(user_id, user, limit, cursor)
