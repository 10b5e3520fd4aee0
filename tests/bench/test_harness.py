"""The pure parts of `make bench` (bench/harness.py): parsing, percentiles, ratios, figures."""

from __future__ import annotations

import pytest
from bench.harness import (
    BenchOutputError,
    PipelineRun,
    Rounds,
    busy_note,
    compute_figures,
    cpu_by_group,
    cpu_model,
    cpu_ticks,
    descendants,
    figure_lines,
    machine_ticks,
    mem_total_mb,
    parent_pid,
    parse_pgbench_tps,
    parse_wrk_output,
    percentile,
    profile_shares,
    vm_hwm_kib,
)

from tests.bench.wrk import wrk_output, wrk_result


def test_wrk_result_counts_only_successes_as_throughput() -> None:
    parsed = parse_wrk_output(wrk_output(12_000, 5.0, status_errors=2_000))
    assert parsed.ok_requests == 10_000
    assert parsed.ok_per_s == pytest.approx(2_000)
    assert (parsed.p50_ms, parsed.p90_ms, parsed.p99_ms, parsed.max_ms) == (2.5, 6.0, 9.0, 41.0)
    assert parsed.socket_errors == 3
    assert parsed.error_ratio == pytest.approx(2_003 / 12_003)


def test_wrk_output_without_our_marker_is_an_error() -> None:
    with pytest.raises(BenchOutputError, match="WRK_RESULT"):
        parse_wrk_output("Requests/sec: 123.4\n")


def test_the_lua_hook_prints_the_fields_the_parser_reads() -> None:
    from pathlib import Path

    lua = (Path(__file__).parents[2] / "bench" / "wrk" / "common.lua").read_text()
    for field in ('"requests"', '"duration_us"', '"status"', '"timeout"', '"p50"', '"p99"'):
        assert field in lua


def test_pgbench_tps_is_the_figure_without_connection_time() -> None:
    output = (
        "number of transactions actually processed: 29180\n"
        "latency average = 10.966 ms\n"
        "initial connection time = 21.774 ms\n"
        "tps = 2918.066870 (without initial connection time)\n"
    )
    assert parse_pgbench_tps(output) == pytest.approx(2918.066870)
    with pytest.raises(BenchOutputError):
        parse_pgbench_tps("pgbench: error: connection refused\n")


def test_percentile_interpolates_like_percentile_cont() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.99) == pytest.approx(4.96)
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


def test_ratios_pair_each_round_with_its_own_ceiling() -> None:
    # Round 2 ran while the machine was busy: both sides dropped, its ratio did not.
    rounds = Rounds(
        baseline=[wrk_result(10_000), wrk_result(5_000), wrk_result(10_000)],
        get_cached=[wrk_result(1_000), wrk_result(500), wrk_result(1_200)],
        create=[wrk_result(300, 40), wrk_result(150, 90), wrk_result(330, 45)],
        pgbench_tps=[3_000.0, 1_500.0, 3_000.0],
    )
    figures = compute_figures(rounds, None, {"api": 400.25})
    assert figures["get_cached_per_s"] == 1_000
    assert figures["get_vs_baseline"] == pytest.approx(0.1)
    assert figures["create_vs_baseline"] == pytest.approx(0.03)
    assert figures["create_vs_pgbench"] == pytest.approx(0.1)
    assert figures["create_p99_ms"] == 45
    assert figures["peak_rss_api_mb"] == 400.25
    assert "pipeline_orders_per_s" not in figures


def test_skipped_phases_leave_their_figures_and_ratios_out() -> None:
    rounds = Rounds(
        baseline=[], get_cached=[wrk_result(900)], create=[wrk_result(200)], pgbench_tps=[]
    )
    figures = compute_figures(rounds, None, {})
    assert set(figures) == {
        "create_orders_per_s",
        "create_p50_ms",
        "create_p99_ms",
        "get_cached_per_s",
        "get_p99_ms",
    }


def test_pipeline_rate_spans_first_creation_to_last_processing() -> None:
    run = PipelineRun(
        orders=2_000,
        processed=2_000,
        first_created_epoch=100.0,
        last_processed_epoch=104.0,
        lags_s=[0.1] * 1_980 + [2.0] * 20,
    )
    figures = compute_figures(Rounds([], [], [], []), run, {})
    assert figures["pipeline_orders_per_s"] == 500
    assert figures["pipeline_lag_p50_ms"] == pytest.approx(100)
    assert 100 < figures["pipeline_lag_p99_ms"] <= 2_000


def test_figure_lines_are_name_colon_value() -> None:
    lines = figure_lines({"get_vs_baseline": 0.04512, "pgbench_tps": 2918.07, "n": 3000.0})
    assert lines == ["get_vs_baseline: 0.045", "pgbench_tps: 2918.1", "n: 3000"]


def test_proc_readers() -> None:
    status = "Name:\tpython\nVmPeak:\t  500 kB\nVmHWM:\t  423512 kB\nVmRSS:\t 1 kB\n"
    assert vm_hwm_kib(status) == 423_512
    assert vm_hwm_kib("Name:\tkthreadd\n") == 0
    stat = "4242 (celery: worker (main)) S 17 4242 4242 0 -1 4194560 1 0 0 0 150 70 0 0 20 0"
    assert parent_pid(stat) == 17
    assert cpu_ticks(stat) == 220
    assert descendants(1, {2: 1, 3: 2, 4: 9, 5: 3}) == {1, 2, 3, 5}
    assert cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert mem_total_mb("MemTotal:       24684232 kB\n") == 24_105
    assert machine_ticks("cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 1 1 1\n") == (161, 1020)


def test_cpu_is_charged_to_groups_and_new_processes_count_from_zero() -> None:
    before = {1: 100, 2: 50}
    after = {1: 300, 2: 50, 3: 40, 4: 10}
    groups = {1: "api", 3: "api", 4: "postgresql"}
    assert cpu_by_group(before, after, groups, 100) == {"api": 2.4, "postgresql": 0.1}


def test_profile_shares_from_collapsed_stacks() -> None:
    collapsed = (
        "main (app.py:1);handle (app.py:5);query (db.py:10) 6\n"
        "main (app.py:1);handle (app.py:7);render (web.py:3) 3\n"
        "main (app.py:1) 1\n"
    )
    own, inclusive = profile_shares(collapsed)
    assert own["query (db.py)"] == pytest.approx(0.6)
    assert inclusive["handle (app.py)"] == pytest.approx(0.9)
    assert inclusive["main (app.py)"] == 1.0


def test_busy_note_only_when_others_loaded_the_machine() -> None:
    assert busy_note([0.3], 2) is None
    note = busy_note([1.7], 2)
    assert note is not None
    assert "1.70" in note


def test_cost_figures_divide_successes_by_the_servers_own_cpu_seconds() -> None:
    # Round 2: the API got half the CPU (others were busy) and served half as much: same cost.
    rounds = Rounds(
        baseline=[wrk_result(20_000), wrk_result(20_000)],
        get_cached=[wrk_result(1_000), wrk_result(500)],
        create=[wrk_result(300), wrk_result(300)],
        pgbench_tps=[],
        baseline_cpu_s=[5.0, 5.0],
        get_cpu_s=[5.0, 2.5],
        create_cpu_s=[6.0, 0.0],
    )
    figures = compute_figures(rounds, None, {})
    assert figures["baseline_per_cpu_s"] == 40_000
    assert figures["get_per_cpu_s"] == 2_000
    assert figures["get_cpu_vs_baseline"] == pytest.approx(0.05)
    assert figures["create_per_cpu_s"] == pytest.approx(250)  # a run without CPU counts as 0
