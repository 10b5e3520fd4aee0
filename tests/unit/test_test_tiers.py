"""The fast tier (tests/tiers.py, `make check`): which tests land in it, the guard that fails one
reaching a server, a shared conftest that stays cheap to import, and pre-commit hooks that name
only the project's own tools."""

from __future__ import annotations

import contextlib
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
import yaml

from tests import tiers
from tests.infra import PG_HOST, PG_PORT
from tests.unit.test_workspace import REPO, _loaded

VENV_BIN = Path(sys.executable).parent


@dataclass
class FakeItem:
    """What `tiers.is_fast` reads of a collected test."""

    path: Path
    fixturenames: list[str] = field(default_factory=list)
    markers: tuple[str, ...] = ()
    module: ModuleType | None = None

    def get_closest_marker(self, name: str) -> Any:
        return getattr(pytest.mark, name) if name in self.markers else None


def fast(item: FakeItem) -> bool:
    return tiers.is_fast(cast(pytest.Item, item))


def test_a_plain_test_anywhere_but_the_slow_suites_is_fast() -> None:
    assert fast(FakeItem(tiers.TESTS / "unit" / "test_new.py", ["tmp_path", "monkeypatch"]))
    assert fast(FakeItem(tiers.TESTS / "operator" / "test_new.py", ["kmock"]))


@pytest.mark.parametrize("suite", sorted(tiers.SLOW_SUITES))
def test_a_test_in_a_slow_suite_is_not_fast(suite: str) -> None:
    assert not fast(FakeItem(tiers.TESTS / suite / "test_new.py"))


@pytest.mark.parametrize("fixture", ["pg_template", "rabbitmq_url"])
def test_a_test_using_a_server_through_its_fixtures_is_not_fast(fixture: str) -> None:
    # pytest lists the whole closure: `client` brings `settings`, `make_settings`, `pg_template`.
    closure = ["client", "app", "settings", "make_settings", fixture]
    assert not fast(FakeItem(tiers.TESTS / "unit" / "test_new.py", closure))


@pytest.mark.parametrize("marker", ["services", "slow", "e2e"])
def test_a_marked_test_is_not_fast(marker: str) -> None:
    assert not fast(FakeItem(tiers.TESTS / "unit" / "test_new.py", markers=(marker,)))


def test_a_module_running_the_real_api_process_is_not_fast() -> None:
    from tests.live import live_api

    module = ModuleType("tests.api.test_new")
    module.live_api = live_api  # type: ignore[attr-defined]
    assert not fast(FakeItem(tiers.TESTS / "api" / "test_new.py", module=module))
    assert fast(FakeItem(tiers.TESTS / "api" / "test_new.py", module=ModuleType("plain")))


def test_this_test_is_in_the_fast_tier(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("fast") is not None


NODE = "tests/unit/test_new.py::test_x"


def test_the_guard_fails_a_connection_to_a_server_and_names_it() -> None:
    refused = pytest.raises(pytest.fail.Exception, match="connects to PostgreSQL")
    with refused, tiers.refuse_servers(NODE):
        socket.create_connection((PG_HOST, PG_PORT), timeout=1)


def test_the_guard_reports_an_attempt_that_was_swallowed() -> None:
    def swallowing() -> None:  # a library's broad `except` around its connect
        with contextlib.suppress(BaseException):
            socket.create_connection((PG_HOST, PG_PORT), timeout=1)

    reported = pytest.raises(pytest.fail.Exception, match=r"mark it @pytest\.mark\.services")
    with reported, tiers.refuse_servers(NODE):
        swallowing()


def test_the_guard_lets_other_connections_through() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        tiers.refuse_servers(NODE),
        socket.create_connection(server.getsockname(), timeout=1) as connection,
    ):
        assert connection.getpeername() == server.getsockname()


def test_importing_the_shared_conftest_loads_no_app_database_or_driver() -> None:
    heavy = ("oms_api", "fastapi", "sqlalchemy", "alembic", "asyncpg", "redis", "httpx")
    assert _loaded("import tests.conftest", heavy) == []


def _hooks() -> list[dict[str, Any]]:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    return [hook for repo in config["repos"] for hook in repo["hooks"]]


def _make_targets() -> set[str]:
    listing = subprocess.run(
        ["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[0] for line in listing.splitlines() if line.startswith("  ")}


def test_pre_commit_hooks_run_only_the_projects_own_tools() -> None:
    hooks = _hooks()
    assert hooks, "no hooks"
    targets = _make_targets()
    for hook in hooks:
        assert hook["language"] == "system", hook["id"]
        command = shlex.split(hook["entry"])
        if command[0] == "make":
            assert command[1] in targets, hook["id"]
        else:
            assert command[:3] == ["uv", "run", "--frozen"], hook["id"]
            assert (VENV_BIN / command[3]).is_file(), f"{hook['id']}: {command[3]} not in .venv"


def test_the_pre_commit_config_is_valid() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pre_commit", "validate-config", ".pre-commit-config.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.services  # its child session clones the PostgreSQL template
def test_a_fast_test_last_in_a_session_is_not_blamed_for_the_session_fixtures_teardown() -> None:
    # The last test's teardown finalizes the session's fixtures: here the template database a
    # slow test made, dropped on PostgreSQL after a fast test ran.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/api/test_smoke.py::test_health",
            "tests/unit/test_state_machine.py",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "in the fast tier" not in result.stdout
