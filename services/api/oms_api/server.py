"""How uvicorn serves the API: its options, and an HTTP protocol that bounds the request head.

uvicorn's httptools protocol accepts a request line and headers of any size (a 64 MB
`Authorization` header went through) and answers unparsable requests with `400 text/plain`.
`GuardedHttpToolsProtocol` counts the bytes of each request's head as they arrive and refuses
the request with 431 once they pass MAX_REQUEST_HEADER_BYTES, before the parser has buffered
them; its framework-level errors are problem+json like every other answer of the API.
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from oms.settings import ApiSettings, get_api_settings
from oms_api.problems import status_defaults

_HEAD_END = b"\r\n\r\n"


def problem_bytes(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 answer with a problem document, for the protocol layer (no ASGI)."""
    kind, title = status_defaults(status)
    body = orjson.dumps({"type": kind.uri, "title": title, "status": status, "detail": detail})
    head = (
        b"content-type: application/problem+json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n"
    )
    return STATUS_LINE[status] + head + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head_bytes = get_api_settings().MAX_REQUEST_HEADER_BYTES
        self._reset_head()

    def _reset_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            # Count only what precedes the blank line that ends the head (it may straddle two
            # reads, hence the tail of the previous one); a body in the same read is not head.
            end = (self._tail + data).find(_HEAD_END)
            self._head_bytes += len(data) if end < 0 else max(0, end - len(self._tail))
            self._tail = data[-(len(_HEAD_END) - 1) :]
            if self._head_bytes > self._max_head_bytes:
                self._refuse(
                    431,
                    f"The request line and headers may hold at most {self._max_head_bytes} bytes.",
                )
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reset_head()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, msg)

    def _refuse(self, status: int, detail: str) -> None:
        self.logger.warning("refused a request at the protocol level: %s", detail)
        if not self.transport.is_closing():
            self.transport.write(problem_bytes(status, detail))
            self.transport.close()


def server_options(settings: ApiSettings) -> dict[str, Any]:
    """How uvicorn serves the API; the benchmark serves its bare baseline with the same."""
    return {
        "host": settings.HOST,
        "port": settings.PORT,
        "workers": settings.API_WORKERS,
        # A string, not the class: each worker process imports it for itself.
        "http": "oms_api.server:GuardedHttpToolsProtocol",
        "proxy_headers": False,  # client IPs come from our trusted-proxy logic, not uvicorn's
        "server_header": False,
        "log_config": None,
        "access_log": False,
    }


def unsafe_configuration(settings: ApiSettings) -> list[str]:
    """Settings that would start but silently misbehave; `oms-api` refuses to start on them."""
    problems = []
    if settings.API_WORKERS > 1:
        if not settings.REDIS_URL:
            problems.append(
                "API_WORKERS>1 needs REDIS_URL: without it each worker keeps its own order "
                "cache and serves stale orders after another worker changed them"
            )
        if settings.RATE_LIMIT_ENABLED and not settings.REDIS_URL_RATE_LIMIT:
            problems.append(
                "API_WORKERS>1 needs REDIS_URL_RATE_LIMIT: without it every worker counts on "
                "its own and each limit is multiplied by the number of workers"
            )
    return problems
