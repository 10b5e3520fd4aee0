"""The operator's ServiceAccount can do what it needs and nothing more (RBAC from the chart)."""

from __future__ import annotations

import pytest

from tests.cluster.conftest import Release
from tests.cluster.support import Kube, unique


def can_i(release: Release, *args: str) -> bool:
    subject = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    result = release.kube.run("auth", "can-i", *args, "--as", subject, check=False)
    answer = result.stdout.strip()
    assert answer in {"yes", "no"}, (answer, result.stderr)
    return answer == "yes"


def test_it_may_do_its_job(release: Release) -> None:
    ns = ["-n", release.namespace]
    assert can_i(release, "get", f"secrets/{release.key_secret}", *ns)
    assert can_i(release, "patch", f"secrets/{release.key_secret}", *ns)
    assert can_i(release, "create", "secrets", *ns)
    assert can_i(release, "get", "secrets/oms-rabbitmq", *ns)
    assert can_i(release, "patch", f"deployments.apps/{release.worker}", "--subresource=scale", *ns)
    assert can_i(release, "watch", "ordersystems.oms.dev", *ns)
    assert can_i(release, "patch", "ordersystems.oms.dev", "--subresource=status", *ns)
    assert can_i(release, "create", "events", *ns)


@pytest.mark.parametrize(
    "args",
    [
        ("get", "secrets/oms-database"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("delete", "secrets/oms-jwt-keys"),
        ("get", "deployments.apps/oms-worker"),
        ("patch", "deployments.apps/oms-worker"),
        ("delete", "ordersystems.oms.dev/oms"),
        ("create", "pods"),
        # Nothing cluster-wide: not even the CRDs (Kopf's scanning is off).
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
        ("list", "namespaces"),
    ],
    ids=lambda args: " ".join(args),
)
def test_it_may_not_do_more_in_its_namespace(release: Release, args: tuple[str, ...]) -> None:
    assert not can_i(release, *args, "-n", release.namespace)


def test_it_cannot_read_other_secrets_for_real(release: Release) -> None:
    result = release.sa.run("-n", release.namespace, "get", "secret", "oms-database", check=False)
    assert not result.ok
    assert "Forbidden" in result.stderr
    assert "oms-database" in result.stderr
    listed = release.sa.run("-n", release.namespace, "get", "secrets", check=False)
    assert "Forbidden" in listed.stderr
    # Positive control: the same credentials read the RabbitMQ Secret the spec names.
    assert release.sa.run("-n", release.namespace, "get", "secret", "oms-rabbitmq").ok


def test_it_cannot_touch_another_namespace(release: Release, kube: Kube) -> None:
    other = kube.create_namespace(unique("other"))
    try:
        kube.run("-n", other, "create", "deployment", "victim", "--image=example/victim:1")
        kube.create_secret(other, "oms-rabbitmq", {"RABBITMQ_URL": "amqp://x"})
        for args in (
            ("patch", "deployments.apps/victim", "--subresource=scale"),
            ("get", "deployments.apps/victim", "--subresource=scale"),
            ("get", "secrets/oms-rabbitmq"),
            ("create", "secrets"),
            ("list", "ordersystems.oms.dev"),
        ):
            assert not can_i(release, *args, "-n", other), args
        scaled = release.sa.run(
            "-n", other, "scale", "deployment", "victim", "--replicas=7", check=False
        )
        assert "Forbidden" in scaled.stderr, scaled
        assert kube.replicas(other, "victim") == 1
        secret = release.sa.run("-n", other, "get", "secret", "oms-rabbitmq", check=False)
        assert "Forbidden" in secret.stderr
    finally:
        kube.run("delete", "namespace", other, "--wait=false", check=False)
