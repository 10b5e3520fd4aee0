"""Every Grafana dashboard panel on live data: one release on the node, a Prometheus configured
from its ServiceMonitor (tests/e2e/node/monitoring.py), traffic through the ingress, and each
panel's queries run the way Grafana would run them over the test's time range.

No Grafana runs here; what it does with a dashboard is small and public, and `Grafana` below does
the same: each template variable is filled from its own query (`label_values(metric, label)` is
/api/v1/label/<label>/values?match[]=metric over the time range), the release's namespace and
every other variable's "All" selected; `$__interval` is the time range divided by the panel's
width in pixels (or its maxDataPoints), rounded as Grafana rounds it and at least the data
source's scrape interval (the ServiceMonitor's 2 s); `$__rate_interval` is
max($__interval + scrape interval, 4 x scrape interval); every target is a range query at that
step. Each target must return data; a panel that cannot have any on a healthy deployment says
so in its description (`NO_DATA_MARKER`) and only those are let through.

What the panels show is then held against what the test did and what the cluster says: orders
created and processed, the backlog left in `order_tasks` with the workers scaled to zero (as
RabbitMQ counts it), the dead-lettered message, the requests refused by a low rate limit and the
other 4xx answers, the worker replicas (the Deployment's scale, kubectl), the targets up (the
pods of each component), the operator's key rotation and its failed queue poll.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from observability.check_dashboards import all_panels
from tests.cluster.support import REPO, wait_until
from tests.conftest import Account
from tests.e2e.node.monitoring import (
    MONITORED_RELEASE_SETS,
    SCRAPE_INTERVAL_SECONDS,
    release_prometheus,
    seconds_of,
)
from tests.e2e.node.support import COMPONENTS, Release, sign_up, wait_for_pods
from tests.observability.prometheus_server import PrometheusServer
from tests.pipeline.support import (
    assert_processed_exactly_once,
    create_orders,
    eventually,
    order_rows,
    publish,
    queue_depth,
)

# A low limit on one route, so that the rate-limit panel has a refusal to show.
LIST_LIMIT = 3
RELEASE_SETS = (*MONITORED_RELEASE_SETS, f"config.rateLimit.listOrders={LIST_LIMIT}/minute")
# The operator polls every second and scales down 15 s after the backlog is gone; a key rotation
# promotes its staged key 30 s after it starts (test_keys.py: long enough for the kubelet to
# refresh the mounted Secret in every API pod).
RELEASE_SET_JSON = (
    'orderSystem.spec={"workers": {"pollingInterval": "1s", "scaleDownStabilization": "15s"},'
    ' "jwt": {"propagationDelay": "30s"}}',
)
DASHBOARDS = sorted((REPO / "observability" / "dashboards").glob("*.json"))
NO_DATA_MARKER = "No data on a healthy deployment"

STEADY_ORDERS = 40  # created and processed while every worker is up
BACKLOG_ORDERS = 30  # created while the workers are scaled to zero
CANCELED = 5
LISTS = LIST_LIMIT + 2  # two of them refused
ORDERS = STEADY_ORDERS + BACKLOG_ORDERS
MIN_WORKERS = 1  # the chart's orderSystem.workers.minReplicas
MISSING_QUEUE = "oms-dashboards-missing"


# --- what Grafana does with a dashboard ----------------------------------------------------------

# The data source's "scrape interval": what $__interval never goes below and $__rate_interval is
# computed from. kube-prometheus-stack sets the Prometheus data source's to the scrape interval.
SCRAPE_INTERVAL = float(SCRAPE_INTERVAL_SECONDS)
# Grafana gives a panel as many data points as it is wide in pixels: a 1920 px wide screen.
SCREEN_PIXELS = 1920
# Grafana's interval rounding (kbn.round_interval): below the first bound of a row, that row's
# interval, both in milliseconds.
ROUNDED_INTERVALS_MS = (
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
    (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000),
    (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000),
    (1500000, 1200000), (2700000, 1800000), (5400000, 3600000), (9000000, 7200000),
    (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
)  # fmt: skip
# The Prometheus data source never asks for more points than this per series.
MAX_POINTS_PER_SERIES = 11000
# Characters Grafana escapes in a multi-value variable's values (inside a PromQL string: `\\.`).
REGEX_SPECIAL = re.compile(r"([$^*{}\[\]'+?.()|])")
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)")


def round_interval(milliseconds: float) -> float:
    for bound, interval in ROUNDED_INTERVALS_MS:
        if milliseconds < bound:
            return interval
    return 86400000


def grafana_duration(seconds: float) -> str:
    """How Grafana writes an interval into a query (kbn.secondsToHms: the largest unit only)."""
    for unit, size in (("y", 31536000), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            return f"{math.floor(seconds / size)}{unit}"
    return f"{math.floor(seconds * 1000)}ms"


@dataclass(frozen=True)
class Timing:
    """A panel's query parameters for a time range."""

    start: float
    end: float
    step: float
    interval: float
    rate_interval: float
    range_seconds: float


