"""Pure-ASGI middleware (cheaper than BaseHTTPMiddleware on every request).

`RequestEnvelopeMiddleware` is the outermost layer: it names the request, refuses a declared
body that is too large before anything reads it (and a streamed one once it passes the limit,
chunked bodies included), and stamps `X-Request-ID` and the rate-limit
headers on whatever answer leaves, errors included. `ErrorBoundaryMiddleware` is the innermost:
an exception no handler took becomes one logged line and a 500 problem document that travels
back out through CORS, metrics and the envelope like any other answer, on a connection that
stays open. `HttpMetricsMiddleware` counts and times every answer, labelled by the route's
template (`/orders/{order_id}/`), never the raw path, so label cardinality stays bounded
whatever clients send.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oms.observability.logs import request_id_var
from oms_api.http_metrics import HTTP_DURATION, HTTP_REQUESTS, UNMATCHED_ROUTE
from oms_api.problems import problem_response

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

# Where the rate limiter leaves the X-RateLimit-* headers of the route's limit, so that every
# answer of a limited route carries them, whichever layer produced it.
RATE_LIMIT_HEADERS_KEY = "rate_limit_headers"

logger = logging.getLogger("oms.api")


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class HttpMiddleware:
    """Our pure-ASGI middleware: anything but HTTP (lifespan) passes straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class BodyTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body may hold at most {limit} bytes.")


class RequestEnvelopeMiddleware(HttpMiddleware):
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        super().__init__(app)
        self.max_body_bytes = max_body_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = next(
            (
                value.decode("latin-1")
                for name, value in scope["headers"]
                if name == b"x-request-id"
            ),
            "",
        )
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_enveloped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                limit_headers = state.get(RATE_LIMIT_HEADERS_KEY)
                if limit_headers and not any(name == b"x-ratelimit-limit" for name, _ in headers):
                    headers.extend(limit_headers)
                message["headers"] = headers
            await send(message)

        limit = self.max_body_bytes
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised where the app reads the body; FastAPI passes HTTPExceptions on to
                    # the problem handlers. Nothing past the limit is ever asked for.
                    raise BodyTooLargeError(limit)
            return message

        try:
            declared = _declared_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                # Answer before reading a byte of it; the server then closes the connection
                # rather than drain a body nobody will read.
                response = problem_response(
                    Request(scope),
                    413,
                    f"The request body may hold at most {self.max_body_bytes} bytes.",
                    max_bytes=self.max_body_bytes,
                )
                await response(scope, receive, send_enveloped)
                return
            await self.app(scope, receive_limited, send_enveloped)
        finally:
            request_id_var.reset(token)


class ErrorBoundaryMiddleware(HttpMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            if started:
                raise  # half an answer is out: only the server can end it (closing the socket)
            logger.exception(
                "unhandled error", extra={"path": scope.get("path"), "method": scope.get("method")}
            )
            response = problem_response(
                Request(scope),
                500,
                "An unexpected error occurred; quote the request_id when reporting it.",
            )
            await response(scope, receive, send)


class HttpMetricsMiddleware(HttpMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            method = scope["method"]
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
