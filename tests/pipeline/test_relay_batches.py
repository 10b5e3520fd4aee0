"""The relay writes a whole batch to the broker and then waits once for its confirms: no
message waits for the one before it to be confirmed, nor for its frame to reach the socket."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import aiormq
import pytest

from oms.broker.messages import OutboxRecord
from oms.outbox.destinations import DELIVERED, RabbitPublisher

BATCH = 40


def records(count: int) -> list[OutboxRecord]:
    now = datetime.now(UTC)
    return [
        OutboxRecord(
            id=uuid.uuid4(),
            event_type="order.created",
            payload={"event": "order.created", "version": 1, "order_id": str(uuid.uuid4())},
            created_at=now,
            headers={},
        )
        for _ in range(count)
    ]


async def test_a_batch_is_written_whole_then_confirmed_once(
    rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    timeline: list[str] = []
    waits: list[bool] = []
    publish = aiormq.Channel.basic_publish
    confirm = aiormq.Channel._confirm_delivery

    async def recorded_publish(channel: aiormq.Channel, *args: Any, **kwargs: Any) -> Any:
        timeline.append("publish")
        waits.append(bool(kwargs.get("wait", True)))
        return await publish(channel, *args, **kwargs)

    def recorded_confirm(channel: aiormq.Channel, *args: Any, **kwargs: Any) -> None:
        timeline.append("confirm")
        confirm(channel, *args, **kwargs)

    publisher = RabbitPublisher(rabbitmq_url, 5.0)
    await publisher.connect()
    try:
        monkeypatch.setattr(aiormq.Channel, "basic_publish", recorded_publish)
        monkeypatch.setattr(aiormq.Channel, "_confirm_delivery", recorded_confirm)
        answers = await publisher.deliver(records(BATCH))
    finally:
        await publisher.close()
    assert answers == [DELIVERED] * BATCH
    # Every message of the batch was written before the first confirm was even looked at.
    assert timeline[:BATCH] == ["publish"] * BATCH
    assert timeline.count("confirm") >= 1
    assert waits == [False] * BATCH  # no per-message wait for the socket
