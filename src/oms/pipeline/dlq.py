"""Inspect and replay the dead-letter queue `new_order.dlq` (`oms dlq list|replay`).

`list` peeks: messages are fetched unacked and returned to the queue when the channel closes.
`replay` republishes each message to the `orders` exchange (publisher-confirmed) and only then
removes it from the DLQ; processing is idempotent, so replaying an already-handled event is
harmless. Replaying a message that is truly unparseable sends it straight back to the DLQ.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from oms.messaging.contracts import ROUTING_KEY
from oms.pipeline.messages import persistent_copy
from oms.pipeline.topology import DEAD_LETTER_REASON_HEADER, declare_topology
from oms.settings import get_settings

# Broker bookkeeping a replayed message must not carry back into new_order.
_DEATH_HEADERS = (
    "x-death",
    "x-first-death-reason",
    "x-first-death-queue",
    "x-first-death-exchange",
    "x-last-death-reason",
    "x-last-death-queue",
    "x-last-death-exchange",
    "x-delivery-count",
    DEAD_LETTER_REASON_HEADER,
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str | None
    reason: str
    body_preview: str


def dead_letter_reason(headers: dict[str, Any]) -> str:
    if DEAD_LETTER_REASON_HEADER in headers:
        return str(headers[DEAD_LETTER_REASON_HEADER])
    if "x-first-death-reason" in headers:
        return f"broker: {headers['x-first-death-reason']}"
    return "unknown"


def describe(message: AbstractIncomingMessage) -> DeadLetter:
    return DeadLetter(
        message.message_id,
        dead_letter_reason(dict(message.headers or {})),
        message.body[:120].decode(errors="replace"),
    )


async def list_dead_letters(url: str, limit: int) -> list[DeadLetter]:
    connection = await aio_pika.connect(url)
    async with connection:
        topology = await declare_topology(await connection.channel())
        found: list[DeadLetter] = []
        while len(found) < limit:
            message = await topology.dead_letter_queue.get(fail=False, timeout=10)
            if message is None:
                break
            found.append(describe(message))
        return found  # closing the channel hands every peeked message back to the queue


async def replay_dead_letters(url: str, limit: int) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        topology = await declare_topology(await connection.channel(publisher_confirms=True))
        replayed = 0
        while replayed < limit:
            message = await topology.dead_letter_queue.get(fail=False, timeout=10)
            if message is None:
                break
            headers = {
                key: value
                for key, value in (message.headers or {}).items()
                if key not in _DEATH_HEADERS
            }
            await topology.exchange.publish(
                persistent_copy(message, headers),
                ROUTING_KEY,
            )
            await message.ack()
            replayed += 1
        return replayed


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="oms dlq", description=__doc__)
    parser.add_argument("action", choices=["list", "replay"])
    parser.add_argument("--limit", type=int, default=100, help="at most this many messages")
    return parser


def run(args: argparse.Namespace) -> int:
    url = get_settings().RABBITMQ_URL
    if not url:
        print("RABBITMQ_URL is not set: the embedded mode has no dead-letter queue")
        return 2
    if args.action == "list":
        for letter in asyncio.run(list_dead_letters(url, args.limit)):
            print(f"{letter.message_id}\t{letter.reason}\t{letter.body_preview}")
        return 0
    print(f"replayed {asyncio.run(replay_dead_letters(url, args.limit))} messages")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