def panel_timing(panel: dict[str, Any], start: float, end: float) -> Timing:
    range_ms = (end - start) * 1000
    pixels = round(panel["gridPos"]["w"] / 24 * SCREEN_PIXELS)
    resolution = int(panel.get("maxDataPoints") or pixels)
    low_limit = seconds_of(panel["interval"].lstrip(">")) if panel.get("interval") else None
    interval = max(round_interval(range_ms / resolution) / 1000, low_limit or SCRAPE_INTERVAL)
    step = max(interval, (end - start) / MAX_POINTS_PER_SERIES)
    rate_interval = max(interval + SCRAPE_INTERVAL, 4 * SCRAPE_INTERVAL)
    # The data source aligns the range to the step, so that refreshes hit the same points.
    aligned_start = math.floor(start / step) * step
    aligned_end = math.floor(end / step) * step
    return Timing(aligned_start, aligned_end, step, interval, rate_interval, end - start)


def substitute(expr: str, values: dict[str, str], timing: Timing | None = None) -> str:
    """A target's expression with the variables filled in as Grafana fills them."""
    if timing is not None:
        builtins = {
            "__rate_interval": grafana_duration(timing.rate_interval),
            "__interval": grafana_duration(timing.interval),
            "__interval_ms": str(round(timing.interval * 1000)),
            "__rate_interval_ms": str(round(timing.rate_interval * 1000)),
            "__range": f"{round(timing.range_seconds)}s",
            "__range_s": str(round(timing.range_seconds)),
            "__range_ms": str(round(timing.range_seconds * 1000)),
        }
        values = {**values, **builtins}

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in values, f"variable ${name} is not defined: {expr}"
        return values[name]

    return VARIABLE.sub(replace, expr)


def regex_value(values: list[str]) -> str:
    escaped = [REGEX_SPECIAL.sub(r"\\\\\1", value) for value in values]
    return escaped[0] if len(escaped) == 1 else f"({'|'.join(escaped)})"


def has_data(series: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(value)) for entry in series for _, value in entry["values"])


def value_at(entry: dict[str, Any], at: float) -> float | None:
    """The point Grafana draws at `at`: the last sample of the series at or before it."""
    before = [float(value) for stamp, value in entry["values"] if float(stamp) <= at]
    return before[-1] if before else None


def integral(entry: dict[str, Any], start: float, end: float, step: float) -> float:
    """Sum of a rate series over [start, end] times the step: the events it accounts for."""
    return sum(
        float(value) * step
        for stamp, value in entry["values"]
        if start <= float(stamp) <= end and not math.isnan(float(value))
    )


@dataclass
class Dashboard:
    path: Path
    document: dict[str, Any]
    variables: dict[str, str] = field(default_factory=dict)
    options: dict[str, list[str]] = field(default_factory=dict)

    @property
    def panels(self) -> list[dict[str, Any]]:
        return [p for p in all_panels(self.document["panels"]) if p.get("type") != "row"]

    def panel(self, title: str) -> dict[str, Any]:
        (found,) = [panel for panel in self.panels if panel["title"] == title]
        return found


