"""The images run as the chart runs them: non-root on a read-only root filesystem, API, consumer
and worker as containers against the local PostgreSQL, Redis and RabbitMQ processing orders, the
operator against the local control plane; health checks on the ports they are given; each stops
within its pod's terminationGracePeriodSeconds."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import infra
from tests.cluster.support import CRD_FILE, KUBECTL
from tests.harness import free_port, settings_environment
from tests.images.conftest import BuiltImages
from tests.images.support import SERVICES, Container, grace_seconds, run_once, started
from tests.pipeline.support import (
    amqp_url,
    create_orders,
    create_vhost,
    delete_vhost,
    order_rows,
    register_and_login,
)

ORDERS = 50
SIGTERM_EXIT = 128 + 15


@pytest.mark.parametrize("service", SERVICES)
def test_runs_as_non_root_with_only_the_chart_volumes_writable(
    built: BuiltImages, service: str
) -> None:
    code = (
        "import errno, json, os, sys\n"
        "def writable(path):\n"
        "    try:\n"
        "        open(os.path.join(path, 'probe'), 'w').close()\n"
        "    except OSError as error:\n"
        "        return errno.errorcode[error.errno]\n"
        "    return 'ok'\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'cwd': os.getcwd(),\n"
        "    'paths': {p: writable(p) for p in ('/tmp', '/var/lib/oms', '/app', '/opt/venv',\n"
        "    os.path.dirname(os.__file__), sys.prefix + '/lib/python3.11/site-packages')}}))\n"
    )
    found = json.loads(run_once(built.names[service], "python", "-c", code))
    assert (found["uid"], found["gid"]) == (10001, 10001)
    assert found["cwd"] == "/app"
    paths = found["paths"]
    assert paths.pop("/tmp") == "ok"
    assert paths.pop("/var/lib/oms") == "ok"
    assert set(paths.values()) == {"EROFS"}, paths


def stop_within_grace(container: Container, service: str, allowed: set[int]) -> None:
    grace = grace_seconds(service)
    code, seconds = container.stop(grace)
    assert code in allowed, f"{service} exit {code} after {seconds:.1f}s:\n{container.logs()}"
    assert seconds < grace, f"{service} took {seconds:.1f}s of its {grace}s grace period"


@pytest.fixture
async def backends(tmp_path: Path, signing_key_pem: str) -> AsyncIterator[dict[str, str]]:
    """This test's own database (empty: the image migrates it), Redis prefix and RabbitMQ vhost,
    as the environment the containers get."""
    database = infra.unique_name("oms_image")
    prefix = f"test:{database}:"
    vhost = infra.unique_name("oms_image")
    await infra.create_database(database)
    await create_vhost(vhost)
    settings = infra.postgres_settings(
        database,
        prefix,
        tmp_path,
        RABBITMQ_URL=amqp_url(vhost),
        JWT_PRIVATE_KEY=signing_key_pem,
        RUN_OUTBOX_RELAY=True,
        OUTBOX_POLL_SECONDS=0.5,
        RATE_LIMIT_ENABLED=False,
        WORKER_CONCURRENCY=2,
    )
    values: dict[str, Any] = {**settings.model_dump(), "DATA_DIR": "/var/lib/oms"}
    # Only the settings, nothing of this shell; loopback only, though on the host's network.
    env = settings_environment(values, base={})
    env["HOST"] = "127.0.0.1"
    try:
        yield env
    finally:
        await delete_vhost(vhost)
        await infra.delete_redis_prefix(prefix)
        await infra.drop_database(database)


async def test_api_consumer_and_worker_containers_process_orders(
    built: BuiltImages, backends: dict[str, str]
) -> None:
    migrated = run_once(built.names["api"], "oms", "migrate", env=backends)
    # A new database: every revision applied, and the command says which.
    assert re.search(r": applied 0001, .+; now at \d{4}$", migrated.strip()), migrated
    # Not the images' default ports: the health checks must follow what the process is told.
    ports = {"api": free_port(), "consumer": free_port(), "worker": free_port()}
    envs = {
        "api": {**backends, "PORT": str(ports["api"])},
        "consumer": {**backends, "CONSUMER_METRICS_PORT": str(ports["consumer"])},
        "worker": {**backends, "WORKER_METRICS_PORT": str(ports["worker"])},
    }
    with ExitStack() as stack:
        containers = {
            service: stack.enter_context(started(built.names[service], envs[service]))
            for service in ("api", "consumer", "worker")
        }
        for service, container in containers.items():
            await asyncio.to_thread(
                container.wait_http, f"http://127.0.0.1:{ports[service]}/health/ready"
            )
        for container in containers.values():
            await asyncio.to_thread(container.wait_healthy)

        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{ports['api']}", timeout=30
        ) as http:
            token = await register_and_login(http, "images@example.com")
            order_ids = await create_orders(http, token, ORDERS)
        settings = infra.postgres_settings(
            backends["POSTGRES_DB"], backends["REDIS_KEY_PREFIX"], Path("/tmp")
        )
        deadline = time.monotonic() + 120
        while True:
            rows = await order_rows(settings)
            processed = sum(1 for row in rows.values() if row.processed)
            if processed == ORDERS:
                break
            if time.monotonic() > deadline:
                logs = {name: c.logs()[-3000:] for name, c in containers.items()}
                pytest.fail(f"{processed}/{ORDERS} orders processed in 120s: {logs}")
            await asyncio.sleep(0.5)
        assert {str(order_id) for order_id in rows} == set(order_ids)
        assert "oms_worker" in containers["worker"].logs()

        # uvicorn re-raises SIGTERM once its graceful shutdown is done (exit 143).
        stop_within_grace(containers["api"], "api", {0, SIGTERM_EXIT})
        assert "Application shutdown complete" in containers["api"].logs()
        stop_within_grace(containers["consumer"], "consumer", {0})
        stop_within_grace(containers["worker"], "worker", {0})


@pytest.fixture(scope="module")
def kubeconfig(control_plane: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local control plane's admin kubeconfig, readable by the image's user, with the
    operator's CRD installed."""
    folder = tmp_path_factory.mktemp("kube")
    folder.chmod(0o755)
    config = folder / "config"
    shutil.copyfile(control_plane["kubeconfig"], config)
    config.chmod(0o644)
    subprocess.run(
        [KUBECTL, "--kubeconfig", str(config), "apply", "--server-side", "-f", str(CRD_FILE)],
        check=True,
        capture_output=True,
    )
    return config


def test_operator_container_answers_its_probe(built: BuiltImages, kubeconfig: Path) -> None:
    health, metrics = free_port(), free_port()
    env = {
        "KUBECONFIG": "/kube/config",
        "OPERATOR_LIVENESS_HOST": "127.0.0.1",
        "OPERATOR_LIVENESS_PORT": str(health),
        "OPERATOR_METRICS_HOST": "127.0.0.1",
        "OPERATOR_METRICS_PORT": str(metrics),
        "OPERATOR_NAMESPACES": "default",
    }
    volume = f"{kubeconfig.parent}:/kube:ro"
    with started(built.names["operator"], env, volumes=(volume,)) as container:
        container.wait_http(f"http://127.0.0.1:{health}/healthz")
        container.wait_healthy()
        assert container.wait_http(f"http://127.0.0.1:{metrics}/metrics").text
        stop_within_grace(container, "operator", {0})
