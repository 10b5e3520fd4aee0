"""`make bench`: measure the API and the pipeline against baselines run side by side.

The run creates its own database, RabbitMQ vhost and Redis key prefix, starts the services as
processes with production-like settings, and drives them with wrk from a separate process:

1. pipeline: API + consumer + Celery worker on RabbitMQ; wrk creates orders at full speed until
   the database holds --pipeline-orders of them, and the run waits until every one is processed.
2. rounds (--rounds of them): the bare ASGI baseline (same JSON, same uvicorn options), the
   cached GET, the create, and pgbench running the INSERTs of one creation, each for
   --duration seconds, one right after the other. Interleaving puts whatever else the machine
   is doing on both sides of each ratio; the figures are medians over the rounds. The
   FastAPI floor (bench/floor_app.py) runs in each round right before the cached GET.
3. open loop: vegeta sends cached GETs, then creates, at a fixed arrival rate of half the
   saturation throughput the rounds measured (no coordinated omission: a slow response delays
   no later request); the pipeline phase likewise creates orders at half the pipeline's
   saturation and reports the created->processed lag. The targets (bench/harness.py: the API
   near its framework floor, the pipeline's lag) are judged on the figures and printed next to
   them.

Figures go to stdout as `name: value` lines and to bench/results/latest.json (or --output).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tests.harness import ServiceNotReadyError, free_port, settings_environment

from bench.costs import (
    cost_per_order_ms,
    order_cost_figures,
    report_lines,
    request_cost_figures,
)
from bench.harness import (
    OpenLoopResult,
    PipelineRun,
    Rounds,
    WrkResult,
    busy_note,
    compute_figures,
    cpu_model,
    figure_lines,
    half_rate,
    median,
    mem_total_mb,
    open_loop_figures,
    parse_pgbench_latency_ms,
    parse_pgbench_tps,
    parse_vegeta_report,
    parse_wrk_output,
    profile_shares,
    results_document,
    target_lines,
    top_shares,
)
from bench.plots import write_plots
from bench.processes import (
    BenchSetupError,
    CpuMeter,
    Infra,
    Service,
    run_command,
)
from oms.db.models import UserRole
from oms.migrations.runner import upgrade_async
from oms.schemas import OrderOut
from oms.security.keys import KeyStore, generate_private_key, private_key_to_pem
from oms.security.tokens import issue_access_token
from oms.settings import Settings

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
WRK_DIR = BENCH_DIR / "wrk"
PGBENCH_SCRIPT = BENCH_DIR / "pgbench" / "create_order.sql"
VENV_BIN = Path(sys.executable).parent
VEGETA = REPO_DIR / ".tools" / "bin" / "vegeta"
# The body bench/wrk/create.lua posts: without an idempotency key each request is a new order.
CREATE_BODY = (
    b'{"items":[{"name":"book","quantity":2},{"name":"pen","quantity":1}],"total_price":"21.40"}'
)
PASSWORD = "bench12345"
# Far above what a 2-core machine can send: the limiter still runs (and costs what it costs),
# it just never refuses.
RAISED_LIMIT = "100000000/minute"
SKIPPABLE = frozenset({"pgbench", "baseline", "pipeline", "floor", "open-loop", "sweep", "plots"})


@dataclass(frozen=True, slots=True)
class Account:
    user_id: int
    token: str


@dataclass(frozen=True)
class Options:
    duration: float
    warmup: float
    rounds: int
    connections: int
    threads: int
    api_workers: int
    worker_concurrency: int
    pipeline_orders: int
    pgbench_clients: int
    get_ids: int
    open_loop_duration: float
    sweep: tuple[float, ...]
    sweep_duration: float
    output: Path
    keep_logs: Path
    profile: Path | None
    skip: frozenset[str]

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> Options:
        parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
        env = os.environ.get
        number = parser.add_argument
        number("--duration", type=float, default=float(env("BENCH_DURATION", "5")))
        number("--warmup", type=float, default=float(env("BENCH_WARMUP", "3")))
        number("--rounds", type=int, default=int(env("BENCH_ROUNDS", "3")))
        number("--connections", type=int, default=int(env("BENCH_CONNECTIONS", "50")))
        number("--threads", type=int, default=int(env("BENCH_THREADS", "1")))
        number("--api-workers", type=int, default=int(env("BENCH_API_WORKERS", "2")))
        number("--worker-concurrency", type=int, default=int(env("BENCH_WORKER_CONCURRENCY", "2")))
        number("--pipeline-orders", type=int, default=int(env("BENCH_PIPELINE_ORDERS", "3000")))
        number("--pgbench-clients", type=int, default=int(env("BENCH_PGBENCH_CLIENTS", "32")))
        number("--get-ids", type=int, default=1000)
        number(
            "--open-loop-duration",
            type=float,
            default=float(env("BENCH_OPEN_LOOP_DURATION", "8")),
            help="seconds of each fixed-rate (vegeta) run",
        )
        parser.add_argument(
            "--sweep",
            default=env("BENCH_SWEEP", "0.25,0.75,0.9"),
            help="shares of saturation for the extra fixed-rate runs of the latency plot "
            "(half of saturation always runs)",
        )
        number(
            "--sweep-duration",
            type=float,
            default=float(env("BENCH_SWEEP_DURATION", "5")),
            help="seconds of each sweep run",
        )
        parser.add_argument(
            "--output", type=Path, default=Path(env("BENCH_OUTPUT", "bench/results/latest.json"))
        )
        parser.add_argument("--keep-logs", type=Path, default=REPO_DIR / "data" / "bench")
        parser.add_argument(
            "--profile",
            type=Path,
            default=None,
            help="record the services with py-spy during the first round into this folder",
        )
        parser.add_argument(
            "--skip",
            default="",
            help="comma-separated phases to leave out while iterating (pgbench,baseline,"
            "pipeline,floor,open-loop,sweep,plots); a full run, the one to record, skips "
            "nothing",
        )
        args = parser.parse_args(argv)
        skip = frozenset(part.strip() for part in args.skip.split(",") if part.strip())
        if not skip <= SKIPPABLE:
            parser.error(f"--skip takes {', '.join(sorted(SKIPPABLE))}")
        if args.pipeline_orders < 2000:
            parser.error("--pipeline-orders must be at least 2000")
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        try:
            sweep = tuple(float(part) for part in args.sweep.split(",") if part.strip())
        except ValueError:
            parser.error("--sweep takes comma-separated shares, e.g. 0.25,0.75")
        if not all(0 < fraction <= 1 for fraction in sweep):
            parser.error("--sweep shares must lie in (0, 1]")
        return cls(
            duration=args.duration,
            warmup=args.warmup,
            rounds=args.rounds,
            connections=args.connections,
            threads=args.threads,
            api_workers=args.api_workers,
            worker_concurrency=args.worker_concurrency,
            pipeline_orders=args.pipeline_orders,
            pgbench_clients=args.pgbench_clients,
            get_ids=args.get_ids,
            open_loop_duration=args.open_loop_duration,
            sweep=sweep,
            sweep_duration=args.sweep_duration,
            output=args.output,
            keep_logs=args.keep_logs,
            profile=args.profile,
            skip=skip,
        )


@dataclass
class Run:
    """Names and places of one run; everything here is created, then removed, by the run."""

    options: Options
    infra: Infra
    workdir: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    services: list[Service] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return f"oms_bench_{self.tag}"

    @property
    def pgbench_database(self) -> str:
        return f"oms_bench_pg_{self.tag}"

    @property
    def vhost(self) -> str:
        return f"oms_bench_{self.tag}"

    @property
    def prefix(self) -> str:
        return f"bench_{self.tag}:"

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    # --- settings of the services -----------------------------------------------------------
    def service_env(self, **extra: object) -> dict[str, str]:
        """Production-like settings: uvloop/httptools (uvicorn picks them), INFO logs, real
        argon2 cost, relay in the API, rate limits on but raised out of the way."""
        values: dict[str, object] = {
            "POSTGRES_HOST": self.infra.pg_host,
            "POSTGRES_PORT": self.infra.pg_port,
            "POSTGRES_USER": self.infra.pg_user,
            "POSTGRES_DB": self.database,
            "REDIS_URL": f"{self.infra.redis_base}/0",
            "REDIS_URL_RATE_LIMIT": f"{self.infra.redis_base}/1",
            "REDIS_URL_CELERY": f"{self.infra.redis_base}/2",
            "REDIS_KEY_PREFIX": self.prefix,
            "RABBITMQ_URL": self.infra.amqp_url(self.vhost),
            "HOST": "127.0.0.1",
            "API_WORKERS": self.options.api_workers,
            "WORKER_CONCURRENCY": self.options.worker_concurrency,
            "LOG_LEVEL": "INFO",
            "DATA_DIR": self.workdir,
            "JWT_PRIVATE_KEY_PATH": self.workdir / "jwt.pem",
            "JWT_AUTO_GENERATE_KEYS": "false",
            "RUN_OUTBOX_RELAY": "true",
            "RATE_LIMIT_ENABLED": "true",
            **{
                f"RATE_LIMIT_{scope}": RAISED_LIMIT
                for scope in (
                    "CREATE_ORDER",
                    "GET_ORDER",
                    "UPDATE_ORDER",
                    "LIST_ORDERS",
                    "REGISTER",
                    "TOKEN",
                )
            },
            **extra,
        }
        return settings_environment(values)

    def settings(self) -> Settings:
        return Settings(
            _env_file=None,
            POSTGRES_HOST=self.infra.pg_host,
            POSTGRES_PORT=self.infra.pg_port,
            POSTGRES_USER=self.infra.pg_user,
            POSTGRES_DB=self.database,
        )

    def service(self, name: str, argv: list[str], ready_url: str, **env: object) -> Service:
        service = Service(name, argv, self.service_env(**env), self.workdir, ready_url)
        self.services.append(service)
        return service

    # --- set-up and tear-down ---------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def borrowed_infrastructure(self) -> AsyncIterator[None]:
        self.log(f"database {self.database}, vhost {self.vhost}, redis prefix {self.prefix}")
        await self.infra.create_database(self.database)
        try:
            await self.infra.create_vhost(self.vhost)
            try:
                yield
            finally:
                for service in self.services:
                    await service.stop()
                await self.infra.delete_vhost(self.vhost)
        finally:
            await self.infra.drop_database(self.pgbench_database)
            await self.infra.drop_database(self.database)
            await self.infra.delete_redis_prefix(self.prefix)

    async def prepare(self) -> None:
        (self.workdir / "jwt.pem").write_bytes(private_key_to_pem(generate_private_key()))
        await upgrade_async(self.settings())
        # Same schema and indexes for pgbench, in a database nobody relays from.
        await self.infra.create_database(self.pgbench_database, template=self.database)

    # --- measuring --------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def measured(
        self, label: str, seconds: float, *profiled: Service, profile: bool = True
    ) -> AsyncIterator[None]:
        """Who used the CPU while the block ran (details.cpu_seconds.<label>), and with
        --profile a py-spy recording of the `profiled` services for `seconds`."""
        meter = CpuMeter(self.services, frozenset({self.database, self.pgbench_database}))
        try:
            if profile:
                async with self.profiled(label, seconds, *profiled):
                    yield
            else:
                yield
        finally:
            self.details.setdefault("cpu_seconds", {}).setdefault(label, []).append(meter.read())

    @contextlib.asynccontextmanager
    async def profiled(self, label: str, seconds: float, *services: Service) -> AsyncIterator[None]:
        """py-spy on each service's process tree while the block runs (with --profile only);
        writes the collapsed stacks and a summary of where the time went."""
        folder = self.options.profile
        if folder is None or not services:
            yield
            return
        folder.mkdir(parents=True, exist_ok=True)
        recorders: list[tuple[Path, asyncio.subprocess.Process]] = []
        for service in services:
            if service.process is None:
                continue
            path = folder / f"{label}-{service.name}.txt"
            recorder = await asyncio.create_subprocess_exec(
                str(VENV_BIN / "py-spy"),
                "record",
                f"--pid={service.process.pid}",
                "--subprocesses",
                "--nonblocking",
                "--rate=250",
                f"--duration={max(1, round(seconds))}",
                "--format=raw",
                f"--output={path}",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            recorders.append((path, recorder))
        try:
            yield
        finally:
            for path, recorder in recorders:
                await recorder.wait()
                if path.exists():
                    own, inclusive = profile_shares(path.read_text())
                    summary = ["self:", *top_shares(own, 50), "", "inclusive:"]
                    summary += top_shares(inclusive, 150)
                    path.with_suffix(".summary").write_text("\n".join(summary) + "\n")

    async def wrk(
        self,
        script: str,
        url: str,
        duration: float,
        *script_args: str,
        label: str,
        until: Callable[[], Awaitable[bool]] | None = None,
    ) -> WrkResult:
        """One wrk run; with `until`, wrk is interrupted (SIGINT, it still reports) as soon as
        the condition holds, checked every 0.2 s."""
        argv = [
            "wrk",
            f"--threads={self.options.threads}",
            f"--connections={self.options.connections}",
            f"--duration={max(1, round(duration))}s",
            "--timeout=10s",
            f"--script={WRK_DIR / script}",
            url,
            "--",
            *script_args,
        ]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "BENCH_WRK_DIR": str(WRK_DIR)},
        )
        communicating = asyncio.ensure_future(process.communicate())
        if until is not None:
            while not communicating.done():
                if await until():
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(signal.SIGINT)
                    break
                await asyncio.wait({communicating}, timeout=0.2)
        output = (await communicating)[0].decode(errors="replace")
        if process.returncode != 0:
            raise BenchSetupError(f"wrk failed ({process.returncode}):\n{output}")
        result = parse_wrk_output(output)
        self.details.setdefault("wrk", {}).setdefault(label, []).append(
            {**asdict(result), "ok_per_s": round(result.ok_per_s, 1)}
        )
        if result.error_ratio > 0:
            self.log(
                f"{label}: {result.status_errors} error statuses, {result.socket_errors} "
                "socket errors (not counted as throughput)"
            )
        return result

    async def pgbench(self, user_id: int, duration: float, label: str) -> float:
        output = await run_command(
            "pgbench",
            f"--host={self.infra.pg_host}",
            f"--port={self.infra.pg_port}",
            f"--username={self.infra.pg_user}",
            "--no-vacuum",
            "--protocol=prepared",
            f"--client={self.options.pgbench_clients}",
            "--jobs=2",
            f"--time={max(1, round(duration))}",
            f"--define=user_id={user_id}",
            f"--file={PGBENCH_SCRIPT}",
            self.pgbench_database,
        )
        tps = parse_pgbench_tps(output)
        self.details.setdefault("pgbench", {}).setdefault(label, []).append(
            {"tps": tps, "latency_average_ms": parse_pgbench_latency_ms(output)}
        )
        return tps

    async def vegeta(self, targets: Path, rate: int, duration: float, label: str) -> OpenLoopResult:
        """One fixed-rate run: vegeta sends `rate` requests a second on schedule (it adds
        workers when responses are slow instead of waiting for them), round-robin over the
        `targets` file (vegeta's http format)."""
        results = targets.with_suffix(".bin")
        await run_command(
            str(VEGETA),
            "attack",
            f"-targets={targets}",
            "-format=http",
            f"-rate={rate}/1s",
            f"-duration={max(1, round(duration))}s",
            "-timeout=10s",
            f"-output={results}",
        )
        report = await run_command(str(VEGETA), "report", "-type=json", str(results))
        encoded = await run_command(str(VEGETA), "encode", "--to=json", str(results))
        result = parse_vegeta_report(report, encoded, float(rate))
        results.unlink(missing_ok=True)
        self.details.setdefault("vegeta", {})[label] = asdict(result)
        self.log(
            f"{label}: {result.requests} requests at {rate}/s, p50 {result.p50_ms:.1f} ms, "
            f"p99 {result.p99_ms:.1f} ms, p99.9 {result.p999_ms:.1f} ms"
        )
        if result.error_ratio > 0:
            self.log(f"{label}: {result.requests - result.ok} responses were not 2xx")
        return result

    def create_targets(self, url: str, token: str, name: str) -> Path:
        """A vegeta targets file that creates a new order with each request."""
        body = self.workdir / f"{name}.body.json"
        body.write_bytes(CREATE_BODY)
        path = self.workdir / f"{name}.targets"
        path.write_text(
            f"POST {url}/orders/\nAuthorization: Bearer {token}\n"
            f"Content-Type: application/json\n@{body}\n\n"
        )
        return path

    def get_targets(self, url: str, token: str, order_ids: list[str]) -> Path:
        path = self.workdir / "get.targets"
        path.write_text(
            "".join(
                f"GET {url}/orders/{order_id}/\nAuthorization: Bearer {token}\n\n"
                for order_id in order_ids
            )
        )
        return path

    def server_cpu(self, label: str, service: str) -> list[float]:
        """CPU seconds `service` used in each measured run of `label`."""
        runs = self.details.get("cpu_seconds", {}).get(label, [])
        return [float(used.get(service, 0.0)) for used in runs]

    # --- accounts and data ------------------------------------------------------------------
    async def pgbench_user(self) -> int:
        return await self.direct_user(self.pgbench_database, "pgbench")

    async def direct_user(self, database: str, name: str) -> int:
        """A user row written straight into `database` (no API, no password): the owner of the
        rows pgbench and the insert floor write."""
        connection = await self.infra.connect(database)
        try:
            return int(
                await connection.fetchval(
                    "INSERT INTO users (email, hashed_password, role, created_at, account_key) "
                    "VALUES ($1, 'x', 'user', now(), gen_random_uuid()) RETURNING id",
                    f"{name}@example.com",
                )
            )
        finally:
            await connection.close()

    async def account(self, http: httpx.AsyncClient, name: str) -> Account:
        """A user registered and logged in through the API (real argon2 cost)."""
        email = f"{name}-{self.tag}@example.com"
        registered = await http.post("/register", json={"email": email, "password": PASSWORD})
        registered.raise_for_status()
        token = await http.post("/token", data={"username": email, "password": PASSWORD})
        token.raise_for_status()
        return Account(int(registered.json()["id"]), str(token.json()["access_token"]))

    def token_like_the_api(self) -> str:
        """A token shaped like the API's (same key, same claims), for the baseline's requests."""
        settings = Settings(_env_file=None, JWT_PRIVATE_KEY_PATH=self.workdir / "jwt.pem")
        keys = KeyStore(settings).current()
        return issue_access_token(settings, keys, 1, UserRole.USER, account_key=uuid.uuid4())[0]

    async def fetch(self, query: str, *args: object) -> list[Any]:
        connection = await self.infra.connect(self.database)
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    async def order_counts(self, user_id: int) -> tuple[int, int]:
        """(orders, of which not processed yet) of one user."""
        row = (
            await self.fetch(
                "SELECT count(*) AS orders, count(*) FILTER (WHERE processed_at IS NULL) "
                "AS pending FROM orders WHERE user_id = $1",
                user_id,
            )
        )[0]
        return int(row["orders"]), int(row["pending"])

    async def created_at_least(self, user_id: int, count: int) -> bool:
        return (await self.order_counts(user_id))[0] >= count

    async def wait_processed(self, user_id: int, within_seconds: float) -> bool:
        deadline = time.monotonic() + within_seconds
        while (await self.order_counts(user_id))[1] > 0:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)
        return True

    async def wait_outbox_drained(self, within_seconds: float) -> bool:
        """Until the relay (inside the API) has published every outbox row: the fixed-rate
        runs should not share the API's CPU with the backlog of the rounds' creates."""
        started = time.monotonic()
        deadline = started + within_seconds
        while True:
            unsent = await self.fetch(
                "SELECT count(*) AS n FROM outbox_events "
                "WHERE sent_at IS NULL AND dead_lettered_at IS NULL"
            )
            if int(unsent[0]["n"]) == 0:
                waited = round(time.monotonic() - started, 2)
                self.details.setdefault("outbox_drain_wait_s", []).append(waited)
                return True
            if time.monotonic() > deadline:
                self.log(f"outbox: {unsent[0]['n']} events still unsent, measuring anyway")
                return False
            await asyncio.sleep(0.2)

    async def pipeline_run(self, user_id: int) -> PipelineRun:
        rows = await self.fetch(
            "SELECT extract(epoch FROM created_at)::float8 AS created, "
            "extract(epoch FROM processed_at)::float8 AS processed "
            "FROM orders WHERE user_id = $1",
            user_id,
        )
        done = [(row["created"], row["processed"]) for row in rows if row["processed"]]
        return PipelineRun(
            orders=len(rows),
            processed=len(done),
            first_created_epoch=min((row["created"] for row in rows), default=0.0),
            last_processed_epoch=max((processed for _created, processed in done), default=0.0),
            lags_s=[processed - created for created, processed in done],
        )

    async def order_ids(self, user_id: int, limit: int) -> list[str]:
        rows = await self.fetch(
            "SELECT id FROM orders WHERE user_id = $1 ORDER BY random() LIMIT $2", user_id, limit
        )
        return [str(row["id"]) for row in rows]

    async def fill_cache(self, url: str, token: str, order_ids: list[str]) -> None:
        """GET each order once, so that the measured GETs all find it in the cache."""
        limit = asyncio.Semaphore(32)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as http:

            async def fetch(order_id: str) -> None:
                async with limit:
                    (await http.get(f"/orders/{order_id}/")).raise_for_status()

            await asyncio.gather(*(fetch(order_id) for order_id in order_ids))

    # --- phases -----------------------------------------------------------------------------
    async def start_reference(self, name: str, *argv: str, **env: object) -> str:
        """The bare ASGI endpoint (`baseline`) or a floor (bench/floor_app.py, its kind in
        `argv`), answering the bytes of a cached order GET; its URL."""
        port = free_port()
        module = "bench.baseline_app" if name == "baseline" else "bench.floor_app"
        reference = self.service(
            name,
            [sys.executable, "-m", module, *argv],
            f"http://127.0.0.1:{port}/",
            PORT=port,
            BENCH_BASELINE_BODY=sample_order_body().decode(),
            PYTHONPATH=REPO_DIR,
            **env,
        ).start()
        await reference.wait_ready()
        return f"http://127.0.0.1:{port}"

    async def start_api(self) -> tuple[Service, str]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api = self.service("api", [str(VENV_BIN / "oms-api")], f"{url}/health/ready", PORT=port)
        await api.start().wait_ready()
        return api, url

    async def measure_pipeline(
        self, api: Service, url: str, warm: Account, measured: Account, half: Account | None
    ) -> tuple[PipelineRun, PipelineRun | None]:
        """The pipeline at saturation; then, with `half`, at a fixed arrival rate of half the
        saturation throughput (the lag a pipeline with headroom shows)."""
        consumer_port, worker_port = free_port(), free_port()
        consumer = self.service(
            "consumer",
            [str(VENV_BIN / "oms-consumer")],
            f"http://127.0.0.1:{consumer_port}/health/ready",
            CONSUMER_METRICS_PORT=consumer_port,
        ).start()
        worker = self.service(
            "worker",
            [str(VENV_BIN / "oms-worker")],
            f"http://127.0.0.1:{worker_port}/health/ready",
            WORKER_METRICS_PORT=worker_port,
        ).start()
        await asyncio.gather(consumer.wait_ready(), worker.wait_ready())
        self.log("pipeline: warm-up (200 orders through every stage)")
        await self.wrk(
            "create.lua",
            url,
            60,
            f"token={warm.token}",
            label="pipeline_warmup",
            until=lambda: self.created_at_least(warm.user_id, 200),
        )
        await self.wait_processed(warm.user_id, within_seconds=120)
        wanted = self.options.pipeline_orders
        self.log(f"pipeline: creating {wanted} orders at full speed")
        async with self.measured("pipeline", 20, api, consumer, worker):
            await self.wrk(
                "create.lua",
                url,
                120,
                f"token={measured.token}",
                label="pipeline_create",
                until=lambda: self.created_at_least(measured.user_id, wanted),
            )
            finished = await self.wait_processed(measured.user_id, within_seconds=180)
        consumer.record_peak_rss()
        worker.record_peak_rss()
        run = await self.pipeline_run(measured.user_id)
        self.details["pipeline"] = {
            "orders": run.orders,
            "processed": run.processed,
            "finished": finished,
            "seconds": round(run.last_processed_epoch - run.first_created_epoch, 3),
        }
        if not finished:
            self.log(f"pipeline: only {run.processed}/{run.orders} processed before the timeout")
        half_run = None
        if half is not None and run.orders_per_s > 0:
            rate = half_rate(run.orders_per_s)
            seconds = self.options.open_loop_duration
            self.log(f"pipeline: creating at a fixed {rate}/s (half of saturation) for {seconds} s")
            targets = self.create_targets(url, half.token, "pipeline_half")
            async with self.measured("pipeline_half", seconds, profile=False):
                await self.vegeta(targets, rate, seconds, label="pipeline_create_at_half")
                half_finished = await self.wait_processed(half.user_id, within_seconds=120)
            half_run = await self.pipeline_run(half.user_id)
            self.details["pipeline_at_half"] = {
                "rate_per_s": rate,
                "orders": half_run.orders,
                "processed": half_run.processed,
                "finished": half_finished,
            }
        await asyncio.gather(consumer.stop(), worker.stop())
        return run, half_run


