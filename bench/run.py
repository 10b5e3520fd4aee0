"""`make bench`: measure the API and the pipeline against baselines run side by side.

Phases, one after the other on the same machine (nothing else of ours running meanwhile):

1. pgbench: the INSERTs of one order creation, straight into PostgreSQL (database ceiling).
2. baseline: a bare ASGI endpoint with the same JSON and uvicorn options as the API
   (framework ceiling), driven by wrk exactly like the cached GET.
3. pipeline: API + consumer + Celery worker on RabbitMQ; wrk creates a bounded number of
   orders at full speed and the run waits until the database shows every one processed.
4. create: wrk POSTs orders to the API (with its outbox relay publishing to RabbitMQ).
5. get: wrk GETs orders that sit in the Redis cache.

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

from bench.harness import (
    PipelineRun,
    WrkResult,
    busy_note,
    compute_figures,
    cpu_model,
    figure_lines,
    mem_total_mb,
    parse_pgbench_latency_ms,
    parse_pgbench_tps,
    parse_wrk_output,
    results_document,
)
from bench.processes import BenchSetupError, Infra, Service, free_port, run_command
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
PASSWORD = "bench12345"
# Far above what a 2-core machine can send: the limiter still runs (and costs what it costs),
# it just never refuses.
RAISED_LIMIT = "100000000/minute"


@dataclass(frozen=True, slots=True)
class Account:
    user_id: int
    token: str


@dataclass(frozen=True)
class Options:
    duration: float
    warmup: float
    connections: int
    threads: int
    api_workers: int
    worker_concurrency: int
    pipeline_orders: int
    pgbench_clients: int
    get_ids: int
    output: Path
    keep_logs: Path

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> Options:
        parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
        env = os.environ.get
        parser.add_argument("--duration", type=float, default=float(env("BENCH_DURATION", "10")))
        parser.add_argument("--warmup", type=float, default=float(env("BENCH_WARMUP", "3")))
        parser.add_argument("--connections", type=int, default=int(env("BENCH_CONNECTIONS", "50")))
        parser.add_argument("--threads", type=int, default=int(env("BENCH_THREADS", "1")))
        parser.add_argument("--api-workers", type=int, default=int(env("BENCH_API_WORKERS", "2")))
        parser.add_argument(
            "--worker-concurrency", type=int, default=int(env("BENCH_WORKER_CONCURRENCY", "2"))
        )
        parser.add_argument(
            "--pipeline-orders", type=int, default=int(env("BENCH_PIPELINE_ORDERS", "3000"))
        )
        parser.add_argument(
            "--pgbench-clients", type=int, default=int(env("BENCH_PGBENCH_CLIENTS", "32"))
        )
        parser.add_argument("--get-ids", type=int, default=1000)
        parser.add_argument(
            "--output", type=Path, default=Path(env("BENCH_OUTPUT", "bench/results/latest.json"))
        )
        parser.add_argument("--keep-logs", type=Path, default=REPO_DIR / "data" / "bench")
        args = parser.parse_args(argv)
        if args.pipeline_orders < 2000:
            parser.error("--pipeline-orders must be at least 2000")
        return cls(
            duration=args.duration,
            warmup=args.warmup,
            connections=args.connections,
            threads=args.threads,
            api_workers=args.api_workers,
            worker_concurrency=args.worker_concurrency,
            pipeline_orders=args.pipeline_orders,
            pgbench_clients=args.pgbench_clients,
            get_ids=args.get_ids,
            output=args.output,
            keep_logs=args.keep_logs,
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
        names = {name.upper() for name in Settings.model_fields}
        env = {key: value for key, value in os.environ.items() if key.upper() not in names}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
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
                for scope in ("CREATE_ORDER", "GET_ORDER", "UPDATE_ORDER", "LIST_ORDERS")
            },
            "RATE_LIMIT_REGISTER": RAISED_LIMIT,
            "RATE_LIMIT_TOKEN": RAISED_LIMIT,
            **extra,
        }
        env.update({name: str(value) for name, value in values.items()})
        return env

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

    # --- load generation --------------------------------------------------------------------
    def wrk_argv(
        self, script: str, url: str, duration: float, script_args: tuple[str, ...]
    ) -> list[str]:
        return [
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
        process = await asyncio.create_subprocess_exec(
            *self.wrk_argv(script, url, duration, script_args),
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
        self.details.setdefault("wrk", {})[label] = {
            **asdict(result),
            "ok_per_s": round(result.ok_per_s, 1),
        }
        if result.error_ratio > 0:
            self.log(
                f"{label}: {result.status_errors} error statuses, {result.socket_errors} "
                "socket errors (not counted as throughput)"
            )
        return result

    async def pgbench(self, user_id: int, duration: float) -> str:
        return await run_command(
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

    # --- phases -----------------------------------------------------------------------------
    async def measure_pgbench(self) -> float:
        connection = await self.infra.connect(self.pgbench_database)
        try:
            user_id = int(
                await connection.fetchval(
                    "INSERT INTO users (email, hashed_password, role, created_at) "
                    "VALUES ('pgbench@example.com', 'x', 'user', now()) RETURNING id"
                )
            )
        finally:
            await connection.close()
        self.log("pgbench: warm-up")
        await self.pgbench(user_id, self.options.warmup)
        self.log("pgbench: measuring")
        output = await self.pgbench(user_id, self.options.duration)
        tps = parse_pgbench_tps(output)
        self.details["pgbench"] = {
            "clients": self.options.pgbench_clients,
            "tps": tps,
            "latency_average_ms": parse_pgbench_latency_ms(output),
        }
        return tps

    async def measure_baseline(self, body: bytes, ids_file: Path, token: str) -> WrkResult:
        port = free_port()
        baseline = self.service(
            "baseline",
            [sys.executable, "-m", "bench.baseline_app"],
            f"http://127.0.0.1:{port}/",
            PORT=port,
            BENCH_BASELINE_BODY=body.decode(),
            PYTHONPATH=REPO_DIR,
        ).start()
        await baseline.wait_ready()
        url = f"http://127.0.0.1:{port}"
        args = (f"token={token}", f"ids={ids_file}")
        self.log("baseline: warm-up")
        await self.wrk("get.lua", url, self.options.warmup, *args, label="baseline_warmup")
        self.log("baseline: measuring")
        result = await self.wrk("get.lua", url, self.options.duration, *args, label="baseline")
        await baseline.stop()
        return result

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
        return issue_access_token(settings, keys, 1, UserRole.USER)[0]

    async def unprocessed(self, user_id: int) -> tuple[int, int]:
        connection = await self.infra.connect(self.database)
        try:
            row = await connection.fetchrow(
                "SELECT count(*) AS orders, count(*) FILTER (WHERE processed_at IS NULL) "
                "AS pending FROM orders WHERE user_id = $1",
                user_id,
            )
        finally:
            await connection.close()
        assert row is not None
        return int(row["orders"]), int(row["pending"])

    async def wait_processed(self, user_id: int, within_seconds: float) -> bool:
        deadline = time.monotonic() + within_seconds
        while True:
            _orders, pending = await self.unprocessed(user_id)
            if pending == 0:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)

    async def pipeline_run(self, user_id: int) -> PipelineRun:
        connection = await self.infra.connect(self.database)
        try:
            rows = await connection.fetch(
                "SELECT extract(epoch FROM created_at)::float8 AS created, "
                "extract(epoch FROM processed_at)::float8 AS processed "
                "FROM orders WHERE user_id = $1",
                user_id,
            )
        finally:
            await connection.close()
        done = [(row["created"], row["processed"]) for row in rows if row["processed"]]
        return PipelineRun(
            orders=len(rows),
            processed=len(done),
            first_created_epoch=min((row["created"] for row in rows), default=0.0),
            last_processed_epoch=max((processed for _created, processed in done), default=0.0),
            lags_s=[processed - created for created, processed in done],
        )

    async def created_at_least(self, user_id: int, count: int) -> bool:
        orders, _pending = await self.unprocessed(user_id)
        return orders >= count

    async def measure_pipeline(self, url: str, warm: Account, measured: Account) -> PipelineRun:
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
        await asyncio.gather(consumer.stop(), worker.stop())
        return run

    async def order_ids(self, user_id: int, limit: int) -> list[str]:
        connection = await self.infra.connect(self.database)
        try:
            rows = await connection.fetch(
                "SELECT id FROM orders WHERE user_id = $1 ORDER BY random() LIMIT $2",
                user_id,
                limit,
            )
        finally:
            await connection.close()
        return [str(row["id"]) for row in rows]


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


async def bench(options: Options) -> dict[str, Any]:
    shutil.rmtree(options.keep_logs, ignore_errors=True)
    options.keep_logs.mkdir(parents=True, exist_ok=True)
    run = Run(options, Infra.from_env(), Path(tempfile.mkdtemp(prefix="oms-bench-")))
    load_before = os.getloadavg()
    machine = {**machine_info(), "load_before": [round(x, 2) for x in load_before]}
    run.log(f"machine: {machine}")
    ids_file = run.workdir / "order_ids.txt"
    try:
        async with run.borrowed_infrastructure():
            await run.prepare()
            pgbench_tps = await run.measure_pgbench()

            ids_file.write_text(f"{uuid.uuid4()}\n")
            baseline = await run.measure_baseline(
                sample_order_body(), ids_file, run.token_like_the_api()
            )

            api_port = free_port()
            url = f"http://127.0.0.1:{api_port}"
            api = run.service(
                "api", [str(VENV_BIN / "oms-api")], f"{url}/health/ready", PORT=api_port
            ).start()
            await api.wait_ready()
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                warm = await run.account(http, "warm")
                pipeline_account = await run.account(http, "pipeline")
                creator = await run.account(http, "create")
            pipeline = await run.measure_pipeline(url, warm, pipeline_account)

            run.log("create: warm-up")
            await run.wrk(
                "create.lua", url, options.warmup, f"token={warm.token}", label="create_warmup"
            )
            run.log("create: measuring")
            create = await run.wrk(
                "create.lua", url, options.duration, f"token={creator.token}", label="create"
            )

            ids_file.write_text("\n".join(await run.order_ids(creator.user_id, options.get_ids)))
            get_args = (f"token={creator.token}", f"ids={ids_file}")
            run.log("get: warm-up (fills the cache)")
            await run.wrk("get.lua", url, options.warmup, *get_args, label="get_warmup")
            run.log("get: measuring")
            get_cached = await run.wrk("get.lua", url, options.duration, *get_args, label="get")
            api.record_peak_rss()
            await api.stop()
    finally:
        for service in run.services:
            if service.log_path.exists():
                shutil.copy(service.log_path, options.keep_logs / service.log_path.name)
        shutil.rmtree(run.workdir, ignore_errors=True)

    load_after = os.getloadavg()
    machine["load_after"] = [round(x, 2) for x in load_after]
    peaks = {service.name: round(service.peak_rss, 1) for service in run.services}
    figures = compute_figures(
        baseline=baseline,
        pgbench_tps=pgbench_tps,
        create=create,
        get_cached=get_cached,
        pipeline=pipeline,
        peak_rss_mb=peaks,
    )
    notes = [note for note in [busy_note([load_before[0]], os.cpu_count() or 1)] if note]
    details = {
        **run.details,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "settings": {
            "api_workers": options.api_workers,
            "worker_concurrency": options.worker_concurrency,
            "wrk_connections": options.connections,
            "wrk_threads": options.threads,
            "duration_s": options.duration,
            "warmup_s": options.warmup,
            "pgbench_clients": options.pgbench_clients,
            "pipeline_orders": options.pipeline_orders,
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
    try:
        document = asyncio.run(bench(options))
    except BenchSetupError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1
    for line in figure_lines(document["figures"]):
        print(line)
    for note in document["details"]["notes"]:
        print(f"note: {note}")
    write_results(document, options.output)
    print(f"results written to {options.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
