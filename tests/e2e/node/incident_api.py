"""The API's, the dead-letter and the service-down alerts on the deployed system: each one induced
by the real failure it is about, seen `pending` then `firing` by a Prometheus configured from
the release's own ServiceMonitor and PrometheusRules, and back to inactive once the failure is
undone the way its runbook says.

Traffic is open-loop, as real clients are: requests start at a steady pace through the ingress
whatever the earlier ones take (a closed loop would slow down with the system and hide how many
requests a slow database really delays).

1. PostgreSQL stalls: its container frozen (the node's cgroup freezer, as `docker pause`)
   for 0.8 s of every 1.1 s, as an I/O freeze would. Requests still succeed, but those that
   meet a stall wait for it: OmsApiLatencyBudgetBurnFast and Slow fire, the error alerts stay
   quiet. The stalls are shorter than the readiness checks' timeouts, so every pod stays in its
   Service. At the same time a producer publishes an unparseable message to `new_order`: the
   consumer moves it to `new_order.dlq` (OmsDeadLetterQueueNotEmpty). The runbook's fix: the
   letter is unusable, so it is discarded (`rabbitmqctl purge_queue`).
2. A hung worker, then a read-only database. The worker's container is frozen: its scrape
   fails (OmsServiceDown) and orders pile up in `order_tasks`.
   PostgreSQL then turns read-only (`default_transaction_read_only`, what a fail-over to a
   standby or a full disk does): SELECTs work, so every API pod stays ready, but creating an
   order fails with a 5xx (OmsApiHighErrorRate, OmsApiErrorBudgetBurnFast and Slow). The worker
   thawed meets the backlog with a database it cannot write: each task fails
   its retries and is dead-lettered (OmsWorkerTasksFailing, OmsDeadLetterQueueNotEmpty). The
   database writable again and `oms dlq replay` run in an API pod, every order is processed
   exactly once and everything resolves.
3. PostgreSQL stops answering altogether (frozen until thawed), right after the traffic stops.
   The API's readiness probe checks the database, so every API pod leaves its Service and the
   ingress answers clients itself (404): none of that reaches the API's metrics, and none of
   the alerts above goes off. The probes' own failures do: OmsApiNotReady. The runbook's checks
   (no ready endpoint, the probe's answer naming the database) are run; PostgreSQL thawed, the
   pods come back, the alert clears, and every order accepted before, those still in the
   pipeline at the freeze too, is processed exactly once.

Time runs 30 times faster for the rules (`compress_time`): every `for:` and range window, with a
floor of three evaluation intervals. Thresholds are the chart's. The consumer's queue poll
(15 s) and the retry delay of the worker's task (1 s here, `config.pipeline.
taskRetryDelaySeconds`; 60 s by default) are real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tests.conftest import Account
from tests.e2e.node.monitoring import (
    MONITORED_RELEASE_SETS,
    SCRAPE_INTERVAL_SECONDS,
    alert_first_seen,
    compress_time,
    release_prometheus,
    wait_for_alert,
)
from tests.e2e.node.support import (
    Release,
    all_of,
    create_order,
    open_loop,
    sign_up,
    wait_for_pods,
)
from tests.observability.prometheus_server import PrometheusServer
from tests.pipeline.support import (
    ORDER_BODY,
    assert_processed_exactly_once,
    eventually,
    order_rows,
    publish,
    queue_depth,
)

# The release needs the ServiceMonitor and PrometheusRule CRDs before it is installed.
INDUCED = (
    "OmsApiHighErrorRate",
    "OmsApiErrorBudgetBurnFast",
    "OmsApiErrorBudgetBurnSlow",
    "OmsApiLatencyBudgetBurnFast",
    "OmsApiLatencyBudgetBurnSlow",
    "OmsDeadLetterQueueNotEmpty",
    "OmsWorkerTasksFailing",
    "OmsServiceDown",
    "OmsApiNotReady",
)
ERROR_ALERTS = ("OmsApiHighErrorRate", "OmsApiErrorBudgetBurnFast", "OmsApiErrorBudgetBurnSlow")
LATENCY_ALERTS = ("OmsApiLatencyBudgetBurnFast", "OmsApiLatencyBudgetBurnSlow")
DLQ = "OmsDeadLetterQueueNotEmpty"
TASKS_FAILING = "OmsWorkerTasksFailing"
SERVICE_DOWN = "OmsServiceDown"
NOT_READY = "OmsApiNotReady"

FACTOR = 30
EVALUATION_INTERVAL = SCRAPE_INTERVAL_SECONDS
RULES_CLOCK = compress_time(FACTOR, floor_seconds=3 * EVALUATION_INTERVAL)
TASK_RETRY_DELAY_SECONDS = 1
RELEASE_SETS = (
    *MONITORED_RELEASE_SETS,
    f"config.pipeline.taskRetryDelaySeconds={TASK_RETRY_DELAY_SECONDS}",
)

REQUESTS_PER_SECOND = 10
READS_EVERY = 4  # one request in four reads an order, the others create one
# Shorter than PostgreSQL's own readiness probe allows (pg_isready within 1 s): a pod taken out
# of its Service would be an outage, not a slow database. The period is no divisor of that
# probe's 2 s, so no two probes in a row meet the start of a stall.
STALL_SECONDS = 0.8
BETWEEN_STALLS_SECONDS = 0.3
SLO_SECONDS = 0.5
BACKLOG = 5  # tasks waiting for the hung worker before the database turns read-only
DEAD_LETTER_QUEUE = "new_order.dlq"
ENDPOINT_ADDRESSES = "jsonpath={.subsets[*].addresses[*].ip}"  # the ready ones
# docs/runbooks.md#oms-api-not-ready: the readiness answer from inside an API pod, whatever its
# status (the image has no curl).
READY_CHECK = (
    "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8000, timeout=5);"
    " c.request('GET', '/health/ready'); a = c.getresponse(); print(a.status, a.read().decode())"
)


# --- alert life cycles ----------------------------------------------------------------------------


@dataclass
class Cycle:
    """One alert's life on the timeline (epoch seconds)."""

    alert: str
    failure: str
    induced: float
    pending: float = math.nan
    firing: float = math.nan
    undone: float = math.nan
    inactive: float = math.nan
    labels: list[dict[str, str]] = field(default_factory=list)

    def row(self) -> str:
        return (
            f"{self.alert:28} {self.failure:26} pending {self.pending - self.induced:4.0f} s,"
            f" firing {self.firing - self.induced:4.0f} s after the failure began; inactive"
            f" {self.inactive - self.undone:4.0f} s after it was undone"
        )