def sample_order_body() -> bytes:
    """What GET /orders/{id}/ returns for the order the wrk script creates."""
    now = datetime.now(UTC)
    return (
        OrderOut(
            id=uuid.uuid4(),
            user_id=1,
            items=[{"name": "book", "quantity": 2}, {"name": "pen", "quantity": 1}],
            total_price="21.40",
            status="PENDING",
            created_at=now,
            updated_at=now,
            processed_at=now,
        )
        .model_dump_json()
        .encode()
    )


def machine_info() -> dict[str, Any]:
    def text(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    # `wrk --version` prints its banner and exits 1.
    wrk_version = subprocess.run(
        ["wrk", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(text("/proc/cpuinfo")),
        "memory_mb": mem_total_mb(text("/proc/meminfo")),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version[0].strip() if wrk_version else "unknown",
    }


def other_test_runs() -> int:
    """How many test suites (`bin/pytest` processes) run on the machine besides us: the
    figures of a run with any are those of a shared machine."""
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"bin/pytest" in cmdline:
                count += 1
    return count


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass
class Measured:
    rounds: Rounds
    pipeline: PipelineRun | None = None
    pipeline_half: PipelineRun | None = None
    get_half: OpenLoopResult | None = None
    create_half: OpenLoopResult | None = None
    # Fixed-rate runs at other shares of saturation (the half runs above included), per path.
    sweep: dict[str, list[OpenLoopResult]] = field(default_factory=dict)


@dataclass
class Floors:
    """URLs of the reference servers that run (None when skipped)."""

    baseline: str | None = None
    framework: str | None = None
    redis: str | None = None
    insert: str | None = None

    @classmethod
    async def start(cls, run: Run) -> Floors:
        floors = cls()
        if "baseline" not in run.options.skip:
            floors.baseline = await run.start_reference("baseline")
        if "floor" not in run.options.skip:
            floors.framework = await run.start_reference("floor", "framework")
            floors.redis = await run.start_reference("redis_floor", "redis")
            owner = await run.direct_user(run.database, "insert-floor")
            floors.insert = await run.start_reference(
                "insert_floor", "insert", BENCH_FLOOR_USER_ID=owner
            )
        return floors


@dataclass
class RoundResults:
    """wrk results per path, one per round."""

    by_path: dict[str, list[WrkResult]] = field(default_factory=dict)

    def add(self, path: str, result: WrkResult) -> None:
        self.by_path.setdefault(path, []).append(result)

    def of(self, path: str) -> list[WrkResult]:
        return self.by_path.get(path, [])


async def measure(run: Run) -> Measured:
    """Everything between set-up and tear-down: the pipeline, warm-ups, then the rounds."""
    options = run.options
    await run.prepare()
    ids_file = run.workdir / "order_ids.txt"
    floors = await Floors.start(run)
    open_loop = "open-loop" not in options.skip
    api, url = await run.start_api()
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        warm = await run.account(http, "warm")
        pipeline_account = await run.account(http, "pipeline")
        creator = await run.account(http, "create")
        half_account = await run.account(http, "pipeline-half") if open_loop else None
    pipeline = pipeline_half = None
    if "pipeline" not in options.skip:
        pipeline, pipeline_half = await run.measure_pipeline(
            api, url, warm, pipeline_account, half_account
        )

    run.log("warm-up: creating orders to read")
    create_args = (f"token={creator.token}",)
    await run.wrk("create.lua", url, options.warmup, *create_args, label="create_warmup")
    order_ids = await run.order_ids(creator.user_id, options.get_ids)
    ids_file.write_text("\n".join(order_ids) + "\n")
    run.log(f"warm-up: filling the cache with {len(order_ids)} orders")
    await run.fill_cache(url, creator.token, order_ids)
    get_args = (f"token={creator.token}", f"ids={ids_file}")
    # (label, server, wrk script, URL, profiled) in the order a round runs them: each floor
    # right before the path it bounds.
    paths = [
        ("baseline", "baseline", "get.lua", floors.baseline, False),
        ("floor", "floor", "get.lua", floors.framework, False),
        ("redis_floor", "redis_floor", "get.lua", floors.redis, False),
        ("get", "api", "get.lua", url, True),
        ("insert_floor", "insert_floor", "create.lua", floors.insert, False),
        ("create", "api", "create.lua", url, True),
    ]
    for label, _server, script, target, _profiled in paths:
        if target is not None and label != "create":
            args = get_args if script == "get.lua" else create_args
            await run.wrk(script, target, options.warmup, *args, label=f"{label}_warmup")
    pgbench_user = None
    if "pgbench" not in options.skip:
        pgbench_user = await run.pgbench_user()
        await run.pgbench(pgbench_user, options.warmup, label="pgbench_warmup")

    results = RoundResults()
    pgbench: list[float] = []
    seconds = options.duration
    for number in range(options.rounds):
        run.log(f"round {number + 1}/{options.rounds}")
        for label, _server, script, target, profiled in paths:
            if target is None:
                continue
            args = get_args if script == "get.lua" else create_args
            recorded = (api,) if profiled else ()
            async with run.measured(label, seconds, *recorded, profile=number == 0):
                results.add(label, await run.wrk(script, target, seconds, *args, label=label))
        if pgbench_user is not None:
            async with run.measured("pgbench", seconds, profile=False):
                pgbench.append(await run.pgbench(pgbench_user, seconds, label="pgbench"))
    cpu = {label: run.server_cpu(label, server) for label, server, *_rest in paths}
    measured = Measured(
        Rounds(
            results.of("baseline"),
            results.of("get"),
            results.of("create"),
            pgbench,
            baseline_cpu_s=cpu["baseline"],
            get_cpu_s=cpu["get"],
            create_cpu_s=cpu["create"],
            floor=results.of("floor"),
            floor_cpu_s=cpu["floor"],
            redis_floor=results.of("redis_floor"),
            redis_floor_cpu_s=cpu["redis_floor"],
            insert_floor=results.of("insert_floor"),
            insert_floor_cpu_s=cpu["insert_floor"],
        ),
        pipeline,
        pipeline_half,
    )
    if open_loop:
        saturation = {
            "get": median_ok_per_s(results.of("get")),
            "create": median_ok_per_s(results.of("create")),
        }
        targets = {
            "get": run.get_targets(url, creator.token, order_ids),
            "create": run.create_targets(url, creator.token, "create_half"),
        }
        for path in ("get", "create"):
            rate = half_rate(saturation[path])
            run.log(f"open loop: {path} at a fixed {rate}/s (half of saturation)")
            await run.wait_outbox_drained(within_seconds=60)
            async with run.measured(f"{path}_at_half", options.open_loop_duration, profile=False):
                result = await run.vegeta(
                    targets[path], rate, options.open_loop_duration, f"{path}_at_half"
                )
            if path == "get":
                measured.get_half = result
            else:
                measured.create_half = result
            measured.sweep.setdefault(path, []).append(result)
        if "sweep" not in options.skip:
            for path in ("get", "create"):
                for fraction in options.sweep:
                    rate = half_rate(saturation[path], fraction)
                    label = f"{path}_at_{round(fraction * 100)}pct"
                    run.log(f"sweep: {path} at a fixed {rate}/s ({fraction:.0%} of saturation)")
                    await run.wait_outbox_drained(within_seconds=60)
                    measured.sweep[path].append(
                        await run.vegeta(targets[path], rate, options.sweep_duration, label)
                    )
    for service in run.services:
        service.record_peak_rss()
    return measured


def median_ok_per_s(results: list[WrkResult]) -> float:
    return median([result.ok_per_s for result in results])


async def bench(options: Options) -> dict[str, Any]:
    shutil.rmtree(options.keep_logs, ignore_errors=True)
    options.keep_logs.mkdir(parents=True, exist_ok=True)
    run = Run(options, Infra.from_env(), Path(tempfile.mkdtemp(prefix="oms-bench-")))
    load_before = os.getloadavg()
    machine = {
        **machine_info(),
        "load_before": [round(x, 2) for x in load_before],
        "tests_running_before": other_test_runs(),
    }
    run.log(f"machine: {machine}")
    try:
        async with run.borrowed_infrastructure():
            measured = await measure(run)
    finally:
        for service in run.services:
            for log_path in service.log_paths:
                if log_path.exists():
                    shutil.copy(log_path, options.keep_logs / log_path.name)
        shutil.rmtree(run.workdir, ignore_errors=True)

    machine["load_after"] = [round(x, 2) for x in os.getloadavg()]
    peaks = {service.name: round(service.peak_rss, 1) for service in run.services}
    figures = compute_figures(measured.rounds, measured.pipeline, peaks)
    for service in run.services:
        if service.name == "api":
            # The largest peak of one process of the API's tree: one uvicorn worker.
            figures["peak_rss_api_per_worker_mb"] = round(service.peak_process_rss, 1)
    figures.update(request_cost_figures(measured.rounds))
    pipeline_cpu = run.details.get("cpu_seconds", {}).get("pipeline", [])
    if measured.pipeline is not None and measured.pipeline.processed > 0 and pipeline_cpu:
        costs = cost_per_order_ms(pipeline_cpu[0], measured.pipeline.processed)
        figures.update(order_cost_figures(costs))
    figures.update(
        open_loop_figures(measured.get_half, measured.create_half, measured.pipeline_half)
    )
    machine["tests_running_after"] = other_test_runs()
    notes = [note for note in [busy_note([load_before[0]], os.cpu_count() or 1)] if note]
    details = {
        **run.details,
        "sweep": {
            path: [asdict(result) for result in sorted(results, key=lambda r: r.rate_per_s)]
            for path, results in measured.sweep.items()
        },
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "skipped": sorted(options.skip),
        "settings": {
            "api_workers": options.api_workers,
            "worker_concurrency": options.worker_concurrency,
            "wrk_connections": options.connections,
            "wrk_threads": options.threads,
            "rounds": options.rounds,
            "duration_s": options.duration,
            "warmup_s": options.warmup,
            "pgbench_clients": options.pgbench_clients,
            "pipeline_orders": options.pipeline_orders,
            "open_loop_duration_s": options.open_loop_duration,
            "sweep": list(options.sweep),
            "sweep_duration_s": options.sweep_duration,
        },
        "notes": notes,
    }
    return results_document(figures, machine, details)


def write_results(document: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    options = Options.parse(argv)
    if shutil.which("wrk") is None or shutil.which("pgbench") is None:
        print("wrk and pgbench are required (make bench installs wrk)", file=sys.stderr)
        return 2
    if "open-loop" not in options.skip and not VEGETA.exists():
        print(f"vegeta is required at {VEGETA} (make bench builds it)", file=sys.stderr)
        return 2
    try:
        document = asyncio.run(bench(options))
    except (BenchSetupError, ServiceNotReadyError) as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1
    for line in figure_lines(document["figures"]):
        print(line)
    for line in report_lines(document["figures"]):
        print(line)
    print("targets, this run:")
    for line in target_lines(document["targets"]):
        print(f"  {line}")
    for note in document["details"]["notes"]:
        print(f"note: {note}")
    write_results(document, options.output)
    print(f"results written to {options.output}")
    if "plots" not in options.skip:
        for path in write_plots(document, options.output.parent):
            print(f"plot written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
