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


def median(values: Sequence[float]) -> float:
    return percentile(values, 0.5)


def paired_ratio(values: Sequence[float], ceilings: Sequence[float]) -> float:
    """Median of the per-round ratios: each round's figure against the ceiling measured right
    next to it, so load that other work puts on the machine hits both sides of a ratio."""
    return median([ratio(value, ceiling) for value, ceiling in zip(values, ceilings, strict=True)])


@dataclass(frozen=True)
class Rounds:
    """The interleaved measurements: round i ran baseline[i], get[i], create[i], pgbench[i]
    one right after the other. Empty lists for phases that were skipped."""

    baseline: Sequence[WrkResult]
    get_cached: Sequence[WrkResult]
    create: Sequence[WrkResult]
    pgbench_tps: Sequence[float]
    # CPU seconds the server itself (baseline server, API incl. its relay) used in each run.
    baseline_cpu_s: Sequence[float] = ()
    get_cpu_s: Sequence[float] = ()
    create_cpu_s: Sequence[float] = ()
    # The FastAPI floor (bench/floor_app.py), run in the same rounds, right before the GET.
    floor: Sequence[WrkResult] = ()
    floor_cpu_s: Sequence[float] = ()
    # The true floors, each right before the path it bounds: one Redis GET (before the cached
    # GET) and one INSERT (before the create), same framework and server options.
    redis_floor: Sequence[WrkResult] = ()
    redis_floor_cpu_s: Sequence[float] = ()
    insert_floor: Sequence[WrkResult] = ()
    insert_floor_cpu_s: Sequence[float] = ()


def per_cpu_second(results: Sequence[WrkResult], cpu_seconds: Sequence[float]) -> list[float]:
    """Successful requests per CPU second of the server, run by run: what a request costs,
    whatever share of the machine the server got while other work competed for it. Empty
    when the CPU was not measured."""
    if not cpu_seconds:
        return []
    return [
        result.ok_requests / seconds if seconds > 0 else 0.0
        for result, seconds in zip(results, cpu_seconds, strict=True)
    ]


def compute_figures(
    rounds: Rounds, pipeline: PipelineRun | None, peak_rss_mb: Mapping[str, float]
) -> dict[str, float]:
    """The figures `make bench` prints and stores, in the order it prints them: medians over
    the rounds. A skipped phase leaves out its figures and the ratios that need it."""
    create = [result.ok_per_s for result in rounds.create]
    get_cached = [result.ok_per_s for result in rounds.get_cached]
    baseline = [result.ok_per_s for result in rounds.baseline]
    figures: dict[str, float] = {}
    if create:
        figures["create_orders_per_s"] = median(create)
        figures["create_p50_ms"] = median([result.p50_ms for result in rounds.create])
        figures["create_p99_ms"] = median([result.p99_ms for result in rounds.create])
    if get_cached:
        figures["get_cached_per_s"] = median(get_cached)
        figures["get_p99_ms"] = median([result.p99_ms for result in rounds.get_cached])
    if baseline:
        figures["baseline_per_s"] = median(baseline)
        figures["baseline_p99_ms"] = median([result.p99_ms for result in rounds.baseline])
    floor = [result.ok_per_s for result in rounds.floor]
    if floor:
        figures["floor_per_s"] = median(floor)
    if rounds.pgbench_tps:
        figures["pgbench_tps"] = median(rounds.pgbench_tps)
    if create and baseline:
        figures["create_vs_baseline"] = paired_ratio(create, baseline)
    if get_cached and baseline:
        figures["get_vs_baseline"] = paired_ratio(get_cached, baseline)
    if create and rounds.pgbench_tps:
        figures["create_vs_pgbench"] = paired_ratio(create, rounds.pgbench_tps)
    baseline_cost = per_cpu_second(rounds.baseline, rounds.baseline_cpu_s)
    get_cost = per_cpu_second(rounds.get_cached, rounds.get_cpu_s)
    create_cost = per_cpu_second(rounds.create, rounds.create_cpu_s)
    for name, cost in (
        ("baseline_per_cpu_s", baseline_cost),
        ("get_per_cpu_s", get_cost),
        ("create_per_cpu_s", create_cost),
    ):
        if cost:
            figures[name] = median(cost)
    if get_cost and baseline_cost:
        figures["get_cpu_vs_baseline"] = paired_ratio(get_cost, baseline_cost)
    if get_cached and floor:
        figures["get_vs_floor"] = paired_ratio(get_cached, floor)
    floor_cost = per_cpu_second(rounds.floor, rounds.floor_cpu_s)
    if floor_cost:
        figures["floor_per_cpu_s"] = median(floor_cost)
    if get_cost and floor_cost:
        figures["get_cpu_vs_floor"] = paired_ratio(get_cost, floor_cost)
    if create_cost and baseline_cost:
        figures["create_cpu_vs_baseline"] = paired_ratio(create_cost, baseline_cost)
    if pipeline is not None:
        figures["pipeline_orders"] = float(pipeline.processed)
        figures["pipeline_orders_per_s"] = pipeline.orders_per_s
        figures["pipeline_lag_p50_ms"] = pipeline.lag_ms(0.50)
        figures["pipeline_lag_p99_ms"] = pipeline.lag_ms(0.99)
        if create:
            figures["pipeline_vs_create"] = ratio(pipeline.orders_per_s, median(create))
    for service, megabytes in sorted(peak_rss_mb.items()):
        figures[f"peak_rss_{service}_mb"] = megabytes
    return figures


