"""Pipeline metrics recorded in-process: the relay's counters and latency, the end-to-end lag
(embedded mode: no broker, the relay processes orders itself), dead-letter reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from oms.broker.messages import UnparseableMessageError, parse_order_event
from oms.observability.pipeline_metrics import seconds_between
from tests.conftest import SettingsFactory, api_client
from tests.pipeline.support import create_orders, eventually, register_and_login


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_embedded_relay_counts_publishes_and_the_end_to_end_lag(
    make_settings: SettingsFactory,
) -> None:
    settings = await make_settings(RUN_OUTBOX_RELAY=True, RATE_LIMIT_ENABLED=False)
    assert settings.RABBITMQ_URL is None
    names = (
        "oms_outbox_events_published_total",
        "oms_outbox_publish_duration_seconds_count",
        "oms_order_processing_lag_seconds_count",
        "oms_order_processing_lag_seconds_sum",
    )
    before = {name: sample(name) for name in names}
    started = datetime.now(UTC)
    async with api_client(settings) as (_app, http):
        token = await register_and_login(http, "lag@example.com")
        await create_orders(http, token, 5)

        async def lag_recorded() -> bool:
            count = sample("oms_order_processing_lag_seconds_count")
            return count - before["oms_order_processing_lag_seconds_count"] == 5

        await eventually(lag_recorded, 20, message="five processed orders in the lag histogram")
    elapsed = (datetime.now(UTC) - started).total_seconds()
    delta = {name: sample(name) - before[name] for name in names}
    assert delta["oms_outbox_events_published_total"] == 5
    assert 1 <= delta["oms_outbox_publish_duration_seconds_count"] <= 5  # one per batch
    assert 0 < delta["oms_order_processing_lag_seconds_sum"] <= 5 * elapsed


def test_dead_letter_reasons_are_fixed_words() -> None:
    with pytest.raises(UnparseableMessageError) as wrong_type:
        parse_order_event(b"{}", "text/plain")
    assert wrong_type.value.reason == "content_type"
    with pytest.raises(UnparseableMessageError) as not_an_event:
        parse_order_event(b'{"event": "order.created"', "application/json")
    assert not_an_event.value.reason == "invalid_event"


def test_lag_reads_naive_datetimes_as_utc_and_never_goes_negative() -> None:
    aware = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    naive = datetime(2025, 1, 1, 12, 0, 30)
    assert seconds_between(aware, naive) == 30
    assert seconds_between(naive, aware) == 0  # clock skew between hosts: no negative lag
    assert seconds_between(aware, aware + timedelta(milliseconds=250)) == 0.25
