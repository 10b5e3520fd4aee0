"""The pure parts of `make bench`'s measurements (bench/harness.py): the framework floor's
figures, vegeta's JSON, the choice of the fixed arrival rate, and the targets table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.harness import (
    TARGETS,
    BenchOutputError,
    OpenLoopResult,
    PipelineRun,
    Rounds,
    Target,
    compute_figures,
    half_rate,
    open_loop_figures,
    parse_vegeta_latencies_ms,
    parse_vegeta_report,
    results_document,
    target_lines,
    target_table,
)

from tests.bench.wrk import wrk_result
from tests.conftest import SettingsFactory

REPO = Path(__file__).parents[2]


def encoded(latencies_ms: list[float], code: int = 200) -> str:
    """Lines as `vegeta encode --to=json` writes them (latency in nanoseconds)."""
    return "".join(
        json.dumps(
            {
                "attack": "",
                "seq": seq,
                "code": code,
                "timestamp": "2026-12-02T07:00:00.000000001Z",
                "latency": int(ms * 1e6),
                "bytes_out": 0,
                "bytes_in": 250,
                "error": "",
                "body": None,
                "method": "GET",
                "url": "http://127.0.0.1:1/orders/x/",
                "headers": {"Content-Type": ["application/json"]},
            }
        )
        + "\n"
        for seq, ms in enumerate(latencies_ms)
    )


def report(
    requests: int, codes: dict[str, int], rate: float = 999.8, max_ns: int = 90_000_000
) -> str:
    """What `vegeta report -type=json` prints (v12), latencies in nanoseconds."""
    return json.dumps(
        {
            "latencies": {
                "total": 1,
                "mean": 1,
                "50th": 1,
                "90th": 1,
                "95th": 1,
                "99th": 1,
                "max": max_ns,
                "min": 1,
            },
            "bytes_in": {"total": 1, "mean": 1.0},
            "bytes_out": {"total": 0, "mean": 0.0},
            "earliest": "2026-12-02T07:00:00Z",
            "latest": "2026-12-02T07:00:05Z",
            "end": "2026-12-02T07:00:05Z",
            "duration": 5_000_000_000,
            "wait": 1_000_000,
            "requests": requests,
            "rate": rate,
            "throughput": rate,
            "success": 1.0,
            "status_codes": codes,
            "errors": [],
        }
    )


# --- the framework floor ------------------------------------------------------------------
def test_floor_figures_pair_each_round_with_its_own_floor() -> None:
    # Round 2 ran while the machine was busy: GET and floor both halved, the ratio did not.
    rounds = Rounds(
        baseline=[],
        get_cached=[wrk_result(2_000), wrk_result(1_000), wrk_result(2_200)],
        create=[],
        pgbench_tps=[],
        get_cpu_s=[10.0, 10.0, 10.0],
        floor=[wrk_result(10_000), wrk_result(5_000), wrk_result(10_000)],
        floor_cpu_s=[20.0, 20.0, 20.0],
    )
    figures = compute_figures(rounds, None, {})
    assert figures["floor_per_s"] == 10_000
    assert figures["get_vs_floor"] == pytest.approx(0.2)
    # 20,000 GETs per 10 CPU-s against 100,000 floor requests per 20 CPU-s.
    assert figures["floor_per_cpu_s"] == pytest.approx(5_000)
    assert figures["get_cpu_vs_floor"] == pytest.approx(0.4)


def test_without_the_floor_there_are_no_floor_figures() -> None:
    figures = compute_figures(Rounds([], [wrk_result(2_000)], [], []), None, {})
    assert not {name for name in figures if "floor" in name}


def test_pipeline_vs_create_is_pipeline_orders_over_created_orders() -> None:
    run = PipelineRun(1_000, 1_000, 100.0, 104.0, [0.1] * 1_000)  # 250 orders/s
    figures = compute_figures(
        Rounds([], [], [wrk_result(500), wrk_result(1_000), wrk_result(400)], []), run, {}
    )
    assert figures["pipeline_vs_create"] == pytest.approx(0.5)


async def test_floor_app_answers_the_get_with_the_given_bytes_and_wants_a_bearer() -> None:
    import httpx
    from bench.floor_app import BODY, app

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://floor") as client:
        answered = await client.get("/orders/abc/", headers={"Authorization": "Bearer x.y.z"})
        assert answered.status_code == 200
        assert answered.content == BODY
        assert answered.headers["content-type"] == "application/json"
        assert (await client.get("/orders/abc/")).status_code == 401


async def test_the_true_floors_read_redis_and_insert_one_order_row(
    make_settings: SettingsFactory,
) -> None:
    """The Redis floor answers the bytes of one GET of its key; the insert floor writes one
    order row per POST through the API's engine and answers 201."""
    import httpx
    from bench.floor_app import BODY, insert_app, redis_app, redis_floor_key
    from redis.asyncio import Redis
    from sqlalchemy import func, select

    from oms.db.models import Order
    from oms.db.session import create_engine
    from tests.pipeline.support import make_user

    settings = await make_settings()
    assert settings.REDIS_URL
    redis = Redis.from_url(settings.REDIS_URL)
    engine = create_engine(settings)
    try:
        key = redis_floor_key(settings.REDIS_KEY_PREFIX)
        await redis.set(key, b'{"from":"redis"}')
        redis_app.state.redis, redis_app.state.key = redis, key
        insert_app.state.engine = engine
        insert_app.state.user_id = await make_user(settings)
        bearer = {"Authorization": "Bearer x.y.z"}
        for app, request in ((redis_app, "GET"), (insert_app, "POST")):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://floor") as client:
                path = "/orders/abc/" if request == "GET" else "/orders/"
                answered = await client.request(request, path, headers=bearer, content=BODY)
                if request == "GET":
                    assert (answered.status_code, answered.content) == (200, b'{"from":"redis"}')
                else:
                    assert answered.status_code == 201
                assert (await client.request(request, path)).status_code == 401
        async with engine.connect() as connection:
            rows = await connection.scalar(
                select(func.count()).where(Order.user_id == insert_app.state.user_id)
            )
        assert rows == 1
    finally:
        await redis.delete(redis_floor_key(settings.REDIS_KEY_PREFIX))
        await redis.aclose()
        await engine.dispose()


