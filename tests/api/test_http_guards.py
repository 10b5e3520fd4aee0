"""The HTTP protocol's guards, against the real server over raw sockets: trailers (bounded,
never merged into headers), pipelined heads counted like the first, read timeouts and the
connection limit."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import time
from collections.abc import Iterator
from typing import IO

import httpx
import pytest

from tests.api.test_live_limits import status_and_body
from tests.live import LiveApi, live_api

MiB = 1024 * 1024
HEAD_LIMIT = 4096
HEAD_TIMEOUT = 4.0
BODY_TIMEOUT = 3.0
KEEP_ALIVE_TIMEOUT = 1.0
MAX_CONNECTIONS = 8
# How late a timer may fire on a busy machine before we call it missing.
SLACK = 4.0
ORDER = b'{"items": [{"name": "pen", "quantity": 1}], "total_price": "3.10"}'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveApi, str]]:
    """The API with small limits and timeouts, and a valid bearer token of it."""
    data_dir = tmp_path_factory.mktemp("guards")
    with live_api(
        data_dir,
        log=data_dir / "api.log",
        RATE_LIMIT_ENABLED="false",
        MAX_REQUEST_HEADER_BYTES=str(HEAD_LIMIT),
        HTTP_HEAD_TIMEOUT_SECONDS=str(HEAD_TIMEOUT),
        HTTP_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        HTTP_KEEP_ALIVE_TIMEOUT_SECONDS=str(KEEP_ALIVE_TIMEOUT),
        HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    ) as api:
        with httpx.Client(base_url=api.url, timeout=10) as http:
            login = {"email": "guards@example.com", "password": "guards123"}
            assert http.post("/register", json=login).status_code == 201
            token = http.post(
                "/token", data={"username": login["email"], "password": login["password"]}
            ).json()["access_token"]
        yield api, f"Bearer {token}"


@pytest.fixture
def api(served: tuple[LiveApi, str]) -> LiveApi:
    return served[0]


@pytest.fixture
def bearer(served: tuple[LiveApi, str]) -> str:
    return served[1]


def connect(api: LiveApi) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(api.url.rsplit(":", 1)[1])), timeout=10)


def read_until_closed(sock: socket.socket, within: float) -> tuple[bytes, bool]:
    """What the server sends until it closes (True) or `within` seconds pass (False)."""
    deadline = time.monotonic() + within
    chunks: list[bytes] = []
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return b"".join(chunks), True
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


def exchange(api: LiveApi, request: bytes, within: float = 10) -> bytes:
    with connect(api) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        return read_until_closed(sock, within)[0]


def statuses(answers: bytes) -> list[int]:
    """The status of every answer in a byte stream (our bodies are JSON: no status lines)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)]


def chunked_post(path: str, body: bytes, headers: bytes = b"", trailers: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
        + b"Transfer-Encoding: chunked\r\nConnection: close\r\n"
        + headers
        + b"\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n"
        + trailers
        + b"\r\n"
    )


def trickle(sock: socket.socket, data: bytes, interval: float, within: float) -> None:
    """Send `data` a byte at a time, `interval` apart, until the server answers or closes."""
    deadline = time.monotonic() + within
    for byte in data:
        if time.monotonic() > deadline:
            return
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return
        if select.select([sock], [], [], interval)[0]:
            return


KIND_BY_STATUS = {
    401: "unauthorized",
    408: "request-timeout",
    431: "headers-too-large",
    503: "too-many-connections",
}


def assert_problem(answer: bytes, status: int) -> dict[str, object]:
    code, headers, body = status_and_body(answer)
    assert code == status, answer[:300]
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    document: dict[str, object] = json.loads(body)
    assert document["status"] == status
    assert document["type"] == f"urn:oms:problem:{KIND_BY_STATUS[status]}"
    return document


# --- trailers ---------------------------------------------------------------------------------


def test_trailers_past_the_head_limit_are_a_431(api: LiveApi, bearer: str) -> None:
    trailers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"t" * 1000) for i in range(16))  # 4x limit
    answer = exchange(
        api, chunked_post("/orders/", ORDER, f"Authorization: {bearer}\r\n".encode(), trailers)
    )
    document = assert_problem(answer, 431)
    assert document["type"] == "urn:oms:problem:headers-too-large"
    assert "trailer" in str(document["detail"])


