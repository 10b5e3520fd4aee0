"""The pipeline's and the operator's alerts on the deployed system: each one induced by the real
failure it is about, seen `pending` then `firing` by a Prometheus configured from the release's
own ServiceMonitor and PrometheusRules, and back to inactive once the failure is undone.

One incident, three failures overlapping in time (they share the release and the clock):

- RabbitMQ scaled to zero (its data is an emptyDir: the broker comes back empty) while orders
  keep coming through the ingress: the outbox backlog ages (OmsOutboxBacklogStale), the
  consumers lose their connection (OmsConsumerDisconnected), the operator cannot read the worker
  queue (OmsWorkerQueueUnreadable). The broker back: all three resolve.
- The backlog then meets workers that cannot keep up: one replica at most (maxReplicas 1), each
  task slowed to a second (ORDER_PROCESSING_DELAY_SECONDS, a slow dependency), orders still
  arriving faster: the task queue grows (OmsQueueDepthGrowing), the operator asks for more than
  the maximum (OmsWorkersScalingStuckAtMax), orders wait minutes (OmsOrderProcessingLagHigh).
  The slow dependency recovers (the delay removed): the backlog drains, all three resolve.
- Meanwhile the operator is denied writing its key Secret (its Role loses `patch` on it) while a
  rotation falls due: OmsOperatorReconcileErrors (stage `keys`), then OmsJwtKeyRotationOverdue.
  The Role restored: the rotation goes through, both resolve.

Every order created during all this is processed exactly once and none is dead-lettered.

Time runs 30 times faster for the rules (`compress_time`): every `for:` and range window, with a
floor of three evaluation intervals; of the age thresholds only the key rotation's hour is
compressed (to 120 s). The outbox's 120 s and the lag's 60 s are waited out for real. The
operator's poll back-off cap (300 s) is compressed the same way (OPERATOR_MAX_BACKOFF_SECONDS=10):
at full length it alone would keep the queue "unreadable" for minutes after the broker is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from tests.conftest import Account
from tests.e2e.node.monitoring import (
    MONITORED_RELEASE_SETS,
    SCRAPE_INTERVAL_SECONDS,
    alert_first_seen,
    compress_time,
    release_prometheus,
    seconds_of,
    wait_for_alert,
)
from tests.e2e.node.support import Release, all_of, open_loop, sign_up
from tests.observability.prometheus_server import PrometheusServer
from tests.pipeline.support import (
    ORDER_BODY,
    assert_processed_exactly_once,
    create_orders,
    eventually,
    order_rows,
    queue_depth,
)

# The release needs the ServiceMonitor and PrometheusRule CRDs before it is installed.
FACTOR = 30
EVALUATION_INTERVAL = SCRAPE_INTERVAL_SECONDS
ROTATION_OVERDUE_SECONDS = 3600
RULES_CLOCK = compress_time(
    FACTOR,
    floor_seconds=3 * EVALUATION_INTERVAL,
    age_thresholds={"OmsJwtKeyRotationOverdue": ROTATION_OVERDUE_SECONDS},
)
OUTBOX_STALE_SECONDS = 120  # OmsOutboxBacklogStale's threshold, not compressed

TASK_SECONDS = 1  # one slow task a second: the worker's whole throughput (concurrency 1)
ORDERS_PER_SECOND = 2.5  # faster than that, so the task queue grows while the worker is slow
PROPAGATION_DELAY_SECONDS = 30
ROTATION_LEAD_SECONDS = 20  # from the rotation interval's change to the rotation falling due

RELEASE_SETS = (
    *MONITORED_RELEASE_SETS,
    "orderSystem.workers.minReplicas=1",
    "orderSystem.workers.maxReplicas=1",
    "orderSystem.workers.messagesPerReplica=20",
)
RELEASE_SET_JSON = (
    "orderSystem.spec="
    + json.dumps(
        {
            "workers": {"pollingInterval": "1s"},
            "jwt": {"propagationDelay": f"{PROPAGATION_DELAY_SECONDS}s"},
        }
    ),
    "worker.extraEnv="
    + json.dumps(
        [
            {"name": "ORDER_PROCESSING_DELAY_SECONDS", "value": str(TASK_SECONDS)},
            {"name": "WORKER_CONCURRENCY", "value": "1"},
        ]
    ),
    "operator.extraEnv="
    + json.dumps([{"name": "OPERATOR_MAX_BACKOFF_SECONDS", "value": str(300 // FACTOR)}]),
)

BROKER_ALERTS = ("OmsOutboxBacklogStale", "OmsConsumerDisconnected", "OmsWorkerQueueUnreadable")
CAPACITY_ALERTS = (
    "OmsWorkersScalingStuckAtMax",
    "OmsQueueDepthGrowing",
    "OmsOrderProcessingLagHigh",
)
KEY_ALERTS = ("OmsOperatorReconcileErrors", "OmsJwtKeyRotationOverdue")
ALERTS = (*BROKER_ALERTS, *CAPACITY_ALERTS, *KEY_ALERTS)
METRICS_JOBS = ("oms-api-metrics", "oms-consumer-metrics", "oms-worker-metrics")


# --- alert life cycles ----------------------------------------------------------------------------


@dataclass
class Cycle:
    """One alert's life on the timeline (epoch seconds)."""

    alert: str
    induced: float
    hold: float  # the rule's `for:` (compressed)
    pending: float = math.nan
    firing: float = math.nan
    undone: float = math.nan
    inactive: float = math.nan
    labels: list[dict[str, str]] = field(default_factory=list)

    def row(self, origin: float) -> str:
        def at(moment: float) -> str:
            return f"{moment - origin:6.0f}"

        return (
            f"{self.alert:30} induced {at(self.induced)}  pending {at(self.pending)}"
            f"  firing {at(self.firing)}  undone {at(self.undone)}  inactive {at(self.inactive)}"
            f"  (pending->firing {self.firing - self.pending:.0f} s,"
            f" undone->inactive {self.inactive - self.undone:.0f} s)"
        )