# --- vegeta's output ----------------------------------------------------------------------
def test_vegeta_percentiles_come_from_every_result_errors_included() -> None:
    latencies = [1.0] * 990 + [50.0] * 9 + [4_000.0]
    text = encoded(latencies[:500]) + encoded(latencies[500:], code=503)
    result = parse_vegeta_report(report(1_000, {"200": 500, "503": 500}), text, 1_000.0)
    assert result.requests == 1_000
    assert result.ok == 500
    assert result.error_ratio == pytest.approx(0.5)
    assert result.p50_ms == pytest.approx(1.0)
    assert 1.0 < result.p99_ms <= 50.0
    assert 50.0 < result.p999_ms <= 4_000.0
    assert result.max_ms == pytest.approx(90.0)
    assert result.sent_per_s == pytest.approx(999.8)


def test_vegeta_latencies_are_nanoseconds() -> None:
    assert parse_vegeta_latencies_ms(encoded([2.5, 0.25])) == pytest.approx([2.5, 0.25])
    assert parse_vegeta_latencies_ms("\n") == []


def test_vegeta_output_that_is_not_json_is_an_error() -> None:
    with pytest.raises(BenchOutputError, match="vegeta result"):
        parse_vegeta_latencies_ms("Requests [total] 1000\n")
    with pytest.raises(BenchOutputError, match="vegeta JSON report"):
        parse_vegeta_report("{}", encoded([1.0]), 10.0)
    with pytest.raises(BenchOutputError, match="no results"):
        parse_vegeta_report(report(0, {}), "", 10.0)


# --- the rate choice ----------------------------------------------------------------------
def test_half_rate_is_half_of_saturation_in_whole_requests() -> None:
    assert half_rate(3_047.9) == 1_523
    assert half_rate(951.0) == 475
    assert half_rate(292.4, 0.5) == 146
    assert half_rate(1.2) == 1  # never zero: vegeta refuses a rate of 0
    assert half_rate(1_000.0, 0.25) == 250


@pytest.mark.parametrize(("saturation", "fraction"), [(0.0, 0.5), (-3.0, 0.5), (100.0, 0.0)])
def test_half_rate_refuses_what_cannot_be_a_rate(saturation: float, fraction: float) -> None:
    with pytest.raises(ValueError, match=r"saturation|fraction"):
        half_rate(saturation, fraction)


