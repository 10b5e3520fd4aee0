"""How uvicorn serves the API: its options, and an HTTP protocol that bounds every request.

uvicorn's httptools protocol accepts a request line and headers of any size (a 64 MB
`Authorization` header went through), merges the trailer fields of a chunked body into the
request's headers, waits for a head or a body forever, and answers unparsable requests with
`400 text/plain`. `GuardedHttpToolsProtocol`:

- counts each header block (the head, and the trailers of a chunked body) both as it arrives on
  the socket and as the parser reports its fields, message by message (so a pipelined request
  is counted like the first), and refuses it with 431 once either count passes
  MAX_REQUEST_HEADER_BYTES, before the parser has buffered much more;
- drops trailer fields once counted: they never become headers (RFC 9110 §6.5);
- answers 408 when a head or a body takes longer than HTTP_HEAD_TIMEOUT_SECONDS or
  HTTP_BODY_TIMEOUT_SECONDS, and closes a connection that never sent anything;
- answers in request order: a refusal of a pipelined request waits for the answers before it;
- answers its own refusals, and uvicorn's 503 beyond HTTP_MAX_CONNECTIONS, with problem+json
  like every other answer of the API, and closes the connection after them.
"""

from __future__ import annotations

from asyncio import TimerHandle
from typing import Any, Literal

import orjson
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from oms.settings import ApiSettings, get_api_settings
from oms_api.problems import PROBLEM_MEDIA_TYPE, ProblemType, status_defaults

_HEAD_END = b"\r\n\r\n"
# What a field costs on the wire beyond its name and value: ": " and the line end.
_FIELD_OVERHEAD = len(b": \r\n")

# Where the parser is in the current message: before its first byte, in its head, or past the
# head (in the body, or in the trailers that close a chunked body).
Stage = Literal["between", "head", "body"]


def problem_document(status: int, detail: str, kind: ProblemType | None = None) -> bytes:
    default_kind, title = status_defaults(status)
    if kind is not None:
        title = kind.value.replace("-", " ").capitalize()
    uri = (kind or default_kind).uri
    return orjson.dumps({"type": uri, "title": title, "status": status, "detail": detail})


