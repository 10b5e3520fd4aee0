"""The operator end to end: the Kopf CLI with our handlers under KopfRunner, kmock as the
Kubernetes API server, and the real RabbitMQ on 127.0.0.1 for queue depths."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from oms.db.models import UserRole
from oms.security.keys import KeySet, key_id, load_key_set, load_private_key
from oms.security.tokens import issue_access_token, verify_access_token
from oms.settings import Settings
from tests.infra import RABBITMQ_URL
from tests.operator.cluster import Cluster, condition, eventually, free_port
from tests.operator.conftest import OperatorFactory, ordersystem_spec, publish, purge
from tests.operator.crd import errors, openapi_schema

pytestmark = pytest.mark.slow

SECRET = "oms-jwt-keys"
STATUS_SCHEMA = openapi_schema()["properties"]["status"]


async def given_workers(cluster: Cluster, replicas: int = 1, url: str = RABBITMQ_URL) -> None:
    await cluster.create_secret("oms-rabbitmq", {"RABBITMQ_URL": url})
    await cluster.create_deployment("oms-worker", replicas)


def api_settings(tmp_path: Path, data: dict[str, bytes]) -> Settings:
    """Settings as the API runs with the Secret mounted: the files are the Secret's keys."""
    folder = tmp_path / f"secret-{time.monotonic_ns()}"
    folder.mkdir()
    for name, value in data.items():
        (folder / name).write_bytes(value)
    return Settings(
        _env_file=None,
        JWT_PRIVATE_KEY_PATH=folder / "private.pem",
        JWT_JWKS_PATH=folder / "jwks.json",
        JWT_AUTO_GENERATE_KEYS=False,
    )


def api_key_set(tmp_path: Path, data: dict[str, bytes]) -> tuple[Settings, KeySet]:
    settings = api_settings(tmp_path, data)
    return settings, load_key_set(settings)


def published_kids(data: dict[str, bytes]) -> list[str]:
    return [str(key["kid"]) for key in json.loads(data["jwks.json"])["keys"]]


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


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_creates_a_valid_key_secret_and_never_overwrites_it(
    cluster: Cluster, run_operator: OperatorFactory, rabbit_queue: str, tmp_path: Path
) -> None:
    await given_workers(cluster)
    created = await cluster.create_ordersystem("oms", ordersystem_spec(rabbit_queue))
    async with run_operator():
        data = await eventually(lambda: cluster.secret_data(SECRET))
        await eventually(lambda: condition_is(cluster, "Ready", "True"))

    private = load_private_key(data["private.pem"])
    assert data["private.pem"].startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert private.key_size == 2048
    kid = key_id(private.public_key())
    assert data["kid"].decode() == kid
    assert published_kids(data) == [kid]
    # The API's own loader reads the mounted files; a token it signs verifies.
    settings, keys = api_key_set(tmp_path, data)
    assert keys.signing_kid == kid
    token, _ = issue_access_token(settings, keys, 7, UserRole.USER)
    assert verify_access_token(settings, keys, token).user_id == 7

    secret = await cluster.get("v1", "secrets", SECRET)
    assert secret is not None
    owner = secret["metadata"]["ownerReferences"][0]
    assert owner["uid"] == created["metadata"]["uid"]
    assert (owner["kind"], owner["controller"]) == ("OrderSystem", True)
    status = (await cluster.ordersystem("oms"))["status"]
    assert errors(status, STATUS_SCHEMA) == []  # what the API server would accept
    assert status["keyId"] == kid
    assert status["observedGeneration"] == 1
    assert await posted(cluster, "KeyCreated")
    assert "finalizers" not in (await cluster.ordersystem("oms"))["metadata"]

    # A restarted operator finds the valid Secret and leaves it exactly as it is.
    restart = cluster.mark()
    async with run_operator():

        async def reconciled_again() -> bool:
            return bool(cluster.writes("ordersystems", "oms", restart, subresource="status"))

        await eventually(reconciled_again)
    assert cluster.writes("secrets", SECRET, restart) == []
    assert await cluster.secret_data(SECRET) == data
    assert len(cluster.events("KeyCreated")) == 1


async def test_a_deleted_secret_comes_back_and_a_broken_one_is_repaired(
    cluster: Cluster, run_operator: OperatorFactory, rabbit_queue: str, tmp_path: Path
) -> None:
    await given_workers(cluster)
    await cluster.create_ordersystem("oms", ordersystem_spec(rabbit_queue, pollingInterval="1s"))
    async with run_operator():
        first = await eventually(lambda: cluster.secret_data(SECRET))
        await cluster.delete("v1", "secrets", SECRET)
        second = await eventually(lambda: cluster.secret_data(SECRET))
        assert second["kid"] != first["kid"]
        # Deleting is the revocation path: nothing of the old key is trusted any more.
        assert published_kids(second) == [second["kid"].decode()]

        async def status_follows() -> bool:
            status = (await cluster.ordersystem("oms")).get("status") or {}
            return status.get("keyId") == second["kid"].decode()

        await eventually(status_follows)

        # A corrupted signing key is replaced; the public keys that were still readable stay
        # published so tokens already issued keep verifying.
        old_settings, old_keys = api_key_set(tmp_path, second)
        old_token, _ = issue_access_token(old_settings, old_keys, 1, UserRole.USER)
        await cluster.patch("v1", "secrets", SECRET, {"data": {"private.pem": "bm90IGEga2V5"}})

        async def repaired() -> dict[str, bytes] | None:
            data = await cluster.secret_data(SECRET)
            return data if data and data["kid"] != second["kid"] else None

        third = await eventually(repaired)
        assert await posted(cluster, "KeyRepaired")
    assert second["kid"].decode() in published_kids(third)
    settings, keys = api_key_set(tmp_path, third)
    assert verify_access_token(settings, keys, old_token).user_id == 1


