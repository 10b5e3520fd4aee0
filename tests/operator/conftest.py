"""The real operator (Kopf CLI under KopfRunner) against a kmock Kubernetes emulator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import kmock
import pytest
import yaml
from kopf.testing import KopfRunner

from tests.harness import free_port
from tests.infra import RABBITMQ_URL
from tests.operator.cluster import Cluster, declare_resources


@pytest.fixture
def namespace() -> str:
    return f"oms-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def cluster(
    kmock: kmock.KubernetesEmulator,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Cluster:
    declare_resources(kmock)
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [
            {
                "name": "kmock",
                "context": {"cluster": "kmock", "user": "tester", "namespace": namespace},
            }
        ],
        "current-context": "kmock",
    }
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(path))
    # Never the pod's service account, even if the tests run inside a cluster.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return Cluster(kmock, namespace)


@contextlib.contextmanager
def preserved_logging() -> Iterator[None]:
    """`kopf run` re-configures the root logger (a handler on the runner's captured stderr, level
    INFO, asyncio muted); put everything back so later tests log as before."""
    root = logging.getLogger()
    aio = logging.getLogger("asyncio")
    saved = (list(root.handlers), root.level, list(aio.handlers), aio.propagate)
    try:
        yield
    finally:
        root.handlers[:], aio.handlers[:] = saved[0], saved[2]
        root.setLevel(saved[1])
        aio.propagate = saved[3]


@dataclass
class RunningOperator:
    runner: KopfRunner
    metrics_port: int
    liveness_port: int


OperatorFactory = Callable[..., contextlib.AbstractAsyncContextManager[RunningOperator]]


@pytest.fixture
def run_operator(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> OperatorFactory:
    """Start `kopf run --standalone -m oms_operator.handlers` for the test's namespace."""

    @contextlib.asynccontextmanager
    async def start(**env: str) -> AsyncIterator[RunningOperator]:
        metrics_port, liveness_port = free_port(), free_port()
        monkeypatch.setenv("OPERATOR_METRICS_HOST", "127.0.0.1")
        monkeypatch.setenv("OPERATOR_METRICS_PORT", str(metrics_port))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        args = [
            "run",
            "--standalone",
            "--namespace",
            cluster.namespace,
            "--liveness",
            f"http://127.0.0.1:{liveness_port}/healthz",
            "-m",
            "oms_operator.handlers",
        ]
        runner = KopfRunner(args, timeout=30)
        # The emulator runs on this test's event loop, the operator on its own thread's loop:
        # entering and leaving happen in threads so this loop keeps serving the operator.
        with preserved_logging():
            await asyncio.to_thread(runner.__enter__)
            try:
                yield RunningOperator(runner, metrics_port, liveness_port)
            finally:
                await asyncio.to_thread(runner.__exit__, None, None, None)
        assert runner.exit_code == 0, runner.output
        assert runner.exception is None, runner.output

    return start


@pytest.fixture
async def rabbit_queue() -> AsyncIterator[str]:
    """A durable queue of its own on the real RabbitMQ, deleted afterwards."""
    name = f"oms-operator-test-{uuid.uuid4().hex[:10]}"
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True)
        try:
            yield name
        finally:
            await channel.queue_delete(name)


async def publish(queue: str, count: int) -> None:
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        for number in range(count):
            await channel.default_exchange.publish(
                aio_pika.Message(body=f"task {number}".encode()), routing_key=queue
            )


def ordersystem_spec(queue: str, **workers: Any) -> dict[str, Any]:
    return {
        "jwt": {"secretName": "oms-jwt-keys"},
        "workers": {"deploymentName": "oms-worker", "queues": [queue], **workers},
        "rabbitmq": {"urlSecretRef": {"name": "oms-rabbitmq", "key": "RABBITMQ_URL"}},
    }