async def fires(
    prometheus: PrometheusServer,
    cycle: Cycle,
    timeout: float,
    labels: dict[str, str] | None = None,
) -> None:
    """Wait for the alert to fire; it must have been pending first, after its induction."""
    active = await wait_for_alert(prometheus, cycle.alert, "firing", timeout, labels=labels)
    cycle.labels = [entry["labels"] for entry in active if entry["state"] == "firing"]
    seen = await alert_first_seen(prometheus, cycle.alert, cycle.induced)
    assert {"pending", "firing"} <= set(seen), f"{cycle.alert}: states seen {seen}"
    cycle.pending, cycle.firing = seen["pending"], seen["firing"]
    assert cycle.induced < cycle.pending < cycle.firing, cycle


async def resolves(prometheus: PrometheusServer, cycle: Cycle, timeout: float) -> None:
    await wait_for_alert(prometheus, cycle.alert, None, timeout)
    cycle.inactive = time.time()


async def quiet(prometheus: PrometheusServer, alerts: tuple[str, ...], since: float) -> None:
    """None of these alerts has been pending or firing since `since`."""
    for alert in alerts:
        assert await alert_first_seen(prometheus, alert, since) == {}, f"{alert} went off"


# --- open-loop traffic ----------------------------------------------------------------------------


@dataclass
class Answer:
    method: str
    started: float  # epoch seconds
    seconds: float
    status: int  # 0: no answer (connection error, timeout)
    order_id: str | None = None


@dataclass
class Traffic:
    answers: list[Answer] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[Answer]:
        return [answer for answer in self.answers if start <= answer.started < end]

    @property
    def created(self) -> list[str]:
        return [answer.order_id for answer in self.answers if answer.order_id is not None]


