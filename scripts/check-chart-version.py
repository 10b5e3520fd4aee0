"""Fail when charts/oms changed since the commit that set its current `version` (Chart.yaml)
without a bump: a published chart version must name one content.

The commit that set the version is the oldest of the newest unbroken run of first-parent commits
touching Chart.yaml whose `version` equals the working tree's. Its charts/oms is compared with
the working tree (committed, staged, unstaged and untracked files alike); ci/ is left out, being
test scenarios that .helmignore keeps out of the package. A version no commit has yet is a bump
in progress and passes. Without git history (a tarball, a shallow clone) it cannot tell: it says
so and exits 0. Run by tests/deploy.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import deploylib
import yaml

CANNOT = "cannot check the chart version"


class NoHistoryError(RuntimeError):
    pass


def _git(repo: Path, *args: str) -> str:
    git = shutil.which("git")
    if git is None:
        raise NoHistoryError("git is not installed")
    result = subprocess.run(  # noqa: S603 (fixed git arguments and repository paths)
        [git, "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise NoHistoryError(result.stderr.strip() or f"git {args[0]} failed")
    return result.stdout


def _version(chart_yaml: str) -> str:
    return str(yaml.safe_load(chart_yaml)["version"])


def next_patch(version: str) -> str:
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
    return f"{match[1]}.{match[2]}.{int(match[3]) + 1}" if match else "a higher version"


def introduced_at(repo: Path, chart: str, version: str) -> str | None:
    """The commit that set `version` in <chart>/Chart.yaml, or None if no commit has it yet."""
    chart_yaml = f"{chart}/Chart.yaml"
    found: str | None = None
    for commit in _git(repo, "log", "--first-parent", "--format=%H", "--", chart_yaml).split():
        try:
            text = _git(repo, "show", f"{commit}:{chart_yaml}")
        except NoHistoryError:  # the file was deleted in that commit
            break
        if _version(text) != version:
            break
        found = commit
    return found


def changes_since(repo: Path, chart: str, commit: str) -> list[str]:
    excluded = f":(exclude){chart}/ci"
    changed = _git(repo, "diff", "--name-only", commit, "--", chart, excluded).split("\n")
    untracked = _git(repo, "ls-files", "--others", "--exclude-standard", "--", chart, excluded)
    return sorted({path for path in [*changed, *untracked.split("\n")] if path})


def check(repo: Path, chart: str) -> tuple[bool, str]:
    """(passed, message). Passes with a `cannot check` message when history is missing."""
    version = _version((repo / chart / "Chart.yaml").read_text())
    try:
        if _git(repo, "rev-parse", "--is-shallow-repository").strip() == "true":
            return True, f"{CANNOT}: shallow clone (fetch the full history)"
        commit = introduced_at(repo, chart, version)
        if commit is None:
            return True, f"{chart} {version}: a new version (not committed yet)"
        changed = changes_since(repo, chart, commit)
        subject = _git(repo, "log", "-1", "--format=%h (%s)", commit).strip()
    except NoHistoryError as error:
        return True, f"{CANNOT}: no git history ({error})"
    if not changed:
        return True, f"{chart} {version}: unchanged since {subject}"
    return False, "\n".join(
        [
            f"{chart} changed since {subject}, the commit that set version {version}:",
            *(f"  {path}" for path in changed),
            f"Bump `version` in {chart}/Chart.yaml (e.g. to {next_patch(version)}).",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, default=deploylib.REPO)
    parser.add_argument("--chart", default=deploylib.shown(deploylib.CHART), help="in --repo")
    args = parser.parse_args(argv)
    passed, message = check(args.repo, args.chart)
    print(message)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
