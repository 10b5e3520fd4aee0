"""The uv workspace: every process is its own member with its own console scripts, the check
behind `make deps-check` really fails on an undeclared import, each member installs (uv.lock)
and loads only the stack it uses: no database for the consumer, no API or password hashing for
the worker, no API or pipeline for the operator."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEPTRY = str(Path(sys.executable).parent / "deptry")


def _toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def _installed(member: str) -> set[str]:
    """Every package uv.lock installs with `member` (its image's `uv sync --package`): the
    closure over dependencies and the extras asked for. Markers are ignored: a superset."""
    packages = {package["name"]: package for package in _toml(REPO / "uv.lock")["package"]}
    seen: set[tuple[str, str | None]] = set()
    pending: list[tuple[str, str | None]] = [(member, None)]
    while pending:
        name, extra = pending.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        package = packages[name]
        requirements = (
            package.get("optional-dependencies", {})[extra]
            if extra
            else package.get("dependencies", [])
        )
        for requirement in requirements:
            pending.append((requirement["name"], None))
            pending.extend((requirement["name"], one) for one in requirement.get("extra", []))
    return {name for name, _ in seen}


def _loaded(code: str, modules: tuple[str, ...], **env: str) -> list[str]:
    """Which of `modules` a fresh interpreter has loaded after running `code`."""
    probe = f"import sys; {code}; print(sorted(m for m in {modules!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, **env},
    )
    return list(ast.literal_eval(result.stdout.strip()))


def _members() -> list[str]:
    return list(_toml(REPO / "pyproject.toml")["tool"]["uv"]["workspace"]["members"])


def test_each_process_is_a_member_with_its_own_scripts() -> None:
    scripts = {
        member: set(_toml(REPO / member / "pyproject.toml")["project"].get("scripts", {}))
        for member in _members()
    }
    assert scripts == {
        "src": {"oms"},
        "services/api": {"oms-api", "oms-relay"},
        "services/consumer": {"oms-consumer"},
        "services/worker": {"oms-worker"},
        "operator": {"oms-operator"},
    }


def test_the_root_installs_every_member_for_development() -> None:
    root = _toml(REPO / "pyproject.toml")
    names = {_toml(REPO / member / "pyproject.toml")["project"]["name"] for member in _members()}
    declared = {requirement.split("[")[0] for requirement in root["project"]["dependencies"]}
    assert declared == names
    assert root["tool"]["uv"]["package"] is False
    assert any(requirement.startswith("deptry") for requirement in root["dependency-groups"]["dev"])


def test_the_make_check_covers_every_member() -> None:
    makefile = (REPO / "mk" / "workspace.mk").read_text()
    (line,) = [line for line in makefile.splitlines() if line.startswith("WORKSPACE_MEMBERS")]
    assert line.split(":=")[1].split() == _members()
    assert "CHECKS += deps-check" in makefile


def test_deptry_fails_on_an_import_the_member_does_not_declare(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "probe"\nversion = "0"\ndependencies = ["pyjwt"]\n'
    )
    package = tmp_path / "probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    # yarl is installed (aiohttp's dependency) but not declared: the case the issue names.
    (package / "client.py").write_text("import jwt\nimport yarl\n")
    result = subprocess.run(
        [DEPTRY, "--no-ansi", "."], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "'yarl' imported but it is a transitive dependency" in result.stdout + result.stderr
    assert "jwt" not in result.stdout + result.stderr

    (package / "client.py").write_text("import jwt\n")
    clean = subprocess.run(
        [DEPTRY, "--no-ansi", "."], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr


# What each image must not carry, so that the consumer and worker images stay clearly smaller
# than one image with everything; the names are uv.lock's.
NOT_INSTALLED = {
    "oms-consumer": {
        "sqlalchemy", "asyncpg", "aiosqlite", "alembic", "argon2-cffi", "cryptography", "pyjwt",
        "email-validator", "redis", "fastapi", "uvicorn", "kopf",
    },
    "oms-worker": {
        "fastapi", "uvicorn", "starlette", "kopf", "argon2-cffi", "pyjwt", "cryptography",
        "email-validator", "limits", "aio-pika",
    },
    "oms-operator": {
        "sqlalchemy", "alembic", "fastapi", "uvicorn", "celery", "redis", "argon2-cffi",
    },
}  # fmt: skip


def test_each_member_installs_only_its_own_stack() -> None:
    installed = {member: _installed(member) for member in (*NOT_INSTALLED, "oms-api")}
    for member, forbidden in NOT_INSTALLED.items():
        assert not installed[member] & forbidden, member
    # What each does use is there: the closure follows the extras (not an empty walk).
    assert {"celery", "aio-pika", "pydantic-settings", "prometheus-client"} <= installed[
        "oms-consumer"
    ]
    assert {"celery", "kombu", "sqlalchemy", "asyncpg", "alembic", "redis"} <= installed[
        "oms-worker"
    ]
    assert {"kopf", "cryptography", "pyjwt", "opentelemetry-sdk"} <= installed["oms-operator"]
    assert NOT_INSTALLED["oms-consumer"] - {"kopf"} <= installed["oms-api"]


def test_the_consumer_process_loads_no_database_or_cache() -> None:
    modules = ("sqlalchemy", "redis", "cryptography", "jwt", "fastapi", "oms.db.session", "celery")
    loaded = _loaded("import oms_consumer.main", modules)
    assert loaded == ["celery"]


def test_the_worker_process_loads_no_api_or_authentication() -> None:
    # Not cryptography: redis imports it when it is installed, as it is in the development venv.
    modules = ("fastapi", "argon2", "jwt", "email_validator", "aio_pika", "sqlalchemy")
    # oms_worker.app makes the Celery app on import, which needs a broker URL (never dialled);
    # its dead letters go through kombu, so aio-pika is not even installed in its image.
    code = "import oms_worker.main, oms_worker.app, oms_worker.tasks"
    loaded = _loaded(code, modules, RABBITMQ_URL="amqp://x/")
    assert loaded == ["sqlalchemy"]


def test_the_operator_process_loads_no_api_or_pipeline_stack() -> None:
    modules = ("sqlalchemy", "fastapi", "celery", "oms.settings")
    assert _loaded("import oms_operator.main, oms_operator.handlers", modules) == []
