"""A Prometheus in front of a release on the node, configured from the release's own objects the
way the Prometheus Operator configures a cluster's Prometheus.

The operator itself (and Grafana) cannot run here; what they would do is small and public: each
endpoint of a ServiceMonitor becomes a scrape job discovering the Endpoints of the Services its
selector matches (role `endpoints`), keeping the named port and labelling every series with
`namespace`, `service`, `pod`, `container`, `endpoint` and `job` (the Service's name); each
PrometheusRule's `spec` is a rule file as it stands. `scrape_configs` and `rule_file` are that
translation, pure; `release_prometheus` reads the objects from the cluster, not from the chart's
sources, so the test sees what `helm install` put there. Debian's prometheus runs on the host and
reaches the pods at their addresses on the node's bridge; its build has no Kubernetes discovery,
so `EndpointsDiscovery` writes what that discovery would report into files it reads instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import yaml
from tests.cluster.support import Kube
from tests.e2e.node.support import Release
from tests.observability.prometheus_server import PrometheusServer

# What a release needs for this: the chart's ServiceMonitor and PrometheusRules, and scrapes
# often enough that a test's few minutes hold many samples (the chart's default is 30 s).
SCRAPE_INTERVAL_SECONDS = 2
MONITORED_RELEASE_SETS = (
    "metrics.serviceMonitor.enabled=true",
    f"metrics.serviceMonitor.interval={SCRAPE_INTERVAL_SECONDS}s",
    "metrics.prometheusRule.enabled=true",
)

RuleTransform = Callable[[dict[str, Any]], dict[str, Any]]


def label_name(kubernetes_label: str) -> str:
    """A Kubernetes label as Prometheus' service discovery names it (`app.kubernetes.io/name`
    becomes `app_kubernetes_io_name`)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", kubernetes_label)


def scrape_configs(monitor: dict[str, Any], kubeconfig: Path) -> list[dict[str, Any]]:
    """The scrape jobs the Prometheus Operator generates for one ServiceMonitor."""
    meta = monitor["metadata"]
    spec = monitor["spec"]
    namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [meta["namespace"]]
    selector = spec.get("selector", {}).get("matchLabels", {})
    jobs = []
    for index, endpoint in enumerate(spec["endpoints"]):
        relabel: list[dict[str, Any]] = []
        for key, value in sorted(selector.items()):
            name = label_name(key)
            relabel.append(
                {
                    "action": "keep",
                    "source_labels": [
                        f"__meta_kubernetes_service_label_{name}",
                        f"__meta_kubernetes_service_labelpresent_{name}",
                    ],
                    "regex": f"({re.escape(value)});true",
                }
            )
        relabel += [
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                "regex": endpoint["port"],
            },
            {
                "action": "drop",
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "(Failed|Succeeded)",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {
                "source_labels": ["__meta_kubernetes_pod_container_name"],
                "target_label": "container",
            },
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
            {"target_label": "endpoint", "replacement": endpoint["port"]},
        ]
        job: dict[str, Any] = {
            "job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/{index}",
            "honor_labels": False,
            "metrics_path": endpoint.get("path", "/metrics"),
            "kubernetes_sd_configs": [
                {
                    "role": "endpoints",
                    "kubeconfig_file": str(kubeconfig),
                    "namespaces": {"names": namespaces},
                }
            ],
            "relabel_configs": relabel,
        }
        if "interval" in endpoint:
            job["scrape_interval"] = endpoint["interval"]
            job["scrape_timeout"] = endpoint["interval"]
        jobs.append(job)
    return jobs


def rule_file(rules: list[dict[str, Any]]) -> dict[str, Any]:
    """One rule file holding the groups of every PrometheusRule."""
    return {"groups": [group for rule in rules for group in rule["spec"]["groups"]]}


# --- Kubernetes service discovery, for a Prometheus built without it ------------------------------
# Debian's prometheus (2.42+ds) leaves Kubernetes service discovery out of its build: a config with
# `kubernetes_sd_configs` does not load. File discovery is in every build, so the jobs keep their
# relabelling and read their targets from a file that `EndpointsDiscovery` keeps up to date with
# what role `endpoints` would report: the same `__meta_kubernetes_*` labels, from kubectl.

DISCOVERY_INTERVAL_SECONDS = 1.0


