"""The floors: the least a FastAPI request of each kind can cost, served with `oms-api`'s own
uvicorn options (same workers, loop, protocol class). Each has one route of the API's shape and
one async dependency that reads the Authorization header, as the API's auth dependency does.

* `app` (the framework floor): answers the bytes of a cached order GET. The least any FastAPI
  GET of ours can cost.
* `redis_app` (the Redis floor): the same, the bytes coming from one `redis.asyncio` GET on the
  API's Redis client settings: the least a Redis-cached read can cost.
* `insert_app` (the insert floor): `POST /orders/` reads the body and INSERTs one order row
  through the API's own engine (SQLAlchemy async + asyncpg, `oms.db.session.create_engine`), in
  autocommit as the API's create does, and answers 201: the least a create can cost.

Run as `python -m bench.floor_app [framework|redis|insert]` with the API's settings in the
environment, the body in BENCH_BASELINE_BODY and, for `insert`, the owner of the rows in
BENCH_FLOOR_USER_ID; the API's application code is not imported by the served apps.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, cast

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from redis.asyncio import Redis
from sqlalchemy import Table, bindparam, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from oms.db.models import Order, OrderStatus
from oms.db.session import create_engine
from oms.settings import get_api_settings

BODY = os.environ.get("BENCH_BASELINE_BODY", '{"status":"ok"}').encode()
CREATED_BODY = b'{"status":"PENDING"}'
FLOOR_APPS = {"framework": "app", "redis": "redis_app", "insert": "insert_app"}


def redis_floor_key(prefix: str) -> str:
    """The one key the Redis floor reads (under the run's prefix, removed with it)."""
    return f"{prefix}floor:order"


async def bearer(authorization: Annotated[str | None, Header()] = None) -> str:
    """Reads the header as the API's auth dependency does, without verifying the token."""
    if authorization is None or not authorization.startswith("Bearer "):
        raise HTTPException(status_code=401, detail="Not authenticated")
    return authorization[7:]


def bare_app(**options: Any) -> FastAPI:
    return FastAPI(openapi_url=None, docs_url=None, redoc_url=None, **options)


def add_ready_route(application: FastAPI) -> None:
    @application.get("/")
    async def ready() -> Response:
        return Response(content=b"{}", media_type="application/json")


# --- the framework floor ---------------------------------------------------------------------
app = bare_app()
add_ready_route(app)


@app.get("/orders/{order_id}/")
async def get_order(order_id: str, token: Annotated[str, Depends(bearer)]) -> Response:
    return Response(content=BODY, media_type="application/json")


# --- the Redis floor -------------------------------------------------------------------------
@asynccontextmanager
async def redis_lifespan(application: FastAPI) -> AsyncIterator[None]:
    settings = get_api_settings()
    client = Redis.from_url(settings.REDIS_URL or "redis://127.0.0.1:6379/0")
    key = redis_floor_key(settings.REDIS_KEY_PREFIX)
    await client.set(key, BODY)
    application.state.redis = client
    application.state.key = key
    try:
        yield
    finally:
        await client.aclose()


redis_app = bare_app(lifespan=redis_lifespan)
add_ready_route(redis_app)


@redis_app.get("/orders/{order_id}/")
async def get_cached_order(
    order_id: str, request: Request, token: Annotated[str, Depends(bearer)]
) -> Response:
    body = await request.app.state.redis.get(request.app.state.key)
    return Response(content=body, media_type="application/json")


# --- the insert floor ------------------------------------------------------------------------
_ORDERS = cast(Table, Order.__table__)
# Built once, as the API builds its INSERTs: only the parameters change per request.
_INSERT_ORDER = insert(_ORDERS).values(
    {
        column.name: bindparam(column.name, type_=column.type)
        for column in _ORDERS.c
        if not column.nullable
    }
)
_ITEMS = [{"name": "book", "quantity": 2}, {"name": "pen", "quantity": 1}]


@asynccontextmanager
async def insert_lifespan(application: FastAPI) -> AsyncIterator[None]:
    engine = create_engine(get_api_settings())
    application.state.engine = engine
    application.state.user_id = int(os.environ["BENCH_FLOOR_USER_ID"])
    try:
        yield
    finally:
        await engine.dispose()


insert_app = bare_app(lifespan=insert_lifespan)
add_ready_route(insert_app)


@insert_app.post("/orders/", status_code=201)
async def create_order(request: Request, token: Annotated[str, Depends(bearer)]) -> Response:
    await request.body()
    now = datetime.now(UTC)
    row = {
        "id": uuid.uuid4(),
        "user_id": request.app.state.user_id,
        "items": _ITEMS,
        "total_price": Decimal("21.40"),
        "status": OrderStatus.PENDING,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    engine: AsyncEngine = request.app.state.engine
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(_INSERT_ORDER, row)
    return Response(content=CREATED_BODY, status_code=201, media_type="application/json")


def main(argv: list[str] | None = None) -> None:
    from oms_api.server import server_options

    kind = (argv if argv is not None else sys.argv[1:] or ["framework"])[0]
    if kind not in FLOOR_APPS:
        raise SystemExit(f"floor kinds: {', '.join(FLOOR_APPS)}")
    options: dict[str, Any] = server_options(get_api_settings())
    uvicorn.run(f"bench.floor_app:{FLOOR_APPS[kind]}", **options)


if __name__ == "__main__":
    main()
