"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
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


# Checks given up on, still unwinding: referenced so they are not collected mid-way.
_abandoned: set[asyncio.Task[Any]] = set()


async def _check(name: str, probe: Coroutine[Any, Any, Any]) -> tuple[str, str]:
    """The probe's outcome within CHECK_TIMEOUT_SECONDS. A probe that times out is cancelled but
    not waited for: unwinding a connection to a server that stopped answering (the rollback as the
    connection goes back to the pool) can take as long again, and the kubelet's probe would time
    out before reading why (asyncio.wait_for waits for the cancelled probe to finish)."""
    task = asyncio.ensure_future(probe)
    try:
        done, _ = await asyncio.wait({task}, timeout=CHECK_TIMEOUT_SECONDS)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        _abandoned.add(task)
        task.add_done_callback(_forget)
        return name, "error: TimeoutError"
    error = task.exception()
    return (name, "ok") if error is None else (name, f"error: {type(error).__name__}")


def _forget(task: asyncio.Task[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned probe's error is no "never retrieved" warning


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