async def test_rotation_publishes_first_then_signs_and_keeps_the_old_key(
    cluster: Cluster, run_operator: OperatorFactory, rabbit_queue: str, tmp_path: Path
) -> None:
    await given_workers(cluster)
    spec = ordersystem_spec(rabbit_queue)
    spec["jwt"].update(
        rotationInterval="3s",
        propagationDelay="1s",
        tokenLifetime="1m",
        clockSkew="0s",
        retiredKeyRetention="10m",
    )
    await cluster.create_ordersystem("oms", spec)
    async with run_operator():
        first = await eventually(lambda: cluster.secret_data(SECRET))
        old_settings, old_keys = api_key_set(tmp_path, first)
        old_token, _ = issue_access_token(old_settings, old_keys, 42, UserRole.ADMIN)

        async def rotated() -> dict[str, bytes] | None:
            data = await cluster.secret_data(SECRET)
            return data if data and data["kid"] != first["kid"] else None

        second = await eventually(rotated, timeout=15)
        await posted(cluster, "KeyRotated")
        reasons = [event["reason"] for event in cluster.events()]
    assert reasons.index("KeyStaged") < reasons.index("KeyRotated")
    new_kid, old_kid = second["kid"].decode(), first["kid"].decode()
    assert published_kids(second)[0] == new_kid
    assert old_kid in published_kids(second)
    lifecycle = json.loads(
        (await cluster.get("v1", "secrets", SECRET) or {})["metadata"]["annotations"][
            "oms.dev/key-lifecycle"
        ]
    )
    assert any(item["kid"] == old_kid for item in lifecycle["retired"])
    settings, keys = api_key_set(tmp_path, second)
    assert keys.signing_kid == new_kid
    # The token signed before the rotation still verifies; new tokens use the new key.
    assert verify_access_token(settings, keys, old_token).user_id == 42
    new_token, _ = issue_access_token(settings, keys, 43, UserRole.USER)
    assert verify_access_token(settings, keys, new_token).user_id == 43


async def test_queue_depth_scales_workers_up_at_once_and_down_after_the_window(
    cluster: Cluster, run_operator: OperatorFactory, rabbit_queue: str
) -> None:
    await given_workers(cluster, replicas=1)
    window = 3.0
    spec = ordersystem_spec(
        rabbit_queue,
        minReplicas=1,
        maxReplicas=5,
        messagesPerReplica=10,
        pollingInterval="1s",
        scaleDownStabilization=f"{window:g}s",
    )
    await cluster.create_ordersystem("oms", spec)
    async with run_operator() as operator:
        await eventually(lambda: condition_is(cluster, "ScalingActive", "True"))
        await publish(rabbit_queue, 35)

        async def scaled_to(replicas: int) -> bool:
            return await cluster.replicas("oms-worker") == replicas

        await eventually(lambda: scaled_to(4))

        async def reported() -> dict[str, Any] | None:
            status: dict[str, Any] = (await cluster.ordersystem("oms"))["status"]
            return status if status.get("desiredReplicas") == 4 else None

        status = await eventually(reported)
        assert status["queueDepth"] == 35
        assert status["lastScaleTime"]
        samples = scrape(operator.metrics_port)
        labels = {"namespace": cluster.namespace, "ordersystem": "oms"}
        assert sample(samples, "oms_operator_desired_replicas", **labels) == 4
        assert (
            sample(
                samples,
                "oms_operator_queue_depth",
                **labels,
                queue=rabbit_queue,
                state="ready",
            )
            == 35
        )
        assert (
            sample(samples, "oms_operator_scale_events_total", **labels, direction="up") or 0
        ) >= 1
        assert (
            sample(samples, "oms_operator_last_successful_poll_timestamp_seconds", **labels) or 0
        ) > 0

        await purge(rabbit_queue)
        drained_at = time.monotonic()
        await eventually(lambda: scaled_to(1), timeout=window + 10)
        waited = time.monotonic() - drained_at
        assert await posted(cluster, "ScaledUp")
        assert await posted(cluster, "ScaledDown")
    # The last busy poll was at most one interval before the purge; the window runs from it.
    assert waited >= window - 1.0, f"scaled down after {waited:.1f}s, inside the window"


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