# --- open loop: a fixed arrival rate (vegeta), so a slow response delays no later request -----
@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    """One vegeta attack: every request sent on schedule, its latency measured whatever
    happened to the ones before it (no coordinated omission)."""

    rate_per_s: float  # the rate asked for
    requests: int
    ok: int  # responses with a 2xx status
    sent_per_s: float  # the rate vegeta achieved (report's `rate`)
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @property
    def error_ratio(self) -> float:
        return (self.requests - self.ok) / self.requests if self.requests else 0.0


def half_rate(saturation_per_s: float, fraction: float = 0.5) -> int:
    """The fixed arrival rate for the open-loop runs: `fraction` of the saturation throughput
    measured in the same run, in whole requests per second, never below 1."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction {fraction} outside (0, 1]")
    if saturation_per_s <= 0 or not math.isfinite(saturation_per_s):
        raise ValueError(f"no saturation throughput to take a share of: {saturation_per_s}")
    return max(1, math.floor(saturation_per_s * fraction))


def parse_vegeta_latencies_ms(encoded: str) -> list[float]:
    """Latencies (ms) of every result in `vegeta encode --to=json` output (one JSON object a
    line, `latency` in nanoseconds). Failed requests keep their latency: dropping them would
    flatter the tail."""
    latencies: list[float] = []
    for line in encoded.splitlines():
        if not line.strip():
            continue
        try:
            latencies.append(float(json.loads(line)["latency"]) / 1e6)
        except (ValueError, KeyError, TypeError) as error:
            raise BenchOutputError(f"not a vegeta result line: {line[:200]}") from error
    return latencies


def parse_vegeta_report(report: str, encoded: str, rate_per_s: float) -> OpenLoopResult:
    """An OpenLoopResult from `vegeta report -type=json` (counts, achieved rate, max) and the
    encoded results (the percentiles, p99.9 included, which the report lacks)."""
    try:
        data = json.loads(report)
        codes: Mapping[str, int] = data.get("status_codes") or {}
        requests = int(data["requests"])
        sent = float(data["rate"])
        max_ms = float(data["latencies"]["max"]) / 1e6
    except (ValueError, KeyError, TypeError) as error:
        raise BenchOutputError(f"not a vegeta JSON report:\n{report[:500]}") from error
    latencies = parse_vegeta_latencies_ms(encoded)
    if not latencies:
        raise BenchOutputError("vegeta recorded no results")
    return OpenLoopResult(
        rate_per_s=rate_per_s,
        requests=requests,
        ok=sum(int(count) for code, count in codes.items() if code.startswith("2")),
        sent_per_s=sent,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        p999_ms=percentile(latencies, 0.999),
        max_ms=max_ms,
    )


def open_loop_figures(
    get: OpenLoopResult | None,
    create: OpenLoopResult | None,
    pipeline: PipelineRun | None,
) -> dict[str, float]:
    """The figures of the fixed-rate runs (each at half of its saturation in the same run)."""
    figures: dict[str, float] = {}
    for name, result in (("get", get), ("create", create)):
        if result is None:
            continue
        figures[f"{name}_rate_at_half"] = result.rate_per_s
        figures[f"{name}_p50_ms_at_half"] = result.p50_ms
        figures[f"{name}_p99_ms_at_half"] = result.p99_ms
        figures[f"{name}_p999_ms_at_half"] = result.p999_ms
        figures[f"{name}_errors_at_half"] = result.error_ratio
    if pipeline is not None and pipeline.lags_s:
        figures["pipeline_lag_p50_ms_at_half"] = pipeline.lag_ms(0.50)
        figures["pipeline_lag_p99_ms_at_half"] = pipeline.lag_ms(0.99)
        figures["pipeline_lag_p999_ms_at_half"] = pipeline.lag_ms(0.999)
    return figures


# --- the targets (API near its framework floor), judged on the figures of one run ------------
@dataclass(frozen=True, slots=True)
class Target:
    figure: str
    at_least: bool  # True: figure >= bound; False: figure <= bound
    bound: float

    def describe(self) -> str:
        return f"{'>=' if self.at_least else '<='} {format_figure(self.bound)}"

    def verdict(self, figures: Mapping[str, float]) -> str:
        if self.figure not in figures:
            return "not measured"
        value = figures[self.figure]
        met = value >= self.bound if self.at_least else value <= self.bound
        return "met" if met else "missed"


# The fixed-rate tails of the previous pass's quiet run (bench/results/part3-quiet.json, the
# latest.json it recorded): a later pass must not make them worse.
PREVIOUS_PASS_P99_MS = {
    "get_p99_ms_at_half": 7.362,
    "create_p99_ms_at_half": 49.263,
    "pipeline_lag_p99_ms_at_half": 79.427,
}

TARGETS: tuple[Target, ...] = (
    # What a request and an order may cost against the true floors (CPU, the steady figure on
    # a shared machine).
    Target("get_cpu_vs_redis_floor", False, 2.0),
    Target("create_cpu_vs_insert_floor", False, 3.0),
    Target("order_cpu_ms_ours", False, 4.0),
    *(Target(figure, False, bound) for figure, bound in PREVIOUS_PASS_P99_MS.items()),
    # The previous pass's targets, still judged.
    Target("get_vs_floor", True, 0.5),
    Target("get_cpu_vs_floor", True, 0.5),
    Target("create_vs_pgbench", True, 0.3),
    Target("pipeline_vs_create", True, 0.6),
    Target("get_p99_ms_at_half", False, 10.0),
    Target("create_p99_ms_at_half", False, 25.0),
    Target("pipeline_lag_p99_ms_at_half", False, 500.0),
    Target("peak_rss_api_per_worker_mb", False, 120.0),
)


def target_table(
    figures: Mapping[str, float], targets: Sequence[Target] = TARGETS
) -> list[dict[str, Any]]:
    """One row per target: figure, target, measured value (None if not measured), verdict."""
    return [
        {
            "figure": target.figure,
            "target": target.describe(),
            "comparison": ">=" if target.at_least else "<=",
            "bound": target.bound,
            "value": round(figures[target.figure], 3) if target.figure in figures else None,
            "verdict": target.verdict(figures),
        }
        for target in targets
    ]


def target_lines(table: Sequence[Mapping[str, Any]]) -> list[str]:
    width = max((len(str(row["figure"])) for row in table), default=0)
    lines = []
    for row in table:
        value = "-" if row["value"] is None else format_figure(float(row["value"]))
        lines.append(f"{row['figure']:<{width}}  {row['target']:<8}  {value:>10}  {row['verdict']}")
    return lines


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
    return {
        "figures": rounded(figures),
        "targets": target_table(figures),
        "machine": dict(machine),
        "details": dict(details),
    }


# --- profiles (py-spy's collapsed "raw" format: `frame;frame;... count` per line) ------------
_LINE_NUMBER = re.compile(r":\d+\)$")


def _function(frame: str) -> str:
    return _LINE_NUMBER.sub(")", frame.strip())


def profile_shares(collapsed: str) -> tuple[dict[str, float], dict[str, float]]:
    """Share of samples per function: (self, inclusive), each in [0, 1]; idle frames count."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for function in set(frames):
            inclusive[function] = inclusive.get(function, 0) + count
    if total == 0:
        return {}, {}
    return (
        {name: count / total for name, count in own.items()},
        {name: count / total for name, count in inclusive.items()},
    )


