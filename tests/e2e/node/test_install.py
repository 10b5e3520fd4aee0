"""`helm install` as the README shows it, on the node: the migration hook, every Deployment of the
chart Available with all its pods Running and Ready, `helm test`; and a release that could not
start is refused before anything is created, saying what to set."""

from __future__ import annotations

import sqlalchemy
from tests.cluster.support import CHART, Kube
from tests.e2e.node.support import (
    COMPONENTS,
    LOCAL_VALUES,
    Release,
    create_namespace,
)
from tests.pipeline.support import database_sessions


def test_every_deployment_of_the_chart_runs(release: Release) -> None:
    for component in COMPONENTS:
        pods = release.pods(component)
        assert pods, component
        assert release.running_pods(component) == sorted(p["metadata"]["name"] for p in pods)
        for pod in pods:
            # Started once: no crash loop while dependencies or keys came up.
            for status in pod["status"]["containerStatuses"]:
                assert status["restartCount"] == 0, (component, status)
    deployments = release.kube.json("-n", release.namespace, "get", "deployments")["items"]
    for deployment in deployments:
        status = deployment["status"]
        assert status.get("availableReplicas") == status.get("replicas"), deployment["metadata"]


async def test_the_migration_hook_ran_before_the_release(release: Release) -> None:
    events = release.kube.json("-n", release.namespace, "get", "events")["items"]
    job_events = {
        e["reason"] for e in events if e["involvedObject"].get("name") == "oms-migrations"
    }
    # The Job ran to completion (and was then deleted by its hook-succeeded policy).
    assert {"SuccessfulCreate", "Completed"} <= job_events, job_events
    assert release.kube.get("job", "oms-migrations", release.namespace) is None
    async with database_sessions(release.settings()) as factory, factory() as session:
        revision = (
            await session.execute(sqlalchemy.text("select version_num from alembic_version"))
        ).scalar()
    assert revision


def test_helm_test_passes(release: Release) -> None:
    result = release.helm("test", release.name)
    assert "Phase:          Succeeded" in result.stdout, result.stdout


def test_a_release_without_a_key_source_is_refused_saying_what_to_set(kube: Kube) -> None:
    namespace = create_namespace(kube, "refused")
    try:
        result = kube.helm(
            "install", "oms", str(CHART), "-n", namespace, "--values", str(LOCAL_VALUES),
            "--set", "orderSystem.enabled=false",
            check=False,
        )  # fmt: skip
        assert result.returncode != 0
        assert "jwt.existingSecret" in result.stderr
        assert "orderSystem.enabled=true" in result.stderr
        # Refused before anything was made.
        assert kube.helm("list", "-n", namespace, "-q").stdout.strip() == ""
        leftovers = kube.run("-n", namespace, "get", "all,configmaps,secrets", "-o", "name")
        assert [line for line in leftovers.stdout.split() if "kube-root-ca" not in line] == []
    finally:
        kube.run("delete", "namespace", namespace, "--wait=false", check=False)
