"""Queue depth from RabbitMQ.

Ready messages come from an AMQP passive declare (`oms.broker.queue_depth.read_queue_state`, shared
with the consumer: it answers the ready-message count without creating anything). Messages a
consumer has prefetched but not acknowledged are *not* in that count: with Celery's prefetch a
busy worker can hold many tasks while the queue looks empty, and a depth-only scaler then removes
the workers doing the job. When a management API URL is configured the operator adds
`messages_unacknowledged` from `GET /api/queues/{vhost}/{queue}`, so the depth is the work that
exists, not just the work waiting.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import aio_pika
import aiohttp
import aiormq
import yarl
from aio_pika.abc import AbstractConnection

from oms.broker.queue_depth import READ_ERRORS, QueueNotFoundError, read_queue_state


class QueueUnreadableError(Exception):
    """The depth of a watched queue is unknown; `reason` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class QueueDepth:
    queue: str
    ready: int
    unacked: int | None = None  # None: not counted (no management API, or it failed)

    @property
    def total(self) -> int:
        return self.ready + (self.unacked or 0)


@dataclass(frozen=True, slots=True)
class DepthReading:
    queues: tuple[QueueDepth, ...]
    management_error: str | None = None

    @property
    def total(self) -> int:
        return sum(queue.total for queue in self.queues)


def vhost_of(amqp_url: str) -> str:
    """The virtual host an AMQP URL addresses ("/" when the path is empty)."""
    path = yarl.URL(amqp_url).raw_path
    return unquote(path[1:]) if len(path) > 1 else "/"


def management_queue_url(management_url: str, vhost: str, queue: str) -> yarl.URL:
    base = yarl.URL(management_url).with_user(None).with_password(None)
    path = f"api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"
    return yarl.URL(str(base).rstrip("/") + "/" + path, encoded=True)


def unacked_from_management(document: dict[str, Any]) -> int:
    value = document.get("messages_unacknowledged", 0)
    if not isinstance(value, int) or value < 0:
        raise ValueError("messages_unacknowledged missing from the management API answer")
    return value


class RabbitMQDepthReader:
    """Reads queue depths, keeping its AMQP connection between polls (one reader per
    OrderSystem, used by one task at a time)."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._timeout = timeout
        self._connections: dict[str, AbstractConnection] = {}
        self._http: aiohttp.ClientSession | None = None

    async def read(
        self, amqp_url: str, queues: tuple[str, ...], management_url: str | None = None
    ) -> DepthReading:
        ready = await self._ready_counts(amqp_url, queues)
        if management_url is None:
            return DepthReading(tuple(QueueDepth(name, count) for name, count in ready.items()))
        try:
            unacked = await self._unacked_counts(management_url, vhost_of(amqp_url), queues)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            # Ready messages still scale the workers; the status says the count is partial.
            message = f"management API: {type(error).__name__}: {error}"
            return DepthReading(
                tuple(QueueDepth(name, count) for name, count in ready.items()), message
            )
        return DepthReading(
            tuple(QueueDepth(name, count, unacked[name]) for name, count in ready.items())
        )

    async def _connection(self, amqp_url: str) -> AbstractConnection:
        connection = self._connections.get(amqp_url)
        if connection is not None and not connection.is_closed:
            return connection
        try:
            connection = await aio_pika.connect(amqp_url, timeout=self._timeout)
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as error:
            raise QueueUnreadableError(
                "RabbitMQUnreachable",
                f"cannot connect to RabbitMQ: {type(error).__name__}: {error}",
            ) from error
        self._connections[amqp_url] = connection
        return connection

    async def _ready_counts(self, amqp_url: str, queues: tuple[str, ...]) -> dict[str, int]:
        connection = await self._connection(amqp_url)
        counts: dict[str, int] = {}
        try:
            for name in queues:
                state = await read_queue_state(connection, name, self._timeout)
                counts[name] = state.messages
        except QueueNotFoundError as error:
            raise QueueUnreadableError(
                "QueueNotFound", f"queue {error.args[0]!r} does not exist on RabbitMQ"
            ) from error
        except READ_ERRORS as error:
            await self._drop(amqp_url)
            raise QueueUnreadableError(
                "RabbitMQUnreachable",
                f"reading queue depth failed: {type(error).__name__}: {error}",
            ) from error
        return counts

    async def _unacked_counts(
        self, management_url: str, vhost: str, queues: tuple[str, ...]
    ) -> dict[str, int]:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        parsed = yarl.URL(management_url)
        auth = aiohttp.BasicAuth(parsed.user or "", parsed.password or "") if parsed.user else None
        counts: dict[str, int] = {}
        for name in queues:
            url = management_queue_url(management_url, vhost, name)
            async with self._http.get(url, auth=auth) as response:
                response.raise_for_status()
                counts[name] = unacked_from_management(await response.json())
        return counts

    async def _drop(self, amqp_url: str) -> None:
        connection = self._connections.pop(amqp_url, None)
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def close(self) -> None:
        for url in list(self._connections):
            await self._drop(url)
        if self._http is not None:
            await self._http.close()
