"""Driving a running stack over HTTP and checking the outcome in its database."""

from __future__ import annotations

import asyncio
import re
import time

import httpx

from tests.pipeline.support import eventually

TASK_EVENT = re.compile(r"Task oms\.process_order_task\[([0-9a-f-]{36})\] (received|succeeded)")


async def processed_over_http(
    http: httpx.AsyncClient, token: str, order_ids: list[str], timeout: float
) -> float:
    """Poll GET /orders/{id}/ until every order shows processed_at; returns the seconds taken."""
    started = time.monotonic()
    pending = set(order_ids)
    headers = {"Authorization": f"Bearer {token}"}
    limit = asyncio.Semaphore(16)

    async def still_pending(order_id: str) -> str | None:
        async with limit:
            response = await http.get(f"/orders/{order_id}/", headers=headers)
        assert response.status_code == 200, response.text
        return order_id if response.json()["processed_at"] is None else None

    async def drained() -> bool:
        results = await asyncio.gather(*(still_pending(order_id) for order_id in pending))
        pending.intersection_update(result for result in results if result)
        return not pending

    await eventually(drained, timeout, interval=0.25, message=f"{len(pending)} orders processed")
    return time.monotonic() - started


def task_events(log: str) -> tuple[set[str], set[str]]:
    """Task ids a worker log shows as received and as succeeded."""
    received: set[str] = set()
    succeeded: set[str] = set()
    for task_id, kind in TASK_EVENT.findall(log):
        (received if kind == "received" else succeeded).add(task_id)
    return received, succeeded


async def metric_value(url: str, sample: str) -> float:
    """One sample (`name{labels}`) from a Prometheus endpoint; 0 when absent."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(url)).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0