@contextlib.asynccontextmanager
async def paced_traffic(release: Release, account: Account) -> AsyncIterator[Traffic]:
    """Open-loop requests through the ingress: mostly `POST /orders/`, one in READS_EVERY the
    account's latest orders (a read the database answers: single orders would come from the
    cache)."""
    traffic = Traffic()

    async def one(http: httpx.AsyncClient, tick: int) -> None:
        read = tick % READS_EVERY == 0
        started, clock = time.time(), time.monotonic()
        method = "GET" if read else "POST"
        try:
            if read:
                answer = await http.get(
                    f"/orders/user/{account.id}", params={"limit": 10}, headers=account.headers
                )
            else:
                answer = await http.post("/orders/", json=ORDER_BODY, headers=account.headers)
        except httpx.HTTPError:
            traffic.answers.append(Answer(method, started, time.monotonic() - clock, 0))
            return
        created = str(answer.json()["id"]) if answer.status_code == 201 else None
        traffic.answers.append(
            Answer(method, started, time.monotonic() - clock, answer.status_code, created)
        )

    async with open_loop(release, REQUESTS_PER_SECOND, one):
        yield traffic


def summary(answers: list[Answer]) -> str:
    statuses: dict[str, int] = {}
    for answer in answers:
        key = f"{answer.method} {answer.status}"
        statuses[key] = statuses.get(key, 0) + 1
    slow = sum(answer.seconds > SLO_SECONDS for answer in answers)
    share = slow / len(answers) if answers else 0.0
    return f"{len(answers)} requests, {share:.0%} over {SLO_SECONDS} s, {statuses}"


# --- the failures ---------------------------------------------------------------------------------


async def kubectl(release: Release, *args: str) -> str:
    """kubectl off the event loop: the traffic and the alert polls keep their pace meanwhile."""
    return await asyncio.to_thread(release.kubectl, *args)


async def container_id(release: Release, selector: str) -> str:
    """The container of the one pod the label selector matches."""
    (pod,) = json.loads(await kubectl(release, "get", "pods", "-l", selector, "-o", "json"))[
        "items"
    ]
    (status,) = pod["status"]["containerStatuses"]
    return str(status["containerID"]).removeprefix("containerd://")


CGROUPS = Path("/sys/fs/cgroup")


def freezer(container: str) -> tuple[Path, str, str]:
    """The node's freezer control of a container (cgroup v1 `freezer.state`, or v2
    `cgroup.freeze`), with the values that freeze and thaw it."""
    if (CGROUPS / "freezer").is_dir():
        for path in (CGROUPS / "freezer").rglob(f"*{container}*"):
            if (path / "freezer.state").is_file():
                return path / "freezer.state", "FROZEN", "THAWED"
    for path in CGROUPS.rglob(f"*{container}*"):
        if (path / "cgroup.freeze").is_file():
            return path / "cgroup.freeze", "1", "0"
    raise AssertionError(f"no freezer cgroup for container {container} under {CGROUPS}")


@dataclass
class Freezer:
    """A container's processes frozen and thawed at once through the node's cgroup freezer."""

    control: Path
    frozen: str
    thawed: str

    @classmethod
    async def of(cls, release: Release, selector: str) -> Freezer:
        return cls(*freezer(await container_id(release, selector)))

    def freeze(self) -> None:
        self.control.write_text(self.frozen)

    def thaw(self) -> None:
        self.control.write_text(self.thawed)


@contextlib.asynccontextmanager
async def postgresql_stalls(release: Release) -> AsyncIterator[list[float]]:
    """PostgreSQL frozen for STALL_SECONDS of every STALL_SECONDS + BETWEEN_STALLS_SECONDS, on a
    clock of its own: a thread keeps the pace whatever the test's event loop is doing, and
    thaws it on the way out. Yields the stalls' actual lengths."""
    postgresql = await Freezer.of(release, "app.kubernetes.io/name=postgresql")
    stop = threading.Event()
    lengths: list[float] = []

    def stall() -> None:
        period = STALL_SECONDS + BETWEEN_STALLS_SECONDS
        began = time.monotonic()
        try:
            while not stop.is_set():
                postgresql.freeze()
                froze = time.monotonic()
                stop.wait(STALL_SECONDS)
                postgresql.thaw()
                lengths.append(time.monotonic() - froze)
                # The next stall on the schedule, however long the writes took.
                stop.wait(period - (time.monotonic() - began) % period)
        finally:
            postgresql.thaw()

    stalling = threading.Thread(target=stall, name="postgresql-stalls", daemon=True)
    stalling.start()
    try:
        yield lengths
    finally:
        stop.set()
        await asyncio.to_thread(stalling.join, 10)


