"""The framework floor: the least a FastAPI GET can cost. One route, one async dependency that
reads the Authorization header, and the same bytes a cached order GET returns, served with
`oms-api`'s own uvicorn options (same workers, loop, protocol class).

The API's cached GET does everything this does plus its own work (token check, rate limit,
cache read), so `get_vs_floor` says how much of FastAPI's ceiling the API's own work leaves.
Run as `python -m bench.floor_app` with the API's settings in the environment and the body in
BENCH_BASELINE_BODY; the API's application code is not imported by the served app.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Response

BODY = os.environ.get("BENCH_BASELINE_BODY", '{"status":"ok"}').encode()

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


async def bearer(authorization: Annotated[str | None, Header()] = None) -> str:
    """Reads the header as the API's auth dependency does, without verifying the token."""
    if authorization is None or not authorization.startswith("Bearer "):
        raise HTTPException(status_code=401, detail="Not authenticated")
    return authorization[7:]


@app.get("/orders/{order_id}/")
async def get_order(order_id: str, token: Annotated[str, Depends(bearer)]) -> Response:
    return Response(content=BODY, media_type="application/json")


@app.get("/")
async def ready() -> Response:
    return Response(content=b"{}", media_type="application/json")


def main() -> None:
    from oms.settings import get_api_settings
    from oms_api.server import server_options

    options: dict[str, Any] = server_options(get_api_settings())
    uvicorn.run("bench.floor_app:app", **options)


if __name__ == "__main__":
    main()
