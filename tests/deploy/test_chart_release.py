"""What a chart release carries besides its templates: a README that helm-docs generates from
README.md.gotmpl and the documented values, and a `version` bumped with every change
(scripts/check-chart-version.py). Each check runs on the repository and is shown to fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.chart import CHART, helm_docs, run_script, undocumented

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """charts/oms copied to <tmp>/charts/oms, for helm-docs to search <tmp>/charts."""
    target = tmp_path / "charts" / "oms"
    shutil.copytree(CHART, target)
    return target


def test_chart_readme_is_helm_docs_output_of_the_current_values() -> None:
    text = (CHART / "README.md").read_text()
    assert helm_docs(CHART.parent, dry_run=True) == text, (
        "charts/oms/README.md is stale: run `make manifests`"
    )
    assert '| image.registry | string | `"ghcr.io/oms-project"` | Registry and path' in text
    assert "| api.replicaCount | int | `2` | Replicas when autoscaling is off. |" in text
    # The hand-written part of README.md.gotmpl, and placeholders escaped rather than lost as HTML.
    assert "[docs/kubernetes.md](../../docs/kubernetes.md)" in text
    assert "(default: &lt;release&gt;-&lt;chart&gt;," in text
    assert undocumented(text) == []


def test_a_changed_description_makes_the_readme_stale(chart_copy: Path) -> None:
    values = chart_copy / "values.yaml"
    values.write_text(values.read_text().replace("Replicas when autoscaling is off.", "Pods."))
    readme = chart_copy / "README.md"
    assert helm_docs(chart_copy.parent, dry_run=True) != readme.read_text()
    helm_docs(chart_copy.parent, dry_run=False)
    assert helm_docs(chart_copy.parent, dry_run=True) == readme.read_text()
    assert "| api.replicaCount | int | `2` | Pods. |" in readme.read_text()


@pytest.mark.parametrize("comment", ["", "  # Probe timing.\n"])
def test_a_value_without_a_description_is_reported(chart_copy: Path, comment: str) -> None:
    values = chart_copy / "values.yaml"
    original = values.read_text()
    anchor = "\napi:\n"
    assert anchor in original
    values.write_text(original.replace(anchor, f"{anchor}{comment}  drainSeconds: 5\n", 1))
    assert undocumented(helm_docs(chart_copy.parent, dry_run=True)) == ["api.drainSeconds"]
    values.write_text(
        original.replace(anchor, f"{anchor}  # -- Seconds to drain | wait.\n  drainSeconds: 5\n", 1)
    )
    text = helm_docs(chart_copy.parent, dry_run=True)
    assert undocumented(text) == []
    assert "| api.drainSeconds | int | `5` | Seconds to drain \\| wait. |" in text


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_IDENTITY},
    )
    return result.stdout


def version_check(repo: Path) -> subprocess.CompletedProcess[str]:
    return run_script("check-chart-version.py", "--repo", str(repo), "--chart", "chart")


def set_version(repo: Path, version: str) -> None:
    (repo / "chart" / "Chart.yaml").write_text(f"apiVersion: v2\nname: demo\nversion: {version}\n")


def test_the_chart_version_names_its_content() -> None:
    result = run_script("check-chart-version.py")
    if "cannot check" in result.stdout:
        pytest.skip(result.stdout.strip())
    assert result.returncode == 0, result.stdout


def test_a_chart_change_without_a_version_bump_fails(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "chart" / "templates").mkdir(parents=True)
    (repo / "chart" / "ci").mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    set_version(repo, "0.1.0")
    template = repo / "chart" / "templates" / "a.yaml"
    template.write_text("kind: ConfigMap\n")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "chart 0.1.0")
    assert version_check(repo).returncode == 0
    # Test scenarios are not part of the package.
    (repo / "chart" / "ci" / "x-values.yaml").write_text("a: 1\n")
    assert version_check(repo).returncode == 0

    template.write_text("kind: Secret\n")
    unbumped = version_check(repo)
    assert unbumped.returncode == 1
    assert "chart/templates/a.yaml" in unbumped.stdout
    assert "set version 0.1.0" in unbumped.stdout
    assert "e.g. to 0.1.1" in unbumped.stdout
    git(repo, "commit", "--quiet", "-am", "change without a bump")
    assert version_check(repo).returncode == 1, "committing does not excuse it"

    set_version(repo, "0.1.1")
    assert "a new version" in version_check(repo).stdout
    git(repo, "commit", "--quiet", "-am", "bump")
    assert version_check(repo).returncode == 0
    (repo / "chart" / "templates" / "b.yaml").write_text("kind: Service\n")
    untracked = version_check(repo)
    assert untracked.returncode == 1
    assert "chart/templates/b.yaml" in untracked.stdout


def test_without_history_the_version_check_says_it_cannot_tell(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "chart").mkdir(parents=True)
    git(repo, "init", "--quiet", "--initial-branch=main")
    set_version(repo, "1.0.0")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "one")
    (repo / "chart" / "values.yaml").write_text("a: 1\n")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "two, without a bump")
    assert version_check(repo).returncode == 1
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "--quiet", "--depth", "1", f"file://{repo}", str(shallow))
    result = version_check(shallow)
    assert result.returncode == 0
    assert "cannot check the chart version: shallow clone" in result.stdout
    shutil.rmtree(repo / ".git")
    assert "cannot check the chart version: no git history" in version_check(repo).stdout