async def fires(prometheus: PrometheusServer, cycle: Cycle, timeout: float) -> None:
    """Wait for the alert to fire; it must have been pending first, after its induction."""
    active = await wait_for_alert(prometheus, cycle.alert, "firing", timeout)
    cycle.labels = [entry["labels"] for entry in active if entry["state"] == "firing"]
    seen = await alert_first_seen(prometheus, cycle.alert, cycle.induced)
    assert {"pending", "firing"} <= set(seen), f"{cycle.alert}: states seen {seen}"
    cycle.pending, cycle.firing = seen["pending"], seen["firing"]
    # Pending for its whole `for:` after the induction: not pending already before it.
    assert cycle.induced < cycle.pending, cycle
    assert cycle.firing - cycle.pending >= cycle.hold - EVALUATION_INTERVAL / 2, cycle


def holds(rules: Path) -> dict[str, float]:
    """Each alert's `for:` in seconds, in the rule file Prometheus evaluates."""
    groups = yaml.safe_load(rules.read_text())["groups"]
    return {
        rule["alert"]: seconds_of(rule["for"])
        for group in groups
        for rule in group["rules"]
        if "alert" in rule
    }


async def resolves(prometheus: PrometheusServer, cycle: Cycle, timeout: float) -> None:
    await wait_for_alert(prometheus, cycle.alert, None, timeout)
    cycle.inactive = time.time()


# --- the load -------------------------------------------------------------------------------------


@dataclass
class Orders:
    created: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def paced_orders(
    release: Release, account: Account, per_second: float
) -> AsyncIterator[Orders]:
    """Orders created through the ingress at a steady pace, whatever their answers take."""
    orders = Orders()

    async def create(http: httpx.AsyncClient, _tick: int) -> None:
        try:
            answer = await http.post("/orders/", json=ORDER_BODY, headers=account.headers)
        except httpx.HTTPError as error:
            orders.failures.append(f"{type(error).__name__}: {error}")
            return
        if answer.status_code != 201:
            orders.failures.append(f"POST {answer.status_code} {answer.text[:200]}")
            return
        orders.created.append(str(answer.json()["id"]))

    async with open_loop(release, per_second, create):
        yield orders


# --- the cluster side -----------------------------------------------------------------------------


async def kubectl(release: Release, *args: str) -> str:
    """kubectl off the event loop: the load and the alert polls keep their pace meanwhile."""
    return await asyncio.to_thread(release.kubectl, *args)


