"""Reading a RabbitMQ queue's depth with a passive declare.

A passive `queue.declare` answers the ready-message and consumer counts of a queue without the
management plugin and without creating anything. The broker closes the channel of a passive
declare that misses, so every read opens its own short-lived channel: a plain aiormq channel on
the connection's transport, not an aio-pika robust channel, which would reopen itself after
every miss (one more open channel per poll).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aio_pika.abc import AbstractConnection
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity

# What a broken or closing connection raises while a read is under way.
READ_ERRORS = (AMQPError, OSError, RuntimeError, TimeoutError)


@dataclass(frozen=True, slots=True)
class QueueState:
    messages: int  # ready, not counting messages consumers hold unacknowledged
    consumers: int


class QueueNotFoundError(LookupError):
    """The queue does not exist on the broker (yet)."""


async def read_queue_state(
    connection: AbstractConnection, name: str, call_timeout: float = 5.0
) -> QueueState:
    """Ready messages and consumers of one queue.

    Raises QueueNotFoundError when the queue does not exist, and one of READ_ERRORS when the
    connection cannot answer (closed, unreachable, too slow)."""
    transport = connection.transport
    if transport is None:
        raise RuntimeError("the connection is not open")
    channel = await asyncio.wait_for(transport.connection.channel(), call_timeout)
    try:
        declared = await asyncio.wait_for(channel.queue_declare(name, passive=True), call_timeout)
        return QueueState(int(declared.message_count or 0), int(declared.consumer_count or 0))
    except ChannelNotFoundEntity as error:
        raise QueueNotFoundError(name) from error
    finally:
        if not channel.is_closed:
            with contextlib.suppress(*READ_ERRORS):
                await asyncio.wait_for(channel.close(), call_timeout)
