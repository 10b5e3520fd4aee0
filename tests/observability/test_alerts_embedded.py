"""OmsOutboxEventsParked fires for real, where parking exists: the embedded mode of `make run`
(SQLite, no RabbitMQ, the relay processing orders in the API process). With RabbitMQ, the mode
the Helm chart always runs, the relay never parks anything (a failed publish is retried; the
worker dead-letters into `new_order.dlq` instead), so this alert cannot fire on a release.

`oms migrate` and `oms-api` run as `make run` runs them, with a real Prometheus scraping the API
and evaluating the rules files on a compressed clock (tests/e2e/node/monitoring.py:
`compress_time`; thresholds are the files' own). The failure: an outbox event naming an order
the database does not have, as a partial restore or a hand-written row leaves behind. The relay
tries it `ORDER_TASK_MAX_RETRIES` more times and parks it; the alert goes pending, then firing.
The runbook's fix follows: the order is restored, `oms dlq replay` releases the event, the relay
processes it and the alert resolves.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from oms.broker.contracts import OrderCreatedEvent
from oms.db.models import Order, OrderStatus, OutboxEvent
from oms.db.session import create_engine, create_session_factory
from oms.settings import Settings
from tests.conftest import register
from tests.e2e.node.monitoring import alert_first_seen, compress_time, wait_for_alert
from tests.harness import ServiceProcess, free_port, settings_environment
from tests.observability.prometheus_server import RULE_FILES, PrometheusServer
from tests.pipeline.support import VENV_BIN, create_orders, eventually

pytestmark = pytest.mark.e2e

INDUCED = ("OmsOutboxEventsParked",)
ALERT = "OmsOutboxEventsParked"
SCRAPE_SECONDS = 1
# The rules' clock 30 times faster: `for: 5m` is 10 s; windows and `for:` never shorter than
# three evaluations.
FACTOR = 30
FLOOR_SECONDS = 3 * SCRAPE_SECONDS
# The relay refreshes its parked-events gauge every 15 s (and at once after parking).
PARKED_GAUGE_SECONDS = 15


def embedded_settings(data_dir: Path, port: int) -> dict[str, Any]:
    """What `make run` gives the API with no configuration (SQLite under DATA_DIR, in-process
    cache and pipeline), with retries 0.5 s apart instead of 60 s."""
    return {
        "DATA_DIR": data_dir,
        "HOST": "127.0.0.1",
        "PORT": port,
        "RATE_LIMIT_ENABLED": False,
        "ORDER_TASK_RETRY_DELAY_SECONDS": 0.5,
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture
async def embedded_api(tmp_path: Path) -> AsyncIterator[tuple[ServiceProcess, Settings]]:
    port = free_port()
    values = embedded_settings(tmp_path / "data", port)
    env = settings_environment(values)
    migrated = subprocess.run(
        [str(VENV_BIN / "oms"), "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr
    api = ServiceProcess(
        "api", [str(VENV_BIN / "oms-api")], env, tmp_path, f"http://127.0.0.1:{port}/health/ready"
    )
    api.start()
    try:
        await api.wait_ready()
        settings = Settings(_env_file=None, **values)
        assert settings.database_backend == "sqlite"
        assert settings.RABBITMQ_URL is None
        yield api, settings
    finally:
        await api.stop()


def compressed_rules(workdir: Path) -> Path:
    groups = [group for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]]
    compressed = compress_time(FACTOR, floor_seconds=FLOOR_SECONDS)({"groups": groups})
    path = workdir / "rules.yaml"
    path.write_text(yaml.safe_dump(compressed, sort_keys=False))
    return path


async def write_orphan_event(settings: Settings) -> uuid.UUID:
    """An unsent `order.created` event whose order is not in the database; its order id."""
    order_id = uuid.uuid4()
    event = OrderCreatedEvent(
        event_id=uuid.uuid4(), order_id=order_id, occurred_at=datetime.now(UTC)
    )
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            session.add(
                OutboxEvent(
                    id=event.event_id,
                    event_type=event.event,
                    aggregate_id=order_id,
                    payload=event.model_dump(mode="json"),
                    headers={},
                    attempts=0,
                )
            )
    finally:
        await engine.dispose()
    return order_id


async def restore_order(settings: Settings, order_id: uuid.UUID, user_id: int) -> None:
    """The missing order, back in the database (as a completed restore would bring it)."""
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            session.add(
                Order(
                    id=order_id,
                    user_id=user_id,
                    items=[{"name": "book", "quantity": 1}],
                    total_price=Decimal("9.90"),
                    status=OrderStatus.PENDING,
                )
            )
    finally:
        await engine.dispose()


async def processed_at(settings: Settings, order_id: uuid.UUID) -> datetime | None:
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            order = await session.get(Order, order_id)
            assert order is not None
            return order.processed_at
    finally:
        await engine.dispose()


async def test_a_parked_outbox_event_fires_the_alert_until_replayed(
    embedded_api: tuple[ServiceProcess, Settings], tmp_path: Path
) -> None:
    api, settings = embedded_api
    base_url = api.ready_url.removesuffix("/health/ready")
    (tmp_path / "prometheus").mkdir()
    prometheus = PrometheusServer(
        tmp_path / "prometheus",
        {"oms-api": base_url.removeprefix("http://")},
        rule_files=[compressed_rules(tmp_path / "prometheus")],
        interval=f"{SCRAPE_SECONDS}s",
    )
    async with prometheus.running():
        await parked_until_replayed(prometheus, api, settings, base_url)


def oms_command(api: ServiceProcess, *args: str) -> str:
    """The `oms` CLI with the API's environment and folder, as an operator runs it."""
    done = subprocess.run(
        [str(VENV_BIN / "oms"), *args],
        env=api.env,
        cwd=api.workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


async def parked_until_replayed(
    prometheus: PrometheusServer, api: ServiceProcess, settings: Settings, base_url: str
) -> None:
    async def scraped() -> bool:
        return await prometheus.value("oms_outbox_parked_events") == 0

    await eventually(scraped, 30, interval=0.25, message="the parked-events gauge scraped at 0")
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        account = await register(http, "parked@example.com")
        # The pipeline works: real orders are processed in-process, nothing is parked.
        (order_id,) = await create_orders(http, account.token, 1)
        assert await eventually(
            lambda: processed_at(settings, uuid.UUID(order_id)), 20, message="an order processed"
        )
    started = time.time()

    missing = await write_orphan_event(settings)
    firing = await wait_for_alert(prometheus, ALERT, "firing", timeout=60)
    assert float(firing[0]["value"]) == 1, firing
    seen = await alert_first_seen(prometheus, ALERT, started)
    assert set(seen) == {"pending", "firing"}, seen
    assert started < seen["pending"] < seen["firing"], seen
    log = api.logs()
    assert "parked an outbox event after its last processing attempt" in log
    assert str(missing) in log
    listed = oms_command(api, "dlq", "list")
    assert str(missing) in listed, listed
    assert "OrderMissingError" in listed, listed
    assert "\t4\t" in listed  # the first attempt and ORDER_TASK_MAX_RETRIES (3) retries

    # The runbook's fix: the cause gone (the order restored), the event replayed.
    fixed = time.time()
    await restore_order(settings, missing, account.id)
    replayed = oms_command(api, "dlq", "replay")
    assert "replayed 1 parked outbox events" in replayed, replayed
    await eventually(
        lambda: processed_at(settings, missing), 20, message="the replayed event processed"
    )
    await wait_for_alert(prometheus, ALERT, None, timeout=PARKED_GAUGE_SECONDS + 20)
    print(
        f"\n{ALERT}: pending {seen['pending'] - started:.0f} s, firing"
        f" {seen['firing'] - started:.0f} s after the orphan event was written; inactive"
        f" {time.time() - fixed:.0f} s after the order was restored and the event replayed"
    )
