# ruff: noqa: S603, S607
# (Every command here is a system tool run with an argv built here.)
"""The machine side of the node: packages, the pod bridge, routes and sysctls, and removing every
trace of the node when it goes down (processes, mounts, network namespaces, iptables chains,
cgroups, the bridge) so the next `up` starts clean and the machine is left as it was."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from localcluster import layout

# Debian package -> a file it installs that the node uses.
PACKAGES = {
    "containerd": "/usr/bin/containerd",
    "runc": "/usr/sbin/runc",
    "containernetworking-plugins": "/usr/lib/cni/bridge",
    "iptables": "/usr/sbin/iptables",
    "conntrack": "/usr/sbin/conntrack",
    "iproute2": "/usr/sbin/ip",
}
# What the kubelet changes unless told not to; restored by `down` to what `up` found.
KUBELET_SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")
NODE_SYSCTLS = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}


def log(message: str) -> None:
    print(f"cluster: {message}", flush=True)


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def require_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit(
            "cluster: a node needs root (bridge, iptables, mounts, cgroups); run `make cluster` "
            "as root, or point KUBECONFIG at another cluster (docs/kubernetes.md)"
        )


def missing_packages() -> list[str]:
    return [package for package, path in PACKAGES.items() if not Path(path).exists()]


def ensure_packages() -> None:
    missing = missing_packages()
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise SystemExit(f"cluster: install {', '.join(missing)} (Debian package names)")
    log(f"installing Debian packages: {', '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "--yes", "--quiet", "--no-install-recommends", *missing]
    if subprocess.run(argv, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "--quiet"], env=env, capture_output=True, check=True)
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"cluster: apt-get install failed:\n{result.stdout[-2000:]}")


def read_sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


def write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value)


def kubelet_sysctls() -> dict[str, str]:
    return {name: read_sysctl(name) for name in KUBELET_SYSCTLS}


def bridge_exists() -> bool:
    return Path(f"/sys/class/net/{layout.BRIDGE}").exists()


def setup_network() -> None:
    """Routing on, the pod bridge with the node's address, and the Service range routed onto the
    bridge so that the host's own connections to ClusterIPs never leave by another interface."""
    for name, value in NODE_SYSCTLS.items():
        write_sysctl(name, value)
    if not bridge_exists():
        run("ip", "link", "add", layout.BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{layout.NODE_IP}/24", "dev", layout.BRIDGE)
    run("ip", "link", "set", layout.BRIDGE, "up")
    run("ip", "route", "replace", layout.SERVICE_CIDR, "dev", layout.BRIDGE, "src", layout.NODE_IP)
    confine_pods()


def confine_pods() -> None:
    """Pods reach other pods, Services (before kube-proxy's DNAT, which the raw table precedes)
    and the node's bridge address, and nothing else: no packet from a pod leaves the machine,
    whatever the forwarding rules of kube-proxy, the CNI plugins or a Docker engine say."""
    chain = layout.EGRESS_CHAIN
    run("iptables", "-t", "raw", "-N", chain, check=False)
    run("iptables", "-t", "raw", "-F", chain)
    for allowed in (layout.POD_CIDR, layout.SERVICE_CIDR):
        run("iptables", "-t", "raw", "-A", chain, "-d", allowed, "-j", "RETURN")
    run("iptables", "-t", "raw", "-A", chain, "-j", "DROP")
    jump = ("PREROUTING", "-s", layout.POD_CIDR, "-j", chain)
    if run("iptables", "-t", "raw", "-C", *jump, check=False).returncode != 0:
        run("iptables", "-t", "raw", "-I", *jump)


# --- tearing down -----------------------------------------------------------------------------


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _cgroup_roots() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():  # cgroup v2: one hierarchy
        return [base / "kubepods.slice", base / "kubepods"]
    return [controller / "kubepods" for controller in base.iterdir() if controller.is_dir()]


def kill_pods(paths: layout.StatePaths) -> None:
    """Every container process (by the pods' cgroups) and every runc shim of our containerd."""
    for _ in range(3):
        pids: set[int] = set()
        for root in _cgroup_roots():
            if root.is_dir():
                for procs in root.rglob("cgroup.procs"):
                    try:
                        pids.update(int(line) for line in procs.read_text().split())
                    except (OSError, ValueError):
                        continue
        pids.update(_processes_with(f"-address {paths.containerd_socket}"))
        if not pids:
            return
        _kill(sorted(pids))
        time.sleep(0.5)


def remove_cgroups() -> None:
    for root in _cgroup_roots():
        if not root.is_dir():
            continue
        # Deepest first: a cgroup can only go once its children have.
        for directory in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()


def unmount_under(root: Path) -> None:
    prefix = str(root)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        run("umount", "-l", mount, check=False)


def remove_network_namespaces() -> None:
    netns = Path("/run/netns")
    if netns.is_dir():
        for entry in netns.iterdir():
            if entry.name.startswith("cni-"):
                run("ip", "netns", "delete", entry.name, check=False)


def _ours(chain: str) -> bool:
    return chain.startswith(("KUBE-", "CNI-", layout.EGRESS_CHAIN))


def remove_iptables_chains() -> None:
    """The rules kube-proxy, the kubelet, the CNI plugins and `confine_pods` added, and their
    chains; nothing else (a Docker engine's chains stay)."""
    if shutil.which("iptables-save") is None:
        return
    for table in ("nat", "filter", "mangle", "raw"):
        dump = run("iptables-save", "-t", table, check=False).stdout.splitlines()
        chains = [line[1:].split()[0] for line in dump if line.startswith(":")]
        for line in dump:
            if not line.startswith("-A "):
                continue
            parts = shlex.split(line)
            chain = parts[1]
            target = parts[parts.index("-j") + 1] if "-j" in parts else ""
            if not _ours(chain) and _ours(target):
                run("iptables", "-t", table, "-D", *parts[1:], check=False)
        for chain in filter(_ours, chains):
            run("iptables", "-t", table, "-F", chain, check=False)
        for chain in filter(_ours, chains):
            run("iptables", "-t", table, "-X", chain, check=False)


def remove_network() -> None:
    run("ip", "route", "del", layout.SERVICE_CIDR, check=False)
    if bridge_exists():
        run("ip", "link", "del", layout.BRIDGE, check=False)


def restore_sysctls(saved: dict[str, str]) -> None:
    for name, value in saved.items():
        with contextlib.suppress(OSError):
            write_sysctl(name, value)
