"""A rolling `helm upgrade` of the API, the consumer and the worker (a changed setting rolls all
three, the migration hook runs again) under a steady client load through the ingress: no client
request fails, and no order is lost or processed twice. What makes it so: maxUnavailable 0 with
readiness on the real dependencies, the API's preStop pause while the ingress controller drops
the pod, uvicorn draining in-flight requests, Celery's warm shutdown with late acks."""

from __future__ import annotations

import asyncio
import time

from tests.cluster.support import CHART
from tests.e2e.node.support import Release, sign_up, steady_load
from tests.pipeline.support import assert_processed_exactly_once, eventually, order_rows

ROLLED = ("api", "consumer", "worker")
RELEASE_SETS = (
    "api.replicaCount=2",
    "consumer.replicaCount=2",
    "orderSystem.workers.minReplicas=2",
)


async def test_a_rolling_upgrade_under_load_fails_no_request_and_loses_no_order(
    release: Release,
) -> None:
    before = {component: set(release.running_pods(component)) for component in ROLLED}
    assert all(len(pods) == 2 for pods in before.values()), before
    async with release.client() as http:
        account = await sign_up(http)
    async with steady_load(release, account, clients=4) as load:
        await asyncio.sleep(3)
        started = time.monotonic()
        upgrade = await asyncio.to_thread(
            release.helm,
            "upgrade", release.name, str(CHART), "--reuse-values",
            "--set", "config.logLevel=DEBUG", "--wait", "--timeout", "5m",
        )  # fmt: skip
        upgrade_seconds = time.monotonic() - started
        assert upgrade.returncode == 0, upgrade.stderr
        # The old pods are gone only once terminated: keep the load on until they are.
        for component in ROLLED:
            await asyncio.to_thread(
                release.kubectl, "rollout", "status", f"deployment/{release.deployment(component)}"
            )
        await asyncio.sleep(8)
    after = {component: set(release.running_pods(component)) for component in ROLLED}
    for component in ROLLED:
        assert not before[component] & after[component], f"{component} was not rolled"
    assert release.kubectl("get", "configmap", "oms", "-o", "jsonpath={.data.LOG_LEVEL}") == "DEBUG"

    assert load.failures == [], load.failures[:10]
    assert load.requests >= 100, load.requests

    async def all_processed() -> bool:
        rows = await order_rows(release.settings())
        return all(row.processed for row in rows.values())

    await eventually(all_processed, timeout=120, interval=1, message="every order processed")
    await assert_processed_exactly_once(release.settings(), load.created)
    print(
        f"\nrolling upgrade: {upgrade_seconds:.0f} s, {load.requests} requests through the"
        f" ingress, {len(load.created)} orders, 0 failed"
    )
