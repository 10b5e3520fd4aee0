"""wrk results for the tests of bench/harness.py, made from wrk's own output."""

from __future__ import annotations

import json

from bench.harness import WrkResult, parse_wrk_output


def wrk_output(requests: int, seconds: float, status_errors: int = 0, p99_us: int = 9000) -> str:
    """wrk's stdout with the marker line bench/wrk/common.lua's `done()` prints."""
    data = {
        "requests": requests,
        "duration_us": int(seconds * 1e6),
        "bytes": requests * 300,
        "errors": {"connect": 0, "read": 1, "write": 0, "status": status_errors, "timeout": 2},
        "latency_us": {
            "p50": 2500,
            "p90": 6000,
            "p99": p99_us,
            "p999": 20000,
            "mean": 3.1,
            "max": 41000,
        },
    }
    human = "Running 5s test @ http://127.0.0.1:1/\n  1 threads and 50 connections\n"
    return f"{human}WRK_RESULT {json.dumps(data)}\nRequests/sec: {requests / seconds:.2f}\n"


def wrk_result(per_s: float, p99_ms: float = 9.0) -> WrkResult:
    """Ten seconds of `per_s` responses, parsed as bench/harness.py parses a real run."""
    return parse_wrk_output(wrk_output(int(per_s * 10), 10.0, p99_us=int(p99_ms * 1000)))
