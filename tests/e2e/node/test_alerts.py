"""Every alert of the chart's rules, made to fire on the deployed system by the failure it is
about: two incidents, each on a release of its own, run side by side.

- incident_api.py: PostgreSQL stalls, a poison message, a hung worker, a read-only database,
  then PostgreSQL gone (the API's error and latency budgets, dead letters, a target down, the
  API not ready).
- incident_pipeline.py: RabbitMQ gone while orders keep coming, then workers too slow for the
  backlog, and meanwhile an operator denied writing its key Secret (the outbox, the consumers,
  the queues, the operator).

Both mostly wait on clocks (every alert's `for:`, the outbox's real 120 s, the retry delays),
not on the CPU: together they take about as long as the longer one alone. Each has its own
namespace, backing services, operator and Prometheus; they share only the node and its ingress.
tests/e2e/node/alert_catalog.py says which incident induces which alert.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from tests.cluster.support import Kube
from tests.e2e.node import incident_api, incident_pipeline
from tests.e2e.node.support import Release, install, remove

pytestmark = pytest.mark.usefixtures("prometheus_crds")


async def _installed(kube: Kube, node: dict[str, Any], prefix: str, module: Any) -> Release:
    return await asyncio.to_thread(
        install,
        kube,
        node,
        prefix,
        sets=getattr(module, "RELEASE_SETS", ()),
        set_json=getattr(module, "RELEASE_SET_JSON", ()),
    )


def _show(release: Release) -> None:
    """What a person needs to see why: the pods and the recent events of the release."""
    print(release.kubectl("get", "pods", "-o", "wide", check=False))
    events = release.kubectl("get", "events", "--sort-by=.lastTimestamp", check=False)
    print("\n".join(events.splitlines()[-40:]))


async def test_every_alert_fires_on_its_failure_and_resolves(
    kube: Kube,
    node: dict[str, Any],
    node_images: list[str],
    figures: list[str],
    tmp_path: Path,
) -> None:
    incidents: dict[str, tuple[Any, Any]] = {
        "pipeline": (incident_pipeline, incident_pipeline.pipeline_incident),
    }
    if node.get("external"):
        # It freezes containers through the node's cgroups: only the node of this host allows it.
        figures.append("alerts: the API incident needs the node of `make cluster`; not run")
    else:
        incidents["api"] = (incident_api, incident_api.api_incident)

    started = time.monotonic()
    installed = await asyncio.gather(
        *(
            _installed(kube, node, f"alerts-{name}", module)
            for name, (module, _) in incidents.items()
        ),
        return_exceptions=True,
    )
    releases = {
        name: release
        for name, release in zip(incidents, installed, strict=True)
        if isinstance(release, Release)
    }
    try:
        failed_installs = [error for error in installed if isinstance(error, BaseException)]
        if failed_installs:
            raise BaseExceptionGroup("a release did not install", failed_installs)
        figures.append(
            f"alerts: {len(releases)} releases ready in {time.monotonic() - started:.0f} s"
        )
        outcomes = await asyncio.gather(
            *(run(releases[name], tmp_path / name) for name, (_, run) in incidents.items()),
            return_exceptions=True,  # one incident failing must not cut the other short
        )
        failures = {
            name: outcome
            for name, outcome in zip(incidents, outcomes, strict=True)
            if isinstance(outcome, BaseException)
        }
        for name in failures:
            _show(releases[name])
        if failures:
            raise BaseExceptionGroup(
                f"incidents failed: {', '.join(failures)}", list(failures.values())
            )
        figures.append(f"alerts: both incidents done in {time.monotonic() - started:.0f} s")
    finally:
        for release in releases.values():
            remove(release)