async def wait_for_targets(prometheus: PrometheusServer, timeout: float = 90) -> None:
    """Every component's /metrics scraped successfully at least once."""

    async def all_up() -> bool:
        targets = await prometheus.targets_up()
        healthy = {t["labels"].get("job") for t in targets if t.get("health") == "up"}
        return {*METRICS_JOBS, "oms-operator-metrics"} <= healthy

    await eventually(all_up, timeout=timeout, interval=1, message="every component scraped")


async def processed(release: Release, order_ids: list[str]) -> bool:
    rows = await order_rows(release.settings())
    return all(rows[uuid.UUID(order_id)].processed for order_id in order_ids)


def order_system(release: Release) -> dict[str, Any]:
    return release.kube.json("-n", release.namespace, "get", "ordersystem", release.name)


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def secret_write_rule(role: dict[str, Any]) -> int:
    """The index of the Role rule that lets the operator patch its named Secrets."""
    for index, rule in enumerate(role["rules"]):
        if rule.get("resources") == ["secrets"] and "patch" in rule.get("verbs", []):
            return index
    raise AssertionError(f"no rule patching secrets in {role['rules']}")


async def set_rule_verbs(release: Release, role: str, index: int, verbs: list[str]) -> None:
    patch = [{"op": "replace", "path": f"/rules/{index}/verbs", "value": verbs}]
    await kubectl(release, "patch", "role", role, "--type=json", "-p", json.dumps(patch))


# --- the incident ---------------------------------------------------------------------------------


