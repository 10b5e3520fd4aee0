"""Services under test as real processes, and the shared infrastructure the run borrows.

Every run creates its own PostgreSQL databases, RabbitMQ vhost and Redis key prefix and removes
them afterwards; the shared servers themselves are never restarted or reconfigured.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from redis.asyncio import Redis
from tests.harness import ServiceProcess

from bench.costs import postgres_backend_database
from bench.harness import (
    command_name,
    cpu_by_group,
    cpu_ticks,
    descendants,
    machine_ticks,
    parent_pid,
    vm_hwm_kib,
)


class BenchSetupError(RuntimeError):
    """Something the run needs did not come up; the message says what and where to look."""


async def run_command(*argv: str, env: dict[str, str] | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise BenchSetupError(f"{' '.join(argv)} failed ({process.returncode}):\n{text}")
    return text


# --- /proc ---------------------------------------------------------------------------------
def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def process_tree(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _read(entry / "stat")
            if stat:
                parents[int(entry.name)] = parent_pid(stat)
    return descendants(root, parents)


def peak_rss_mb(root: int) -> float:
    """Sum of VmHWM over a process and its descendants (uvicorn workers, Celery children)."""
    return sum(tree_peaks_kib(root)) / 1024


def largest_peak_rss_mb(root: int) -> float:
    """The largest VmHWM of one process of the tree: for the API, one uvicorn worker (the
    supervisor does not import the application)."""
    return max(tree_peaks_kib(root), default=0) / 1024


def tree_peaks_kib(root: int) -> list[int]:
    peaks = []
    for pid in process_tree(root):
        status = _read(Path(f"/proc/{pid}/status"))
        if status:
            peaks.append(vm_hwm_kib(status))
    return peaks


# --- services ------------------------------------------------------------------------------
@dataclass
class Service(ServiceProcess):
    """A service process (tests.harness) that also remembers its peak memory."""

    peak_rss: float = 0.0
    peak_process_rss: float = 0.0  # the largest of one process (one API worker)

    def record_peak_rss(self) -> float:
        if self.running and self.process is not None:
            self.peak_rss = max(self.peak_rss, peak_rss_mb(self.process.pid))
            self.peak_process_rss = max(
                self.peak_process_rss, largest_peak_rss_mb(self.process.pid)
            )
        return self.peak_rss

    async def stop(self, grace_seconds: float = 20.0) -> None:
        if self.running:
            self.record_peak_rss()
        await super().stop(grace_seconds)


# --- borrowed infrastructure ---------------------------------------------------------------
@dataclass(frozen=True)
class Infra:
    pg_host: str
    pg_port: int
    pg_user: str
    redis_base: str
    rabbitmq_host: str
    rabbitmq_port: int
    rabbitmqctl: str

    @classmethod
    def from_env(cls) -> Infra:
        env = os.environ.get
        return cls(
            pg_host=env("BENCH_POSTGRES_HOST", "127.0.0.1"),
            pg_port=int(env("BENCH_POSTGRES_PORT", "5432")),
            pg_user=env("BENCH_POSTGRES_USER", "postgres"),
            redis_base=env("BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
            rabbitmq_host=env("BENCH_RABBITMQ_HOST", "127.0.0.1"),
            rabbitmq_port=int(env("BENCH_RABBITMQ_PORT", "5672")),
            rabbitmqctl=env("BENCH_RABBITMQCTL", "rabbitmqctl"),
        )

    def amqp_url(self, vhost: str) -> str:
        return f"amqp://guest:guest@{self.rabbitmq_host}:{self.rabbitmq_port}/{vhost}"

    async def connect(self, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(
            host=self.pg_host, port=self.pg_port, user=self.pg_user, database=database
        )

    async def create_database(self, name: str, template: str | None = None) -> None:
        admin = await self.connect()
        try:
            clause = f' TEMPLATE "{template}"' if template else ""
            await admin.execute(f'CREATE DATABASE "{name}"{clause}')
        finally:
            await admin.close()

    async def drop_database(self, name: str) -> None:
        admin = await self.connect()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    async def create_vhost(self, name: str) -> None:
        await run_command(self.rabbitmqctl, "add_vhost", name, "-q")
        await run_command(
            self.rabbitmqctl, "set_permissions", "-p", name, "guest", ".*", ".*", ".*", "-q"
        )

    async def delete_vhost(self, name: str) -> None:
        await run_command(self.rabbitmqctl, "delete_vhost", name, "-q")

    async def delete_redis_prefix(self, prefix: str) -> int:
        deleted = 0
        for db in (0, 1, 2):
            client = Redis.from_url(f"{self.redis_base}/{db}")
            try:
                keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
                for start in range(0, len(keys), 1000):
                    deleted += int(await client.delete(*keys[start : start + 1000]))
            finally:
                await client.aclose()
        return deleted


# --- CPU accounting ------------------------------------------------------------------------
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# Tools recognised by command name; everything else not ours counts as "other".
KNOWN_COMMANDS = {"wrk": "wrk", "py-spy": "py-spy", "pgbench": "pgbench"}
# The servers scripts/ensure-services.sh starts, by the command name of their top process; each
# is charged with its whole process tree (PostgreSQL's backends, RabbitMQ's port programs).
SERVER_COMMANDS = {"postgres": "postgresql", "beam.smp": "rabbitmq", "redis-server": "redis"}
# PostgreSQL backends serving other databases (other people's tests on the shared server).
OTHER_DATABASES = "postgresql_other_databases"


def proc_cmdline(pid: int) -> str:
    return _read(Path(f"/proc/{pid}/cmdline")) or ""


@dataclass(frozen=True)
class ProcessTable:
    """Every process right now: CPU ticks, command name and parent."""

    ticks: dict[int, int]
    names: dict[int, str]
    parents: dict[int, int]

    @classmethod
    def snapshot(cls) -> ProcessTable:
        ticks: dict[int, int] = {}
        names: dict[int, str] = {}
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                stat = _read(entry / "stat")
                if stat:
                    pid = int(entry.name)
                    ticks[pid] = cpu_ticks(stat)
                    names[pid] = command_name(stat)
                    parents[pid] = parent_pid(stat)
        return cls(ticks, names, parents)

    def server_groups(
        self, databases: frozenset[str], cmdline: Callable[[int], str] = proc_cmdline
    ) -> dict[int, str]:
        """The servers' process trees; backends of databases not in `databases` apart."""
        group_of: dict[int, str] = {}
        for pid, name in self.names.items():
            group = SERVER_COMMANDS.get(name)
            if group is None or self.names.get(self.parents.get(pid, 0)) == name:
                continue
            for member in descendants(pid, self.parents):
                group_of[member] = group
        for pid, group in list(group_of.items()):
            if group == "postgresql":
                database = postgres_backend_database(cmdline(pid))
                if database is not None and database not in databases:
                    group_of[pid] = OTHER_DATABASES
        return group_of


