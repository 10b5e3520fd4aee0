"""The operator's failure paths, fast: the Kopf CLI with our handlers under KopfRunner, kmock as
the Kubernetes API server, and the real RabbitMQ on 127.0.0.1 for queue depths.

The paths a real API server exercises better (key creation, repair and rotation, scaling from a
real queue, restarts, garbage collection, RBAC) live in tests/cluster against the local control
plane; these stay because an unreachable broker, fallback replicas, pausing and an invalid spec
need no server behaviour, only the operator's decisions, and take seconds here."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import kmock
import pytest

from tests.harness import free_port
from tests.infra import RABBITMQ_URL
from tests.operator.cluster import Cluster, eventually
from tests.operator.conftest import OperatorFactory, ordersystem_spec, publish
from tests.operator.crd import errors, openapi_schema
from tests.operator.observe import condition, sample, scrape

pytestmark = pytest.mark.slow

SECRET = "oms-jwt-keys"
STATUS_SCHEMA = openapi_schema()["properties"]["status"]


async def given_workers(cluster: Cluster, replicas: int = 1, url: str = RABBITMQ_URL) -> None:
    await cluster.create_secret("oms-rabbitmq", {"RABBITMQ_URL": url})
    await cluster.create_deployment("oms-worker", replicas)


async def condition_is(
    cluster: Cluster, condition_type: str, status: str, reason: str | None = None
) -> dict[str, Any] | None:
    found = condition(await cluster.ordersystem("oms"), condition_type)
    if found is None or found["status"] != status:
        return None
    if reason is not None and found["reason"] != reason:
        return None
    return found


async def posted(cluster: Cluster, reason: str) -> list[dict[str, Any]]:
    """Events are posted by Kopf's background poster: wait for them rather than race it."""

    async def found() -> list[dict[str, Any]]:
        return cluster.events(reason)

    return await eventually(found)


async def test_unreachable_rabbitmq_degrades_and_keeps_the_replicas(
    cluster: Cluster, run_operator: OperatorFactory, rabbit_queue: str
) -> None:
    closed_port = free_port()
    await given_workers(cluster, replicas=3, url=f"amqp://guest:guest@127.0.0.1:{closed_port}/")
    spec = ordersystem_spec(rabbit_queue, minReplicas=1, maxReplicas=5, pollingInterval="1s")
    await cluster.create_ordersystem("oms", spec)
    async with run_operator():
        degraded = await eventually(
            lambda: condition_is(cluster, "Degraded", "True", "RabbitMQUnreachable")
        )
        assert "keeping 3 replicas" in degraded["message"]

        async def failed_twice() -> dict[str, Any] | None:
            found = await condition_is(cluster, "ScalingActive", "False", "RabbitMQUnreachable")
            return found if found and "failure 1)" not in found["message"] else None

        await eventually(failed_twice, timeout=15)
        assert await cluster.replicas("oms-worker") == 3
        assert await condition_is(cluster, "KeysReady", "True")
        assert await condition_is(cluster, "Ready", "False")
        await posted(cluster, "RabbitMQUnreachable")
        assert len(cluster.events("RabbitMQUnreachable")) == 1  # on the transition, not per poll
        assert errors((await cluster.ordersystem("oms"))["status"], STATUS_SCHEMA) == []

        # RabbitMQ "comes back" (the URL now points at the real one): the condition clears.
        await cluster.patch(
            "v1",
            "secrets",
            "oms-rabbitmq",
            {"data": {"RABBITMQ_URL": base64.b64encode(RABBITMQ_URL.encode()).decode()}},
        )
        await eventually(lambda: condition_is(cluster, "Degraded", "False"), timeout=20)
        await eventually(lambda: condition_is(cluster, "Ready", "True"))


