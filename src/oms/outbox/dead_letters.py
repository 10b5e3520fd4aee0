"""Inspect and replay dead letters (`oms dlq list|replay`).

With RabbitMQ (RABBITMQ_URL set) that is the dead-letter queue `new_order.dlq`; in the embedded
mode (no RABBITMQ_URL, or `--outbox`) it is the parked outbox rows (`dead_lettered_at` set by the
relay after the last allowed processing attempt, see `oms.outbox.relay`). Replaying a parked
row clears the parking, resets its attempts and makes it due now: the running relay (inside the
API, or `oms-relay`) processes it again within OUTBOX_POLL_SECONDS.

RabbitMQ: `list` peeks: messages are fetched unacked and returned to the queue when the channel
closes. `replay` republishes each message to the `orders` exchange (publisher-confirmed) and
only then removes it from the DLQ; processing is idempotent, so replaying an already-handled
event is harmless. Replaying a message that is truly unparseable sends it straight back to the DLQ.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oms.broker.contracts import DEAD_LETTER_REASON_HEADER, ROUTING_KEY
from oms.broker.messages import persistent_copy
from oms.broker.topology import declare_topology
from oms.db.models import OutboxEvent
from oms.db.session import create_engine, create_session_factory, session_scope
from oms.settings import DatabaseSettings, DeadLetterSettings

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


# --- embedded mode: parked outbox rows -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ParkedEvent:
    event_id: uuid.UUID
    order_id: str
    attempts: int
    last_error: str
    parked_at: datetime


def _parked_rows(limit: int) -> Any:
    return (
        select(OutboxEvent)
        .where(OutboxEvent.dead_lettered_at.is_not(None))
        .order_by(OutboxEvent.dead_lettered_at, OutboxEvent.id)
        .limit(limit)
    )


async def list_parked(
    session_factory: async_sessionmaker[AsyncSession], limit: int
) -> list[ParkedEvent]:
    """Parked outbox events, longest parked first."""
    async with session_factory() as session:
        rows = (await session.execute(_parked_rows(limit))).scalars()
        return [
            ParkedEvent(
                event_id=row.id,
                order_id=str(row.aggregate_id),
                attempts=row.attempts,
                last_error=row.last_error or "",
                parked_at=row.dead_lettered_at,
            )
            for row in rows
            if row.dead_lettered_at is not None
        ]


async def replay_parked(session_factory: async_sessionmaker[AsyncSession], limit: int) -> int:
    """Un-park up to `limit` events (longest parked first): attempts reset, due now. The last
    error stays on the row until it is processed or fails again."""
    async with session_scope(session_factory) as session:
        ids = list(
            (
                await session.execute(
                    _parked_rows(limit).with_only_columns(OutboxEvent.id).with_for_update()
                )
            ).scalars()
        )
        if not ids:
            return 0
        result = await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id.in_(ids), OutboxEvent.dead_lettered_at.is_not(None))
            .values(dead_lettered_at=None, attempts=0, next_attempt_at=None)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


async def _run_outbox(settings: DatabaseSettings, action: str, limit: int) -> int:
    engine = create_engine(settings)
    try:
        factory = create_session_factory(engine)
        if action == "list":
            parked = await list_parked(factory, limit)
            for event in parked:
                print(
                    f"{event.event_id}\t{event.order_id}\t{event.attempts}\t"
                    f"{event.parked_at.isoformat()}\t{_one_line(event.last_error)}"
                )
            if not parked:
                print("no parked orders (outbox)", file=sys.stderr)
            return 0
        print(f"replayed {await replay_parked(factory, limit)} parked outbox events")
        return 0
    finally:
        await engine.dispose()


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="oms dlq", description=__doc__)
    parser.add_argument("action", choices=["list", "replay"])
    parser.add_argument("--limit", type=int, default=100, help="at most this many messages")
    parser.add_argument(
        "--outbox",
        action="store_true",
        help="parked outbox events even when RABBITMQ_URL is set (the default without it)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """List: `message id, reason, body` (RabbitMQ) or `event id, order id, attempts, parked at,
    last error` (parked outbox events), tab-separated, one per line."""
    settings = DeadLetterSettings()
    url = settings.RABBITMQ_URL
    if not url or args.outbox:
        return asyncio.run(_run_outbox(settings, args.action, args.limit))
    if args.action == "list":
        letters = asyncio.run(list_dead_letters(url, args.limit))
        for letter in letters:
            print(f"{letter.message_id}\t{letter.reason}\t{letter.body_preview}")
        if not letters:
            print("no parked orders (new_order.dlq is empty)", file=sys.stderr)
        return 0
    print(f"replayed {asyncio.run(replay_dead_letters(url, args.limit))} messages")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
