"""Queue depth for Prometheus: the consumer polls RabbitMQ with passive declares.

A passive declare (`oms.broker.queue_depth`) answers the ready-message and consumer counts of a
queue without the management plugin, so the dashboards and alerts see the backlog of
`new_order`, the size of the dead-letter queue and the Celery task queue wherever the consumer
runs. A queue that does not exist (yet) has its series dropped rather than left stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from aio_pika.abc import AbstractConnection

from oms.broker.celery_app import TASK_QUEUE
from oms.broker.contracts import DEAD_LETTER_QUEUE_NAME, QUEUE_NAME
from oms.broker.queue_depth import READ_ERRORS, QueueNotFoundError, QueueState, read_queue_state
from oms_consumer.consumer_metrics import QUEUE_CONSUMERS, QUEUE_MESSAGES, QUEUE_POLL_TIMESTAMP

logger = logging.getLogger("oms.consumer.queues")

WATCHED_QUEUES = (QUEUE_NAME, DEAD_LETTER_QUEUE_NAME, TASK_QUEUE)
POLL_INTERVAL_SECONDS = 15.0
NOT_CONNECTED_RETRY_SECONDS = 0.5
CALL_TIMEOUT_SECONDS = 5.0


ConnectionSource = Callable[[], AbstractConnection | None]


async def read_queue(connection: AbstractConnection, name: str) -> QueueState | None:
    """Ready messages and consumers of one queue; None when it does not exist or cannot be read."""
    try:
        return await read_queue_state(connection, name, CALL_TIMEOUT_SECONDS)
    except QueueNotFoundError:
        logger.debug("queue not found", extra={"queue": name})
    except READ_ERRORS as error:
        logger.debug("queue not readable", extra={"queue": name, "error": repr(error)})
    return None


def publish_queue_states(states: dict[str, QueueState | None]) -> None:
    for name, state in states.items():
        if state is None:
            with contextlib.suppress(KeyError):
                QUEUE_MESSAGES.remove(name)
            with contextlib.suppress(KeyError):
                QUEUE_CONSUMERS.remove(name)
            continue
        QUEUE_MESSAGES.labels(name).set(state.messages)
        QUEUE_CONSUMERS.labels(name).set(state.consumers)
    if any(state is not None for state in states.values()):
        QUEUE_POLL_TIMESTAMP.set(time.time())


class QueueDepthMonitor:
    def __init__(
        self,
        connection: ConnectionSource,
        queues: Sequence[str] = WATCHED_QUEUES,
        interval_seconds: float = POLL_INTERVAL_SECONDS,
    ) -> None:
        self._connection = connection
        self._queues = tuple(queues)
        self._interval = interval_seconds
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="queue-depth-monitor")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def poll(self) -> bool:
        """Read every watched queue once; False when there is no open connection."""
        connection = self._connection()
        if connection is None or connection.is_closed:
            return False
        states = {name: await read_queue(connection, name) for name in self._queues}
        publish_queue_states(states)
        return True

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                polled = await self.poll()
            except Exception:
                logger.exception("queue depth poll failed")
                polled = True
            delay = self._interval if polled else NOT_CONNECTED_RETRY_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