@pytest.mark.parametrize("where", ["trailer", "header"])
def test_an_endless_field_is_cut_off_and_memory_stays_flat(api: LiveApi, where: str) -> None:
    """One field line that never ends, streamed: the server stops taking it soon after the
    limit instead of buffering it (which grew the API by hundreds of MB)."""
    if where == "trailer":
        opening = chunked_post("/orders/", ORDER)[: -len(b"\r\n")] + b"X-Endless: "
    else:
        opening = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: "
    offered = 48 * MiB
    exchange(api, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # warm
    before = api.rss_bytes()
    sent = 0
    with connect(api) as sock:
        try:
            sock.sendall(opening)
            piece = b"e" * (256 * 1024)
            while sent < offered:
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
    grown = api.rss_bytes() - before
    # What was sent beyond what the server read sits in the kernel's socket buffers (a few MB).
    assert sent < offered / 2, f"the server took {sent / MiB:.0f} MiB of one {where} line"
    assert grown < 8 * MiB, f"RSS grew by {grown / MiB:.1f} MiB"


def test_trailers_never_authenticate(api: LiveApi, bearer: str) -> None:
    trailers = f"Authorization: {bearer}\r\nX-Request-ID: from-a-trailer\r\n".encode()
    answer = exchange(api, chunked_post("/orders/", ORDER, trailers=trailers))
    assert_problem(answer, 401)
    assert status_and_body(answer)[1]["x-request-id"] != "from-a-trailer"


def test_a_request_with_trailers_is_served_without_them(api: LiveApi, bearer: str) -> None:
    headers = f"Authorization: {bearer}\r\n".encode()
    answer = exchange(
        api, chunked_post("/orders/", ORDER, headers, b"X-Request-ID: from-a-trailer\r\n")
    )
    status, response_headers, _ = status_and_body(answer)
    assert status == 201, answer[:300]
    assert response_headers["x-request-id"] != "from-a-trailer"


# --- pipelining -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["one-long-header", "many-headers", "long-path"])
def test_a_pipelined_head_over_the_limit_is_a_431_after_the_first_answer(
    api: LiveApi, shape: str
) -> None:
    oversized = {
        "one-long-header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "
        + b"b" * (4 * HEAD_LIMIT)
        + b"\r\n\r\n",
        "many-headers": b"GET /health HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, b"h" * 100) for i in range(160))
        + b"\r\n",
        "long-path": b"GET /health?" + b"q" * (4 * HEAD_LIMIT) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    }[shape]
    answers = exchange(api, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + oversized)
    assert statuses(answers) == [200, 431], answers[-400:]


def test_pipelined_requests_within_the_limits_are_all_answered_in_order(api: LiveApi) -> None:
    small = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * (HEAD_LIMIT // 2) + b"\r\n\r\n"
    missing = b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert statuses(exchange(api, small + missing + small + last)) == [200, 404, 200, 200]


# --- timeouts ---------------------------------------------------------------------------------


def test_an_idle_connection_is_closed_silently_within_the_head_timeout(api: LiveApi) -> None:
    started = time.monotonic()
    with connect(api) as sock:
        answer, closed = read_until_closed(sock, HEAD_TIMEOUT + SLACK)
    assert closed, "an idle connection stayed open"
    assert answer == b""
    assert time.monotonic() - started > HEAD_TIMEOUT - 1


def test_a_trickled_head_is_a_408(api: LiveApi) -> None:
    started = time.monotonic()
    with connect(api) as sock:
        trickle(
            sock,
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 1000,
            0.25,
            within=HEAD_TIMEOUT + SLACK,
        )
        answer, closed = read_until_closed(sock, SLACK)
    assert closed
    assert_problem(answer, 408)
    assert time.monotonic() - started < HEAD_TIMEOUT + SLACK


def test_a_trickled_body_is_a_408_and_the_app_sees_a_disconnect(api: LiveApi, bearer: str) -> None:
    head = (
        f"POST /orders/ HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with connect(api) as sock:
        sock.sendall(head)
        trickle(sock, b" " * 1000, 0.25, within=BODY_TIMEOUT + SLACK)
        answer, closed = read_until_closed(sock, SLACK)
    assert closed
    assert_problem(answer, 408)
    assert time.monotonic() - started < BODY_TIMEOUT + SLACK
    assert api.log is not None
    assert "Exception in ASGI application" not in api.log.read_text()


def test_a_keep_alive_client_is_served_twice_then_closed_when_idle(api: LiveApi) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(api) as sock, sock.makefile("rb") as answers:
        for _ in range(2):
            sock.sendall(request)
            status, headers, _ = status_and_body(read_answer(answers))
            assert status == 200
            assert "close" not in headers.get("connection", "")
        idle_since = time.monotonic()
        assert answers.read() == b""  # the server closes: end of stream
    assert time.monotonic() - idle_since < HEAD_TIMEOUT, "closed by the head timer, not keep-alive"


def read_answer(stream: IO[bytes]) -> bytes:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        assert line, "closed before a whole answer"
        head += line
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
    return bytes(head + stream.read(length))


# --- connections ------------------------------------------------------------------------------


def test_beyond_the_connection_limit_a_request_is_a_503_problem(api: LiveApi) -> None:
    idle = [connect(api) for _ in range(MAX_CONNECTIONS)]
    try:
        answer = exchange(api, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        document = assert_problem(answer, 503)
        assert document["status"] == 503
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + SLACK
    while True:  # the server notices the closes in its own time
        answer = exchange(api, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        if statuses(answer) == [200] or time.monotonic() > deadline:
            break
    assert statuses(answer) == [200]


def test_the_guards_logged_no_server_error(api: LiveApi) -> None:
    log = api.log
    assert log is not None
    assert "Traceback" not in log.read_text()
