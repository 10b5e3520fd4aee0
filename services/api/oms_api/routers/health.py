"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from oms_api.deps import StateDep

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 2.0


@router.get("/health", summary="Liveness: the process serves requests")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)
    except Exception as error:
        return name, f"error: {type(error).__name__}"
    return name, "ok"


@router.get(
    "/health/ready",
    summary="Readiness: the database answers (the cache is reported, not required)",
    responses={503: {"description": "The database does not answer; the body says why"}},
)
async def ready(state: StateDep) -> JSONResponse:
    async def database() -> None:
        async with state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    results = dict(
        await asyncio.gather(_check("database", database()), _check("cache", state.cache.ping()))
    )
    # Only the database decides. Without Redis the API still answers every request (reads go to
    # the database, rate limits let requests through): failing readiness then would take every
    # pod out of its Service and turn a slower API into none at all.
    serving = results["database"] == "ok"
    degraded = any(value != "ok" for value in results.values())
    return JSONResponse(
        {
            "status": ("degraded" if degraded else "ok") if serving else "unavailable",
            "checks": results,
        },
        status_code=200 if serving else 503,
    )
