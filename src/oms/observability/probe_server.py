"""A small HTTP server for Kubernetes probes and Prometheus scraping, in a daemon thread.

`/health` answers while the process lives, `/health/ready` asks the service whether it can do
its job (broker connected, consuming), `/metrics` serves the given Prometheus registry. Used by
the consumer and the worker, whose main threads belong to asyncio and Celery respectively, and
(`/metrics` only) by the API's separate metrics port.

A thread serves each connection, so connections are bounded (`ConnectionLimits`): each read
waits at most `connection_timeout` (an idle or stalled client is dropped), and beyond
`max_connections` at once a new connection is answered 503 and closed without a thread.
"""

from __future__ import annotations

import contextlib
import json
import socketserver
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app

StartResponse = Callable[..., Any]
Readiness = Callable[[], dict[str, bool]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class ConnectionLimits:
    """Probes and scrapes come a few at a time, each answered in milliseconds."""

    connection_timeout: float = 5.0  # seconds any one read of a connection may wait
    max_connections: int = 32  # served at once; each has a thread


_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: 18\r\nConnection: close\r\n\r\n"
    b'{"status": "busy"}'
)


class BoundedWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """A thread per connection, within `limits`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], limits: ConnectionLimits) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._lock = threading.Lock()
        self._active = 0
        super().__init__(address, _BoundedHandler)

    @property
    def active_connections(self) -> int:
        """Connections being served now, each by a thread of its own."""
        with self._lock:
            return self._active

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Answered from the accepting thread: a short write to a fresh socket never blocks.
            with contextlib.suppress(OSError):
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        with self._lock:
            self._active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            self._active -= 1
        self._slots.release()


class _BoundedHandler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        assert isinstance(self.server, BoundedWSGIServer)
        self.connection.settimeout(self.server.limits.connection_timeout)

    def handle(self) -> None:
        # wsgiref reads the request line itself, without the timeout handling of http.server.
        with contextlib.suppress(TimeoutError, ConnectionError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        return None


def metrics_app(registry: CollectorRegistry) -> WSGIApp:
    """`/metrics` from the registry; any other path is a 404."""
    exposition = make_wsgi_app(registry)

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") == "/metrics":
            answer: Iterable[bytes] = exposition(environ, start_response)
            return answer
        return _json(start_response, "404 Not Found", {"status": "not found"})

    return application


def _json(start_response: StartResponse, status: str, document: dict[str, Any]) -> list[bytes]:
    body = json.dumps(document).encode()
    start_response(status, [("Content-Type", "application/json")])
    return [body]


def probe_app(readiness: Readiness, registry: CollectorRegistry) -> WSGIApp:
    metrics = metrics_app(registry)

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/health", "/healthz"):
            return _json(start_response, "200 OK", {"status": "ok"})
        if path in ("/health/ready", "/readyz"):
            checks = readiness()
            ready = all(checks.values())
            status = "200 OK" if ready else "503 Service Unavailable"
            return _json(
                start_response,
                status,
                {"status": "ok" if ready else "unavailable", "checks": checks},
            )
        return metrics(environ, start_response)

    return application


class ServerThread:
    """A socketserver serving from a daemon thread, so the caller's thread stays its own."""

    def __init__(self, server: socketserver.BaseServer, name: str) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class WSGIServerThread(ServerThread):
    """A WSGI app on a BoundedWSGIServer, served from a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        app: WSGIApp,
        name: str,
        limits: ConnectionLimits = ConnectionLimits(),
    ) -> None:
        self._wsgi = BoundedWSGIServer((host, port), limits)
        self._wsgi.set_app(app)
        super().__init__(self._wsgi, name)

    @property
    def port(self) -> int:
        return int(self._wsgi.server_port)

    @property
    def active_connections(self) -> int:
        return self._wsgi.active_connections


class ProbeServer(WSGIServerThread):
    def __init__(
        self,
        host: str,
        port: int,
        readiness: Readiness,
        registry: CollectorRegistry,
        limits: ConnectionLimits = ConnectionLimits(),
    ) -> None:
        super().__init__(host, port, probe_app(readiness, registry), "probe-http", limits)


class MetricsServer(WSGIServerThread):
    """`/metrics` alone, on a port of its own (the API's API_METRICS_PORT)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        limits: ConnectionLimits = ConnectionLimits(),
    ) -> None:
        super().__init__(host, port, metrics_app(registry), "metrics-http", limits)