@dataclass
class Grafana:
    """A dashboard's queries as Grafana sends them to a Prometheus data source."""

    prometheus: PrometheusServer
    namespace: str
    start: float
    end: float

    async def load(self, path: Path) -> Dashboard:
        dashboard = Dashboard(path, json.loads(path.read_text()))
        for variable in dashboard.document.get("templating", {}).get("list", []):
            name = variable["name"]
            if variable["type"] == "datasource":
                continue  # one Prometheus here: nothing to choose
            assert variable["type"] == "query", f"{path.name}: ${name} of type {variable['type']}"
            options = await self.variable_options(variable, dashboard.variables)
            assert options, f"{path.name}: ${name} has no values: {variable['query']}"
            dashboard.options[name] = options
            if name == "namespace":
                assert self.namespace in options, (name, options)
                dashboard.variables[name] = regex_value([self.namespace])
            elif variable.get("includeAll") and variable.get("allValue"):
                dashboard.variables[name] = str(variable["allValue"])
            else:
                dashboard.variables[name] = regex_value(options)
        return dashboard

    async def variable_options(self, variable: dict[str, Any], chosen: dict[str, str]) -> list[str]:
        query = variable["query"]
        text = str(query.get("query") if isinstance(query, dict) else query)
        match = LABEL_VALUES.fullmatch(text.strip())
        assert match, f"${variable['name']}: only label_values() is emulated: {text}"
        params = {"start": f"{self.start:.3f}", "end": f"{self.end:.3f}"}
        if match["selector"]:
            params["match[]"] = substitute(match["selector"], chosen)
        values: list[str] = await self.prometheus.api(f"label/{match['label']}/values", **params)
        if variable.get("regex"):
            pattern = re.compile(str(variable["regex"]).strip("/"))
            values = [value for value in values if pattern.search(value)]
        return sorted(values)

    def timing(self, panel: dict[str, Any]) -> Timing:
        return panel_timing(panel, self.start, self.end)

    async def target(
        self, dashboard: Dashboard, panel: dict[str, Any], ref: str
    ) -> list[dict[str, Any]]:
        (target,) = [item for item in panel["targets"] if item["refId"] == ref]
        timing = self.timing(panel)
        promql = substitute(target["expr"], dashboard.variables, timing)
        return await self.prometheus.query_range(promql, timing.start, timing.end, timing.step)


# --- the release and what the test does to it ----------------------------------------------------


