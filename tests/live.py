"""Run the real `oms-api` process against an isolated PostgreSQL database (for black-box tests)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from oms.security.keys import generate_private_key, private_key_to_pem
from tests import infra
from tests.harness import free_port, settings_environment


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before serving {url}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become healthy in {timeout}s")


def signing_key_file(data_dir: Path) -> Path:
    """Outside the embedded mode the API never makes up a signing key: give it one."""
    path = data_dir / "jwt-signing-key.pem"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_bytes(private_key_to_pem(generate_private_key()))
    return path


@dataclass
class LiveApi:
    url: str
    env: dict[str, str]
    pid: int
    log: Path | None  # the process's stderr, when asked for

    def rss_bytes(self) -> int:
        """Resident memory of the server process (the supervisor when there are workers)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


def postgres_env(database: str, prefix: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return settings_environment(
        {
            "POSTGRES_HOST": infra.PG_HOST,
            "POSTGRES_PORT": infra.PG_PORT,
            "POSTGRES_USER": infra.PG_USER,
            "POSTGRES_DB": database,
            "REDIS_URL": f"{infra.REDIS_BASE}/0",
            "REDIS_URL_RATE_LIMIT": f"{infra.REDIS_BASE}/1",
            "REDIS_URL_CELERY": f"{infra.REDIS_BASE}/2",
            "REDIS_KEY_PREFIX": prefix,
            "DATA_DIR": data_dir,
            "JWT_PRIVATE_KEY_PATH": signing_key_file(data_dir),
            "LOG_LEVEL": "WARNING",
            **extra,
        }
    )


@contextmanager
def live_api(data_dir: Path, *, log: Path | None = None, **extra: str) -> Iterator[LiveApi]:
    database = infra.unique_name("oms_live")
    asyncio.run(infra.create_database(database))
    port = free_port()
    env = postgres_env(
        database, f"test:{database}:", data_dir, HOST="127.0.0.1", PORT=str(port), **extra
    )
    process: subprocess.Popen[bytes] | None = None
    stderr = None
    try:
        subprocess.run(
            [sys.executable, "-m", "oms.cli", "migrate"], env=env, check=True, capture_output=True
        )
        stderr = log.open("wb") if log is not None else None
        process = subprocess.Popen([sys.executable, "-m", "oms_api.main"], env=env, stderr=stderr)
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(f"{url}/health", process)
        yield LiveApi(url, env, process.pid, log)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=15)
        if stderr is not None:
            stderr.close()
        asyncio.run(infra.delete_redis_prefix(f"test:{database}:"))
        asyncio.run(infra.drop_database(database))
