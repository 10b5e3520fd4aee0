"""Limits that only the real server process can show: the request head, refused bodies and
memory, framework-level errors, several workers, the metrics port."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import free_port, settings_environment
from tests.live import LiveApi, live_api

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    with live_api(tmp_path_factory.mktemp("limits")) as running:
        yield running


def exchange(api: LiveApi, request: bytes, *, read_timeout: float = 10) -> bytes:
    """Send raw bytes, return everything the server answers before closing (or going quiet)."""
    port = int(api.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)  # may be refused part-way: what matters is the answer
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def status_and_body(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {
        name.strip().lower().decode(): value.strip().decode()
        for name, _, value in (line.partition(b":") for line in lines[1:])
    }
    return status, headers, body


def test_an_oversized_header_is_a_431_problem(api: LiveApi) -> None:
    huge = b"Bearer " + b"a" * (64 * MiB // 16)  # 4 MiB Authorization header
    answer = exchange(
        api, b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: " + huge + b"\r\n\r\n"
    )
    status, headers, body = status_and_body(answer)
    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["type"] == "urn:oms:problem:headers-too-large"


def test_an_over_long_path_is_refused_the_same_way(api: LiveApi) -> None:
    answer = exchange(api, b"GET /" + b"p" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = status_and_body(answer)
    assert status == 431
    assert headers["content-type"] == "application/problem+json"


def test_a_normal_sized_head_still_works(api: LiveApi) -> None:
    answer = exchange(
        api,
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: "
        + b"p" * 8000
        + b"\r\nConnection: close\r\n\r\n",
    )
    assert status_and_body(answer)[0] == 200


def test_malformed_http_is_a_400_problem(api: LiveApi) -> None:
    status, headers, body = status_and_body(exchange(api, b"GET / HTTP/1.1\r\nHost x\r\n\r\n"))
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["type"] == "urn:oms:problem:bad-request"


def test_refused_bodies_do_not_grow_the_servers_memory(api: LiveApi) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as http:
        http.get("/health")
        before = api.rss_bytes()
        for _ in range(4):
            declared = exchange(
                api,
                b"POST /orders/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 104857600\r\n\r\n" + b" " * (4 * MiB),
            )
            assert status_and_body(declared)[0] == 413

            def chunked() -> Iterator[bytes]:
                for _ in range(40):  # 40 MiB offered without a length
                    yield b" " * MiB

            streamed = http.post(
                "/orders/", content=chunked(), headers={"content-type": "application/json"}
            )
            assert streamed.status_code == 413
            assert streamed.headers["content-type"] == "application/problem+json"
        grown = api.rss_bytes() - before
    assert grown < 40 * MiB, f"RSS grew by {grown / MiB:.0f} MiB after 8 refused bodies"


def test_several_workers_need_shared_state(tmp_path: Path) -> None:
    env = settings_environment({"API_WORKERS": 2, "DATA_DIR": tmp_path, "PORT": free_port()})
    result = subprocess.run(
        [sys.executable, "-m", "oms_api.main"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "refusing to start" in result.stderr
    assert "REDIS_URL" in result.stderr


def test_no_signing_key_outside_the_embedded_mode_refuses_to_start(tmp_path: Path) -> None:
    env = settings_environment(
        {
            "POSTGRES_HOST": "127.0.0.1",
            "DATA_DIR": tmp_path,
            "PORT": free_port(),
            "LOG_LEVEL": "ERROR",
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "oms_api.main"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "oms generate-keys" in result.stderr
    assert not (tmp_path / "jwt").exists()


def log_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def rejected_lines(log: Path) -> list[dict[str, Any]]:
    return [line for line in log_lines(log) if line.get("msg") == "rejected bearer token"]


def started_workers(log: Path) -> set[int]:
    return {
        line["pid"] for line in log_lines(log) if line.get("msg") == "Application startup complete."
    }


def test_every_worker_logs_json_with_request_ids_and_metrics_have_their_own_port(
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    log = tmp_path / "api.log"
    with live_api(
        tmp_path,
        log=log,
        API_WORKERS="2",
        API_METRICS_PORT=str(metrics_port),
        RATE_LIMIT_LIST_ORDERS="100000/minute",
        LOG_LEVEL="INFO",
    ) as running:
        # The first worker answers /health while the second may still be importing the app.
        deadline = time.monotonic() + 60
        while len(started_workers(log)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # the step of this poll of the log
        assert len(started_workers(log)) == 2, log.read_text()[-3000:]

        def ask(request_id: str) -> int:
            return httpx.get(
                f"{running.url}/orders/user/1",
                headers={"Authorization": "Bearer not-a-token", "X-Request-ID": request_id},
                timeout=10,
            ).status_code

        # Which worker accepts each connection is the kernel's choice (a loaded machine can give
        # them all to one): what is ours is that whoever answers logs the request's id.
        request_ids = {f"req-{index}" for index in range(40)}
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(ask, sorted(request_ids))) == {401}
        assert httpx.get(f"{running.url}/metrics", timeout=10).status_code == 404
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert "oms_http_requests_total" in scraped.text
    rejected = rejected_lines(log)
    assert {line["request_id"] for line in rejected} == request_ids
    assert {line["pid"] for line in rejected} <= started_workers(log)
    # Both workers' own lines (startup, shutdown) are JSON too: nothing else reached the log.
    assert {line["pid"] for line in log_lines(log) if line.get("msg") == "Shutting down"} == (
        started_workers(log)
    )
    plain = [line for line in log.read_text().splitlines() if line and not line.startswith("{")]
    assert plain == []
