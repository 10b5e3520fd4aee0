"""What tests and `bench/` both need to run the services as real processes: a free port, the
environment that hands a child process its settings, and a service process with its own log,
readiness wait and graceful stop.

`bench/` imports this module too (it runs from the repository root), so a fix here serves both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
from pydantic import SecretStr

from oms.settings import Settings


class ServiceNotReadyError(RuntimeError):
    """A service process exited, or did not answer ready in time; the message says where its
    log is."""


def free_port() -> int:
    """A TCP port on the loopback interface nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def settings_environment(
    values: Mapping[str, object], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment that makes a child process read exactly `values` as its settings.

    Starts from `base` (default: this process's environment) without any variable that names a
    setting, so nothing of the developer's shell leaks in; then spells each value the way the
    settings read it back: None is left out, booleans are true/false, lists comma-separated,
    secrets revealed."""
    names = {name.upper() for name in Settings.model_fields}
    source = os.environ if base is None else base
    env = {key: value for key, value in source.items() if key.upper() not in names}
    # A multiprocess metrics directory belongs to one process tree, never to a child service.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool):
            env[name] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            env[name] = ",".join(str(item) for item in value)
        else:
            env[name] = str(value)
    return env


def settings_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """The environment that makes a child process build exactly these settings."""
    return settings_environment({**settings.model_dump(), **overrides})


@dataclass
class ServiceProcess:
    """One of our services as a real process in its own session (its children die with it),
    logging each start to `workdir/<name>.<start>.log`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    ready_url: str
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    log_paths: list[Path] = field(default_factory=list)

    def start(self) -> Self:
        self.starts += 1
        log_path = self.workdir / f"{self.name}.{self.starts}.log"
        self.log_paths.append(log_path)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path | None:
        """The log of the latest start."""
        return self.log_paths[-1] if self.log_paths else None

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in self.log_paths if path.exists()
        )

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until `ready_url` answers 200; ServiceNotReadyError if the process exits first or
        the time runs out (with the end of its log)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                if not self.running:
                    raise ServiceNotReadyError(self._failure("exited early"))
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.ready_url)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ServiceNotReadyError(self._failure(f"not ready within {timeout}s"))
                await asyncio.sleep(0.2)

    def _failure(self, what: str) -> str:
        return f"{self.name} {what}; log {self.log_path}:\n{self.logs()[-4000:]}"

    def kill(self, signum: signal.Signals = signal.SIGKILL) -> None:
        """Signal the whole process group (a prefork worker and its children)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    async def wait_exit(self, timeout: float) -> int:
        """The exit code; subprocess.TimeoutExpired if it is still running after `timeout`."""
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, timeout)

    async def stop(self, grace_seconds: float = 20.0) -> None:
        """SIGTERM to the process group (graceful), SIGKILL if it overstays."""
        if not self.running:
            return
        self.kill(signal.SIGTERM)
        try:
            await self.wait_exit(grace_seconds)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            await self.wait_exit(5)