def test_open_loop_figures_name_the_half_rate_runs() -> None:
    get = OpenLoopResult(1_500.0, 12_000, 12_000, 1_499.9, 1.5, 8.0, 20.0, 30.0)
    pipeline = PipelineRun(1_000, 1_000, 0.0, 8.0, [0.05] * 990 + [0.9] * 10)
    figures = open_loop_figures(get, None, pipeline)
    assert figures["get_rate_at_half"] == 1_500
    assert figures["get_p99_ms_at_half"] == 8.0
    assert figures["get_p999_ms_at_half"] == 20.0
    assert figures["get_errors_at_half"] == 0.0
    assert "create_p99_ms_at_half" not in figures
    assert figures["pipeline_lag_p50_ms_at_half"] == pytest.approx(50.0)
    assert 50.0 < figures["pipeline_lag_p99_ms_at_half"] <= 900.0


# --- the targets table --------------------------------------------------------------------
def test_targets_are_the_issues_table() -> None:
    bounds = [(target.figure, target.at_least, target.bound) for target in TARGETS]
    assert bounds == [
        # The third pass: CPU against the true floors, cost per order, tails no worse than
        # the previous pass's quiet run.
        ("get_cpu_vs_redis_floor", False, 2.0),
        ("create_cpu_vs_insert_floor", False, 3.0),
        ("order_cpu_ms_ours", False, 4.0),
        ("get_p99_ms_at_half", False, 7.362),
        ("create_p99_ms_at_half", False, 49.263),
        ("pipeline_lag_p99_ms_at_half", False, 79.427),
        # The earlier pass's, still judged.
        ("get_vs_floor", True, 0.5),
        ("get_cpu_vs_floor", True, 0.5),
        ("create_vs_pgbench", True, 0.3),
        ("pipeline_vs_create", True, 0.6),
        ("get_p99_ms_at_half", False, 10.0),
        ("create_p99_ms_at_half", False, 25.0),
        ("pipeline_lag_p99_ms_at_half", False, 500.0),
        ("peak_rss_api_per_worker_mb", False, 120.0),
    ]


def test_target_verdicts_met_missed_and_not_measured() -> None:
    figures = {"get_vs_floor": 0.5, "get_p99_ms_at_half": 10.5, "create_vs_pgbench": 0.1}
    table = {row["figure"]: row for row in target_table(figures)}
    assert table["get_vs_floor"]["verdict"] == "met"  # the bound itself meets a >= target
    assert table["get_p99_ms_at_half"]["verdict"] == "missed"
    assert table["create_vs_pgbench"]["verdict"] == "missed"
    assert table["pipeline_vs_create"] == {
        "figure": "pipeline_vs_create",
        "target": ">= 0.600",
        "comparison": ">=",
        "bound": 0.6,
        "value": None,
        "verdict": "not measured",
    }
    assert Target("x", False, 10.0).verdict({"x": 10.0}) == "met"


def test_target_lines_print_figure_target_value_verdict() -> None:
    lines = target_lines(target_table({"get_p99_ms_at_half": 3.25}))
    assert len(lines) == len(TARGETS)
    judged = [line.split() for line in lines if line.startswith("get_p99_ms_at_half")]
    assert judged == [
        ["get_p99_ms_at_half", "<=", "7.362", "3.250", "met"],
        ["get_p99_ms_at_half", "<=", "10.0", "3.250", "met"],
    ]


def test_the_results_document_carries_the_targets_next_to_the_figures() -> None:
    document = results_document({"get_vs_floor": 0.61234}, {}, {})
    assert document["figures"] == {"get_vs_floor": 0.612}
    rows = {row["figure"]: row for row in document["targets"]}
    assert rows["get_vs_floor"]["verdict"] == "met"
    assert rows["get_cpu_vs_redis_floor"]["verdict"] == "not measured"


def test_make_bench_builds_the_pinned_vegeta_into_tools() -> None:
    makefile = (REPO / "mk" / "bench.mk").read_text()
    assert "github.com/tsenart/vegeta/v12@$(VEGETA_VERSION)" in makefile
    assert "GOBIN=$(TOOLS)/bin" in makefile