async def test_fallback_replicas_after_repeated_failures(
    cluster: Cluster, run_operator: OperatorFactory, rabbit_queue: str
) -> None:
    await given_workers(cluster, replicas=4, url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    spec = ordersystem_spec(
        rabbit_queue,
        minReplicas=1,
        maxReplicas=5,
        pollingInterval="1s",
        fallbackReplicas=2,
        fallbackAfterFailures=2,
    )
    await cluster.create_ordersystem("oms", spec)
    async with run_operator():

        async def fell_back() -> bool:
            return await cluster.replicas("oms-worker") == 2

        await eventually(fell_back, timeout=15)
        assert await posted(cluster, "ScaledToFallback")

        async def reported() -> dict[str, Any] | None:
            found = await condition_is(cluster, "ScalingActive", "False", "RabbitMQUnreachable")
            return found if found and "fallback to 2 replicas" in found["message"] else None

        assert await eventually(reported)


async def test_paused_reads_but_never_scales(
    cluster: Cluster, run_operator: OperatorFactory, rabbit_queue: str
) -> None:
    await given_workers(cluster, replicas=1)
    await publish(rabbit_queue, 50)
    spec = ordersystem_spec(rabbit_queue, paused=True, messagesPerReplica=10, pollingInterval="1s")
    await cluster.create_ordersystem("oms", spec)
    async with run_operator():
        paused = await eventually(lambda: condition_is(cluster, "ScalingActive", "False", "Paused"))
        assert "replicas stay at 1" in paused["message"]
        assert (await cluster.ordersystem("oms"))["status"]["queueDepth"] == 50
        assert await condition_is(cluster, "Ready", "True")
        assert await cluster.replicas("oms-worker") == 1

        # Unpausing acts at once on the spec change.
        await cluster.patch(
            "oms.dev/v1alpha1", "ordersystems", "oms", {"spec": {"workers": {"paused": False}}}
        )

        async def scaled() -> bool:
            return await cluster.replicas("oms-worker") == 5

        await eventually(scaled)


async def test_invalid_spec_is_reported_and_nothing_is_created(
    cluster: Cluster, run_operator: OperatorFactory, rabbit_queue: str
) -> None:
    await given_workers(cluster)
    spec = ordersystem_spec(rabbit_queue)
    spec["jwt"].update(tokenLifetime="1h", clockSkew="30s", retiredKeyRetention="30m")
    await cluster.create_ordersystem("oms", spec)
    async with run_operator():
        found = await eventually(lambda: condition_is(cluster, "KeysReady", "False", "InvalidSpec"))
        assert "retiredKeyRetention" in found["message"]
        assert await condition_is(cluster, "Degraded", "True", "InvalidSpec")
        assert await posted(cluster, "InvalidSpec")
        assert await cluster.secret_data(SECRET) is None


async def test_deleting_the_resource_is_never_blocked_and_stops_its_loop(
    cluster: Cluster, run_operator: OperatorFactory, rabbit_queue: str
) -> None:
    await given_workers(cluster)
    await cluster.create_ordersystem("oms", ordersystem_spec(rabbit_queue))
    async with run_operator() as operator:
        await eventually(lambda: condition_is(cluster, "Ready", "True"))
        health = f"http://127.0.0.1:{operator.liveness_port}/healthz"

        async with httpx.AsyncClient() as http:
            answer = await http.get(health, timeout=5)
        assert answer.status_code == 200
        assert answer.json()["ordersystems"] == 1
        assert "finalizers" not in (await cluster.ordersystem("oms"))["metadata"]
        await cluster.delete("oms.dev/v1alpha1", "ordersystems", "oms")
        assert await cluster.get("oms.dev/v1alpha1", "ordersystems", "oms") is None
        labels = {"namespace": cluster.namespace, "ordersystem": "oms"}

        async def forgotten() -> bool:
            samples = scrape(operator.metrics_port)
            return sample(samples, "oms_operator_desired_replicas", **labels) is None

        # The loop stopped: its series are gone (Kopf caches probe answers for 10 s).
        await eventually(forgotten)


def ordersystem_watches(cluster: Cluster) -> list[dict[str, str]]:
    """The query parameters of every watch request the operator made on OrderSystems."""
    return [
        dict(request.params)
        for request in cluster.emulator
        if request.action == kmock.action.WATCH
        and request.resource is not None
        and request.resource.plural == "ordersystems"
    ]


async def test_a_silent_watch_is_replaced_and_a_new_ordersystem_is_still_seen(
    cluster: Cluster, run_operator: OperatorFactory, rabbit_queue: str
) -> None:
    """kmock keeps an idle watch open and silent, whatever `timeoutSeconds` asks: exactly the
    stalled stream of nolar/kopf#698. The client timeout must end it and Kopf watch again."""
    await given_workers(cluster)
    timeouts = {
        "OPERATOR_WATCH_SERVER_TIMEOUT_SECONDS": "1",
        "OPERATOR_WATCH_CLIENT_TIMEOUT_SECONDS": "2",
    }
    async with run_operator(**timeouts):

        async def rewatched() -> list[dict[str, str]]:
            watches = ordersystem_watches(cluster)
            return watches if len(watches) >= 2 else []

        watches = await eventually(rewatched)
        assert {watch.get("timeoutSeconds") for watch in watches} == {"1"}
        await cluster.create_ordersystem("oms", ordersystem_spec(rabbit_queue))
        await eventually(lambda: condition_is(cluster, "Ready", "True"))