def endpoints_targets(
    namespace: str, services: list[dict[str, Any]], endpoints: list[dict[str, Any]],
    pods: list[dict[str, Any]],
) -> list[dict[str, Any]]:  # fmt: skip
    """Target groups as Kubernetes discovery (role `endpoints`) makes them: one per address and
    port of each Endpoints object, ready or not, labelled with its Service, endpoint and pod."""
    by_service = {service["metadata"]["name"]: service for service in services}
    by_pod = {pod["metadata"]["name"]: pod for pod in pods}
    groups = []
    for endpoint in endpoints:
        name = endpoint["metadata"]["name"]
        service = by_service.get(name)
        base = {
            "__meta_kubernetes_namespace": namespace,
            "__meta_kubernetes_endpoints_name": name,
        }
        if service is not None:
            base["__meta_kubernetes_service_name"] = name
            for key, value in (service["metadata"].get("labels") or {}).items():
                base[f"__meta_kubernetes_service_label_{label_name(key)}"] = value
                base[f"__meta_kubernetes_service_labelpresent_{label_name(key)}"] = "true"
        for subset in endpoint.get("subsets") or []:
            addresses = [(a, "true") for a in subset.get("addresses") or []]
            addresses += [(a, "false") for a in subset.get("notReadyAddresses") or []]
            for address, ready in addresses:
                for port in subset.get("ports") or []:
                    labels = {
                        **base,
                        "__meta_kubernetes_endpoint_ready": ready,
                        "__meta_kubernetes_endpoint_port_name": port.get("name", ""),
                        "__meta_kubernetes_endpoint_port_protocol": port.get("protocol", "TCP"),
                    }
                    reference = address.get("targetRef") or {}
                    pod = (
                        by_pod.get(reference.get("name", ""))
                        if reference.get("kind") == "Pod"
                        else None
                    )
                    if pod is not None:
                        labels |= pod_labels(pod, int(port["port"]))
                    groups.append(
                        {"targets": [f"{address['ip']}:{port['port']}"], "labels": labels}
                    )
    return groups


def pod_labels(pod: dict[str, Any], port: int) -> dict[str, str]:
    labels = {
        "__meta_kubernetes_pod_name": pod["metadata"]["name"],
        "__meta_kubernetes_pod_ip": pod["status"].get("podIP", ""),
        "__meta_kubernetes_pod_phase": pod["status"].get("phase", ""),
        "__meta_kubernetes_pod_node_name": pod["spec"].get("nodeName", ""),
        "__meta_kubernetes_pod_uid": pod["metadata"].get("uid", ""),
    }
    for key, value in (pod["metadata"].get("labels") or {}).items():
        labels[f"__meta_kubernetes_pod_label_{label_name(key)}"] = value
        labels[f"__meta_kubernetes_pod_labelpresent_{label_name(key)}"] = "true"
    for container in pod["spec"]["containers"]:
        for container_port in container.get("ports") or []:
            if container_port.get("containerPort") == port:
                labels["__meta_kubernetes_pod_container_name"] = container["name"]
                labels["__meta_kubernetes_pod_container_port_name"] = container_port.get("name", "")
                labels["__meta_kubernetes_pod_container_port_number"] = str(port)
    return labels


def file_sd_jobs(jobs: list[dict[str, Any]], directory: Path) -> list[dict[str, Any]]:
    """The jobs with their Kubernetes discovery replaced by the files `EndpointsDiscovery`
    writes, one per namespace (`<directory>/<namespace>.json`)."""
    replaced = []
    for job in jobs:
        job = dict(job)
        files = [
            str(directory / f"{namespace}.json")
            for sd in job.pop("kubernetes_sd_configs")
            for namespace in sd["namespaces"]["names"]
        ]
        job["file_sd_configs"] = [{"files": files, "refresh_interval": "5s"}]
        replaced.append(job)
    return replaced


class EndpointsDiscovery:
    """Writes the target groups of some namespaces every `DISCOVERY_INTERVAL_SECONDS`, in a
    thread of its own (the tests block their event loop now and then); each file replaced
    atomically, as Prometheus' file discovery wants."""

    def __init__(self, kube: Kube, namespaces: list[str], directory: Path) -> None:
        self.kube = kube
        self.namespaces = namespaces
        self.directory = directory
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="endpoints-discovery", daemon=True)

    def refresh(self) -> None:
        for namespace in self.namespaces:
            listed = self.kube.json("-n", namespace, "get", "services,endpoints,pods")["items"]
            kinds: dict[str, list[dict[str, Any]]] = {"Service": [], "Endpoints": [], "Pod": []}
            for item in listed:
                kinds.setdefault(item["kind"], []).append(item)
            groups = endpoints_targets(
                namespace, kinds["Service"], kinds["Endpoints"], kinds["Pod"]
            )
            path = self.directory / f"{namespace}.json"
            partial = path.with_suffix(".json.tmp")
            partial.write_text(json.dumps(groups))
            partial.replace(path)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.refresh()
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(30)

    def _run(self) -> None:
        while not self.stopped.wait(DISCOVERY_INTERVAL_SECONDS):
            with contextlib.suppress(Exception):  # a failed read: the next one will do
                self.refresh()


