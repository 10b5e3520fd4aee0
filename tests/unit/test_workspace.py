"""The uv workspace: every process is its own member with its own console scripts, the check
behind `make deps-check` really fails on an undeclared import, and the operator's process loads
none of the API's or the pipeline's stack."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEPTRY = str(Path(sys.executable).parent / "deptry")


def _toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


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


def test_the_operator_process_loads_no_api_or_pipeline_stack() -> None:
    code = (
        "import sys, oms_operator.main, oms_operator.handlers; "
        "print(sorted(name for name in ('sqlalchemy', 'fastapi', 'celery', 'oms.settings') "
        "if name in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert result.stdout.strip() == "[]"
