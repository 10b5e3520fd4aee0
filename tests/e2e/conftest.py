"""End-to-end fixtures: the API, consumer and worker as real processes on free ports, each test
with its own database, Redis prefix and RabbitMQ vhost (or private node)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from oms.settings import Settings
from tests.conftest import SettingsFactory
from tests.harness import ServiceProcess, free_port
from tests.pipeline.support import api_process, consumer_process, worker_process

# Figures printed at the end of the run (orders, time to drain, faults survived).
FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("pipeline end-to-end figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture
def backend() -> str:
    return "postgres"


@dataclass
class Stack:
    settings: Settings
    api: ServiceProcess
    consumer: ServiceProcess
    worker: ServiceProcess
    api_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def services(self) -> list[ServiceProcess]:
        return [self.api, self.consumer, self.worker]

    async def start(self) -> Stack:
        for service in self.services:
            service.start()
        await asyncio.gather(*(service.wait_ready() for service in self.services))
        return self

    async def stop(self) -> None:
        await asyncio.gather(*(service.stop() for service in self.services))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30)


StackFactory = Callable[..., Awaitable[Stack]]

E2E_SETTINGS: dict[str, Any] = {
    "RUN_OUTBOX_RELAY": True,
    "RATE_LIMIT_CREATE_ORDER": "100000/minute",
    "RATE_LIMIT_GET_ORDER": "100000/minute",
    "RATE_LIMIT_REGISTER": "1000/minute",
    "RATE_LIMIT_TOKEN": "1000/minute",
    "OUTBOX_POLL_SECONDS": 0.5,
    "OUTBOX_MAX_BACKOFF_SECONDS": 1.0,
    "CONSUMER_RECONNECT_SECONDS": 0.5,
    "ORDER_TASK_RETRY_DELAY_SECONDS": 1.0,
    "WORKER_CONCURRENCY": 2,
    "LOG_LEVEL": "INFO",
}


@pytest.fixture
def rabbitmq_vhost_url(rabbitmq_url: str) -> str:
    """This test's own RabbitMQ vhost (created and deleted by the pipeline tests' fixture)."""
    return rabbitmq_url


@pytest.fixture
async def make_stack(
    make_settings: SettingsFactory, tmp_path: Path, rabbitmq_vhost_url: str
) -> AsyncIterator[StackFactory]:
    """Build (not start) a stack on this test's vhost, or on `rabbitmq_url` when given;
    `worker_env` changes only the worker's settings. Stacks stop before the vhost goes."""
    stacks: list[Stack] = []

    async def factory(
        rabbitmq_url: str | None = None, worker_env: dict[str, Any] | None = None
    ) -> Stack:
        settings = await make_settings(
            **{**E2E_SETTINGS, "RABBITMQ_URL": rabbitmq_url or rabbitmq_vhost_url}
        )
        workdir = tmp_path / f"stack{len(stacks)}"
        workdir.mkdir()
        api_port = free_port()
        stack = Stack(
            settings=settings,
            api=api_process(settings, workdir, api_port),
            consumer=consumer_process(settings, workdir, free_port()),
            worker=worker_process(settings, workdir, free_port(), **(worker_env or {})),
            api_port=api_port,
        )
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        await stack.stop()
