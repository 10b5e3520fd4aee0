"""A small HTTP server for Kubernetes probes and Prometheus scraping, in a daemon thread.

`/health` answers while the process lives, `/health/ready` asks the service whether it can do
its job (broker connected, consuming), `/metrics` serves the given Prometheus registry. Used by
the consumer and the worker, whose main threads belong to asyncio and Celery respectively.
"""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

StartResponse = Callable[..., Any]
Readiness = Callable[[], dict[str, bool]]


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


def probe_app(
    readiness: Readiness, registry: CollectorRegistry
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def respond(
        start_response: StartResponse, status: str, document: dict[str, Any]
    ) -> list[bytes]:
        body = json.dumps(document).encode()
        start_response(status, [("Content-Type", "application/json")])
        return [body]

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            exposition: Iterable[bytes] = metrics(environ, start_response)
            return exposition
        if path in ("/health", "/healthz"):
            return respond(start_response, "200 OK", {"status": "ok"})
        if path in ("/health/ready", "/readyz"):
            checks = readiness()
            ready = all(checks.values())
            status = "200 OK" if ready else "503 Service Unavailable"
            return respond(
                start_response,
                status,
                {"status": "ok" if ready else "unavailable", "checks": checks},
            )
        return respond(start_response, "404 Not Found", {"status": "not found"})

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


class ProbeServer(ServerThread):
    def __init__(
        self, host: str, port: int, readiness: Readiness, registry: CollectorRegistry
    ) -> None:
        self._wsgi = make_server(
            host,
            port,
            probe_app(readiness, registry),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        super().__init__(self._wsgi, "probe-http")

    @property
    def port(self) -> int:
        return int(self._wsgi.server_port)
