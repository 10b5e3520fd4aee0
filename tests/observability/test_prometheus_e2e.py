"""A real Prometheus scrapes the three services while orders flow, and loads our rules.

Also the proof that counting across processes adds up: the worker runs two prefork children and
the API two uvicorn workers, each counting in its own prometheus_client multiprocess file; the
scrape endpoints must report the totals, and the per-process files must match what each
process did (the worker's log lines name the child that processed each order).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import pytest
from observability.check_dashboards import expressions, prometheus_expression

from oms.broker.contracts import EXCHANGE_NAME, ROUTING_KEY
from tests.e2e.conftest import FIGURES, Stack, StackFactory
from tests.e2e.helpers import metric_value, processed_over_http
from tests.harness import ServiceProcess
from tests.observability.multiprocess import per_process_value, process_ids
from tests.observability.prometheus_server import ROOT, RULE_FILES, PrometheusServer
from tests.pipeline.support import create_orders, eventually, register_and_login

pytestmark = pytest.mark.e2e

ORDERS = 24
DASHBOARDS = sorted((ROOT / "observability" / "dashboards").glob("*.json"))
OUR_METRIC = re.compile(r"\boms_(?!operator_)[a-z_]+\b")
# Labelled counters have no series before their first event; the test causes no 429.
NOT_EXERCISED = {"oms_rate_limited_requests_total"}
JOBS = ("oms-api", "oms-consumer", "oms-worker")
MUST_STAY_QUIET = {
    "OmsApiHighErrorRate",
    "OmsApiErrorBudgetBurnFast",
    "OmsApiErrorBudgetBurnSlow",
    "OmsOutboxBacklogStale",
    "OmsWorkerTasksFailing",
    "OmsConsumerDisconnected",
    "OmsServiceDown",
    "OmsQueueDepthGrowing",
}
RULE_GROUPS = {"oms-sli-http", "oms-sli-pipeline", "oms-alerts", "oms-operator"}


def metrics_address(service: ServiceProcess) -> str:
    return str(urlsplit(service.ready_url).netloc)


def metrics_url(service: ServiceProcess) -> str:
    return service.ready_url.replace("/health/ready", "/metrics")


def metric_names_we_use() -> set[str]:
    texts = [path.read_text() for path in [*DASHBOARDS, *RULE_FILES]]
    return {name for text in texts for name in OUR_METRIC.findall(text)}


def processed_by_pid(worker_log: str) -> Counter[int]:
    """Orders each worker process logged as processed (JSON lines)."""
    counts: Counter[int] = Counter()
    for line in worker_log.splitlines():
        if line.startswith("{") and '"order processed"' in line:
            entry = json.loads(line)
            if entry["outcome"] == "processed":
                counts[int(entry["pid"])] += 1
    return counts


async def test_prometheus_scrapes_every_service_and_evaluates_our_rules(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    # A little work per task keeps both prefork children busy.
    stack = await make_stack(worker_env={"ORDER_PROCESSING_DELAY_SECONDS": 0.1})
    worker_dir, api_dir = tmp_path / "worker-metrics", tmp_path / "api-metrics"
    stack.worker.env["PROMETHEUS_MULTIPROC_DIR"] = str(worker_dir)
    stack.api.env.update(API_WORKERS="2", PROMETHEUS_MULTIPROC_DIR=str(api_dir))
    await stack.start()
    (tmp_path / "prometheus").mkdir()
    prometheus = PrometheusServer(
        tmp_path / "prometheus",
        dict(
            zip(
                JOBS,
                (
                    f"127.0.0.1:{stack.api_port}",
                    *map(metrics_address, [stack.consumer, stack.worker]),
                ),
                strict=True,
            )
        ),
    )
    async with prometheus.running():
        await drive_and_check(stack, prometheus, worker_dir, api_dir)


async def drive_and_check(
    stack: Stack, prometheus: PrometheusServer, worker_dir: Path, api_dir: Path
) -> None:
    async def targets_up() -> bool:
        targets = (await prometheus.api("targets"))["activeTargets"]
        health = {target["labels"]["job"]: target["health"] for target in targets}
        return health == dict.fromkeys(JOBS, "up")

    # Prometheus hands discovered targets to its scrapers in 5-second rounds; orders created
    # before the first scrape would not show in rate().
    await eventually(targets_up, 20, interval=0.25, message="every target scraped")
    url = stack.settings.RABBITMQ_URL
    assert url
    # One unusable message: the consumer moves it to the DLQ, which the alert must notice.
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE_NAME)
        await exchange.publish(
            aio_pika.Message(b"not an event", content_type="application/json"), ROUTING_KEY
        )
    async with stack.client() as http:
        token = await register_and_login(http, "scraped@example.com")
        # Two bursts with a scrape in between: every counter shows an increase to rate().
        order_ids = await create_orders(http, token, ORDERS // 2)

        async def first_burst_scraped() -> bool:
            return await prometheus.value("sum(oms_orders_created_total)") == ORDERS // 2

        await eventually(first_burst_scraped, 10, interval=0.1, message="the first burst")
        order_ids += await create_orders(http, token, ORDERS - ORDERS // 2)
        await processed_over_http(http, token, order_ids, timeout=60)

    # --- counting across processes ---------------------------------------------------------
    worker_metrics = metrics_url(stack.worker)

    async def worker_counted_all() -> bool:
        sample = 'oms_worker_tasks_total{outcome="processed"}'
        return await metric_value(worker_metrics, sample) == ORDERS

    await eventually(worker_counted_all, 10, message=f"worker /metrics to count {ORDERS}")
    assert await metric_value(worker_metrics, "oms_worker_task_duration_seconds_count") == ORDERS
    assert await metric_value(worker_metrics, "oms_order_processing_lag_seconds_count") == ORDERS
    in_files = per_process_value(worker_dir, "oms_worker_tasks_total", {"outcome": "processed"})
    counted = {pid: value for pid, value in in_files.items() if value}
    assert len(counted) >= 2, f"tasks were not spread over both children: {in_files}"
    assert sum(counted.values()) == ORDERS
    assert stack.worker.process is not None
    assert stack.worker.process.pid not in counted
    # Each child's own file says what its log lines say.
    assert counted == {pid: float(n) for pid, n in processed_by_pid(stack.worker.logs()).items()}

    api_metrics = f"{stack.base_url}/metrics"
    assert len(process_ids(api_dir)) >= 2, "the API should run two workers counting in files"
    api_in_files = per_process_value(api_dir, "oms_orders_created_total", {})
    assert sum(api_in_files.values()) == ORDERS, api_in_files
    for _ in range(5):  # whichever uvicorn worker answers, it reports the total
        assert await metric_value(api_metrics, "oms_orders_created_total") == ORDERS

    # --- Prometheus scraped the key series --------------------------------------------------
    async def scraped_all() -> bool:
        value = await prometheus.value('sum(oms_worker_tasks_total{outcome="processed"})')
        return value == ORDERS

    await eventually(scraped_all, 15, interval=0.25, message="Prometheus to scrape the totals")
    for job in JOBS:
        assert await prometheus.value(f'up{{job="{job}"}}') == 1, job
    assert await prometheus.value("sum(oms_orders_created_total)") == ORDERS
    assert await prometheus.value("sum(oms_outbox_events_published_total)") == ORDERS
    assert (await prometheus.value("sum(oms_outbox_publish_duration_seconds_count)") or 0) >= 1
    assert await prometheus.value("sum(oms_consumer_messages_received_total)") == ORDERS + 1
    dispatched = 'sum(oms_consumer_messages_total{outcome="dispatched"})'
    assert await prometheus.value(dispatched) == ORDERS
    assert await prometheus.value("sum(oms_consumer_dispatch_lag_seconds_count)") == ORDERS
    poison = 'oms_consumer_dead_lettered_messages_total{reason="invalid_event"}'
    assert await prometheus.value(poison) == 1
    created = 'sum(oms_http_requests_total{route="/orders/",method="POST",status="201"})'
    assert await prometheus.value(created) == ORDERS

    names = set(await prometheus.api("label/__name__/values"))
    missing = metric_names_we_use() - names - NOT_EXERCISED
    assert not missing, f"dashboards/rules use metrics no service exports: {sorted(missing)}"

    # --- the rules loaded and evaluate ------------------------------------------------------
    async def rules_evaluated() -> list[dict[str, object]] | None:
        groups = (await prometheus.api("rules"))["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if {group["name"] for group in groups} >= RULE_GROUPS and all(
            rule["health"] == "ok" for rule in rules
        ):
            return rules
        return None

    rules = await eventually(rules_evaluated, 15, interval=0.25, message="every rule healthy")
    assert len(rules) >= 40
    for recorded in (
        'oms:http_requests:rate5m{route="/orders/",method="POST"}',
        "oms:orders_created:rate5m",
        "oms:orders_processed:rate5m",
        "oms:outbox_events_published:rate5m",
        "oms:consumer_messages_acked:rate5m",
        "oms:order_processing_lag_seconds:p95_rate5m",
        "oms:consumer_dispatch_lag_seconds:p95_rate5m",
        'oms:http_request_duration_seconds:p99_rate5m{route="/orders/"}',
    ):

        async def positive(query: str = recorded) -> bool:
            value = await prometheus.value(query)
            return value is not None and value > 0

        await eventually(positive, 15, interval=0.25, message=f"{recorded} > 0")
    assert await prometheus.value("oms:sli_http_errors:ratio_rate5m") == 0
    assert await prometheus.value("oms:sli_http_slow:ratio_rate5m") is not None

    # --- alerts: the dead letter is noticed, nothing else is ------------------------------
    async def dead_letter_alert() -> list[dict[str, object]] | None:
        alerts: list[dict[str, object]] = (await prometheus.api("alerts"))["alerts"]
        names = {str(alert["labels"]["alertname"]) for alert in alerts}  # type: ignore[index]
        return alerts if "OmsDeadLetterQueueNotEmpty" in names else None

    # The consumer polls queue depth every 15 s.
    alerts = await eventually(dead_letter_alert, 30, interval=0.5, message="the DLQ alert")
    dead_letter = [
        alert
        for alert in alerts
        if alert["labels"]["alertname"] == "OmsDeadLetterQueueNotEmpty"  # type: ignore[index]
    ]
    assert [alert["labels"] for alert in dead_letter] == [
        {"alertname": "OmsDeadLetterQueueNotEmpty", "queue": "new_order.dlq", "severity": "warning"}
    ]
    assert dead_letter[0]["state"] == "pending"  # `for: 5m`
    # Nothing is broken, so the alerts about breakage stay quiet. (Latency and lag alerts depend
    # on this machine's speed under the test's burst, so they are not asserted here.)
    active = {str(alert["labels"]["alertname"]) for alert in alerts}  # type: ignore[index]
    assert not active & MUST_STAY_QUIET, active
    assert await prometheus.value('oms_queue_messages{queue="new_order.dlq"}') == 1
    for queue in ("new_order", "order_tasks"):
        # The depth is whatever the last poll saw (maybe mid-burst); who consumes is stable.
        assert await prometheus.value(f'oms_queue_messages{{queue="{queue}"}}') is not None, queue
        assert await prometheus.value(f'oms_queue_consumers{{queue="{queue}"}}') == 1, queue

    # --- every dashboard query runs against the real series ---------------------------------
    for path in DASHBOARDS:
        for item in expressions(path.name, json.loads(path.read_text())):
            await prometheus.query(prometheus_expression(item.promql))
    FIGURES.append(
        f"prometheus e2e: {ORDERS} orders over 2 worker children "
        f"({sorted(int(v) for v in counted.values())}) and 2 API workers "
        f"({sorted(int(v) for v in api_in_files.values())}); {len(rules)} rules healthy"
    )
