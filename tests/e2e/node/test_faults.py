"""Faults on the node while orders keep coming through the ingress: a worker pod and a consumer
pod killed mid-stream (`--grace-period=0 --force`), RabbitMQ's container killed (the kubelet
restarts it in its pod, the broker's data volume survives: "the broker died", not "its disk was
lost"), the operator pod deleted. Nothing is lost, nothing is processed twice, nothing is parked
in the dead-letter queue, and the system recovers by itself: every Deployment Available again and
a new order processed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from typing import Any

from tests.cluster.support import wait_until
from tests.e2e.node.support import (
    Load,
    Release,
    create_order,
    sign_up,
    steady_load,
    wait_for_pods,
)
from tests.pipeline.support import (
    assert_processed_exactly_once,
    eventually,
    order_rows,
    queue_depth,
)

RELEASE_SETS = ("consumer.replicaCount=2", "orderSystem.workers.minReplicas=2")


def pod_named(release: Release, component: str) -> str:
    return release.running_pods(component)[0]


def force_delete(release: Release, pod: str) -> None:
    release.kubectl("delete", "pod", pod, "--grace-period=0", "--force")


def kill_container(release: Release, node: dict[str, Any], app: str) -> int:
    """SIGKILL the container of a backing service through the node's containerd, as the kernel's
    OOM killer would; returns its restart count before."""
    pods = json.loads(
        release.kubectl("get", "pods", "-l", f"app.kubernetes.io/name={app}", "-o", "json")
    )["items"]
    (status,) = pods[0]["status"]["containerStatuses"]
    container = status["containerID"].removeprefix("containerd://")
    ctr = ["ctr", "--address", node["containerd_socket"], "-n", "k8s.io"]
    subprocess.run(
        [*ctr, "tasks", "kill", "--signal", "SIGKILL", container],
        check=True,
        capture_output=True,
    )
    return int(status["restartCount"])


def restarts(release: Release, app: str) -> int:
    pods = json.loads(
        release.kubectl("get", "pods", "-l", f"app.kubernetes.io/name={app}", "-o", "json")
    )["items"]
    return int(pods[0]["status"]["containerStatuses"][0]["restartCount"])


async def test_killed_pods_and_a_broker_crash_lose_nothing(
    release: Release, node: dict[str, Any]
) -> None:
    async with release.client() as http:
        account = await sign_up(http)
    timeline: list[str] = []
    started = time.monotonic()

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - started:5.1f} s {what}")

    async with steady_load(release, account, clients=2, pause=0.1) as load:
        await more_orders(load)

        worker = pod_named(release, "worker")
        force_delete(release, worker)
        note(f"worker pod {worker} killed")
        await more_orders(load)

        consumer = pod_named(release, "consumer")
        force_delete(release, consumer)
        note(f"consumer pod {consumer} killed")
        await more_orders(load)

        before = kill_container(release, node, "rabbitmq")
        note("RabbitMQ container killed")
        await asyncio.to_thread(
            wait_until, lambda: restarts(release, "rabbitmq") > before, timeout=120, interval=1
        )
        await asyncio.to_thread(
            release.kubectl, "wait", "--for=condition=Ready", "pod",
            "-l", "app.kubernetes.io/name=rabbitmq", "--timeout=120s",
        )  # fmt: skip
        note("RabbitMQ restarted in its pod and ready")
        await more_orders(load)

        operator = pod_named(release, "operator")
        release.kubectl("delete", "pod", operator)
        note(f"operator pod {operator} deleted")
        await asyncio.to_thread(wait_for_pods, release, "operator", lambda n: n == 1, 120)
        note("a new operator pod runs")
        await asyncio.sleep(3)

    # Client requests never depend on RabbitMQ or on a worker (the outbox decouples them).
    assert load.failures == [], load.failures[:10]
    created = list(load.created)

    async def all_processed() -> bool:
        rows = await order_rows(release.settings())
        return all(rows[uuid.UUID(order_id)].processed for order_id in created)

    await eventually(all_processed, timeout=180, interval=1, message="every order processed")
    note(f"all {len(created)} orders processed")
    await assert_processed_exactly_once(release.settings(), created)
    assert await queue_depth(release.amqp_url(), "new_order.dlq") == 0

    # Recovered by itself: everything Available, keys intact, a new order flows.
    await asyncio.to_thread(release.wait_available, 180)
    async with release.client() as http:
        order_id = await create_order(http, account)

        async def processed() -> bool:
            seen = await http.get(f"/orders/{order_id}/", headers=account.headers)
            return seen.json()["processed_at"] is not None

        await eventually(processed, timeout=60, interval=0.5, message="a new order processed")
    print("\nfaults:\n  " + "\n  ".join(timeline))


async def more_orders(load: Load, count: int = 30) -> None:
    """Wait until the load has created `count` more orders (so each fault hits a flowing
    pipeline, and the next one comes after the system took new work again)."""
    target = len(load.created) + count

    async def reached() -> bool:
        return len(load.created) >= target

    await eventually(reached, timeout=90, interval=0.2, message=f"{target} orders created")
