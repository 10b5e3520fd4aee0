"""The controller's key pass when the Secret cannot be written: the keys generated for it wait
for the next pass instead of being generated again (an RSA key costs up to a second of CPU).

The Kubernetes API is an in-memory stand-in for the one class the controller talks to (`KubeApi`):
this checks the controller's bookkeeping between passes, not any server behaviour (the paths a
real API server exercises are in tests/cluster)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, cast

import pytest

from oms.security.jwk import generate_private_key, private_key_to_pem
from oms_operator import keys
from oms_operator.kube import KubeApi, KubeApiError, Replicas, SecretObject
from oms_operator.reconciler import Dependencies, OrderSystemController

SECRET = "oms-jwt-keys"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@cache
def pem(number: int) -> bytes:
    return private_key_to_pem(generate_private_key(2048))


class SecretsOnly:
    """Secrets kept in a dict; writes refused while `refusing` > 0 (one refusal per write)."""

    def __init__(self) -> None:
        self.secrets: dict[str, SecretObject] = {}
        self.refusing = 0
        self.writes: list[dict[str, bytes]] = []

    async def read_secret(self, namespace: str, name: str) -> SecretObject | None:
        return self.secrets.get(name)

    def _store(self, name: str, data: dict[str, bytes], annotations: dict[str, str]) -> None:
        self.writes.append(data)
        if self.refusing > 0:
            self.refusing -= 1
            raise KubeApiError(500, "etcdserver: request timed out")
        version = str(len(self.writes))
        self.secrets[name] = SecretObject(name, data, annotations, resource_version=version)

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        self._store(metadata["name"], _decoded(body["data"]), metadata["annotations"])

    async def patch_secret(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        data = {**self.secrets[name].data, **_decoded(body["data"])}
        data = {key: value for key, value in data.items() if value is not None}
        self._store(name, data, body["metadata"]["annotations"])

    async def read_replicas(self, namespace: str, deployment: str) -> Replicas | None:
        return None  # no workers: the scaling half has nothing to do

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        pass


def _decoded(data: dict[str, str | None]) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in data.items() if value is not None}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def generated() -> list[bytes]:
    return []


@pytest.fixture
def api() -> SecretsOnly:
    return SecretsOnly()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def controller(api: SecretsOnly, generated: list[bytes], clock: Clock) -> OrderSystemController:
    async def generate(key_size: int) -> bytes:
        key = pem(len(generated))
        generated.append(key)
        return key

    deps = Dependencies(
        kube=cast(KubeApi, api),
        emit_event=lambda *_: None,
        generate_key=generate,
        clock=clock,
    )
    body = {
        "metadata": {"name": "oms", "namespace": "shop", "uid": "u-1"},
        "spec": {
            "jwt": {"secretName": SECRET, "rotationInterval": "720h", "propagationDelay": "1m"},
            "workers": {"deploymentName": "oms-worker", "queues": ["new_order"]},
            "rabbitmq": {"urlSecretRef": {"name": "oms-rabbitmq", "key": "RABBITMQ_URL"}},
        },
    }
    return OrderSystemController(body, deps)


async def test_a_refused_creation_is_retried_with_the_same_key(
    controller: OrderSystemController, api: SecretsOnly, generated: list[bytes]
) -> None:
    api.refusing = 3
    for _ in range(4):
        await controller.reconcile_once()
    assert len(api.writes) == 4
    assert {write[keys.PRIVATE_KEY] for write in api.writes} == {generated[0]}
    assert len(generated) == 1
    assert api.secrets[SECRET].data[keys.PRIVATE_KEY] == generated[0]


async def test_a_refused_rotation_is_retried_with_the_same_staged_key(
    controller: OrderSystemController, api: SecretsOnly, generated: list[bytes], clock: Clock
) -> None:
    await controller.reconcile_once()
    signer = api.secrets[SECRET].data[keys.PRIVATE_KEY]
    clock.now += timedelta(days=30)
    api.refusing = 2
    for _ in range(3):
        await controller.reconcile_once()
    staged = [write[keys.NEXT_PRIVATE_KEY] for write in api.writes[1:]]
    assert len(staged) == 3
    assert set(staged) == {generated[1]}
    assert len(generated) == 2
    stored = api.secrets[SECRET].data
    assert (stored[keys.PRIVATE_KEY], stored[keys.NEXT_PRIVATE_KEY]) == (signer, generated[1])


async def test_a_written_key_is_never_used_again_for_the_next_rotation(
    controller: OrderSystemController, api: SecretsOnly, generated: list[bytes], clock: Clock
) -> None:
    # The write "fails" after the server stored it (a timeout on the answer): the next pass
    # finds the key in the Secret, and a later rotation must not stage that same key.
    api.refusing = 1
    await controller.reconcile_once()
    api.secrets[SECRET] = SecretObject(
        SECRET,
        api.writes[0],
        {keys.LIFECYCLE_ANNOTATION: _lifecycle_of(api.writes[0])},
        resource_version="1",
        owner_uids=("u-1",),
    )
    clock.now += timedelta(days=30)
    await controller.reconcile_once()
    stored = api.secrets[SECRET].data
    assert stored[keys.NEXT_PRIVATE_KEY] != stored[keys.PRIVATE_KEY]
    assert len(generated) == 2


def _lifecycle_of(data: dict[str, bytes]) -> str:
    policy = keys.KeyPolicy(2048, timedelta(days=30), timedelta(minutes=1), timedelta(hours=2))
    reading = keys.read_secret(data, {}, policy, T0)
    assert reading.ring is not None
    return keys.render_lifecycle(reading.ring)
