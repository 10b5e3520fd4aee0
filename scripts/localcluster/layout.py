"""Where the node lives: addresses, ports, folders and the versions the go.mod files pin.

Everything the cluster owns on the host is named here. The addresses are fixed (one node per
machine) and private: the pod bridge is also the node's address, so nothing in the cluster listens
on or reaches any interface but loopback and that bridge.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO / "deploy" / "node"
KUBERNETES_MODULE = NODE_MODULES / "kubernetes"
COREDNS_MODULE = NODE_MODULES / "coredns"
TEMPLATES = NODE_MODULES

NODE_NAME = "oms-node"
BRIDGE = "omsbr0"
NODE_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
CLUSTER_NAME = "oms-local"
INGRESS_CLASS = "traefik"
# iptables (raw table): pods may reach pods, Services and the node, nothing else.
EGRESS_CHAIN = "OMS-NODE-EGRESS"

# Built together from the Kubernetes module (etcd from the version it pins), in start order.
KUBERNETES_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)

# Traefik v3.7.x cannot be built here: several of its dependencies (go-http-auth at the commit it
# pins, a handful of DNS-provider SDKs of lego v5) are refused by the module proxy. v3.6.12 is the
# newest release whose whole module graph downloads.
TRAEFIK_MODULE = "github.com/traefik/traefik/v3"
TRAEFIK_VERSION = "v3.6.12"

# The image registry of the node (distribution's `registry`): Tilt pushes the images it builds
# there and the node's containerd pulls them from it, both on loopback.
REGISTRY_MODULE = "github.com/distribution/distribution/v3"
REGISTRY_VERSION = "v3.1.2"
# Where the registry's ConfigMap is (KEP-1755), for Tilt and any tool that reads it.
REGISTRY_CONFIGMAP = ("kube-public", "local-registry-hosting")

# Tilt, the inner dev loop (`make tilt`; not part of the node). v0.34.0 is the newest release
# the module proxy serves here.
TILT_MODULE = "github.com/tilt-dev/tilt"
TILT_VERSION = "v0.34.0"


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"OMS_CLUSTER_{name.upper().replace('-', '_')}_PORT", default))


@dataclass(frozen=True)
class Ports:
    """Fixed ports (override one with OMS_CLUSTER_<NAME>_PORT, e.g. OMS_CLUSTER_INGRESS_PORT)."""

    etcd: int = _port("etcd", 2379)
    etcd_peer: int = _port("etcd-peer", 2380)
    apiserver: int = _port("apiserver", 6443)
    controller_manager: int = _port("controller-manager", 10257)
    scheduler: int = _port("scheduler", 10259)
    kubelet: int = _port("kubelet", 10250)
    kubelet_healthz: int = _port("kubelet-healthz", 10248)
    proxy_healthz: int = _port("proxy-healthz", 10256)
    proxy_metrics: int = _port("proxy-metrics", 10249)
    containerd_stream: int = _port("containerd-stream", 10010)
    dns: int = _port("dns", 53)
    dns_health: int = _port("dns-health", 10054)
    dns_ready: int = _port("dns-ready", 10181)
    ingress: int = _port("ingress", 30080)
    ingress_admin: int = _port("ingress-admin", 30081)
    # The node's image registry, on loopback (plain HTTP: containerd and Docker treat a registry
    # on localhost as insecure by default).
    registry: int = _port("registry", 5000)
    # Nothing listens here: the proxy containerd is given, so that no pull leaves the machine.
    registry_sink: int = _port("registry-sink", 9)


PORTS = Ports()


def cache_root() -> Path:
    """Built tools, by version, shared by every clone on the machine (OMS_CACHE_DIR overrides)."""
    configured = os.environ.get("OMS_CACHE_DIR")
    if configured:
        return Path(configured).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "oms"


# One node per machine (the bridge, its addresses and the iptables chains are the machine's):
# the state folder of the node that owns them.
OWNER_FILE = Path("/run/oms-cluster/owner")


def state_dir() -> Path:
    """The running node's state, logs and kubeconfig; deleted by `down` (OMS_CLUSTER_DIR)."""
    return Path(os.environ.get("OMS_CLUSTER_DIR") or REPO / "data" / "cluster").resolve()


def go_environment() -> dict[str, str]:
    cache = cache_root() / "go"
    return {
        "GOMODCACHE": str(cache / "mod"),
        "GOCACHE": str(cache / "cache"),
        "GOFLAGS": "-modcacherw -buildvcs=false",
        # The machine's own Go: go.mod's toolchain line must never make it fetch another.
        "GOTOOLCHAIN": "local",
    }


def required_version(go_mod: Path, module: str) -> str:
    text = go_mod.read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"cluster: {module} is not required in {go_mod}")
    return match.group(1)


def kubernetes_version() -> str:
    return required_version(KUBERNETES_MODULE / "go.mod", "k8s.io/kubernetes")


def etcd_version() -> str:
    return required_version(KUBERNETES_MODULE / "go.mod", "go.etcd.io/etcd/server/v3")


def coredns_version() -> str:
    return required_version(COREDNS_MODULE / "go.mod", "github.com/coredns/coredns")


@dataclass(frozen=True)
class StatePaths:
    """The files of one running node, under its state folder."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def kubeconfig(self) -> Path:
        """The administrator's kubeconfig: what users and tests point KUBECONFIG at."""
        return self.root / "kubeconfig"

    def component_kubeconfig(self, user: str) -> Path:
        return self.config / f"{user}.kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"


def paths() -> StatePaths:
    return StatePaths(state_dir())