def problem_bytes(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 answer with a problem document, for the protocol layer (no ASGI)."""
    body = problem_document(status, detail)
    head = (
        b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n"
    )
    return STATUS_LINE[status] + head + body


async def over_capacity(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """uvicorn's answer beyond `limit_concurrency`, as a problem document."""
    body = problem_document(
        503,
        "The server has too many open connections; try again later.",
        ProblemType.TOO_MANY_CONNECTIONS,
    )
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class HeaderBlockTooLargeError(Exception):
    """Raised in a parser callback to stop the parser; the refusal is already decided."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_api_settings()
        self._max_head_bytes = settings.MAX_REQUEST_HEADER_BYTES
        self._head_timeout = settings.HTTP_HEAD_TIMEOUT_SECONDS
        self._body_timeout = settings.HTTP_BODY_TIMEOUT_SECONDS
        self._stage: Stage = "between"
        # The current header block, as its fields are parsed and as its bytes arrive.
        self._parsed_bytes = 0
        self._arrived_bytes = 0
        self._tail = b""  # the last bytes of the head so far: its end may straddle two reads
        # A chunk header was parsed and no data followed yet: what comes is either that chunk's
        # data or, after the last (empty) chunk, the trailers.
        self._chunk_awaiting_data = False
        self._body_in_slice = False
        self._messages_completed = 0
        self._refusal: tuple[int, str] | None = None  # decided in a callback that stopped parsing
        self._refused = False  # nothing more is read or parsed on this connection
        self._deferred_answer: bytes | None = None  # sent once the answers before it are out
        self._head_timer: TimerHandle | None = None
        self._body_timer: TimerHandle | None = None

    # --- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # The transport now belongs to the WebSocket protocol: our timers must not close it.
        self._cancel_timers()
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes) -> None:
        # In slices no larger than the head limit: what the parser takes in before a count can
        # refuse it (a header line, the trailers after the last chunk) stays within one slice.
        for start in range(0, len(data), self._max_head_bytes):
            if self._refused or self.transport.get_protocol() is not self:
                break
            self._receive_slice(data[start : start + self._max_head_bytes])
        if self._refused:
            self.transport.pause_reading()

    def _receive_slice(self, data: bytes) -> None:
        if self._stage != "body":
            # A head is due or under way: count what precedes its end before parsing it.
            seen = self._tail + data
            end = seen.find(_HEAD_END)
            self._arrived_bytes += len(data) if end < 0 else max(0, end - len(self._tail))
            self._tail = seen[-(len(_HEAD_END) - 1) :]
            if self._arrived_bytes > self._max_head_bytes:
                self._refuse(431, self._too_large_detail())
                return
        in_trailers_unless_data_follows = self._chunk_awaiting_data
        self._body_in_slice = False
        completed_before = self._messages_completed
        super().data_received(data)
        if (
            in_trailers_unless_data_follows
            and not self._body_in_slice
            and self._messages_completed == completed_before
            and not self._refused
        ):
            # No chunk data came, and the message is not complete: the whole slice belongs to
            # the trailers, perhaps to one endless line that the parser buffers unreported.
            self._arrived_bytes += len(data)
            if self._arrived_bytes > self._max_head_bytes:
                self._refuse(431, self._too_large_detail())

    # --- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._stage = "head"
        self._parsed_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_parsed(len(name) + len(value) + _FIELD_OVERHEAD)
        if self._stage == "body":
            # A trailer field: counted, never merged into the headers the app trusts.
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stage = "body"
        self._parsed_bytes = self._arrived_bytes = 0
        self._tail = b""
        self._cancel_head_timer()
        self._body_timer = self.loop.call_later(self._body_timeout, self._body_timed_out)
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        self._chunk_awaiting_data = True

    def on_body(self, body: bytes) -> None:
        self._chunk_awaiting_data = False
        self._body_in_slice = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._stage = "between"
        self._parsed_bytes = self._arrived_bytes = 0
        self._chunk_awaiting_data = False
        self._messages_completed += 1
        self._cancel_body_timer()
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete and not self.pipeline:
            # Answered before its body was complete: from now on the next head is due.
            self._arm_head_timer()

    def _count_parsed(self, size: int) -> None:
        self._parsed_bytes += size
        if self._parsed_bytes > self._max_head_bytes:
            self._refusal = (431, self._too_large_detail())
            raise HeaderBlockTooLargeError

    def _too_large_detail(self) -> str:
        if self._stage == "body":
            return f"The trailer fields may hold at most {self._max_head_bytes} bytes."
        return f"The request line and headers may hold at most {self._max_head_bytes} bytes."

    # --- answers ------------------------------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        super()._start_asgi_task(cycle, over_capacity if app is service_unavailable else app)

    def on_response_complete(self) -> None:
        last_owed = not self.pipeline
        super().on_response_complete()
        if self.transport.is_closing() or not last_owed:
            return
        if self._deferred_answer is not None:
            self._answer_and_close(self._deferred_answer)
        elif self._stage != "body":
            self._arm_head_timer()

    def send_400_response(self, msg: str) -> None:
        # The parser stopped: on a malformed request, or because a callback refused one.
        status, detail = self._refusal or (400, msg)
        self._refuse(status, detail)

    def _refuse(self, status: int, detail: str) -> None:
        """Refuse the message being received and stop reading: answer it once every answer
        owed before it is out, then close."""
        self.logger.warning("refused a request at the protocol level: %s", detail)
        self._refused = True
        answer = problem_bytes(status, detail)
        cycle = self.cycle
        if self._stage == "body" and cycle is not None:  # its head is parsed: it has a cycle
            if self.pipeline and self.pipeline[0][0] is cycle:
                self.pipeline.popleft()  # queued behind another request's answer: never runs
                self._deferred_answer = answer
                return
            if cycle.response_started:
                self.transport.close()  # too late for another answer
                return
            # The app waits for the rest of the body: it sees a disconnect, and writes nothing
            # after our answer.
            cycle.disconnected = True
            cycle.message_event.set()
        elif self.pipeline or (cycle is not None and not cycle.response_complete):
            self._deferred_answer = answer  # answers go out in request order
            return
        self._answer_and_close(answer)

    def _answer_and_close(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()

    # --- timers -------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._stage == "head":
            self._refuse(408, f"The request head did not arrive within {self._head_timeout} s.")
        else:
            self.transport.close()  # nothing was asked: there is nothing to answer

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self.transport.is_closing():
            self._refuse(408, f"The request body did not arrive within {self._body_timeout} s.")

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()


def server_options(settings: ApiSettings) -> dict[str, Any]:
    """How uvicorn serves the API; the benchmark serves its bare baseline with the same."""
    return {
        "host": settings.HOST,
        "port": settings.PORT,
        "workers": settings.API_WORKERS,
        # A string, not the class: each worker process imports it for itself.
        "http": "oms_api.server:GuardedHttpToolsProtocol",
        "timeout_keep_alive": settings.HTTP_KEEP_ALIVE_TIMEOUT_SECONDS,
        "limit_concurrency": settings.HTTP_MAX_CONNECTIONS,
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
