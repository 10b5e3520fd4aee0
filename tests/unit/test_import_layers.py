"""`lint-imports` (part of `make lint`) keeps the contracts in pyproject.toml's
[tool.importlinter]: no import cycles, the shared library imports no service, the services never
import each other, the data path and the API in layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def test_every_import_contract_is_kept() -> None:
    result = subprocess.run(
        [LINT_IMPORTS, "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_import_cycle_breaks_the_contracts(tmp_path: Path) -> None:
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("from cyclic import second\n")
    # A deferred import closes a cycle as well: it only hides it from the reader.
    (package / "second.py").write_text("def late() -> None:\n    from cyclic import first\n")
    (tmp_path / ".importlinter").write_text(
        "[importlinter]\nroot_package = cyclic\n\n"
        "[importlinter:contract:acyclic]\nname = no cycles\ntype = acyclic_siblings\n"
        "ancestors = cyclic\n"
    )
    result = subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 broken" in result.stdout
