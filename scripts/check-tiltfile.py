"""Execute the Tiltfile with a Starlark interpreter (starlark-go) against recording stubs of the
Tilt built-ins it calls, then check what it declares against the repository and the chart as the
real helm renders it: images and their Dockerfile targets, live-update paths, chart and values
paths, resources, their dependencies, attached objects and port forwards.

Tilt itself cannot run here (no cluster, no Docker engine); this catches the mistakes a rename or
a chart change would otherwise only reveal at `tilt up`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import deploylib
import starlark_go

SITE_PACKAGES = "/opt/venv/lib/python3.11/site-packages"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}
REQUIRED_IMAGES = {"oms-api", "oms-consumer", "oms-worker", "oms-operator"}


@dataclass
class TiltCalls:
    """Everything the Tiltfile asked Tilt to do."""

    docker_builds: list[dict[str, Any]] = field(default_factory=list)
    helm_charts: list[dict[str, Any]] = field(default_factory=list)
    yaml_files: list[str] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    local_resources: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def _stubs(calls: TiltCalls) -> dict[str, Callable[..., Any]]:
    def docker_build(ref: str, context: str, **kwargs: Any) -> None:
        calls.docker_builds.append({"ref": ref, "context": context, **kwargs})

    def helm(path: str, **kwargs: Any) -> str:
        calls.helm_charts.append({"path": path, **kwargs})
        return f"helm:{len(calls.helm_charts) - 1}"

    def k8s_yaml(source: Any, **_: Any) -> None:
        sources = source if isinstance(source, list) else [source]
        calls.yaml_files.extend(str(item) for item in sources)

    def k8s_resource(workload: str = "", **kwargs: Any) -> None:
        calls.resources.append({"workload": workload, **kwargs})

    def local_resource(name: str, **kwargs: Any) -> None:
        calls.local_resources.append({"name": name, **kwargs})

    def update_settings(**kwargs: Any) -> None:
        calls.settings.update(kwargs)

    def sync(local_path: str, remote_path: str) -> dict[str, str]:
        return {"step": "sync", "local": local_path, "remote": remote_path}

    def fall_back_on(files: Any) -> dict[str, Any]:
        return {"step": "fall_back_on", "files": files if isinstance(files, list) else [files]}

    def run(cmd: str, trigger: Any = None) -> dict[str, Any]:
        return {"step": "run", "cmd": cmd, "trigger": trigger or []}

    def port_forward(
        local_port: int, container_port: int = 0, name: str = "", **_: Any
    ) -> dict[str, Any]:
        return {"local": local_port, "container": container_port or local_port, "name": name}

    def link(url: str, name: str = "") -> dict[str, str]:
        return {"url": url, "name": name}

    return {
        "docker_build": docker_build,
        "helm": helm,
        "k8s_yaml": k8s_yaml,
        "k8s_resource": k8s_resource,
        "local_resource": local_resource,
        "update_settings": update_settings,
        "sync": sync,
        "fall_back_on": fall_back_on,
        "run": run,
        "port_forward": port_forward,
        "link": link,
    }


def execute(tiltfile: Path) -> TiltCalls:
    # Tilt's dialect allows top-level for/if and reassigning globals.
    starlark_go.configure_starlark(allow_set=True, allow_global_reassign=True, allow_recursion=True)
    calls = TiltCalls()
    # The binding does not own references to the Python callables: keep them alive ourselves
    # until exec returns (a collected stub is a segfault, not an exception).
    stubs = _stubs(calls)
    interpreter = starlark_go.Starlark(globals=stubs)
    interpreter.exec(tiltfile.read_text(), filename=str(tiltfile))
    del interpreter, stubs
    return calls


def _dockerfile_stages(path: Path) -> set[str]:
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", path.read_text(), re.MULTILINE | re.I))


def _image_repository(image: str) -> str:
    without_digest = image.split("@", 1)[0]
    name, _, tag = without_digest.rpartition(":")
    return name if name and "/" not in tag else without_digest


def _containers(doc: deploylib.Document) -> list[dict[str, Any]]:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        pod = spec
    elif doc.get("kind") == "CronJob":
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    else:
        pod = (spec.get("template") or {}).get("spec") or {}
    return [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]


def check(calls: TiltCalls, repo: Path) -> list[str]:
    problems: list[str] = []

    # Images: every service of the Dockerfile is built from its dev target (venv writable for
    # live update), each with a live update into its package.
    built = {build["ref"]: build for build in calls.docker_builds}
    missing = REQUIRED_IMAGES - built.keys()
    if missing:
        problems.append(f"docker_build missing for {sorted(missing)}")
    targets: set[str] = set()
    for ref, build in built.items():
        dockerfile = repo / build.get("dockerfile", "Dockerfile")
        if not dockerfile.is_file():
            problems.append(f"{ref}: no Dockerfile {dockerfile}")
            continue
        target = build.get("target")
        if not target:
            problems.append(f"{ref}: no target (the Dockerfile has one per service)")
        elif target not in _dockerfile_stages(dockerfile):
            problems.append(f"{ref}: stage {target!r} not in {dockerfile.relative_to(repo)}")
        elif not target.endswith("-dev"):
            problems.append(f"{ref}: target {target!r} is not a -dev target (live update)")
        else:
            targets.add(target)
        if not (repo / build["context"]).is_dir():
            problems.append(f"{ref}: build context {build['context']} is not a directory")
        for entry in build.get("only", []):
            if not (repo / entry).exists():
                problems.append(f"{ref}: `only` entry {entry} does not exist")
        steps = build.get("live_update", [])
        syncs = [step for step in steps if step.get("step") == "sync"]
        if not syncs:
            problems.append(f"{ref}: no live_update sync")
        for step in syncs:
            local = repo / step["local"]
            if not (local / "__init__.py").is_file():
                problems.append(f"{ref}: sync source {step['local']} is not a Python package")
            expected = f"{SITE_PACKAGES}/{local.name}"
            if step["remote"] != expected:
                problems.append(f"{ref}: sync {step['local']} -> {step['remote']}, want {expected}")
        for step in steps:
            if step.get("step") == "fall_back_on":
                problems.extend(
                    f"{ref}: fall_back_on {path} does not exist"
                    for path in step["files"]
                    if not (repo / path).exists()
                )
    dockerfile = repo / "Dockerfile"
    if dockerfile.is_file():
        dev_targets = {stage for stage in _dockerfile_stages(dockerfile) if stage.endswith("-dev")}
        problems.extend(
            f"Dockerfile target {target} is not built by the Tiltfile"
            for target in sorted(dev_targets - targets)
        )

    # What gets deployed: the chart rendered by the real helm, plus the plain YAML files.
    objects: list[deploylib.Document] = []
    if not calls.helm_charts:
        problems.append("no helm() chart deployed")
    for chart in calls.helm_charts:
        if Path(chart["path"]).resolve() != deploylib.CHART.resolve() and (
            (repo / chart["path"]).resolve() != deploylib.CHART.resolve()
        ):
            problems.append(f"helm() deploys {chart['path']}, not charts/oms")
            continue
        values = [repo / path for path in chart.get("values", [])]
        absent = [path for path in values if not path.is_file()]
        problems.extend(f"values file {path} does not exist" for path in absent)
        if absent:
            continue
        rendered = deploylib.helm_template(
            values,
            chart.get("set", []),
            release=chart.get("name", "chart"),
            namespace=chart.get("namespace", "default"),
            include_crds=True,
        )
        objects.extend(deploylib.load_documents(rendered))
    for path in calls.yaml_files:
        if path.startswith("helm:"):
            continue
        if not (repo / path).is_file():
            problems.append(f"k8s_yaml {path} does not exist")
            continue
        objects.extend(deploylib.load_documents((repo / path).read_text()))

    workloads = {
        doc["metadata"]["name"]: doc for doc in objects if doc.get("kind") in WORKLOAD_KINDS
    }
    deployed_images = {
        _image_repository(container["image"])
        for doc in workloads.values()
        for container in _containers(doc)
    }
    for ref in built:
        if ref not in deployed_images:
            problems.append(f"image {ref} is built but no deployed container uses it")
    resource_names = set(workloads) | {local["name"] for local in calls.local_resources}
    selectors = {
        f"{doc['metadata']['name']}:{str(doc.get('kind', '')).lower()}"
        for doc in objects
        if doc.get("kind") not in WORKLOAD_KINDS
    }

    for resource in calls.resources:
        name = resource["workload"]
        if name not in workloads:
            problems.append(f"k8s_resource {name!r}: no such workload in the deployed objects")
            continue
        for dependency in resource.get("resource_deps", []):
            if dependency not in resource_names:
                problems.append(f"{name}: resource_deps {dependency!r} is not a resource")
        for selector in resource.get("objects", []):
            if selector.lower() not in selectors:
                problems.append(f"{name}: object {selector!r} is not deployed")
        container_ports = {
            port["containerPort"]
            for container in _containers(workloads[name])
            for port in container.get("ports", [])
        }
        for forward in resource.get("port_forwards", []):
            if forward["container"] not in container_ports:
                problems.append(
                    f"{name}: port_forward to {forward['container']}, "
                    f"container ports {sorted(container_ports)}"
                )
        if not resource.get("labels"):
            problems.append(f"{name}: no labels (Tilt UI group)")
    api = next((r for r in calls.resources if r["workload"].endswith("-api")), None)
    if api is None or 8000 not in {f["local"] for f in api.get("port_forwards", [])}:
        problems.append("the API resource does not forward local port 8000")
    for local in calls.local_resources:
        problems.extend(
            f"local_resource {local['name']}: dep {dep} does not exist"
            for dep in local.get("deps", [])
            if not (repo / dep).exists() and dep != "observability"
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiltfile", type=Path, default=deploylib.REPO / "Tiltfile")
    args = parser.parse_args(argv)
    try:
        calls = execute(args.tiltfile)
    except starlark_go.StarlarkError as error:
        print(f"{args.tiltfile}: Starlark error: {error}", file=sys.stderr)
        return 1
    problems = check(calls, deploylib.REPO)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(
        f"Tiltfile: {len(calls.docker_builds)} images, {len(calls.helm_charts)} chart(s), "
        f"{len(calls.resources)} resources, {len(calls.local_resources)} local resources: "
        + ("FAILED" if problems else "ok")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
