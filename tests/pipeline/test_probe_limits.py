"""The probe/metrics servers bound their connections: idle ones are dropped after the timeout
(their threads end), and beyond the limit a new one is answered 503 at once."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from oms.observability.probe_server import (
    ConnectionLimits,
    MetricsServer,
    ProbeServer,
    WSGIServerThread,
)

TIMEOUT = 2.0
LIMIT = 6
SLACK = 5.0


def wait_for(condition: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def registry_with_a_counter() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("oms_probe_limit_test_total", "a test counter", registry=registry).inc()
    return registry


@pytest.fixture(params=["probes", "metrics"])
def server(request: pytest.FixtureRequest) -> Iterator[WSGIServerThread]:
    limits = ConnectionLimits(connection_timeout=TIMEOUT, max_connections=LIMIT)
    registry = registry_with_a_counter()
    running: WSGIServerThread
    if request.param == "probes":
        running = ProbeServer("127.0.0.1", 0, lambda: {"ok": True}, registry, limits).start()
    else:
        running = MetricsServer("127.0.0.1", 0, registry, limits).start()
    try:
        yield running
    finally:
        running.stop()


def scrape(server: WSGIServerThread) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_connections_are_dropped_and_their_threads_end(server: WSGIServerThread) -> None:
    assert scrape(server).status_code == 200
    # The scrape's own thread may still be winding down.
    assert wait_for(lambda: server.active_connections == 0, SLACK)
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(LIMIT)]
    try:
        # Each accepted connection is served by a thread of its own...
        assert wait_for(lambda: server.active_connections == LIMIT, SLACK)
        # ...and the server hangs up on every one once the timeout passes.
        assert all(closed_by_peer(sock, TIMEOUT + SLACK) for sock in idle)
    finally:
        for sock in idle:
            sock.close()
    # Counted down as each thread finishes, so their threads end.
    assert wait_for(lambda: server.active_connections == 0, SLACK), server.active_connections
    assert "oms_probe_limit_test_total" in scrape(server).text


def test_beyond_the_limit_a_connection_is_refused_and_the_server_recovers(
    server: WSGIServerThread,
) -> None:
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(LIMIT)]
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=SLACK) as extra:
            # Refused when accepted: the idle ones hold every slot.
            extra.settimeout(SLACK)
            answer = extra.recv(1024)
            assert answer.startswith(b"HTTP/1.0 503 "), answer
    finally:
        for sock in idle:
            sock.close()
    assert wait_for(lambda: scrape(server).status_code == 200, TIMEOUT + SLACK)


def test_a_slow_client_does_not_keep_its_thread(server: WSGIServerThread) -> None:
    """A head trickled slower than the timeout is dropped at the first pause."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        assert closed_by_peer(sock, TIMEOUT + SLACK)