def top_shares(shares: Mapping[str, float], count: int) -> list[str]:
    ranked = sorted(shares.items(), key=lambda item: item[1], reverse=True)[:count]
    return [f"{share * 100:5.1f}%  {name}" for name, share in ranked]


# --- CPU accounting: who used the cores during a phase --------------------------------------
def cpu_ticks(stat_text: str) -> int:
    """utime + stime (clock ticks) from a /proc/<pid>/stat text."""
    fields = stat_text[stat_text.rindex(")") + 2 :].split()
    # After the command: state(0) ppid(1) ... utime(11) stime(12).
    return int(fields[11]) + int(fields[12])


def command_name(stat_text: str) -> str:
    return stat_text[stat_text.index("(") + 1 : stat_text.rindex(")")]


def cpu_by_group(
    before: Mapping[int, int],
    after: Mapping[int, int],
    group_of: Mapping[int, str],
    ticks_per_second: int,
) -> dict[str, float]:
    """CPU seconds used between two snapshots ({pid: ticks}), summed per group of pids.
    Processes that started in between count from zero; ones that ended are lost."""
    used: dict[str, float] = {}
    for pid, ticks in after.items():
        delta = ticks - before.get(pid, 0)
        if delta > 0:
            group = group_of.get(pid, "other")
            used[group] = used.get(group, 0.0) + delta / ticks_per_second
    return {group: round(seconds, 2) for group, seconds in sorted(used.items())}


def machine_ticks(proc_stat_text: str) -> tuple[int, int]:
    """(busy, idle) clock ticks of all cores together, from /proc/stat's `cpu` line."""
    for line in proc_stat_text.splitlines():
        if line.startswith("cpu "):
            values = [int(value) for value in line.split()[1:]]
            user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
            return user + nice + system + irq + softirq + steal, idle + iowait
    raise BenchOutputError("no cpu line in /proc/stat")