async def psql(release: Release, *statements: str) -> str:
    """Statements as PostgreSQL's superuser, from inside its pod (each its own transaction)."""
    argv = ["exec", "deploy/postgresql", "--", "psql", "-h", "/var/run/postgresql"]
    argv += ["-U", "oms", "-d", "order_db", "-v", "ON_ERROR_STOP=1", "-tA"]
    for statement in statements:
        argv += ["-c", statement]
    return await kubectl(release, *argv)


async def read_only(release: Release, on: bool) -> None:
    """Every session's transactions read-only (or not) from now on, as after a fail-over to a
    standby: a reload applies the setting to the running sessions too."""
    change = (
        "ALTER SYSTEM SET default_transaction_read_only = on"
        if on
        else "ALTER SYSTEM RESET default_transaction_read_only"
    )
    await psql(release, change, "SELECT pg_reload_conf()")


async def wait_for_targets(prometheus: PrometheusServer, release: Release) -> None:
    """Every component's /metrics scraped successfully."""
    jobs = {f"{release.deployment(c)}-metrics" for c in ("api", "consumer", "worker", "operator")}

    async def all_up() -> bool:
        targets = await prometheus.targets_up()
        healthy = {t["labels"].get("job") for t in targets if t.get("health") == "up"}
        return jobs <= healthy

    await eventually(all_up, timeout=90, interval=1, message="every component scraped")


async def answered_by_ingress(release: Release) -> str | None:
    """The ingress's answer to GET /health when it answers by itself (every API answer carries
    an X-Request-ID), else None."""
    async with release.client(timeout=5) as http:
        answer = await http.get("/health")
    if "x-request-id" in answer.headers:
        return None
    return f"{answer.status_code} {answer.text.strip()!r}"


async def processed(release: Release, order_ids: list[str]) -> bool:
    rows = await order_rows(release.settings())
    return all(rows[uuid.UUID(order_id)].processed for order_id in order_ids)


# --- the incident ---------------------------------------------------------------------------------


