"""A private RabbitMQ node for fault tests: own node name, ports, cookie and data directory,
so stopping it never touches the shared broker on 5672."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tests.harness import free_port
from tests.pipeline.support import eventually, run_command

RABBITMQ_BIN = Path(os.environ.get("TEST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))


def _tool(name: str) -> str:
    candidate = RABBITMQ_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (set TEST_RABBITMQ_BIN)")
    return found


class PrivateRabbitNode:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.name = f"oms_e2e_{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        base.mkdir(parents=True, exist_ok=True)
        cookie = base / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (base / "rabbitmq-env.conf").write_text("")
        self.env = {
            **{key: value for key, value in os.environ.items() if not key.startswith("RABBITMQ_")},
            "HOME": str(base),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(base / "node.pid"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def ctl(self, *args: str) -> str:
        return await run_command(_tool("rabbitmqctl"), "-n", self.name, *args, env=self.env)

    def _listening(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
            return True
        return False

    async def start(self, timeout: float = 60.0) -> None:
        self.starts += 1
        with (self.base / f"server.{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(
                [_tool("rabbitmq-server")],
                env=self.env,
                cwd=self.base,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.process

        async def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"private RabbitMQ exited: see {self.base}")
            return await asyncio.to_thread(self._listening)

        await eventually(up, timeout, interval=0.2, message="the private RabbitMQ node")
        await self.ctl("await_startup", "--timeout", str(int(timeout)))

    async def stop(self, timeout: float = 30.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            await self.ctl("stop")
        except RuntimeError:
            os.killpg(process.pid, signal.SIGTERM)

        async def exited() -> bool:
            return process.poll() is not None

        try:
            await eventually(exited, timeout, interval=0.1, message="the node to stop")
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
