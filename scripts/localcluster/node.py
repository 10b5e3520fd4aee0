# ruff: noqa: S603, S607
# (Every command here is ours or a system tool, argv built here.)
"""Bringing the node up and down, and loading images into its container runtime.

`up` starts, in order, and waits for each to answer before the next: containerd, etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, kubelet (until the node is Ready),
kube-proxy, the add-ons' API objects, CoreDNS, Traefik and the image registry (on loopback,
announced to Tilt by the add-ons' `local-registry-hosting` ConfigMap). The daemons are detached
and recorded by pid in <state>/state.json; `down` stops exactly those, then removes what they
left, the registry's images with the rest of the state.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localcluster import build, configs, host, layout, ociimage, pki, processes

START_TIMEOUT = 120.0


def log(message: str) -> None:
    print(f"cluster: {message}", flush=True)


# --- state ------------------------------------------------------------------------------------


def load_state(paths: layout.StatePaths) -> dict[str, Any] | None:
    try:
        loaded = json.loads(paths.state_file.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def save_state(paths: layout.StatePaths, state: dict[str, Any]) -> None:
    temporary = paths.state_file.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2) + "\n")
    temporary.replace(paths.state_file)


def binaries() -> dict[str, Path]:
    kubernetes = build.kubernetes()
    found = {name: kubernetes.path(name) for name in build.KUBERNETES_BINARIES}
    found["coredns"] = build.coredns().path()
    found["traefik"] = build.traefik().path()
    found["registry"] = build.registry().path()
    return found


def executable(component: str, state: dict[str, Any]) -> str:
    """The binary a recorded pid must be running for it to count as ours."""
    if component == "containerd":
        return configs.CONTAINERD
    return str(state["binaries"][component])


def kubectl() -> str:
    found = os.environ.get("KUBECTL_BIN") or str(layout.REPO / ".tools" / "bin" / "kubectl")
    if Path(found).is_file():
        return found
    on_path = shutil.which("kubectl")
    if on_path is None:
        raise SystemExit("cluster: kubectl is needed (make cluster installs the pinned one)")
    return on_path


# --- probes -----------------------------------------------------------------------------------


def _context(paths: layout.StatePaths, client: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(paths.pki / "ca.crt"))
    if client:
        context.load_cert_chain(str(paths.pki / "admin.crt"), str(paths.pki / "admin.key"))
    return context


def _loopback_self_signed() -> ssl.SSLContext:
    # The scheduler and controller manager serve /healthz on loopback with a certificate they
    # make themselves at start: nothing to verify it against.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def http_get(
    url: str, context: ssl.SSLContext | None = None, timeout: float = 5.0
) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as error:
        return 0, str(error)


def api_get(paths: layout.StatePaths, path: str) -> tuple[int, str]:
    return http_get(f"{pki.server_url()}{path}", _context(paths))


def node_ready(paths: layout.StatePaths) -> tuple[bool, str]:
    status, body = api_get(paths, f"/api/v1/nodes/{layout.NODE_NAME}")
    if status != 200:
        return False, body
    conditions = json.loads(body).get("status", {}).get("conditions", [])
    ready = [c for c in conditions if c.get("type") == "Ready"]
    return bool(ready) and ready[0].get("status") == "True", json.dumps(ready)


def probe(component: str, paths: layout.StatePaths) -> Callable[[], tuple[bool, str]]:
    ports = layout.PORTS

    def expect_200(
        url: str, context: ssl.SSLContext | None = None
    ) -> Callable[[], tuple[bool, str]]:
        def check() -> tuple[bool, str]:
            status, body = http_get(url, context)
            return status == 200, body

        return check

    if component == "containerd":

        def containerd_answers() -> tuple[bool, str]:
            result = subprocess.run(
                ["ctr", "--address", str(paths.containerd_socket), "version"],
                capture_output=True,
                text=True,
                check=False,
            )
            return result.returncode == 0, result.stderr

        return containerd_answers
    if component == "etcd":
        return expect_200(f"http://127.0.0.1:{ports.etcd}/health")
    if component == "kube-apiserver":
        return expect_200(f"{pki.server_url()}/readyz", _context(paths))
    if component == "kube-controller-manager":
        # The controllers run once the `default` ServiceAccount exists.
        return lambda: (
            api_get(paths, "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            "no default ServiceAccount yet",
        )
    if component == "kube-scheduler":
        return expect_200(f"https://127.0.0.1:{ports.scheduler}/healthz", _loopback_self_signed())
    if component == "kubelet":
        return lambda: node_ready(paths)
    if component == "kube-proxy":
        return expect_200(f"http://127.0.0.1:{ports.proxy_healthz}/healthz")
    if component == "coredns":
        return expect_200(f"http://127.0.0.1:{ports.dns_ready}/ready")
    if component == "traefik":
        return expect_200(f"http://127.0.0.1:{ports.ingress_admin}/ping")
    if component == "registry":
        return expect_200(f"http://127.0.0.1:{ports.registry}/v2/")
    raise ValueError(component)


# --- starting and stopping --------------------------------------------------------------------


def start_component(component: str, paths: layout.StatePaths, state: dict[str, Any]) -> float:
    argv = configs.argv(component, paths, {k: Path(v) for k, v in state["binaries"].items()})
    logfile = paths.logs / f"{component}.log"
    process = processes.spawn(argv, logfile, paths.root, configs.environment(component, paths))
    state["pids"][component] = process.pid
    save_state(paths, state)
    seconds = processes.wait_until_ready(
        component, probe(component, paths), process=process, logfile=logfile, timeout=START_TIMEOUT
    )
    state.setdefault("ready_seconds", {})[component] = round(seconds, 2)
    save_state(paths, state)
    return seconds


def stop_component(component: str, paths: layout.StatePaths, state: dict[str, Any]) -> None:
    processes.stop(state["pids"].get(component), executable(component, state))


def running(paths: layout.StatePaths, state: dict[str, Any] | None = None) -> bool:
    state = state if state is not None else load_state(paths)
    if state is None or state.get("binaries") != {k: str(v) for k, v in binaries().items()}:
        return False
    pids = state.get("pids", {})
    if not all(processes.alive(pids.get(c), executable(c, state)) for c in configs.COMPONENTS):
        return False
    return api_get(paths, "/readyz")[0] == 200


def import_archive(paths: layout.StatePaths, archive: bytes | None, source: Any = None) -> None:
    """`ctr images import` of one `docker save` archive (bytes, or a pipe to read it from)."""
    result = subprocess.run(
        ["ctr", "--address", str(paths.containerd_socket), "-n", "k8s.io", "images", "import", "-"],
        input=archive,
        stdin=source,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"cluster: ctr images import failed: {result.stderr.decode()[-2000:]}")


def import_pause(paths: layout.StatePaths) -> None:
    tool = build.pause()
    tag = tool.version.lstrip("v")
    image = ociimage.single_binary_image(configs.pause_image(tag), tool.path(), "/pause")
    import_archive(paths, image)


def apply_addons(paths: layout.StatePaths) -> None:
    result = subprocess.run(
        [
            kubectl(),
            "--kubeconfig",
            str(paths.kubeconfig),
            "apply",
            "--server-side",
            "--field-manager=oms-local-cluster",
            "-f",
            str(paths.config / "addons.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"cluster: applying deploy/node/addons.yaml failed:\n{result.stderr}")


def other_owner(paths: layout.StatePaths) -> Path | None:
    """The state folder of a node of another checkout that runs on this machine, if any."""
    try:
        owner = Path(layout.OWNER_FILE.read_text().strip())
    except OSError:
        return None
    if owner == paths.root:
        return None
    return owner if running(layout.StatePaths(owner)) else None


def up() -> dict[str, Any]:
    paths = layout.paths()
    if running(paths):
        log("already running")
        tell_how_to_use(paths)
        return status_document()
    owner = other_owner(paths)
    if owner is not None:
        raise SystemExit(
            f"cluster: the node of {owner} runs on this machine (one per machine: the bridge and "
            f"its addresses are shared). Use it (KUBECONFIG={owner / 'kubeconfig'}) or stop it "
            f"there first (make cluster-down)."
        )
    host.require_root()
    host.ensure_packages()
    tools = build.ensure_all()
    down(quiet=True)
    started = time.monotonic()
    paths.logs.mkdir(parents=True)
    paths.run.mkdir(parents=True)
    state: dict[str, Any] = {
        "binaries": {k: str(v) for k, v in binaries().items()},
        "versions": {tool.name: tool.version for tool in tools},
        "sysctls": host.kubelet_sysctls(),
        "pids": {},
        "images": {},
    }
    save_state(paths, state)
    layout.OWNER_FILE.parent.mkdir(parents=True, exist_ok=True)
    layout.OWNER_FILE.write_text(f"{paths.root}\n")
    host.setup_network()
    pki.write_pki(paths.pki)
    pki.write_kubeconfigs(paths)
    configs.write_configs(paths, build.pause().version.lstrip("v"))
    for component in configs.COMPONENTS:
        if component == "coredns":
            apply_addons(paths)
        seconds = start_component(component, paths, state)
        log(f"{component} ready ({seconds:.1f} s)")
        if component == "containerd":
            import_pause(paths)
    elapsed = time.monotonic() - started
    state["startup_seconds"] = round(elapsed, 1)
    save_state(paths, state)
    log(f"node {layout.NODE_NAME} Ready, DNS and ingress up in {elapsed:.1f} s")
    tell_how_to_use(paths)
    log(f"ingress: http://127.0.0.1:{layout.PORTS.ingress}/ (IngressClass {layout.INGRESS_CLASS})")
    log(f"image registry: {registry_host()} (what `tilt up` pushes to)")
    return status_document()


def registry_host() -> str:
    """The registry as pushers and the node's containerd name it: `localhost` is plain HTTP to
    both Docker and containerd without any configuration."""
    return f"localhost:{layout.PORTS.registry}"


def tell_how_to_use(paths: layout.StatePaths) -> None:
    log("to use it (the pinned kubectl and helm first on PATH):")
    log(f"  export KUBECONFIG={paths.kubeconfig} PATH={layout.REPO / '.tools' / 'bin'}:$PATH")


def down(quiet: bool = False) -> None:
    paths = layout.paths()
    if other_owner(paths) is not None:
        # Another checkout's node runs: the machine-wide parts are its, not ours to remove.
        shutil.rmtree(paths.root, ignore_errors=True)
        return
    state = load_state(paths)
    if state is not None:
        for component in reversed(configs.COMPONENTS):
            try:
                stop_component(component, paths, state)
            except KeyError:
                continue
    # The containers and their runc shims outlive containerd: kill them by cgroup and socket.
    host.kill_pods(paths)
    host.unmount_under(paths.root)
    host.remove_network_namespaces()
    host.remove_iptables_chains()
    host.remove_network()
    host.remove_cgroups()
    if state is not None:
        host.restore_sysctls(state.get("sysctls", {}))
    shutil.rmtree(paths.root, ignore_errors=True)
    layout.OWNER_FILE.unlink(missing_ok=True)
    if not quiet:
        log("stopped; the node's state, network and iptables chains are gone")


def restart(component: str) -> None:
    stop(component)
    start(component)


def stop(component: str) -> None:
    paths = layout.paths()
    state = _required_state(paths)
    stop_component(component, paths, state)
    log(f"{component} stopped")


def start(component: str) -> None:
    paths = layout.paths()
    state = _required_state(paths)
    if processes.alive(state["pids"].get(component), executable(component, state)):
        raise SystemExit(f"cluster: {component} runs already")
    seconds = start_component(component, paths, state)
    log(f"{component} started ({seconds:.1f} s)")


def _required_state(paths: layout.StatePaths) -> dict[str, Any]:
    state = load_state(paths)
    if state is None:
        raise SystemExit("cluster: not running (make cluster)")
    return state


# --- images -----------------------------------------------------------------------------------


def docker_image_id(reference: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", reference],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


def load_images(references: list[str]) -> dict[str, str]:
    """Copy images from the Docker engine into the node's containerd (`docker save | ctr images
    import`), skipping those already there at the same id. Returns reference -> what happened."""
    paths = layout.paths()
    state = _required_state(paths)
    loaded: dict[str, str] = state.setdefault("images", {})
    outcome: dict[str, str] = {}
    for reference in references:
        image_id = docker_image_id(reference)
        if image_id is None:
            raise SystemExit(f"cluster: no image {reference} in the Docker engine (make images)")
        if loaded.get(reference) == image_id:
            outcome[reference] = "present"
            continue
        started = time.monotonic()
        save = subprocess.Popen(["docker", "save", reference], stdout=subprocess.PIPE)
        import_archive(paths, None, source=save.stdout)
        if save.wait() != 0:
            raise SystemExit(f"cluster: docker save {reference} failed")
        loaded[reference] = image_id
        save_state(paths, state)
        outcome[reference] = f"loaded in {time.monotonic() - started:.1f} s"
    return outcome


# --- status -----------------------------------------------------------------------------------


def status_document() -> dict[str, Any]:
    paths = layout.paths()
    state = load_state(paths) or {}
    tools = build.tools()
    return {
        "running": running(paths, state or None),
        "built": all(tool.built for tool in tools),
        "kubeconfig": str(paths.kubeconfig),
        "state_dir": str(paths.root),
        "containerd_socket": str(paths.containerd_socket),
        "cache_dir": str(layout.cache_root()),
        "server": pki.server_url(),
        "node": layout.NODE_NAME,
        "node_ip": layout.NODE_IP,
        "ingress_url": f"http://127.0.0.1:{layout.PORTS.ingress}",
        "ingress_class": layout.INGRESS_CLASS,
        "registry": registry_host(),
        "ports": dataclasses.asdict(layout.PORTS),
        "versions": {tool.name: tool.version for tool in tools},
        "binaries": {k: str(v) for k, v in binaries().items()},
        "pids": state.get("pids", {}),
        "startup_seconds": state.get("startup_seconds"),
        "ready_seconds": state.get("ready_seconds", {}),
    }


def print_status() -> None:
    json.dump(status_document(), sys.stdout, indent=2)
    print()
