"""The pure parts of the benchmark: parsing tool output, percentiles, ratios, the figures.

Everything here is a function of its arguments (no processes, no clock, no files), so
`tests/bench` can check it cheaply and it cannot rot unnoticed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WRK_RESULT_MARKER = "WRK_RESULT "
_PGBENCH_TPS = re.compile(r"^tps = ([0-9.]+) \((?:without initial connection time|excluding)")
_PGBENCH_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
_VM_HWM = re.compile(r"^VmHWM:\s+(\d+) kB$", re.MULTILINE)


class BenchOutputError(ValueError):
    """A tool did not print what the harness expects (it failed, or its format changed)."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run, as reported by the `done()` hook of bench/wrk/common.lua."""

    requests: int
    duration_s: float
    status_errors: int  # responses with a status >= 400 (counted in `requests` by wrk)
    socket_errors: int  # connect, read, write and timeout errors
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok_requests(self) -> int:
        return self.requests - self.status_errors

    @property
    def ok_per_s(self) -> float:
        """Successful responses per second: failures never count as throughput."""
        return self.ok_requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_ratio(self) -> float:
        attempts = self.requests + self.socket_errors
        return (self.status_errors + self.socket_errors) / attempts if attempts else 0.0


def parse_wrk_output(output: str) -> WrkResult:
    """The WrkResult from wrk's stdout (the marker line our Lua `done()` prints)."""
    for line in output.splitlines():
        if line.startswith(WRK_RESULT_MARKER):
            data = json.loads(line[len(WRK_RESULT_MARKER) :])
            break
    else:
        raise BenchOutputError(f"no {WRK_RESULT_MARKER.strip()} line in wrk output:\n{output}")
    errors: Mapping[str, int] = data["errors"]
    latency: Mapping[str, float] = data["latency_us"]
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=float(data["duration_us"]) / 1e6,
        status_errors=int(errors["status"]),
        socket_errors=sum(int(errors[kind]) for kind in ("connect", "read", "write", "timeout")),
        p50_ms=float(latency["p50"]) / 1000,
        p90_ms=float(latency["p90"]) / 1000,
        p99_ms=float(latency["p99"]) / 1000,
        max_ms=float(latency["max"]) / 1000,
    )


def parse_pgbench_tps(output: str) -> float:
    """Transactions per second from pgbench's report (connection set-up excluded)."""
    for line in output.splitlines():
        match = _PGBENCH_TPS.match(line.strip())
        if match:
            return float(match.group(1))
    raise BenchOutputError(f"no tps line in pgbench output:\n{output}")


def parse_pgbench_latency_ms(output: str) -> float | None:
    match = _PGBENCH_LATENCY.search(output)
    return float(match.group(1)) if match else None


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear-interpolated percentile (as PostgreSQL's percentile_cont); `fraction` in [0, 1]."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} outside [0, 1]")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ratio(value: float, baseline: float) -> float:
    """How far a figure gets towards its ceiling; 0 when the ceiling was not measured."""
    return value / baseline if baseline > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """Orders of the pipeline phase as the database saw them (seconds, one clock)."""

    orders: int
    processed: int
    first_created_epoch: float
    last_processed_epoch: float
    lags_s: Sequence[float]

    @property
    def orders_per_s(self) -> float:
        """Orders created and processed per second, first creation to last processing."""
        span = self.last_processed_epoch - self.first_created_epoch
        return self.processed / span if span > 0 else 0.0

    def lag_ms(self, fraction: float) -> float:
        return percentile(self.lags_s, fraction) * 1000 if self.lags_s else 0.0


def compute_figures(
    *,
    baseline: WrkResult,
    pgbench_tps: float,
    create: WrkResult,
    get_cached: WrkResult,
    pipeline: PipelineRun,
    peak_rss_mb: Mapping[str, float],
) -> dict[str, float]:
    """The figures `make bench` prints and stores, in the order it prints them."""
    figures: dict[str, float] = {
        "create_orders_per_s": create.ok_per_s,
        "create_p50_ms": create.p50_ms,
        "create_p99_ms": create.p99_ms,
        "get_cached_per_s": get_cached.ok_per_s,
        "get_p99_ms": get_cached.p99_ms,
        "baseline_per_s": baseline.ok_per_s,
        "baseline_p99_ms": baseline.p99_ms,
        "pgbench_tps": pgbench_tps,
        "create_vs_baseline": ratio(create.ok_per_s, baseline.ok_per_s),
        "get_vs_baseline": ratio(get_cached.ok_per_s, baseline.ok_per_s),
        "create_vs_pgbench": ratio(create.ok_per_s, pgbench_tps),
        "pipeline_orders": float(pipeline.processed),
        "pipeline_orders_per_s": pipeline.orders_per_s,
        "pipeline_lag_p50_ms": pipeline.lag_ms(0.50),
        "pipeline_lag_p99_ms": pipeline.lag_ms(0.99),
    }
    for service, megabytes in sorted(peak_rss_mb.items()):
        figures[f"peak_rss_{service}_mb"] = megabytes
    return figures


def format_figure(value: float) -> str:
    """Ratios keep three decimals, larger figures one: enough for figures that drift by %."""
    if value == int(value) and abs(value) >= 1000:
        return str(int(value))
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def figure_lines(figures: Mapping[str, float]) -> list[str]:
    return [f"{name}: {format_figure(value)}" for name, value in figures.items()]


def rounded(figures: Mapping[str, float], digits: int = 3) -> dict[str, float]:
    return {name: round(value, digits) for name, value in figures.items()}


# --- /proc readers (pure: they take the file's text) ----------------------------------------
def vm_hwm_kib(status_text: str) -> int:
    """Peak resident set size (VmHWM) from a /proc/<pid>/status text; 0 if absent."""
    match = _VM_HWM.search(status_text)
    return int(match.group(1)) if match else 0


def parent_pid(stat_text: str) -> int:
    """The parent pid from a /proc/<pid>/stat text (the command name may hold spaces and ')')."""
    fields = stat_text[stat_text.rindex(")") + 2 :].split()
    return int(fields[1])


def descendants(root: int, parents: Mapping[int, int]) -> set[int]:
    """`root` and every process below it, given each pid's parent."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cpu_model(cpuinfo_text: str) -> str:
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"


def mem_total_mb(meminfo_text: str) -> int:
    for line in meminfo_text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def busy_note(load_averages: Iterable[float], cores: int) -> str | None:
    """A warning when the machine was loaded by something else while we measured."""
    worst = max(load_averages, default=0.0)
    if worst >= 0.5 * cores:
        return (
            f"machine busy: 1-minute load average reached {worst:.2f} on {cores} cores "
            "(other work competed for the CPU; absolute figures are pessimistic, ratios less so)"
        )
    return None


def results_document(
    figures: Mapping[str, float], machine: Mapping[str, Any], details: Mapping[str, Any]
) -> dict[str, Any]:
    return {"figures": rounded(figures), "machine": dict(machine), "details": dict(details)}
