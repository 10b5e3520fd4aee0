"""Execute the Tiltfile with a Starlark interpreter (starlark-go) against recording stubs of the
Tilt built-ins it calls, then check what it declares against the repository and the chart as the
real helm renders it: images and their Dockerfile targets, live-update paths, chart and values
paths, resources, their dependencies, attached objects and port forwards; and that it allows the
context of `make cluster`, reports nothing off the machine, renders the chart into the current
namespace and keeps the cluster-wide CRD on `tilt down`.

This is the fast tier's stand-in, without Tilt, a cluster or a Docker engine (tests/e2e/node/
test_tilt.py runs the real Tilt on the node): it catches the mistakes a rename or a chart change
would otherwise only reveal at `tilt up`. Of the commands the Tiltfile runs with local(), only
`helm template` runs here; the build-argument script is answered with a stand-in.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import deploylib
import starlark_go
import yaml
from localcluster import layout

SITE_PACKAGES = "/opt/venv/lib/python3.11/site-packages"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}
REQUIRED_IMAGES = {"oms-api", "oms-consumer", "oms-worker", "oms-operator"}
# What k8s_namespace() answers here: the chart must be rendered into it (the kubeconfig's).
CURRENT_NAMESPACE = "current-namespace-of-the-kubeconfig"
# What the build-argument script's local() answers here.
BUILD_ARGS_SCRIPT = "scripts/tilt-build-args.py"
STAND_IN_BUILD_ARGS = {"PYTHON_IMAGE": "python:3.11-slim"}
DOWN_POLICY = "tilt.dev/down-policy"
TRIGGER_MODE_AUTO = "auto"
TRIGGER_MODE_MANUAL = "manual"


@dataclass
class TiltCalls:
    """Everything the Tiltfile asked Tilt to do."""

    docker_builds: list[dict[str, Any]] = field(default_factory=list)
    helm_charts: list[dict[str, Any]] = field(default_factory=list)
    yaml_files: list[str] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    local_resources: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    # local() command lines; YAML that helm() or encode_yaml_stream() made, by the marker
    # k8s_yaml() gets instead of Tilt's Blob.
    commands: list[list[str]] = field(default_factory=list)
    blobs: dict[str, list[deploylib.Document]] = field(default_factory=dict)
    allowed_contexts: list[str] = field(default_factory=list)

    def blob(self, documents: list[deploylib.Document]) -> str:
        marker = f"blob:{len(self.blobs)}"
        self.blobs[marker] = documents
        return marker


def helm_template_call(argv: list[str]) -> dict[str, Any]:
    """The chart, release, namespace, values and --set of a `helm template` command line."""
    call: dict[str, Any] = {"values": [], "set": [], "include_crds": False}
    positional: list[str] = []
    words = iter(argv[2:])
    options = {"--namespace": "namespace", "--values": "values", "--set": "set"}
    for word in words:
        if word in options:
            key = options[word]
            if isinstance(call.get(key), list):
                call[key].append(next(words))
            else:
                call[key] = next(words)
        elif word == "--include-crds":
            call["include_crds"] = True
        else:
            positional.append(word)
    call["name"], call["path"] = [*positional, "", ""][:2]
    return call


def _render(call: dict[str, Any], repo: Path) -> list[deploylib.Document]:
    """The chart as the real helm renders it for this call; nothing if check() will complain."""
    values = [repo / path for path in call.get("values", [])]
    chart = repo / call["path"]
    if chart.resolve() != deploylib.CHART.resolve() or not all(p.is_file() for p in values):
        return []
    rendered = deploylib.helm_template(
        values,
        call.get("set", []),
        release=call.get("name") or "chart",
        namespace=call.get("namespace") or "default",
        include_crds=call.get("include_crds", False),
    )
    return deploylib.load_documents(rendered)


def _stubs(calls: TiltCalls, repo: Path) -> dict[str, Callable[..., Any] | str]:
    def docker_build(ref: str, context: str, **kwargs: Any) -> None:
        calls.docker_builds.append({"ref": ref, "context": context, **kwargs})

    def helm(path: str, **kwargs: Any) -> str:
        call = {"path": path, "include_crds": True, **kwargs}
        calls.helm_charts.append(call)
        return calls.blob(_render(call, repo))

    def local(command: Any, **_: Any) -> str:
        argv = [str(word) for word in command] if isinstance(command, list) else command.split()
        calls.commands.append(argv)
        if argv[:2] == ["helm", "template"]:
            call = helm_template_call(argv)
            calls.helm_charts.append(call)
            return yaml.safe_dump_all(_render(call, repo))
        if BUILD_ARGS_SCRIPT in argv:
            return json.dumps(STAND_IN_BUILD_ARGS)
        # Another script: check() reports it if it does not exist; its JSON answer is empty.
        return "{}" if any(word.startswith("scripts/") for word in argv) else ""

    def decode_json(text: str) -> Any:
        return json.loads(text)

    def decode_yaml_stream(text: str) -> list[deploylib.Document]:
        return deploylib.load_documents(text)

    def encode_yaml_stream(documents: list[deploylib.Document]) -> str:
        return calls.blob(documents)

    def k8s_yaml(source: Any, **_: Any) -> None:
        sources = source if isinstance(source, list) else [source]
        calls.yaml_files.extend(str(item) for item in sources)

    def k8s_resource(workload: str = "", **kwargs: Any) -> None:
        calls.resources.append({"workload": workload, **kwargs})

    def local_resource(name: str, **kwargs: Any) -> None:
        calls.local_resources.append({"name": name, **kwargs})

    def update_settings(**kwargs: Any) -> None:
        calls.settings.update(kwargs)

    def analytics_settings(enable: bool) -> None:
        calls.settings["analytics"] = enable

    def version_settings(check_updates: bool = True, **_: Any) -> None:
        calls.settings["check_updates"] = check_updates

    def allow_k8s_contexts(contexts: Any) -> None:
        calls.allowed_contexts.extend(contexts if isinstance(contexts, list) else [contexts])

    def config_define_string(name: str, **_: Any) -> None:
        calls.settings.setdefault("flags", []).append(name)

    def config_parse() -> dict[str, str]:
        return {}  # every flag at its default

    def k8s_namespace() -> str:
        return CURRENT_NAMESPACE

    def watch_file(path: str) -> None:
        calls.settings.setdefault("watched", []).append(path)

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
        "local": local,
        "decode_json": decode_json,
        "decode_yaml_stream": decode_yaml_stream,
        "encode_yaml_stream": encode_yaml_stream,
        "k8s_yaml": k8s_yaml,
        "k8s_resource": k8s_resource,
        "local_resource": local_resource,
        "update_settings": update_settings,
        "analytics_settings": analytics_settings,
        "version_settings": version_settings,
        "allow_k8s_contexts": allow_k8s_contexts,
        "config_define_string": config_define_string,
        "config_parse": config_parse,
        "k8s_namespace": k8s_namespace,
        "watch_file": watch_file,
        "sync": sync,
        "fall_back_on": fall_back_on,
        "run": run,
        "port_forward": port_forward,
        "link": link,
        "TRIGGER_MODE_AUTO": TRIGGER_MODE_AUTO,
        "TRIGGER_MODE_MANUAL": TRIGGER_MODE_MANUAL,
    }


# Tilt's modules (config.parse(), ...): this interpreter has no struct type to give a global
# attributes, so `config.x` is run as the flat stub `config_x`.
TILT_MODULE_CALL = re.compile(r"\b(config)\.(\w+)")


def execute(tiltfile: Path, repo: Path = deploylib.REPO) -> TiltCalls:
    # Tilt's dialect allows top-level for/if and reassigning globals.
    starlark_go.configure_starlark(allow_set=True, allow_global_reassign=True, allow_recursion=True)
    calls = TiltCalls()
    # The binding does not own references to the Python callables: keep them alive ourselves
    # until exec returns (a collected stub is a segfault, not an exception).
    stubs = _stubs(calls, repo)
    interpreter = starlark_go.Starlark(globals=stubs)
    interpreter.exec(TILT_MODULE_CALL.sub(r"\1_\2", tiltfile.read_text()), filename=str(tiltfile))
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
        # Tilt rebuilds the image for a change to a file of its context that no step covers:
        # another service's sources in the context would rebuild this image at each edit there.
        covered = {build.get("dockerfile", "Dockerfile")}
        covered |= {step["local"] for step in syncs}
        for step in steps:
            if step.get("step") == "fall_back_on":
                covered |= set(step["files"])
        problems.extend(
            f"{ref}: `only` entry {entry} is neither synced nor a fall_back_on file "
            "(an edit there rebuilds the image)"
            for entry in build.get("only", [])
            if entry not in covered
        )
    dockerfile = repo / "Dockerfile"
    if dockerfile.is_file():
        dev_targets = {stage for stage in _dockerfile_stages(dockerfile) if stage.endswith("-dev")}
        problems.extend(
            f"Dockerfile target {target} is not built by the Tiltfile"
            for target in sorted(dev_targets - targets)
        )

    # What gets deployed: the chart rendered by the real helm (into the current namespace),
    # plus the plain YAML files.
    objects: list[deploylib.Document] = []
    if not calls.helm_charts:
        problems.append("the chart is not rendered (helm template or helm())")
    for chart in calls.helm_charts:
        if (repo / chart["path"]).resolve() != deploylib.CHART.resolve():
            problems.append(f"the chart rendered is {chart['path']}, not charts/oms")
            continue
        problems.extend(
            f"values file {path} does not exist"
            for path in chart.get("values", [])
            if not (repo / path).is_file()
        )
        if chart.get("namespace") != CURRENT_NAMESPACE:
            problems.append(
                f"the chart is rendered into namespace {chart.get('namespace')!r}, not the "
                "kubeconfig's (k8s_namespace()): Tilt would put its namespaced objects there"
            )
        if not chart.get("include_crds"):
            problems.append("the chart is rendered without its CRD (--include-crds)")
    for source in calls.yaml_files:
        if source in calls.blobs:
            objects.extend(calls.blobs[source])
        elif not (repo / source).is_file():
            problems.append(f"k8s_yaml {source} does not exist")
        else:
            objects.extend(deploylib.load_documents((repo / source).read_text()))
    for doc in objects:
        if doc.get("kind") == "CustomResourceDefinition":
            annotations = doc["metadata"].get("annotations") or {}
            if annotations.get(DOWN_POLICY) != "keep":
                problems.append(
                    f"CRD {doc['metadata']['name']} lacks {DOWN_POLICY}: keep (`tilt down` would "
                    "delete it, and every OrderSystem on the cluster with it)"
                )

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
        live_updated = {
            _image_repository(container["image"]) for container in _containers(workloads[name])
        } & {ref for ref, build in built.items() if build.get("live_update")}
        if (
            workloads[name].get("kind") in {"Job", "CronJob", "Pod"}
            and live_updated
            and resource.get("trigger_mode", TRIGGER_MODE_AUTO) != TRIGGER_MODE_MANUAL
        ):
            problems.append(
                f"{name}: a run-to-completion workload of the live-updated {sorted(live_updated)} "
                "without trigger_mode = TRIGGER_MODE_MANUAL (every edit would rebuild its image)"
            )
    api = next((r for r in calls.resources if r["workload"].endswith("-api")), None)
    if api is None or 8000 not in {f["local"] for f in api.get("port_forwards", [])}:
        problems.append("the API resource does not forward local port 8000")
    problems.extend(_settings_problems(calls, repo))
    for local in calls.local_resources:
        problems.extend(
            f"local_resource {local['name']}: dep {dep} does not exist"
            for dep in local.get("deps", [])
            if not (repo / dep).exists() and dep != "observability"
        )
    return problems


def _settings_problems(calls: TiltCalls, repo: Path) -> list[str]:
    """The node of `make cluster` allowed, nothing reported off the machine, the images built
    with the arguments `make images` uses."""
    problems: list[str] = []
    if layout.CLUSTER_NAME not in calls.allowed_contexts:
        problems.append(
            f"allow_k8s_contexts does not name {layout.CLUSTER_NAME!r} (make cluster's context)"
        )
    if calls.settings.get("analytics") is not False:
        problems.append(
            "analytics_settings(False) missing: Tilt would report usage off the machine"
        )
    if calls.settings.get("check_updates") is not False:
        problems.append("version_settings(check_updates = False) missing")
    for argv in calls.commands:
        scripts = [word for word in argv if word.startswith("scripts/")]
        problems.extend(
            f"local() runs {path}, which does not exist"
            for path in scripts
            if not (repo / path).is_file()
        )
    for build in calls.docker_builds:
        if build.get("build_args") != STAND_IN_BUILD_ARGS:
            problems.append(f"{build['ref']}: build_args are not those of {BUILD_ARGS_SCRIPT}")
        if build.get("network") != "host":
            problems.append(f"{build['ref']}: network is not host (as make images builds)")
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
