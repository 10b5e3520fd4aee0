"""The relay as a process of its own (`oms-relay`, or `oms relay`): the service entry point the
API's RUN_OUTBOX_RELAY=false deployments run beside it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.conftest import SettingsFactory
from tests.harness import ServiceProcess, settings_env
from tests.pipeline.support import VENV_BIN, create_orders_directly, eventually, order_rows


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("command", [["oms-relay"], ["oms", "relay"]], ids=["script", "verb"])
async def test_the_relay_process_delivers_the_outbox_and_stops_on_sigterm(
    make_settings: SettingsFactory, tmp_path: Path, command: list[str]
) -> None:
    # No RabbitMQ: the relay processes in-process, so "delivered" shows as processed orders.
    settings = await make_settings(OUTBOX_POLL_SECONDS=0.2)
    order_ids = await create_orders_directly(settings, 3)
    relay = ServiceProcess(
        "relay",
        [str(VENV_BIN / command[0]), *command[1:]],
        settings_env(settings, LOG_LEVEL="INFO"),
        tmp_path,
        ready_url="",  # no port: what it did shows in the database
    ).start()
    try:

        async def all_processed() -> bool:
            rows = await order_rows(settings)
            return all(rows[order_id].processed for order_id in order_ids)

        await eventually(all_processed, 30, message="the relay to process every order")
        relay.kill(signal.SIGTERM)
        assert await relay.wait_exit(20) == 0, relay.logs()[-4000:]
    finally:
        await relay.stop()