async def api_incident(release: Release, tmp_path: Path) -> None:
    """The three failures above on `release` (installed with RELEASE_SETS), each alert seen
    pending, firing and resolved. Freezes containers through the node's cgroups: needs the node
    of this host."""
    cycles: dict[str, Cycle] = {}
    notes: list[str] = []
    origin = time.time()

    def note(what: str) -> None:
        notes.append(f"{time.time() - origin:6.0f} s  {what}")

    def induce(failure: str, *alerts: str) -> float:
        now = time.time()
        for alert in alerts:
            cycles[alert] = Cycle(alert, failure, now)
        return now

    def undo(*alerts: str) -> None:
        for alert in alerts:
            cycles[alert].undone = time.time()

    async with release.client() as http:
        account = await sign_up(http)
        known_order = await create_order(http, account)
    async with release_prometheus(release, tmp_path / "prometheus", transform=RULES_CLOCK) as prom:
        async with paced_traffic(release, account) as traffic:
            await wait_for_targets(prom, release)

            async def healthy() -> bool:
                slow = await prom.value("oms:sli_http_slow:ratio_rate5m")
                errors = await prom.value("oms:sli_http_errors:ratio_rate5m")
                return slow is not None and errors == 0

            await eventually(healthy, timeout=60, interval=1, message="traffic in the SLIs")
            await quiet(prom, INDUCED, origin)
            note(f"healthy: every target up, traffic in the SLIs ({summary(traffic.answers)})")

            # --- 1. PostgreSQL stalls; an unparseable message ---------------------------------
            stalls_began = induce("PostgreSQL stalls", *LATENCY_ALERTS)
            induce("an unparseable message", DLQ)
            await publish(release.amqp_url(), b"not an order.created event")
            note("an unparseable message published to new_order")
            async with postgresql_stalls(release) as stalls:
                period = STALL_SECONDS + BETWEEN_STALLS_SECONDS
                note(f"PostgreSQL stalls: {STALL_SECONDS} s stopped every {period} s")
                await all_of(
                    *(fires(prom, cycles[alert], timeout=120) for alert in LATENCY_ALERTS),
                    fires(prom, cycles[DLQ], timeout=90),
                )
            undo(*LATENCY_ALERTS)
            stalls_ended = time.time()
            during_stalls = traffic.between(stalls_began, stalls_ended)
            note(
                f"PostgreSQL running again after {len(stalls)} stalls of {min(stalls):.2f}"
                f"-{max(stalls):.2f} s; during them: {summary(during_stalls)}"
            )
            # Slow, not failing: every request answered, none with an error.
            assert {answer.status for answer in during_stalls} <= {200, 201}, summary(during_stalls)
            await quiet(prom, ERROR_ALERTS, stalls_began)
            latency_resolved = asyncio.create_task(
                all_of(*(resolves(prom, cycles[alert], timeout=150) for alert in LATENCY_ALERTS))
            )

            api = f"deploy/{release.deployment('api')}"
            letters = await kubectl(release, "exec", api, "--", "oms", "dlq", "list")
            assert "not an order.created event" in letters, letters
            note(f"oms dlq list: {letters.strip()}")
            rabbitmq = await kubectl(
                release, "get", "pods", "-l", "app.kubernetes.io/name=rabbitmq", "-o", "name"
            )
            await kubectl(
                release,
                "exec",
                rabbitmq.strip(),
                "--",
                "rabbitmqctl",
                "purge_queue",
                DEAD_LETTER_QUEUE,
            )
            undo(DLQ)
            note("new_order.dlq purged (the letter is unusable)")
            await resolves(prom, cycles[DLQ], timeout=60)
            first_dlq = cycles.pop(DLQ)

            # --- 2. a hung worker, then a read-only database ----------------------------------
            (worker,) = release.running_pods("worker")
            worker_job = f"{release.deployment('worker')}-metrics"
            hung = await Freezer.of(release, release.selector("worker"))
            induce("worker hung", SERVICE_DOWN)
            hung.freeze()
            try:
                note(f"worker {worker} frozen")

                async def backlog() -> bool:
                    return await queue_depth(release.amqp_url(), "order_tasks") >= BACKLOG

                await eventually(
                    backlog, timeout=60, interval=0.5, message=f"{BACKLOG} tasks waiting"
                )
                read_only_began = induce("PostgreSQL read-only", *ERROR_ALERTS, TASKS_FAILING, DLQ)
                await read_only(release, True)
                note("PostgreSQL read-only")
                await fires(prom, cycles[SERVICE_DOWN], timeout=90, labels={"job": worker_job})
                assert {labels["pod"] for labels in cycles[SERVICE_DOWN].labels} == {worker}
            finally:
                hung.thaw()
            undo(SERVICE_DOWN)
            note("worker thawed")
            await all_of(
                resolves(prom, cycles[SERVICE_DOWN], timeout=60),
                *(fires(prom, cycles[alert], timeout=120) for alert in ERROR_ALERTS),
                fires(prom, cycles[TASKS_FAILING], timeout=90),
                fires(prom, cycles[DLQ], timeout=90),
            )
            routes = {labels["route"] for labels in cycles["OmsApiHighErrorRate"].labels}
            assert routes == {"/orders/"}, routes  # the writes; reads kept working
            # The API never left its Service: the 5xx are its own (and in its metrics).
            assert release.running_pods("api"), "API pods left the Service"
            listed = await kubectl(release, "exec", api, "--", "oms", "dlq", "list")
            failed = [line for line in listed.splitlines() if "processing failed after" in line]
            assert failed, listed
            assert all("processing failed after 4 attempts" in line for line in failed), listed
            note(f"oms dlq list: {len(failed)} letters, e.g. {failed[0]}")

            await read_only(release, False)
            undo(*ERROR_ALERTS)
            note("PostgreSQL writable again")
            replayed = await kubectl(release, "exec", api, "--", "oms", "dlq", "replay")
            undo(TASKS_FAILING, DLQ)
            note(f"oms dlq replay: {replayed.strip()}")
            during_read_only = traffic.between(
                read_only_began, cycles["OmsApiHighErrorRate"].undone
            )
            note(f"while read-only: {summary(during_read_only)}")
            await all_of(
                *(resolves(prom, cycles[alert], timeout=150) for alert in ERROR_ALERTS),
                resolves(prom, cycles[TASKS_FAILING], timeout=90),
                resolves(prom, cycles[DLQ], timeout=60),
            )
            await latency_resolved
            note("every alert inactive")
        note(f"traffic stopped ({summary(traffic.answers)})")

        # --- 3. PostgreSQL stops answering ----------------------------------------------------
        # Frozen as soon as the traffic stopped: the last orders may still be on their way to
        # the workers. Without traffic the outage reaches the metrics through the probes only.
        api_replicas = release.replicas("api")
        postgresql = await Freezer.of(release, "app.kubernetes.io/name=postgresql")
        outage_began = induce("PostgreSQL frozen", NOT_READY)
        postgresql.freeze()
        try:
            note("PostgreSQL frozen")
            await fires(prom, cycles[NOT_READY], timeout=90)
            namespaces = {labels["namespace"] for labels in cycles[NOT_READY].labels}
            assert namespaces == {release.namespace}, cycles[NOT_READY].labels
            await asyncio.to_thread(wait_for_pods, release, "api", lambda ready: ready == 0, 60)
            note("no API pod ready")
            # The runbook's checks: no ready endpoint, and the probe's answer names the database.
            addresses = await kubectl(
                release, "get", "endpoints", release.deployment("api"), "-o", ENDPOINT_ADDRESSES
            )
            assert addresses.strip() == "", addresses
            ready_check = await kubectl(release, "exec", api, "--", "python", "-c", READY_CHECK)
            status, _, body = ready_check.strip().partition(" ")
            checks = json.loads(body)["checks"]
            assert (status, checks["cache"]) == ("503", "ok"), ready_check
            assert checks["database"].startswith("error"), ready_check
            note(f"/health/ready in an API pod: {ready_check.strip()}")
            # What clients get: the ingress's own answer (no X-Request-ID), never the API's.
            ingress = await eventually(
                lambda: answered_by_ingress(release), timeout=30, interval=1, message="no route"
            )
            note(f"through the ingress: {ingress}")
        finally:
            postgresql.thaw()
        undo(NOT_READY)
        note("PostgreSQL thawed")
        await all_of(
            resolves(prom, cycles[NOT_READY], timeout=60),
            asyncio.to_thread(
                wait_for_pods, release, "api", lambda ready: ready == api_replicas, 60
            ),
        )
        # The outage went past the API's own alerts; its /metrics (a port of its own) kept
        # being scraped.
        await quiet(prom, (*ERROR_ALERTS, *LATENCY_ALERTS, SERVICE_DOWN), outage_began)

    # The read-only database refused the writes (a 500 from the API, the driver's error in its
    # log), and kept serving reads.
    statuses = {(answer.method, answer.status) for answer in during_read_only}
    assert ("GET", 200) in statuses, summary(during_read_only)
    assert ("POST", 500) in statuses, summary(during_read_only)
    assert "read-only transaction" in release.logs("api")
    # Nothing lost, nothing twice: every order accepted was processed once, the replayed ones
    # and those caught by the outage too.
    created = [known_order, *traffic.created]
    await eventually(
        lambda: processed(release, created), timeout=120, interval=1, message="all processed"
    )
    await assert_processed_exactly_once(release.settings(), created)
    assert await queue_depth(release.amqp_url(), DEAD_LETTER_QUEUE) == 0

    print("\n" + "\n".join(notes))
    print(f"alerts on live data (rules' clock x{FACTOR}):")
    for cycle in [first_dlq, *cycles.values()]:
        print("  " + cycle.row())
