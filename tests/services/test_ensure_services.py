"""`make services` (scripts/ensure-services.sh): quick and idempotent when everything answers, and
explicit instead of guessing where it may not install anything."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-services.sh"


def run_script(env: dict[str, str], *, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    command = ["bash", str(SCRIPT)]
    if as_nobody and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root for this test"
        command = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    return subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False
    )


def test_everything_up_reports_each_service_and_changes_nothing() -> None:
    result = run_script({})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for service in ("postgres", "redis", "rabbitmq"):
        assert any(line.strip().startswith(f"{service}: up") for line in lines), result.stdout
    assert "installing" not in result.stdout
    assert "starting" not in result.stdout


def test_without_permission_to_install_it_prints_the_commands_and_fails() -> None:
    """Not root: nothing is installed or started; the missing server is named, and the install
    commands for Debian/Ubuntu and macOS are printed."""
    nothing_there = str(free_port())
    result = run_script({"OMS_SERVICES_REDIS_PORT": nothing_there}, as_nobody=True)
    assert result.returncode == 1
    assert f"redis: DOWN (127.0.0.1:{nothing_there})" in result.stdout
    assert "postgres: up" in result.stdout
    assert "apt-get install -y postgresql redis-server rabbitmq-server" in result.stderr
    assert "brew install postgresql@15 redis rabbitmq" in result.stderr
    assert "starting" not in result.stdout


@pytest.mark.parametrize(
    "port_variable", ["OMS_SERVICES_AMQP_PORT", "OMS_SERVICES_MANAGEMENT_PORT"]
)
def test_rabbitmq_counts_as_up_only_with_amqp_and_the_management_api(port_variable: str) -> None:
    result = run_script({port_variable: str(free_port())}, as_nobody=True)
    assert result.returncode == 1
    assert "rabbitmq: DOWN" in result.stdout
