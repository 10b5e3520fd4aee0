"""A one-node Kubernetes cluster on this machine, for `make cluster`, the cluster and end-to-end
tests, and trying the chart by hand. Needs root (bridge, iptables, mounts) and Go; no systemd,
no image registry, nothing reached off this machine.

    python scripts/cluster.py build        # compile what is missing (once per version, cached)
    python scripts/cluster.py up           # start the node unless it runs (KUBECONFIG: see status)
    python scripts/cluster.py status       # JSON: running?, kubeconfig, ingress, versions, pids
    python scripts/cluster.py load IMAGE…  # copy images from the Docker engine into the node
    python scripts/cluster.py restart kube-apiserver   # or stop / start one component
    python scripts/cluster.py down         # stop everything and remove every trace
    python scripts/cluster.py prometheus-crds DIR      # ServiceMonitor/PrometheusRule CRDs

Versions: deploy/node/kubernetes/go.mod (Kubernetes, etcd), deploy/node/coredns/go.mod,
localcluster/layout.py (Traefik). Binaries and Go caches: ~/.cache/oms (OMS_CACHE_DIR). State,
logs and the admin kubeconfig: data/cluster/ (OMS_CLUSTER_DIR). See docs/kubernetes.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localcluster import build, configs, node

PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
PROMETHEUS_CRDS = ("servicemonitors", "prometheusrules")


def prometheus_crds(target: Path) -> list[Path]:
    """Copy the ServiceMonitor and PrometheusRule CRDs the prometheus-operator module ships."""
    module_dir = build.module_source(PROMETHEUS_OPERATOR, PROMETHEUS_OPERATOR_VERSION)
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for plural in PROMETHEUS_CRDS:
        source = (
            module_dir
            / "example"
            / "prometheus-operator-crd"
            / f"monitoring.coreos.com_{plural}.yaml"
        )
        copied.append(Path(shutil.copy(source, target / source.name)))
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="compile what is missing (once per version)")
    commands.add_parser("up", help="start the node unless it runs")
    commands.add_parser("down", help="stop it and remove its state, network and chains")
    commands.add_parser("status", help="print a JSON status")
    load = commands.add_parser("load", help="copy images from the Docker engine into the node")
    load.add_argument("images", nargs="+")
    for verb in ("restart", "stop", "start"):
        verb_parser = commands.add_parser(verb, help=f"{verb} one component of a running node")
        verb_parser.add_argument("component", choices=configs.COMPONENTS)
    crds_parser = commands.add_parser("prometheus-crds", help="copy prometheus-operator CRDs")
    crds_parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    if args.command == "build":
        for tool in build.ensure_all():
            print(f"{tool.name} {tool.version}: {tool.directory}")
    elif args.command == "up":
        node.up()
    elif args.command == "down":
        node.down()
    elif args.command == "status":
        node.print_status()
    elif args.command == "load":
        for image, outcome in node.load_images(args.images).items():
            print(f"{image}: {outcome}")
    elif args.command == "restart":
        node.restart(args.component)
    elif args.command == "stop":
        node.stop(args.component)
    elif args.command == "start":
        node.start(args.component)
    else:
        for path in prometheus_crds(args.directory):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
