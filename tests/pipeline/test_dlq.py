"""`oms dlq`: peek at dead letters without losing them, replay them into new_order."""

from __future__ import annotations

import aio_pika

from oms.broker.contracts import (
    DEAD_LETTER_EXCHANGE_NAME,
    DEAD_LETTER_QUEUE_NAME,
    DEAD_LETTER_REASON_HEADER,
    QUEUE_NAME,
)
from oms.broker.topology import declare_topology
from oms.outbox.dead_letters import list_dead_letters, replay_dead_letters
from tests.pipeline.support import drain_queue, queue_depth


async def test_list_keeps_dead_letters_and_replay_moves_them_back(rabbitmq_url: str) -> None:
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel)
        dlx = await channel.get_exchange(DEAD_LETTER_EXCHANGE_NAME)
        for number in range(2):
            await dlx.publish(
                aio_pika.Message(
                    b"{broken",
                    message_id=f"m{number}",
                    headers={DEAD_LETTER_REASON_HEADER: "not json", "traceparent": "t"},
                ),
                DEAD_LETTER_QUEUE_NAME,
            )

    listed = await list_dead_letters(rabbitmq_url, limit=10)
    assert sorted(letter.message_id or "" for letter in listed) == ["m0", "m1"]
    assert {letter.reason for letter in listed} == {"not json"}
    assert await queue_depth(rabbitmq_url, DEAD_LETTER_QUEUE_NAME) == 2  # peeking kept them

    assert await replay_dead_letters(rabbitmq_url, limit=1) == 1
    assert await queue_depth(rabbitmq_url, DEAD_LETTER_QUEUE_NAME) == 1
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        [replayed] = await drain_queue(await connection.channel(), QUEUE_NAME)
    headers = replayed.headers or {}
    assert DEAD_LETTER_REASON_HEADER not in headers
    assert headers["traceparent"] == "t"
    assert replayed.body == b"{broken"
