"""The Tiltfile, executed by a Starlark interpreter against stubs of Tilt's built-ins."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.chart import REPO, run_script

TILTFILE = REPO / "Tiltfile"


def check(tiltfile: Path) -> subprocess.CompletedProcess[str]:
    return run_script("check-tiltfile.py", "--tiltfile", str(tiltfile))


def test_tiltfile_declares_what_the_repository_has() -> None:
    result = check(TILTFILE)
    assert result.returncode == 0, result.stderr
    assert "4 images, 1 chart(s)" in result.stdout


@pytest.mark.parametrize(
    ("original", "replacement", "complaint"),
    [
        ('DOCKERFILE = "Dockerfile"', 'DOCKERFILE = "Dockerfile.missing"', "no Dockerfile"),
        ('("api-dev",', '("api-develop",', "stage 'api-develop'"),
        ('("worker-dev",', '("worker",', "target 'worker' is not a -dev target"),
        (
            '"oms-consumer": ("consumer-dev"',
            '"oms-consumer": ("api-dev"',
            "consumer-dev is not built",
        ),
        ('SITE_PACKAGES + "/" + package', 'SITE_PACKAGES + "/x" + package', "sync"),
        ('"charts/oms/ci/dev-values.yaml"', '"charts/oms/ci/nope.yaml"', "does not exist"),
        ('forward(8000, 8000, name = "API")', "forward(8000, 8080)", "port_forward"),
        ('resource_deps = ["postgresql"]', 'resource_deps = ["postgres"]', "'postgres'"),
        ('"oms:ordersystem"', '"oms-main:ordersystem"', "is not deployed"),
        (
            'k8s_resource(\n    "oms-worker",',
            'k8s_resource(\n    "oms-workers",',
            "no such workload",
        ),
        ('"oms-operator": (', '"oms-operatr": (', "missing for ['oms-operator']"),
        ("update_settings(", "update_setings(", "Starlark error"),
        ('allow_k8s_contexts("oms-local")', 'allow_k8s_contexts("kind-kind")', "'oms-local'"),
        ("analytics_settings(False)", "analytics_settings(True)", "analytics_settings(False)"),
        ("check_updates = False", "check_updates = True", "check_updates"),
        ('"--namespace", NAMESPACE', '"--namespace", "default"', "namespace 'default'"),
        ('"--include-crds"]', "]", "--include-crds"),
        ('["tilt.dev/down-policy"] = "keep"', '["tilt.dev/down-policy"] = "x"', "down-policy"),
        ('network = "host"', 'network = "bridge"', "network is not host"),
        ("build_args = BUILD_ARGS,", "", "build_args"),
        ("trigger_mode = TRIGGER_MODE_MANUAL,", "", "rebuild its image"),
        ('"src/oms", package_dir]', '"src/oms", "services", package_dir]', "services is neither"),
        ('"scripts/tilt-build-args.py"', '"scripts/build-args.py"', "does not exist"),
    ],
)
def test_tiltfile_check_catches_mistakes(
    tmp_path: Path, original: str, replacement: str, complaint: str
) -> None:
    text = TILTFILE.read_text()
    assert original in text
    broken = tmp_path / "Tiltfile"
    broken.write_text(text.replace(original, replacement, 1))
    result = check(broken)
    assert result.returncode == 1
    assert complaint in result.stderr
