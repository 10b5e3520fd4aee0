"""The pure parts of the cost figures (bench/costs.py): CPU per request against the floors,
cost per order, whose PostgreSQL backend is whose, sizing, the targets and the plots' data."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from bench.costs import (
    backlog_bounds,
    component_costs,
    cores_for_backlog,
    cores_needed,
    cost_per_order_ms,
    cpu_us_per_request,
    order_cost_figures,
    orders_per_core_second,
    paired_cost_ratio,
    postgres_backend_database,
    replicas_needed,
    report_lines,
    request_cost_figures,
    sizing_table,
)
from bench.harness import PREVIOUS_PASS_P99_MS, Rounds, target_table
from bench.plots import (
    CPU_PLOT,
    LATENCY_PLOT,
    ORDER_COST_PLOT,
    cpu_bars,
    latency_series,
    order_cost_bars,
    write_plots,
)
from bench.processes import OTHER_DATABASES, ProcessTable

from tests.bench.wrk import wrk_result

REPO = Path(__file__).parents[2]


def test_cpu_per_request_divides_the_servers_cpu_by_its_successes() -> None:
    costs = cpu_us_per_request([wrk_result(1_000), wrk_result(0), wrk_result(500)], [2.0, 1.0, 0.0])
    # 2 CPU-s over 10,000 successes (1,000/s for 10 s) = 200 µs; no successes or no CPU: unknown.
    assert costs[0] == pytest.approx(200)
    assert math.isnan(costs[1])
    assert math.isnan(costs[2])
    assert cpu_us_per_request([wrk_result(1_000)], []) == []


def test_cost_ratios_pair_each_round_with_its_own_floor_and_skip_unknown_rounds() -> None:
    # Round 2 ran on a busy machine: both costs rose by half, its ratio did not move.
    assert paired_cost_ratio([600.0, 900.0, math.nan], [300.0, 450.0, 300.0]) == 2.0
    assert paired_cost_ratio([math.nan], [300.0]) is None


def test_request_cost_figures_hold_each_path_against_its_floor() -> None:
    rounds = Rounds(
        baseline=[wrk_result(20_000)],
        get_cached=[wrk_result(2_000)],
        create=[wrk_result(400)],
        pgbench_tps=[],
        baseline_cpu_s=[5.0],
        get_cpu_s=[6.0],
        create_cpu_s=[4.0],
        floor=[wrk_result(10_000)],
        floor_cpu_s=[7.5],
        redis_floor=[wrk_result(8_000, 12)],
        redis_floor_cpu_s=[10.0],
        insert_floor=[wrk_result(1_000, 30)],
        insert_floor_cpu_s=[4.0],
    )
    figures = request_cost_figures(rounds)
    # wrk_result runs ten seconds: e.g. 2,000 GETs/s is 20,000 GETs for 6 CPU-s, 300 µs each.
    assert figures["baseline_cpu_us"] == pytest.approx(25)
    assert figures["floor_cpu_us"] == pytest.approx(75)
    assert figures["redis_floor_cpu_us"] == pytest.approx(125)
    assert figures["get_cpu_us"] == pytest.approx(300)
    assert figures["insert_floor_cpu_us"] == pytest.approx(400)
    assert figures["create_cpu_us"] == pytest.approx(1_000)
    assert figures["get_cpu_vs_redis_floor"] == pytest.approx(2.4)
    assert figures["create_cpu_vs_insert_floor"] == pytest.approx(2.5)
    assert figures["get_cpu_vs_framework_floor"] == pytest.approx(4.0)
    assert figures["redis_floor_per_s"] == 8_000
    assert figures["insert_floor_p99_ms"] == 30


def test_without_floors_there_are_no_floor_ratios() -> None:
    rounds = Rounds([], [wrk_result(2_000)], [], [], get_cpu_s=[6.0])
    assert request_cost_figures(rounds) == {"get_cpu_us": pytest.approx(300)}


def test_cost_per_order_shares_each_components_cpu_among_the_orders() -> None:
    used = {"api": 6.0, "consumer": 2.0, "worker": 8.0, "postgresql": 1.5, "rabbitmq": 4.0}
    costs = cost_per_order_ms({**used, "other": 30.0, "all_busy": 60.0}, 2_000)
    assert costs == {
        "api": 3.0,
        "consumer": 1.0,
        "worker": 4.0,
        "postgresql": 0.75,
        "redis": 0.0,
        "rabbitmq": 2.0,
    }
    figures = order_cost_figures(costs)
    assert figures["order_cpu_ms_ours"] == 8.0
    assert figures["order_cpu_ms_infra"] == 2.75
    assert figures["order_cpu_ms_total"] == 10.75
    assert component_costs(figures) == costs
    with pytest.raises(ValueError, match="no processed orders"):
        cost_per_order_ms(used, 0)


@pytest.mark.parametrize(
    ("cmdline", "database"),
    [
        ("postgres: 15/main: postgres oms_bench_1a 127.0.0.1(37598) idle\0\0", "oms_bench_1a"),
        ("postgres: app oms [local] SELECT", "oms"),
        ("postgres: postgres test_db_7 ::1(5050) INSERT waiting", "test_db_7"),
        ("postgres: 15/main: walwriter ", None),
        ("postgres: checkpointer", None),
        ("/usr/lib/postgresql/15/bin/postgres\0-D\0/var/lib/postgresql/15/main", None),
    ],
)
def test_a_backends_database_comes_from_its_process_title(
    cmdline: str, database: str | None
) -> None:
    assert postgres_backend_database(cmdline) == database


def test_servers_are_charged_with_their_process_trees_and_other_databases_kept_apart() -> None:
    names = {
        10: "postgres",
        11: "postgres",
        12: "postgres",
        13: "postgres",
        20: "beam.smp",
        21: "erl_child_setup",
        22: "inet_gethost",
        30: "redis-server",
        40: "python",
    }
    parents = {10: 1, 11: 10, 12: 10, 13: 10, 20: 19, 21: 20, 22: 21, 30: 1, 40: 1}
    titles = {
        11: "postgres: 15/main: walwriter ",
        12: "postgres: 15/main: postgres oms_bench_ab 127.0.0.1(1) idle",
        13: "postgres: 15/main: postgres someone_elses 127.0.0.1(2) idle",
    }
    table = ProcessTable(dict.fromkeys(names, 0), names, parents)
    groups = table.server_groups(frozenset({"oms_bench_ab"}), lambda pid: titles.get(pid, ""))
    assert groups == {
        10: "postgresql",
        11: "postgresql",
        12: "postgresql",
        13: OTHER_DATABASES,
        20: "rabbitmq",
        21: "rabbitmq",
        22: "rabbitmq",
        30: "redis",
    }


def test_sizing_maths() -> None:
    assert orders_per_core_second(4.0) == 250
    # 500 orders/s at 4 ms each is 2 busy cores; planned at 70 % busy: 2.86 cores, 3 replicas.
    assert cores_needed(500, 4.0) == pytest.approx(2 / 0.7)
    assert replicas_needed(500, 4.0) == 3
    assert replicas_needed(500, 4.0, cores_per_replica=2.0) == 2
    assert replicas_needed(350, 4.0) == 2  # exactly 2.0 cores: no third replica
    assert replicas_needed(0.1, 4.0) == 1
    with pytest.raises(ValueError, match="utilisation"):
        cores_needed(1, 1, utilisation=0)


def test_sizing_table_has_a_row_per_component_with_cores_and_replicas_per_rate() -> None:
    lines = sizing_table({"worker": 4.0, "redis": 0.25}, rates=(100, 500))
    assert lines[0] == (
        "| Component | CPU-ms per order | orders/s per core | cores at 100/s | cores at 500/s |"
    )
    assert lines[2] == "| worker | 4.00 | 250 | 0.57 → 1 | 2.86 → 3 |"
    assert lines[3] == "| redis | 0.25 | 4,000 | 0.04 → 1 | 0.18 → 1 |"


def test_backlog_bounds_of_a_worker_replica() -> None:
    bounds = backlog_bounds(4.0, in_flight=2, lag_budget_s=0.5, backlogs=(20, 125))
    assert bounds.within_lag == 125  # 250 orders/s for half a second
    assert bounds.drain_ms_of == {20: 80.0, 125: 500.0}
    lines = report_lines({"order_cpu_ms_worker": 4.0, "get_cpu_us": 600, "redis_floor_cpu_us": 300})
    assert "  cached GET                600.0 CPU-µs   (floor: 300.0)" in lines
    assert any("between 2" in line and "and 125" in line and "80 ms" in line for line in lines)
    # 20 tasks of 4 ms within 500 ms: a replica needs at least 0.16 core.
    assert cores_for_backlog(20, 4.0, 0.5) == pytest.approx(0.16)
    assert any("from 0.16 core per replica" in line for line in lines)


def test_new_targets_are_judged_and_stored_with_their_bounds() -> None:
    figures = {"get_cpu_vs_redis_floor": 2.1, "create_cpu_vs_insert_floor": 2.9}
    rows = {row["figure"]: row for row in target_table(figures)}
    assert rows["get_cpu_vs_redis_floor"]["verdict"] == "missed"
    assert rows["create_cpu_vs_insert_floor"]["verdict"] == "met"
    assert rows["order_cpu_ms_ours"]["verdict"] == "not measured"
    assert (rows["order_cpu_ms_ours"]["comparison"], rows["order_cpu_ms_ours"]["bound"]) == (
        "<=",
        4.0,
    )


def test_the_previous_pass_bounds_are_that_pass_s_recorded_figures() -> None:
    previous = json.loads((REPO / "bench" / "results" / "part3-quiet.json").read_text())
    for figure, bound in PREVIOUS_PASS_P99_MS.items():
        assert previous["figures"][figure] == bound


def test_docs_sizing_table_is_the_one_latest_json_gives() -> None:
    """docs/sizing.md shows the table computed from the recorded run, not a stale copy."""
    figures = json.loads((REPO / "bench" / "results" / "latest.json").read_text())["figures"]
    doc = (REPO / "docs" / "sizing.md").read_text()
    table = re.search(r"<!-- sizing-table:begin -->\n(.*?)<!-- sizing-table:end -->", doc, re.S)
    assert table is not None
    assert table.group(1).splitlines() == sizing_table(component_costs(figures))


def test_plot_data() -> None:
    sweep = {
        "get": [
            {"rate_per_s": 900.0, "p50_ms": 2.0, "p99_ms": 9.0, "p999_ms": 20.0},
            {"rate_per_s": 300.0, "p50_ms": 1.0, "p99_ms": 3.0, "p999_ms": 5.0},
        ],
        "create": [],
    }
    series = latency_series(sweep)
    assert list(series) == ["get"]
    assert series["get"].rates == [300.0, 900.0]
    assert series["get"].percentiles_ms["p99"] == [3.0, 9.0]
    figures = {"create_cpu_us": 2000.0, "insert_floor_cpu_us": 800.0, "get_cpu_us": 600.0}
    assert [(bar.label, bar.highlighted) for bar in cpu_bars(figures)] == [
        ("cached GET", True),
        ("insert floor", False),
        ("create (API + relay)", True),
    ]
    costs = order_cost_bars({"order_cpu_ms_rabbitmq": 2.0, "order_cpu_ms_api": 3.0})
    assert [(bar.label, bar.value, bar.highlighted) for bar in costs] == [
        ("api", 3.0, True),
        ("rabbitmq", 2.0, False),
    ]


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    document = {
        "figures": {"get_cpu_us": 600.0, "redis_floor_cpu_us": 300.0, "order_cpu_ms_api": 3.0},
        "details": {
            "when": "now",
            "sweep": {"get": [{"rate_per_s": 1.0, "p50_ms": 1.0, "p99_ms": 2.0, "p999_ms": 3.0}]},
        },
    }
    written = write_plots(document, tmp_path)
    assert sorted(path.name for path in written) == sorted(
        [LATENCY_PLOT, CPU_PLOT, ORDER_COST_PLOT]
    )
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