@contextlib.asynccontextmanager
async def release_prometheus(
    release: Release, workdir: Path, *, transform: RuleTransform | None = None
) -> AsyncIterator[PrometheusServer]:
    """A Prometheus scraping the release's pods through its ServiceMonitors and evaluating its
    PrometheusRules (after `transform`, e.g. shorter `for:` durations, when given)."""
    monitors = yaml.safe_load(release.kubectl("get", "servicemonitors", "-o", "yaml"))["items"]
    rules = yaml.safe_load(release.kubectl("get", "prometheusrules", "-o", "yaml"))["items"]
    assert monitors, f"no ServiceMonitor in {release.namespace}"
    assert rules, f"no PrometheusRule in {release.namespace}"
    workdir.mkdir(parents=True, exist_ok=True)
    groups = rule_file(rules)
    if transform is not None:
        groups = transform(groups)
    rules_path = workdir / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(groups, sort_keys=False))
    jobs = [job for monitor in monitors for job in scrape_configs(monitor, release.kube.kubeconfig)]
    directory = workdir / "targets"
    namespaces = sorted(
        {
            namespace
            for job in jobs
            for sd in job["kubernetes_sd_configs"]
            for namespace in sd["namespaces"]["names"]
        }
    )
    discovery = EndpointsDiscovery(release.kube, namespaces, directory)
    server = PrometheusServer(
        workdir,
        targets={},
        scrape_configs=file_sd_jobs(jobs, directory),
        rule_files=[rules_path],
        interval=f"{SCRAPE_INTERVAL_SECONDS}s",
    )
    await asyncio.to_thread(discovery.start)
    try:
        async with server.running():
            yield server
    finally:
        discovery.stop()


# --- time, compressed -----------------------------------------------------------------------------

DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds_of(duration: str) -> float:
    """A Prometheus duration (`1h30m`, `5m`) in seconds."""
    parts = DURATION.findall(duration)
    assert parts, duration
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(int(number) * SECONDS[unit] for number, unit in parts)


def compressed_duration(duration: str, factor: float, floor_seconds: float) -> str:
    return f"{max(floor_seconds, round(seconds_of(duration) / factor))}s"


def compress_time(
    factor: float, *, floor_seconds: float, age_thresholds: dict[str, float] | None = None
) -> RuleTransform:
    """A rule transform running the rules' clock `factor` times faster: every `for:` and every
    range window (`[5m]`) divided by it, at least `floor_seconds` (a few evaluation intervals, so
    `pending` is still seen and a rate still has samples). `age_thresholds` names alerts whose
    expression compares an age in seconds (`time() - x > 3600`): that literal is divided too.
    Nothing else changes: the expressions, the other thresholds, labels and annotations are the
    chart's."""
    ages = age_thresholds or {}

    def window(match: re.Match[str]) -> str:
        return f"[{compressed_duration(match.group(1), factor, floor_seconds)}"

    def transform(document: dict[str, Any]) -> dict[str, Any]:
        groups = []
        for group in document["groups"]:
            rules = []
            for rule in group["rules"]:
                rule = dict(rule)
                expr = re.sub(r"\[(\d+[smhdwy][\dsmhdwy]*)", window, str(rule["expr"]))
                name = rule.get("alert")
                if name in ages:
                    literal = f"> {ages[name]:g}"
                    assert literal in expr, f"{name}: no `{literal}` in {expr}"
                    expr = expr.replace(literal, f"> {ages[name] / factor:g}")
                rule["expr"] = expr
                if "for" in rule:
                    rule["for"] = compressed_duration(rule["for"], factor, floor_seconds)
                rules.append(rule)
            groups.append({**group, "rules": rules})
        return {"groups": groups}

    return transform


async def alert_states(prometheus: PrometheusServer, alert: str, since: float) -> set[str]:
    """The states (`pending`, `firing`) an alert has been in since `since` (epoch seconds), from
    Prometheus' own ALERTS series: a state held for a single evaluation is not missed by a poll."""
    return set(await alert_first_seen(prometheus, alert, since))


async def wait_for_alert(
    prometheus: PrometheusServer,
    alert: str,
    state: str | None,
    timeout: float,
    *,
    labels: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Poll until the alert (with these labels) is in `state` (`pending`, `firing`), or inactive
    (None: no such active alert). Returns the matching active alerts."""
    wanted = labels or {}
    deadline = time.monotonic() + timeout
    while True:
        active = [
            alert_entry
            for alert_entry in await prometheus.alerts()
            if alert_entry["labels"].get("alertname") == alert
            and all(alert_entry["labels"].get(key) == value for key, value in wanted.items())
        ]
        states = {entry["state"] for entry in active}
        if (state is None and not active) or (state is not None and state in states):
            return active
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{alert}{wanted}: not {state or 'inactive'} after {timeout:.0f}s: {active}"
            )
        await asyncio.sleep(0.5)


async def alert_first_seen(
    prometheus: PrometheusServer, alert: str, since: float
) -> dict[str, float]:
    """When the alert was first in each state (`pending`, `firing`) since `since`, in epoch
    seconds, from Prometheus' own ALERTS series (a state held for one evaluation is seen)."""
    step = SCRAPE_INTERVAL_SECONDS / 2
    # Points run from `start` in whole steps: start so that the last one is `now` itself, or a
    # state entered in the last step (say, `firing` just now) would fall between two points
    # (whole milliseconds, as the query sends them).
    now = round(time.time(), 3)
    start = round(now - ((now - since) // step) * step, 3)
    series = await prometheus.query_range(f'ALERTS{{alertname="{alert}"}}', start, now, step)
    seen: dict[str, float] = {}
    for entry in series:
        state = entry["metric"]["alertstate"]
        first = min(float(stamp) for stamp, _ in entry["values"])
        seen[state] = min(seen.get(state, first), first)
    return seen