async def pipeline_incident(release: Release, tmp_path: Path) -> None:
    """The incident above on `release` (installed with RELEASE_SETS and RELEASE_SET_JSON), each
    alert seen pending, firing and resolved."""
    cycles: dict[str, Cycle] = {}
    notes: list[str] = []
    origin = time.time()

    def note(what: str) -> None:
        notes.append(f"{time.time() - origin:6.0f} s  {what}")

    def induce(*alerts: str) -> None:
        for alert in alerts:
            cycles[alert] = Cycle(alert, time.time(), hold[alert])

    def undo(*alerts: str) -> None:
        for alert in alerts:
            cycles[alert].undone = time.time()

    workdir = tmp_path / "prometheus"
    async with release_prometheus(release, workdir, transform=RULES_CLOCK) as prom:
        hold = holds(workdir / "rules.yaml")
        await wait_for_targets(prom)
        async with release.client() as http:
            account = await sign_up(http)
            warm_up = await create_orders(http, account.token, 3)
        await eventually(lambda: processed(release, warm_up), timeout=60, interval=1)
        # A healthy, idle release alerts on none of this (also: nothing left over to confuse
        # the pending/firing history below).
        for alert in ALERTS:
            await wait_for_alert(prom, alert, None, timeout=0)
        note("healthy: targets up, 3 orders processed, none of the alerts active")

        async def key_writes_denied() -> None:
            role = f"{release.name}-operator"
            status = (await asyncio.to_thread(order_system, release))["status"]
            last_rotation = epoch(status["lastRotation"])
            interval = math.ceil(time.time() + ROTATION_LEAD_SECONDS - last_rotation)
            await kubectl(
                release, "patch", "ordersystem", release.name, "--type=merge",
                "-p", json.dumps({"spec": {"jwt": {"rotationInterval": f"{interval}s"}}}),
            )  # fmt: skip
            due = last_rotation + interval + PROPAGATION_DELAY_SECONDS

            async def operator_took_it() -> bool:
                current = (await asyncio.to_thread(order_system, release))["status"]
                return abs(epoch(current.get("nextRotation", "1970-01-01T00:00:00Z")) - due) < 2

            await eventually(operator_took_it, timeout=15, interval=0.5, message="nextRotation")
            index = secret_write_rule(
                await asyncio.to_thread(
                    release.kube.json, "-n", release.namespace, "get", "role", role
                )
            )
            induce(*KEY_ALERTS)
            await set_rule_verbs(release, role, index, ["get"])
            until_due = last_rotation + interval - time.time()
            assert until_due > 0, "denied only after the rotation fell due"
            note(f"operator denied patching its key Secret; rotation due in {until_due:.0f} s")

            errors = cycles["OmsOperatorReconcileErrors"]
            await fires(prom, errors, timeout=120)
            assert {labels["stage"] for labels in errors.labels} == {"keys"}, errors.labels
            overdue = cycles["OmsJwtKeyRotationOverdue"]
            seconds_until = due + ROTATION_OVERDUE_SECONDS / FACTOR - time.time()
            await fires(prom, overdue, timeout=seconds_until + 60)

            await set_rule_verbs(release, role, index, ["get", "patch"])
            undo(*KEY_ALERTS)
            note("Role restored")
            await all_of(resolves(prom, overdue, 60), resolves(prom, errors, 90))

            async def staged() -> bool:
                current = (await asyncio.to_thread(order_system, release))["status"]
                return len(current.get("publishedKeyIds", [])) >= 2

            # The rotation it had been denied went through: the next key is published.
            await eventually(staged, timeout=30, interval=1, message="the next key staged")

        async def broker_outage_then_slow_workers() -> Orders:
            induce(*BROKER_ALERTS)
            await kubectl(release, "scale", "deployment", "rabbitmq", "--replicas=0")
            await kubectl(
                release, "wait", "--for=delete", "pod",
                "-l", "app.kubernetes.io/name=rabbitmq", "--timeout=90s",
            )  # fmt: skip
            note("RabbitMQ scaled to 0, its pod gone")
            async with paced_orders(release, account, ORDERS_PER_SECOND) as orders:
                await all_of(
                    fires(prom, cycles["OmsConsumerDisconnected"], timeout=90),
                    fires(prom, cycles["OmsWorkerQueueUnreadable"], timeout=90),
                    fires(prom, cycles["OmsOutboxBacklogStale"], OUTBOX_STALE_SECONDS + 90),
                )
                # Each consumer replica alerts for itself (by now all of them fire).
                firing = await wait_for_alert(prom, "OmsConsumerDisconnected", "firing", 0)
                consumers = {a["labels"]["pod"] for a in firing if a["state"] == "firing"}
                pods = await asyncio.to_thread(release.pods, "consumer")
                assert consumers == {pod["metadata"]["name"] for pod in pods}, firing

                await kubectl(release, "scale", "deployment", "rabbitmq", "--replicas=1")
                undo(*BROKER_ALERTS)
                # The backlog of the outage, and the orders still coming, now meet one slow
                # worker that the operator may not scale past.
                induce(*CAPACITY_ALERTS)
                note(f"RabbitMQ scaled to 1; {len(orders.created)} orders created so far")
                await kubectl(release, "rollout", "status", "deployment/rabbitmq", "--timeout=120s")
                note("RabbitMQ ready")
                await all_of(
                    *(resolves(prom, cycles[alert], timeout=120) for alert in BROKER_ALERTS),
                    *(fires(prom, cycles[alert], timeout=180) for alert in CAPACITY_ALERTS),
                )
                queues = {labels["queue"] for labels in cycles["OmsQueueDepthGrowing"].labels}
                assert queues == {"order_tasks"}, queues

                # The slow dependency recovers (a new worker pod without the delay).
                await kubectl(
                    release,
                    "set",
                    "env",
                    "deployment/oms-worker",
                    "ORDER_PROCESSING_DELAY_SECONDS-",
                )
                undo(*CAPACITY_ALERTS)
                note(f"worker delay removed; {len(orders.created)} orders created so far")
                await all_of(
                    *(resolves(prom, cycles[alert], timeout=120) for alert in CAPACITY_ALERTS)
                )
            note(f"load stopped after {len(orders.created)} orders")
            return orders

        async with asyncio.TaskGroup() as group:
            group.create_task(key_writes_denied())
            outage = group.create_task(broker_outage_then_slow_workers())
        orders = outage.result()

    # Nothing lost, nothing twice, nothing parked: the API took every order while the broker was
    # gone, and every one of them was processed once it was back.
    assert orders.failures == [], orders.failures[:10]
    created = [*warm_up, *orders.created]
    await eventually(
        lambda: processed(release, created), timeout=120, interval=1, message="all processed"
    )
    await assert_processed_exactly_once(release.settings(), created)
    assert await queue_depth(release.amqp_url(), "new_order.dlq") == 0
    note(f"all {len(created)} orders processed exactly once")

    print("\nalerts on live data (seconds from the start; rules' clock x30):")
    for alert in ALERTS:
        print("  " + cycles[alert].row(origin))
    print("  " + "\n  ".join(notes))
