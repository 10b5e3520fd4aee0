"""Scaling for real: with the workers at their minimum (zero, KEDA-style), a backlog of orders
makes the operator scale the worker Deployment, worker pods start and drain it, and after the
stabilization window the workers go back down; every order is processed exactly once."""

from __future__ import annotations

import time
import uuid

from tests.e2e.node.support import (
    Release,
    processed_in_logs,
    sign_up,
    wait_for_pods,
)
from tests.pipeline.support import (
    assert_processed_exactly_once,
    create_orders,
    eventually,
    order_rows,
    queue_depth,
)

MAX_WORKERS = 3
RELEASE_SETS = (
    "orderSystem.workers.minReplicas=0",
    f"orderSystem.workers.maxReplicas={MAX_WORKERS}",
    "orderSystem.workers.messagesPerReplica=20",
)
RELEASE_SET_JSON = (
    'orderSystem.spec={"workers": {"pollingInterval": "1s", "scaleDownStabilization": "15s"}}',
)
ORDERS = 120  # 6 replicas' worth at 20 each: the operator asks for more than the maximum


async def test_a_backlog_scales_the_workers_up_and_back_down(release: Release) -> None:
    # At rest the idle queue takes the workers to their minimum: none.
    wait_for_pods(release, "worker", lambda running: running == 0, timeout=90)
    assert release.replicas("worker") == 0

    async with release.client() as http:
        account = await sign_up(http)
        started = time.monotonic()
        order_ids = await create_orders(http, account.token, ORDERS)

    # The backlog waits in the Celery queue until workers exist.
    async def backlog() -> int:
        return await queue_depth(release.amqp_url(), "order_tasks")

    await eventually(backlog, timeout=30, interval=0.2, message="a backlog in order_tasks")

    # The operator scales to the maximum (120 / 20 = 6 > 3); worker pods start and drain.
    pods = wait_for_pods(release, "worker", lambda running: running == MAX_WORKERS, timeout=120)
    scaled_up_after = time.monotonic() - started
    assert release.replicas("worker") == MAX_WORKERS

    async def drained() -> bool:
        rows = await order_rows(release.settings())
        return all(rows[uuid.UUID(order_id)].processed for order_id in order_ids)

    await eventually(drained, timeout=120, interval=1, message=f"{ORDERS} orders processed")
    drained_after = time.monotonic() - started
    processed = processed_in_logs(release.logs("worker"))
    assert set(order_ids) <= processed
    await assert_processed_exactly_once(release.settings(), order_ids)

    # Idle again: after the stabilization window, back to none.
    wait_for_pods(release, "worker", lambda running: running == 0, timeout=120)
    assert release.replicas("worker") == 0
    idle_after = time.monotonic() - started

    events = release.kube.json("-n", release.namespace, "get", "events")["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"].get("kind") == "OrderSystem"}
    assert {"ScaledUp", "ScaledDown"} <= reasons, reasons
    print(
        f"\nscaling: {ORDERS} orders; {MAX_WORKERS} workers running after {scaled_up_after:.0f} s"
        f" ({pods}); drained after {drained_after:.0f} s; back to 0 after {idle_after:.0f} s"
    )