class CpuMeter:
    """CPU seconds per service (process trees) and per infrastructure server during a phase.
    PostgreSQL is charged with its server processes and the backends of `databases` (the
    run's own); backends of other databases go to `postgresql_other_databases`."""

    def __init__(self, services: list[Service], databases: frozenset[str] = frozenset()) -> None:
        self._services = services
        self._databases = databases
        self._before = ProcessTable.snapshot().ticks
        self._machine_before = machine_ticks(_read(Path("/proc/stat")) or "")
        self._started = time.monotonic()

    def groups(self, table: ProcessTable) -> dict[int, str]:
        group_of = {
            pid: KNOWN_COMMANDS[name] for pid, name in table.names.items() if name in KNOWN_COMMANDS
        }
        group_of.update(table.server_groups(self._databases))
        for service in self._services:
            if service.process is not None and service.running:
                for pid in descendants(service.process.pid, table.parents):
                    group_of[pid] = service.name
        group_of[os.getpid()] = "harness"
        return group_of

    def read(self) -> dict[str, float]:
        table = ProcessTable.snapshot()
        used = cpu_by_group(self._before, table.ticks, self.groups(table), TICKS_PER_SECOND)
        busy, idle = machine_ticks(_read(Path("/proc/stat")) or "")
        # Includes processes that ended during the phase (pgbench, wrk, their backends).
        used["all_busy"] = round((busy - self._machine_before[0]) / TICKS_PER_SECOND, 2)
        used["all_idle"] = round((idle - self._machine_before[1]) / TICKS_PER_SECOND, 2)
        used["wall_seconds"] = round(time.monotonic() - self._started, 2)
        return used