@dataclass
class Live:
    """What the test did, and when, for the panels to be held against."""

    release: Release
    prometheus: PrometheusServer
    account: Account
    grafana: Grafana | None = None
    marks: dict[str, float] = field(default_factory=dict)
    timeline: list[str] = field(default_factory=list)
    # (method, route template, status) -> requests the test made
    statuses: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    order_ids: list[str] = field(default_factory=list)
    backlog_depth: int = 0
    backlog_replicas: int = -1
    final_replicas: int = -1
    dead_letters: int = 0
    pods: dict[str, int] = field(default_factory=dict)
    dashboards: dict[str, Dashboard] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)  # the suite's terminal summary

    def mark(self, key: str, what: str) -> None:
        self.marks[key] = time.time()
        self.timeline.append(f"{self.marks[key] - self.marks['start']:5.1f} s {what}")

    async def value(self, promql: str, at: float | None = None) -> float | None:
        if at is None:
            return await self.prometheus.value(promql)
        result = (await self.prometheus.api("query", query=promql, time=f"{at:.3f}"))["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    async def wait_value(self, promql: str, wanted: float, timeout: float) -> None:
        async def reached() -> bool:
            return await self.value(promql) == wanted

        await eventually(reached, timeout, interval=0.5, message=f"{promql} == {wanted}")

    def patch_spec(self, spec: dict[str, Any]) -> None:
        patch = json.dumps({"spec": spec})
        self.release.kubectl("patch", "ordersystem", self.release.name, "--type=merge", "-p", patch)

    async def dashboard(self, stem: str) -> Dashboard:
        assert self.grafana is not None
        if stem not in self.dashboards:
            path = REPO / "observability" / "dashboards" / f"{stem}.json"
            self.dashboards[stem] = await self.grafana.load(path)
        return self.dashboards[stem]

    async def panel(self, stem: str, title: str, ref: str = "A") -> list[dict[str, Any]]:
        """What a panel's target draws over the test's time range."""
        assert self.grafana is not None
        dashboard = await self.dashboard(stem)
        return await self.grafana.target(dashboard, dashboard.panel(title), ref)

    def timing(self, stem: str, title: str) -> Timing:
        assert self.grafana is not None
        return self.grafana.timing(self.dashboards[stem].panel(title))

    def counted(self, method: str, route: str, status: int, times: int = 1) -> None:
        self.statuses[(method, route, str(status))] += times


@pytest.fixture(scope="module")
async def live(
    prometheus_crds: list[str],
    release: Release,
    figures: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Live]:
    """The release under traffic and inductions, Prometheus scraping it from before the first
    request; the time range ends once everything has settled."""
    workdir = tmp_path_factory.mktemp("dashboards-prometheus")
    async with release_prometheus(release, workdir) as prometheus:
        started = time.time()
        await every_target_up(release, prometheus)
        async with release.client() as http:
            live = Live(release, prometheus, await sign_up(http), figures=figures)
            live.marks["start"] = started
            live.counted("POST", "/register", 201)
            live.counted("POST", "/token", 200)
            live.mark("steady", "every target up, signed up")
            await steady_traffic(live, http)
            await dead_letter(live)
            await failed_queue_poll(live)
            await backlog(live, http)
            await settle(live)
        live.grafana = Grafana(prometheus, release.namespace, started, live.marks["end"])
        figures.append(f"{release.namespace}, dashboards:\n  " + "\n  ".join(live.timeline))
        yield live


async def every_target_up(release: Release, prometheus: PrometheusServer) -> None:
    """Every pod of the four components scraped: the counters' zero is in Prometheus before
    anything happens."""
    pods = sum(len(release.running_pods(component)) for component in COMPONENTS)

    async def all_up() -> bool:
        targets = await prometheus.targets_up()
        return len(targets) == pods and all(t["health"] == "up" for t in targets)

    await eventually(all_up, 60, interval=0.5, message=f"{pods} targets up")
    await asyncio.sleep(2 * SCRAPE_INTERVAL)  # a second sample of each: rates have a start


async def call(live: Live, http: httpx.AsyncClient, method: str, path: str, route: str,
               expected: int, **kwargs: Any) -> httpx.Response:  # fmt: skip
    """One request through the ingress, tallied by route template and status as the API
    counts it."""
    answer = await http.request(method, path, **kwargs)
    assert answer.status_code == expected, f"{method} {path}: {answer.status_code} {answer.text}"
    live.counted(method, route, answer.status_code)
    return answer


async def steady_traffic(live: Live, http: httpx.AsyncClient) -> None:
    """Orders created, read, canceled and listed with every worker up; a key rotation started;
    the 4xx a client can cause."""
    headers = live.account.headers
    one = "/orders/{order_id}/"
    # A rotation stages a new key now and promotes it 30 s later.
    live.patch_spec({"jwt": {"keySize": 3072}})
    order_ids = await create_orders(http, live.account.token, STEADY_ORDERS)
    live.counted("POST", "/orders/", 201, STEADY_ORDERS)
    live.order_ids += order_ids
    for order_id in order_ids:  # a cache miss, then a hit
        for _ in range(2):
            await call(live, http, "GET", f"/orders/{order_id}/", one, 200, headers=headers)
    await every_order_processed(live, order_ids)
    await assert_processed_exactly_once(live.release.settings(), order_ids)  # before cancels
    live.mark("processed", f"{STEADY_ORDERS} orders created, read twice and processed")
    cancel = {"status": "CANCELED"}
    for order_id in order_ids[:CANCELED]:
        await call(live, http, "PATCH", f"/orders/{order_id}/", one, 200, headers=headers,
                   json=cancel)  # fmt: skip
    # What clients get wrong: a canceled order canceled again, an order that does not exist, no
    # token, an invalid body, and more lists than the limit allows.
    first = f"/orders/{order_ids[0]}/"
    await call(live, http, "PATCH", first, one, 409, headers=headers, json=cancel)
    await call(live, http, "GET", f"/orders/{uuid.uuid4()}/", one, 404, headers=headers)
    await call(live, http, "GET", first, one, 401)
    await call(live, http, "POST", "/orders/", "/orders/", 422, headers=headers, json={})
    lists = f"/orders/user/{live.account.id}"
    for attempt in range(LISTS):
        expected = 200 if attempt < LIST_LIMIT else 429
        await call(live, http, "GET", lists, "/orders/user/{user_id}", expected, headers=headers)
    live.mark("steady_end", f"{CANCELED} canceled, {LISTS} lists, 409/404/401/422/429 answered")


async def every_order_processed(live: Live, order_ids: list[str], timeout: float = 120) -> None:
    settings = live.release.settings()

    async def processed() -> bool:
        rows = await order_rows(settings)
        return all(rows[uuid.UUID(order_id)].processed for order_id in order_ids)

    await eventually(processed, timeout, interval=0.5, message=f"{len(order_ids)} processed")


async def dead_letter(live: Live) -> None:
    """A message no producer of ours would send: the consumer parks it in new_order.dlq."""
    url = live.release.amqp_url()
    await publish(url, b"not an order event")

    async def parked() -> bool:
        return await queue_depth(url, "new_order.dlq") == 1

    await eventually(parked, 30, interval=0.5, message="the message in new_order.dlq")
    live.mark("dead_letter", "an unparseable message published and dead-lettered")


async def failed_queue_poll(live: Live) -> None:
    """The operator told to watch a queue that does not exist: its polls fail (a reconcile
    error of stage `poll`) until the queue list is put back."""
    body = json.loads(live.release.kubectl("get", "ordersystem", live.release.name, "-o", "json"))
    queues = list(body["spec"]["workers"]["queues"])
    live.patch_spec({"workers": {"queues": [*queues, MISSING_QUEUE]}})
    failed = 'sum(oms_operator_reconcile_errors_total{stage="poll"})'
    await eventually(partial(live.value, failed), 30, interval=0.5, message="a failed poll")
    live.patch_spec({"workers": {"queues": queues}})
    await live.wait_value("min(oms_operator_queue_readable)", 1, 30)
    live.mark("poll_error", f"the operator polled a missing queue, then {queues} again")


async def backlog(live: Live, http: httpx.AsyncClient) -> None:
    """Scaling paused and the workers scaled to zero: new orders wait in order_tasks. Then the
    operator takes over again, scales up and the backlog drains."""
    release = live.release
    live.patch_spec({"workers": {"paused": True}})
    release.kubectl("scale", "deployment", release.deployment("worker"), "--replicas=0")
    await asyncio.to_thread(wait_for_pods, release, "worker", lambda n: n == 0, 150)
    live.mark("paused", "scaling paused, workers scaled to 0")
    order_ids = await create_orders(http, live.account.token, BACKLOG_ORDERS)
    live.counted("POST", "/orders/", 201, BACKLOG_ORDERS)
    live.order_ids += order_ids
    url = release.amqp_url()

    async def queued() -> bool:
        return await queue_depth(url, "order_tasks") == BACKLOG_ORDERS

    await eventually(queued, 60, interval=0.5, message=f"{BACKLOG_ORDERS} tasks in order_tasks")
    live.backlog_depth = await queue_depth(url, "order_tasks")
    live.backlog_replicas = release.replicas("worker")
    # What the panels draw from: the consumer polls the queues every 15 s, the operator every
    # second; both are scraped every 2 s.
    for query in (
        f'max(oms_queue_messages{{queue="order_tasks"}}) == {live.backlog_depth}',
        f'max(oms_operator_queue_depth{{queue="order_tasks", state="ready"}})'
        f" == {live.backlog_depth}",
        f"max(oms_operator_current_replicas) == {live.backlog_replicas}",
    ):
        await eventually(partial(present, live, query), 40, interval=0.5, message=query)
    # A point of the panels' step grid after that: the backlog is on the graphs.
    await asyncio.sleep(2 * SCRAPE_INTERVAL)
    live.mark("backlog", f"{live.backlog_depth} tasks queued (RabbitMQ), in Prometheus too")

    live.patch_spec({"workers": {"paused": False}})
    await every_order_processed(live, order_ids, timeout=180)
    live.mark("drained", "scaling resumed, the backlog processed")
    await assert_processed_exactly_once(release.settings(), order_ids)


async def present(live: Live, promql: str) -> bool:
    """Whether a filtering query (`x == 3`) returns a series: true also for a value of 0."""
    return bool(await live.prometheus.query(promql))


async def settle(live: Live) -> None:
    """The workers back at their minimum after the stabilization window, the staged key
    promoted, and a few scrapes of that state."""
    release = live.release

    def at_minimum() -> bool:
        replicas = release.replicas("worker")
        return replicas == MIN_WORKERS and len(release.running_pods("worker")) == replicas

    await asyncio.to_thread(wait_until, at_minimum, 120, 1)
    live.final_replicas = release.replicas("worker")
    current = f"max(oms_operator_current_replicas) == {live.final_replicas}"
    await eventually(partial(present, live, current), 30, interval=0.5, message=current)
    live.mark("scaled_down", f"workers back to {live.final_replicas}")
    promoted = 'sum(oms_operator_key_rotations_total{action="promote"})'
    await eventually(partial(live.value, promoted), 60, interval=1, message="key promoted")
    live.mark("promoted", "the staged key promoted")
    live.pods = {component: len(release.running_pods(component)) for component in COMPONENTS}
    live.dead_letters = await queue_depth(release.amqp_url(), "new_order.dlq")

    async def scraped() -> bool:
        up = await live.prometheus.query("count by (service) (up == 1)")
        return sum(int(float(entry["value"][1])) for entry in up) == sum(live.pods.values())

    await eventually(scraped, 30, interval=0.5, message="every current pod scraped")
    await asyncio.sleep(2 * SCRAPE_INTERVAL)
    live.mark("end", f"settled: pods {live.pods}")


# --- the checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.stem for path in DASHBOARDS])
async def test_every_panel_has_data(live: Live, path: Path) -> None:
    dashboard = await live.dashboard(path.stem)
    assert live.grafana is not None
    empty, excused = [], []
    for panel in dashboard.panels:
        for target in panel["targets"]:
            series = await live.grafana.target(dashboard, panel, target["refId"])
            if has_data(series):
                continue
            where = f"{panel['title']!r} {target['refId']} ({target.get('legendFormat')})"
            if NO_DATA_MARKER in str(panel.get("description", "")):
                excused.append(where)
            else:
                empty.append(f"{where}: {target['expr']}")
    assert not empty, f"{path.name}: panels without data:\n" + "\n".join(empty)
    timing = live.grafana.timing(dashboard.panels[0])
    live.figures.append(
        f"{path.name}: {len(dashboard.panels)} panels with data over"
        f" {timing.range_seconds:.0f} s ($__interval {grafana_duration(timing.interval)},"
        f" $__rate_interval {grafana_duration(timing.rate_interval)}); variables"
        f" {dashboard.options}; excused: {excused or 'none'}"
    )


def highest(entry: dict[str, Any]) -> float:
    return max(float(value) for _, value in entry["values"] if not math.isnan(float(value)))


def by(series: list[dict[str, Any]], **labels: str) -> dict[str, Any]:
    (found,) = [e for e in series if all(e["metric"].get(k) == v for k, v in labels.items())]
    return found


async def test_orders_created_and_processed_are_the_orders_sent(live: Live) -> None:
    end, namespace = live.marks["end"], live.release.namespace
    window = f"{end - live.marks['start']:.0f}s"
    # The counters behind the panel, exactly: every API and worker pod counted from 0 in range
    # (workers that scaled away included: their last value is in the range).
    for counter in ("oms_orders_created_total", "oms_worker_tasks_total"):
        # `outcome` is the worker's label; the created counter has none (matches "").
        selector = f'{counter}{{namespace="{namespace}", outcome=~"processed|"}}'
        total = await live.value(f"sum(max_over_time({selector}[{window}]))", at=end)
        assert total == ORDERS, (counter, total)

    # Summed over time, each rate of the panel is the events it saw: the orders, give or take
    # rate()'s extrapolation to the edges of its window and a missed scrape. The backlog was
    # processed by worker pods that started for it, mostly before their first scrape.
    title = "Orders created vs processed"
    step = live.timing("overview", title).step
    sums = {}
    for ref, what in (
        ("A", "created"),
        ("B", "published"),
        ("C", "dispatched"),
        ("D", "processed"),
    ):
        (series,) = await live.panel("overview", title, ref)
        sums[what] = integral(series, live.marks["start"], end, step)
    summed = ", ".join(f"{what} {seen:.1f}" for what, seen in sums.items())
    live.figures.append(f"{title}: {ORDERS} orders; its rates summed over the range: {summed}")
    for what, seen in sums.items():
        assert ORDERS * 0.75 <= seen <= ORDERS * 1.5, (what, seen)


async def test_the_queue_depth_panels_show_the_backlog(live: Live) -> None:
    at = live.marks["backlog"]
    consumer = by(await live.panel("overview", "Queue depth", "A"), queue="order_tasks")
    operator = by(await live.panel("overview", "Queue depth", "B"), queue="order_tasks")
    operator_view = by(await live.panel("operator", "Queue depth"), queue="order_tasks",
                       state="ready")  # fmt: skip
    seen = [value_at(entry, at) for entry in (consumer, operator, operator_view)]
    live.figures.append(
        f"Queue depth: {live.backlog_depth} tasks in order_tasks (RabbitMQ); the panels"
        f" (consumer, operator, operator dashboard) showed {seen}"
    )
    assert seen == [live.backlog_depth] * 3, (seen, live.backlog_depth)
    assert live.backlog_depth == BACKLOG_ORDERS
    # And empty again once drained.
    assert value_at(operator, live.marks["end"]) == 0


async def test_the_worker_replicas_panel_is_the_deployments_scale(live: Live) -> None:
    replicas = (await live.panel("overview", "Worker replicas", "A"))[0]
    scraped = (await live.panel("overview", "Worker replicas", "C"))[0]
    current = (await live.panel("operator", "Worker replicas", "A"))[0]
    assert live.backlog_replicas == 0
    assert value_at(replicas, live.marks["backlog"]) == 0
    assert value_at(current, live.marks["backlog"]) == 0
    end = live.marks["end"]
    assert value_at(replicas, end) == live.final_replicas == live.release.replicas("worker")
    assert value_at(current, end) == live.final_replicas
    assert value_at(scraped, end) == live.pods["worker"]
    # Scaled up for the backlog in between.
    assert highest(replicas) > live.final_replicas
    live.figures.append(
        f"Worker replicas: {value_at(replicas, live.marks['backlog']):.0f} during the backlog"
        f" (kubectl {live.backlog_replicas}), {highest(replicas):.0f} at most, then"
        f" {value_at(replicas, end):.0f} (kubectl {live.final_replicas})"
    )


async def test_targets_up_are_the_pods_of_each_component(live: Live) -> None:
    end = live.marks["end"]
    up: Counter[str] = Counter()
    for entry in await live.panel("overview", "Targets up"):
        if value_at(entry, end) == 1 and float(entry["values"][-1][0]) >= end - 2 * SCRAPE_INTERVAL:
            up[entry["metric"]["job"]] += 1
    fullname = live.release.name
    live.figures.append(f"Targets up at the end: {dict(up)}; pods {live.pods}")
    assert dict(up) == {f"{fullname}-{c}-metrics": n for c, n in live.pods.items()}, up


async def test_requests_and_client_errors_are_the_requests_sent(live: Live) -> None:
    end = live.marks["end"]
    requests = f'oms_http_requests_total{{namespace="{live.release.namespace}"}}'
    counted = await live.prometheus.api(
        "query", query=f"sum by (method, route, status) ({requests}) > 0", time=f"{end:.3f}"
    )
    seen = {
        (entry["metric"]["method"], entry["metric"]["route"], entry["metric"]["status"]): int(
            float(entry["value"][1])
        )
        for entry in counted["result"]
        if not re.fullmatch("/health.*|/metrics", entry["metric"]["route"])
    }
    assert seen == dict(live.statuses)
    # Each kind of client error, a single request of it for most: on the graph all the same.
    errors = await live.panel("overview", "Errors by route and status")
    for _, route, status in live.statuses:
        if status.startswith("4"):
            assert highest(by(errors, route=route, status=status)) > 0, (route, status)
    limited = by(await live.panel("overview", "Rate limited", "A"), scope="list_orders")
    step = live.timing("overview", "Rate limited").step
    refused_seen = integral(limited, live.marks["start"], end, step)
    live.figures.append(
        f"Rate limited: {LISTS - LIST_LIMIT} refused; its rate summed over the range:"
        f" {refused_seen:.2f}"
    )
    assert refused_seen > 0
    refused = 'sum(oms_rate_limited_requests_total{scope="list_orders"})'
    assert await live.value(refused, at=end) == LISTS - LIST_LIMIT
    availability = (await live.panel("overview", "Availability (30 d)"))[0]
    assert value_at(availability, end) == 1.0


async def test_the_dead_letter_and_operator_panels_show_what_was_induced(live: Live) -> None:
    end = live.marks["end"]
    assert live.dead_letters == 1
    stat = (await live.panel("overview", "Dead letters"))[0]
    assert value_at(stat, end) == live.dead_letters
    moved = by(await live.panel("overview", "Dead-letter queue", "B"), reason="invalid_event")
    assert highest(moved) > 0
    errors = by(await live.panel("operator", "Reconcile errors"), stage="poll")
    assert highest(errors) > 0
    # One of each, in series that did not exist before: exactly 1 on the graph.
    keys = await live.panel("operator", "Key operations")
    assert [highest(by(keys, action=action)) for action in ("stage", "promote")] == [1, 1]
    scaled = await live.panel("operator", "Scale events")
    assert highest(by(scaled, direction="up")) > 0
    assert highest(by(scaled, direction="down")) > 0
    age = value_at((await live.panel("operator", "Signing key age"))[0], end)
    assert age is not None
    assert age <= end - live.marks["steady"]  # the key the test's rotation promoted


def test_intervals_and_variables_as_grafana_computes_them() -> None:
    panel = {"gridPos": {"x": 0, "y": 0, "w": 12, "h": 8}}
    minutes = panel_timing(panel, 1000.0, 1300.0)  # 5 minutes on 960 px: the scrape interval
    assert (minutes.interval, minutes.rate_interval, minutes.step) == (2, 8, 2)
    hours = panel_timing(panel, 0.0, 6 * 3600.0)  # 6 hours: 22.5 s rounds to 20 s
    assert (hours.interval, hours.rate_interval) == (20, 22)
    assert grafana_duration(22) == "22s"
    assert grafana_duration(90) == "1m"
    expr = 'rate(x{namespace=~"$namespace", o=~"${ordersystem}"}[$__rate_interval])'
    values = {"namespace": regex_value(["a.b"]), "ordersystem": regex_value(["x", "y"])}
    assert substitute(expr, values, minutes) == (r'rate(x{namespace=~"a\\.b", o=~"(x|y)"}[8s])')
