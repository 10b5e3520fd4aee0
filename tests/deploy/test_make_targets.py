"""The make targets as `make help` lists them, and the repository's mentions of them: a removed or
renamed target must not live on in the docs, messages and scripts."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.deploy.chart import REPO

# `make <target>` in a code span, or at the start of a (code) line.
MENTION = re.compile(r"(?:`|^\s*)make ([a-z][a-z0-9-]*)", re.MULTILINE)
EVERYDAY = ["run", "test", "services", "stack", "bench", "manifests", "images", "cluster"]


def make(*args: str, env: dict[str, str] | None = None) -> str:
    """What make prints (with -n: what it would run, running nothing)."""
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env=env,
    )
    return result.stdout


def make_help() -> tuple[list[str], list[str]]:
    everyday_part, _, other_part = make("-s", "help").partition("\nOther targets:\n")

    def names(text: str) -> list[str]:
        return [line.split()[0] for line in text.splitlines() if line.startswith("  ")]

    return names(everyday_part), names(other_part)


def test_help_lists_the_everyday_targets_first() -> None:
    everyday, other = make_help()
    assert everyday[: len(EVERYDAY)] == EVERYDAY
    assert {"lint", "typecheck", "pytest", "help"} <= set(other)
    assert not set(everyday) & set(other)


def test_every_mentioned_target_exists() -> None:
    everyday, other = make_help()
    targets = set(everyday) | set(other)
    listing = subprocess.run(
        ["git", "ls-files"], capture_output=True, text=True, check=False, cwd=REPO
    )
    if listing.returncode != 0:
        pytest.skip(f"no git checkout to list the files of: {listing.stderr.strip()}")
    tracked = listing.stdout.split()
    unknown: list[str] = []
    for name in tracked:
        path = REPO / name
        if name == "Makefile" or name.startswith("mk/") or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        unknown += [
            f"{name}: make {target}" for target in MENTION.findall(text) if target not in targets
        ]
    assert not unknown, unknown


def test_make_env_puts_the_projects_tools_first_on_path() -> None:
    """`eval "$(make -s env)"` (README): the pinned kubectl and the project's `oms` win over
    whatever else is on PATH, e.g. a kubectl of another version in /usr/local/bin."""
    script = 'eval "$(make -s --no-print-directory env)"; command -v kubectl; command -v oms'
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )
    kubectl, oms = result.stdout.split()
    assert kubectl == str(REPO / ".tools" / "bin" / "kubectl")
    assert oms == str(REPO / ".venv" / "bin" / "oms")


def pytest_prerequisites(env: dict[str, str], narrowed: str = "--co") -> list[str]:
    """What `make pytest T=<narrowed>` would install first, from make's database (nothing is
    run)."""
    database = make("-p", "-n", "pytest", f"T={narrowed}", env=env)
    rules = [line for line in database.splitlines() if line.startswith("pytest: ")]
    assert len(rules) == 1, rules
    return rules[0].split()[1:]


def background_build(env: dict[str, str]) -> list[str]:
    """The tools `make test` sets compiling in the background (`cluster.py build --background`),
    from make's dry run."""
    dry_run = make("-n", "tools-in-background", env=env)
    (command,) = [line for line in dry_run.splitlines() if "--background" in line]
    return command.split("--background", 1)[1].split()[1:]


def test_tests_pointed_at_another_cluster_build_no_control_plane() -> None:
    own = {k: v for k, v in os.environ.items() if k != "OMS_E2E_KUBECONFIG"}
    other_env = {**own, "OMS_E2E_KUBECONFIG": "/nonexistent/kubeconfig"}
    assert background_build(own) == ["node", "tilt"]
    # Tilt is still needed there (tests/e2e/node/test_tilt.py runs it against that cluster).
    assert background_build(other_env) == ["tilt"]
    # The chart README's generator comes along either way: the deploy tests use it.
    ours, other = pytest_prerequisites(own), pytest_prerequisites(other_env)
    assert any(path.endswith("/helm-docs") for path in ours + other)


BACKGROUND = "node and tilt, compiling"


def tool_name(prerequisite: str) -> str:
    name = prerequisite.rsplit("/", 1)[-1]
    if name == "tools-in-background":
        return BACKGROUND
    return "kubectl-layer" if name.startswith(".kubectl-layer-") else name


@pytest.mark.parametrize(
    ("narrowed", "wanted"),
    [
        ("tests/api/test_orders.py -x", set()),
        ("tests/unit tests/pipeline", set()),
        ("tests/deploy/test_chart.py::test_x", {"kubectl-layer", "helm-docs"}),
        ("tests/observability", {"promtool", "prometheus"}),
        ("tests/cluster", {BACKGROUND, "kubectl-layer"}),
        ("tests/e2e/node/test_keys.py", {BACKGROUND, "kubectl-layer", "prometheus", "tilt"}),
        ("tests/e2e", {BACKGROUND, "kubectl-layer", "prometheus", "tilt"}),
        ("tests -x", {BACKGROUND, "kubectl-layer", "helm-docs", "promtool", "prometheus", "tilt"}),
    ],
)
def test_a_narrowed_run_installs_only_the_tools_of_its_suites(
    narrowed: str, wanted: set[str]
) -> None:
    own = {k: v for k, v in os.environ.items() if k != "OMS_E2E_KUBECONFIG"}
    prerequisites = pytest_prerequisites(own, narrowed)
    assert prerequisites[:2] == ["install", "services"]
    assert {tool_name(path) for path in prerequisites[2:]} == wanted
