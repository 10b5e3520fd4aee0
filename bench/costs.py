"""What a request and an order cost in CPU, against the floors, and the sizing that follows.

Pure functions of their arguments, like bench/harness.py, so tests/bench checks them cheaply:

* CPU-µs per request of a server's process tree, run by run, and the paired ratios against the
  floors measured in the same rounds (`get_cpu_vs_redis_floor`, `create_cpu_vs_insert_floor`);
* CPU-ms per processed order of each component while a fixed number of orders flows through;
* sizing: orders per second per core of each component, cores and replicas for a rate, and the
  backlog per worker replica the operator's `messagesPerReplica` stands for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.harness import Rounds, WrkResult, median

# (figure prefix, label) of every measured path, cheapest first; the floors sit right before
# the path they bound.
REQUEST_PATHS: tuple[tuple[str, str], ...] = (
    ("baseline", "bare ASGI"),
    ("floor", "FastAPI floor"),
    ("redis_floor", "Redis floor"),
    ("get", "cached GET"),
    ("insert_floor", "insert floor"),
    ("create", "create (API + relay)"),
)
# Our processes, then the servers they use: the components of an order's cost.
OUR_COMPONENTS: tuple[str, ...] = ("api", "consumer", "worker")
INFRA_COMPONENTS: tuple[str, ...] = ("postgresql", "redis", "rabbitmq")
COMPONENTS = OUR_COMPONENTS + INFRA_COMPONENTS


def cpu_us_per_request(results: Sequence[WrkResult], cpu_seconds: Sequence[float]) -> list[float]:
    """CPU-µs of the server's process tree per successful request, run by run; NaN for a run
    without successes or without CPU measured (it cannot say what a request costs)."""
    if not cpu_seconds:
        return []
    return [
        seconds * 1e6 / result.ok_requests if result.ok_requests > 0 and seconds > 0 else math.nan
        for result, seconds in zip(results, cpu_seconds, strict=True)
    ]


def finite_median(values: Sequence[float]) -> float | None:
    finite = [value for value in values if math.isfinite(value)]
    return median(finite) if finite else None


def paired_cost_ratio(costs: Sequence[float], floor_costs: Sequence[float]) -> float | None:
    """Median over the rounds of (cost ÷ the floor's cost in the same round): how many floors a
    request costs. Rounds where either side is unknown are left out."""
    ratios = [
        cost / floor
        for cost, floor in zip(costs, floor_costs, strict=True)
        if math.isfinite(cost) and math.isfinite(floor) and floor > 0
    ]
    return median(ratios) if ratios else None


def path_runs(rounds: Rounds) -> dict[str, tuple[Sequence[WrkResult], Sequence[float]]]:
    """Each path's wrk results and server CPU seconds, by figure prefix."""
    return {
        "baseline": (rounds.baseline, rounds.baseline_cpu_s),
        "floor": (rounds.floor, rounds.floor_cpu_s),
        "redis_floor": (rounds.redis_floor, rounds.redis_floor_cpu_s),
        "get": (rounds.get_cached, rounds.get_cpu_s),
        "insert_floor": (rounds.insert_floor, rounds.insert_floor_cpu_s),
        "create": (rounds.create, rounds.create_cpu_s),
    }


def request_cost_figures(rounds: Rounds) -> dict[str, float]:
    """`<path>_cpu_us` for every measured path, the floors' throughput and latency, and the
    ratios of the cached GET and the create to their floors."""
    figures: dict[str, float] = {}
    runs = path_runs(rounds)
    for name in ("redis_floor", "insert_floor"):
        results = runs[name][0]
        if results:
            figures[f"{name}_per_s"] = median([result.ok_per_s for result in results])
            figures[f"{name}_p99_ms"] = median([result.p99_ms for result in results])
    costs = {name: cpu_us_per_request(results, cpu) for name, (results, cpu) in runs.items()}
    for name, _label in REQUEST_PATHS:
        value = finite_median(costs[name])
        if value is not None:
            figures[f"{name}_cpu_us"] = value
    for figure, path, floor in (
        ("get_cpu_vs_redis_floor", "get", "redis_floor"),
        ("create_cpu_vs_insert_floor", "create", "insert_floor"),
        ("get_cpu_vs_framework_floor", "get", "floor"),
    ):
        if costs[path] and costs[floor]:
            value = paired_cost_ratio(costs[path], costs[floor])
            if value is not None:
                figures[figure] = value
    return figures


# --- cost per order ---------------------------------------------------------------------------
def cost_per_order_ms(cpu_seconds: Mapping[str, float], orders: int) -> dict[str, float]:
    """CPU-ms per processed order of each component, from the CPU seconds each used while
    `orders` orders went through (nothing else ran on our services meanwhile)."""
    if orders <= 0:
        raise ValueError("no processed orders to share the CPU among")
    return {
        component: float(cpu_seconds.get(component, 0.0)) * 1000 / orders
        for component in COMPONENTS
    }


def order_cost_figures(costs: Mapping[str, float]) -> dict[str, float]:
    """`order_cpu_ms_<component>` plus the sums: ours (API incl. relay, consumer, worker), the
    servers', and the total."""
    figures = {f"order_cpu_ms_{component}": costs[component] for component in COMPONENTS}
    figures["order_cpu_ms_ours"] = sum(costs[component] for component in OUR_COMPONENTS)
    figures["order_cpu_ms_infra"] = sum(costs[component] for component in INFRA_COMPONENTS)
    figures["order_cpu_ms_total"] = figures["order_cpu_ms_ours"] + figures["order_cpu_ms_infra"]
    return figures


def component_costs(figures: Mapping[str, float]) -> dict[str, float]:
    """The per-order costs back from the figures (those that were measured)."""
    return {
        component: figures[f"order_cpu_ms_{component}"]
        for component in COMPONENTS
        if f"order_cpu_ms_{component}" in figures
    }


# --- /proc: whose PostgreSQL backend is it ----------------------------------------------------
# A backend's title: "postgres: [cluster: ]user database host(port) activity" (or [local]).
_BACKEND_TITLE = re.compile(r"^postgres: (?:\S+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\])")


def postgres_backend_database(cmdline: str) -> str | None:
    """The database of a PostgreSQL backend from its /proc/<pid>/cmdline (NUL-separated or
    not); None for the server's own processes (checkpointer, WAL writer, ...), which every
    database shares."""
    match = _BACKEND_TITLE.match(cmdline.replace("\0", " ").strip())
    return match.group(1) if match else None


# --- sizing -----------------------------------------------------------------------------------
# Plan cores for this share of busy time: queues, and with them latency, grow fast above it.
DEFAULT_UTILISATION = 0.7


def orders_per_core_second(cost_ms: float) -> float:
    """Orders one fully busy core of a component processes per second."""
    return 1000 / cost_ms if cost_ms > 0 else math.inf


def cores_needed(
    rate_per_s: float, cost_ms: float, utilisation: float = DEFAULT_UTILISATION
) -> float:
    """Cores a component needs for `rate_per_s` orders a second, busy `utilisation` of the time."""
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation {utilisation} outside (0, 1]")
    return rate_per_s * cost_ms / 1000 / utilisation


def replicas_needed(
    rate_per_s: float,
    cost_ms: float,
    cores_per_replica: float = 1.0,
    utilisation: float = DEFAULT_UTILISATION,
) -> int:
    """Replicas (each `cores_per_replica` cores) for `rate_per_s` orders a second; at least 1."""
    if cores_per_replica <= 0:
        raise ValueError("a replica needs some CPU")
    cores = cores_needed(rate_per_s, cost_ms, utilisation)
    # A hair of tolerance: 2.0000000001 replicas is 2, not 3.
    return max(1, math.ceil(cores / cores_per_replica - 1e-9))


def sizing_table(
    costs: Mapping[str, float],
    rates: Sequence[int] = (100, 500, 1000),
    utilisation: float = DEFAULT_UTILISATION,
) -> list[str]:
    """The markdown table of docs/sizing.md: per component its CPU-ms per order, orders per
    second per core, and the cores (= 1-core replicas) each rate needs at `utilisation`."""
    rate_columns = " | ".join(f"cores at {rate}/s" for rate in rates)
    lines = [
        f"| Component | CPU-ms per order | orders/s per core | {rate_columns} |",
        "|---|---:|---:|" + "---:|" * len(rates),
    ]
    for component, cost in costs.items():
        cells = " | ".join(
            f"{cores_needed(rate, cost, utilisation):.2f} "
            f"→ {replicas_needed(rate, cost, 1.0, utilisation)}"
            for rate in rates
        )
        lines.append(
            f"| {component} | {cost:.2f} | {orders_per_core_second(cost):,.0f} | {cells} |"
        )
    return lines


@dataclass(frozen=True, slots=True)
class BacklogBounds:
    """What a `messagesPerReplica` backlog means for one worker replica."""

    in_flight: int  # tasks a busy replica holds unacknowledged (concurrency x prefetch)
    within_lag: int  # the backlog one replica clears within the lag budget
    drain_ms_of: Mapping[int, float]  # backlog -> ms one replica needs to clear it


def backlog_bounds(
    worker_cost_ms: float,
    in_flight: int,
    lag_budget_s: float,
    cores_per_replica: float = 1.0,
    backlogs: Sequence[int] = (20,),
) -> BacklogBounds:
    """A sensible `messagesPerReplica` lies between `in_flight` (below it a replica's own
    prefetched tasks ask for another replica) and `within_lag` (above it the operator lets a
    replica's backlog grow past the pipeline's lag budget before adding one)."""
    per_second = orders_per_core_second(worker_cost_ms) * cores_per_replica
    return BacklogBounds(
        in_flight=in_flight,
        within_lag=math.floor(per_second * lag_budget_s),
        drain_ms_of={backlog: backlog / per_second * 1000 for backlog in backlogs},
    )


def cores_for_backlog(backlog: int, worker_cost_ms: float, lag_budget_s: float) -> float:
    """The least CPU (cores) a worker replica needs to clear `backlog` tasks within the lag
    budget: below it, a backlog of messagesPerReplica already breaks the lag target."""
    return backlog * worker_cost_ms / 1000 / lag_budget_s


# --- what `make bench` prints after the figures -----------------------------------------------
# The floor each path is held against, by figure prefix.
FLOOR_OF = {"get": "redis_floor", "create": "insert_floor", "redis_floor": "floor"}
# The pipeline's lag target at half of saturation (p99 ≤ 500 ms): the backlog budget of a replica.
LAG_BUDGET_S = 0.5
# A busy worker replica holds WORKER_CONCURRENCY (2) x prefetch multiplier (1) tasks unacked.
WORKER_IN_FLIGHT = 2
OPERATOR_MESSAGES_PER_REPLICA = 20


def request_cost_lines(figures: Mapping[str, float]) -> list[str]:
    """CPU-µs per request of each path, with its floor beside it."""
    lines = []
    for name, label in REQUEST_PATHS:
        if f"{name}_cpu_us" not in figures:
            continue
        line = f"  {label:<22} {figures[f'{name}_cpu_us']:8.1f} CPU-µs"
        floor = FLOOR_OF.get(name)
        if floor is not None and f"{floor}_cpu_us" in figures:
            line += f"   (floor: {figures[f'{floor}_cpu_us']:.1f})"
        lines.append(line)
    return lines


def report_lines(figures: Mapping[str, float]) -> list[str]:
    """CPU per request beside its floor, cost per order by component, sizing, and what the
    operator's default backlog per replica means at the measured worker cost."""
    lines = []
    if any(f"{name}_cpu_us" in figures for name, _label in REQUEST_PATHS):
        lines += ["CPU per request (server's process tree, median of rounds):"]
        lines += request_cost_lines(figures)
    costs = component_costs(figures)
    if costs:
        lines += ["cost per processed order (CPU-ms), and cores (1-core replicas) at 70 % busy:"]
        lines += [f"  {line}" for line in sizing_table(costs)]
        if "worker" in costs and costs["worker"] > 0:
            bounds = backlog_bounds(
                costs["worker"],
                WORKER_IN_FLIGHT,
                LAG_BUDGET_S,
                backlogs=(OPERATOR_MESSAGES_PER_REPLICA,),
            )
            drain = bounds.drain_ms_of[OPERATOR_MESSAGES_PER_REPLICA]
            cores = cores_for_backlog(OPERATOR_MESSAGES_PER_REPLICA, costs["worker"], LAG_BUDGET_S)
            lines.append(
                f"messagesPerReplica: sensible between {bounds.in_flight} (a busy replica's "
                f"own prefetched tasks) and {bounds.within_lag} (what one 1-core replica clears "
                f"in {LAG_BUDGET_S * 1000:.0f} ms); the default "
                f"{OPERATOR_MESSAGES_PER_REPLICA} is {drain:.0f} ms of a 1-core replica's work "
                f"and stays within {LAG_BUDGET_S * 1000:.0f} ms from {cores:.2f} core per replica"
            )
    return lines
