"""`make services` (scripts/ensure-services.sh): quick and idempotent when everything answers, and
explicit instead of guessing where it may not install anything."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.harness import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-services.sh"


@contextmanager
def copy_anyone_can_run(script: Path) -> Iterator[Path]:
    """`nobody` may not read the checkout (a clone under /root, a 0700 home directory): it runs a
    copy in a fresh directory everyone may read. The script sources nothing, so it is enough
    (test_the_script_sources_nothing_a_copy_would_miss)."""
    with tempfile.TemporaryDirectory(prefix="oms-ensure-services-") as directory:
        place = Path(directory)
        place.chmod(0o755)
        copy = place / script.name
        shutil.copyfile(script, copy)
        copy.chmod(0o755)
        yield copy


def run_script(
    env: dict[str, str], *, as_nobody: bool = False, script: Path = SCRIPT
) -> subprocess.CompletedProcess[str]:
    def run(path: Path, prefix: list[str], cwd: Path | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, "bash", str(path)],
            env={**os.environ, **env},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    if not (as_nobody and os.geteuid() == 0):
        return run(script, [], None)
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root for this test"
    with copy_anyone_can_run(script) as copy:
        # Started in the copy's directory too: nobody may not enter the current one.
        return run(
            copy, [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"], copy.parent
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


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can run the script as nobody")
def test_runs_as_nobody_from_a_checkout_nobody_can_read(tmp_path: Path) -> None:
    """A clone under /root or a 0700 home: the as-nobody runs above still work."""
    private = tmp_path / "home"
    (private / "scripts").mkdir(parents=True)
    private.chmod(0o700)
    checkout_script = private / "scripts" / SCRIPT.name
    shutil.copyfile(SCRIPT, checkout_script)
    nothing_there = str(free_port())
    result = run_script(
        {"OMS_SERVICES_REDIS_PORT": nothing_there}, as_nobody=True, script=checkout_script
    )
    assert "Permission denied" not in result.stderr, result.stderr
    assert f"redis: DOWN (127.0.0.1:{nothing_there})" in result.stdout, result.stderr


def test_the_script_sources_nothing_a_copy_would_miss() -> None:
    """The as-nobody runs copy the script alone: a `source`d file would be missing there."""
    sourcing = re.compile(r"^\s*(source|\.)\s", re.MULTILINE)
    assert not sourcing.search(SCRIPT.read_text())
