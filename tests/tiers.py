"""The two test tiers (tests/README.md), as a pytest plugin loaded by tests/conftest.py.

Every test is marked `fast` unless it needs more than this process; `make check` runs
`pytest -m fast`, `make test` runs everything. A test is not fast when

- it lives in a suite that runs other programs or machines (`SLOW_SUITES`: the services as
  processes, the cluster, a Docker engine, the pinned helm and kubectl, `make services`);
- it uses a fixture that reaches PostgreSQL, Redis or RabbitMQ (`SERVICE_FIXTURES`, or any fixture
  built on one: `settings`, `client`, `make_stack`, ...);
- its module runs the real API process, which needs PostgreSQL (`SERVER_HELPERS`: tests/live.py);
- it carries one of `SLOW_MARKERS`: `services` for a test that reaches a server some other way,
  `slow` for one that takes more than a few seconds.

A fast test that connects to PostgreSQL, Redis or RabbitMQ anyway fails, naming the server and
the marker that moves it (`refuse_servers`), so a misplaced test shows up in either tier. Child
processes are beyond that check: whatever starts one that needs a server is a helper for
`SERVER_HELPERS`, or its tests are marked.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Generator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

TESTS = Path(__file__).resolve().parent
# Directories under tests/ whose tests run the services as processes, the cluster, a Docker
# engine, the pinned helm and kubectl, or `make services` itself.
SLOW_SUITES = frozenset({"cluster", "deploy", "e2e", "images", "services"})
# Fixtures that open PostgreSQL, Redis or RabbitMQ.
SERVICE_FIXTURES = frozenset({"pg_template", "rabbitmq_url", "rabbit_queue"})
# Modules whose helpers start a process that opens PostgreSQL, Redis or RabbitMQ.
SERVER_HELPERS = frozenset({"tests.live"})
SLOW_MARKERS = frozenset({"services", "slow", "e2e", "cluster", "node", "images"})
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def in_slow_suite(path: Path) -> bool:
    if not path.is_relative_to(TESTS):
        return True
    parts = path.relative_to(TESTS).parts
    return len(parts) > 1 and parts[0] in SLOW_SUITES


def uses_server_helpers(module: ModuleType | None) -> bool:
    if module is None:
        return False
    return any(
        getattr(value, "__module__", None) in SERVER_HELPERS
        or getattr(value, "__name__", None) in SERVER_HELPERS
        for value in vars(module).values()
    )


def is_fast(item: pytest.Item) -> bool:
    """Whether `item` needs nothing beyond this process (see the module docstring)."""
    if in_slow_suite(item.path):
        return False
    if any(item.get_closest_marker(name) for name in SLOW_MARKERS):
        return False
    if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return False
    return not uses_server_helpers(getattr(item, "module", None))


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if is_fast(item):
            item.add_marker(pytest.mark.fast)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under `-m fast` the slow suites are not even imported: none of their tests could run."""
    if config.getoption("markexpr") == "fast" and in_slow_suite(collection_path):
        return True
    return None


def service_addresses() -> dict[tuple[str, int], str]:
    """Where the tests' PostgreSQL, Redis and RabbitMQ (broker and management API) listen."""
    from tests import infra

    addresses = {(infra.PG_HOST, infra.PG_PORT): "PostgreSQL"}
    for url, name in (
        (infra.REDIS_BASE, "Redis"),
        (infra.RABBITMQ_URL, "RabbitMQ"),
        (infra.RABBITMQ_MANAGEMENT_URL, "RabbitMQ's management API"),
    ):
        parts = urlsplit(url)
        if parts.port is not None:
            addresses[(parts.hostname or "127.0.0.1", parts.port)] = name
    return addresses


@contextlib.contextmanager
def refuse_servers(nodeid: str) -> Iterator[None]:
    """Connections to the servers fail while this is entered; if one was tried (even in a thread
    or task that swallowed the failure), the test fails on leaving."""
    servers = service_addresses()
    by_port = {port: name for (host, port), name in servers.items() if host in LOOPBACK}
    reached: list[str] = []

    def explanation() -> str:
        return (
            f"{nodeid} is in the fast tier but connects to {', '.join(reached)}: "
            "use the settings fixtures, or mark it @pytest.mark.services (tests/README.md)"
        )

    def check(address: Any) -> None:
        if isinstance(address, tuple) and len(address) >= 2:
            host, port = address[0], address[1]
            name = servers.get((host, port)) or (by_port.get(port) if host in LOOPBACK else None)
            if name is not None:
                reached.append(f"{name} at {host}:{port}")
                pytest.fail(explanation(), pytrace=False)

    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return original_connect_ex(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        yield
    if reached:
        pytest.fail(explanation(), pytrace=False)


# Around setup and call, so that fixtures of a wider scope set up for this test are covered too.
# Not around teardown: the last test's teardown also finalizes the session's fixtures, a slow
# test's PostgreSQL template among them.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _guarded(item))


def _guarded(item: pytest.Item) -> Generator[None, None, None]:
    if item.get_closest_marker("fast") is None:
        return (yield)
    with refuse_servers(item.nodeid):
        return (yield)
