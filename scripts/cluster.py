"""A one-node Kubernetes cluster on this machine, for `make cluster`, the cluster and end-to-end
tests, and trying the chart by hand. Needs root (bridge, iptables, mounts) and Go; no systemd,
nothing reached off this machine (its image registry is its own, on loopback).

    python scripts/cluster.py build        # compile what is missing (once per version, cached)
    python scripts/cluster.py build tilt   # or only the tools named (tilt is built only so)
    python scripts/cluster.py up           # start the node unless it runs (KUBECONFIG: see status)
    python scripts/cluster.py status       # JSON: running?, kubeconfig, ingress, versions, pids
    python scripts/cluster.py load IMAGE…  # copy images from the Docker engine into the node
    python scripts/cluster.py restart kube-apiserver   # or stop / start one component
    python scripts/cluster.py down         # stop everything and remove every trace
    python scripts/cluster.py prometheus-crds DIR      # ServiceMonitor/PrometheusRule CRDs

Versions: deploy/node/kubernetes/go.mod (Kubernetes, etcd), deploy/node/coredns/go.mod,
localcluster/layout.py (Traefik, the image registry, Tilt). Binaries and Go caches: ~/.cache/oms
(OMS_CACHE_DIR). State, logs and the admin kubeconfig: data/cluster/ (OMS_CLUSTER_DIR). See
docs/kubernetes.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localcluster import build, configs, node

PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
PROMETHEUS_CRDS = ("servicemonitors", "prometheusrules")
# `cluster.py build node tilt`: the node's tools, and Tilt.
NODE_TOOLS = "node"


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


def selected_tools(names: list[str]) -> list[build.Tool]:
    """The tools `names` asks for, in build order; none named (or `node`): the node's."""
    wanted = set(names or [NODE_TOOLS])
    node_tools = build.tools() if NODE_TOOLS in wanted else []
    named = [t for t in [*build.tools(), *build.optional_tools()] if t.name in wanted]
    return [*node_tools, *(tool for tool in named if tool not in node_tools)]


def build_in_background(tools: list[build.Tool], logfile: Path) -> None:
    """Start compiling the missing tools and return at once. `make test` does this first, so the
    compilers use the CPU the suites that need no cluster leave idle (tests/ordering.py runs
    those first and waits for this before the others)."""
    missing = [tool for tool in tools if not tool.built]
    if not missing:
        print("cluster: " + ", ".join(f"{t.name} {t.version}" for t in tools) + ": built")
        return
    logfile.parent.mkdir(parents=True, exist_ok=True)
    names = [tool.name for tool in missing]
    with logfile.open("ab") as log:
        subprocess.Popen(  # noqa: S603 (our own script, argv built here)
            [sys.executable, str(Path(__file__).resolve()), "build", *names],
            preexec_fn=lambda: os.nice(19),  # the tests running meanwhile come first
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"cluster: compiling {', '.join(names)} in the background (log: {logfile})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="compile what is missing (once per version)")
    build_parser.add_argument(
        "tools",
        nargs="*",
        choices=[NODE_TOOLS, *(tool.name for tool in [*build.tools(), *build.optional_tools()])],
        help=f"only these (default, or `{NODE_TOOLS}`: what the node needs)",
    )
    build_parser.add_argument(
        "--background",
        metavar="LOG",
        type=Path,
        help="compile what is missing in a detached process at the lowest priority, output to LOG;"
        " a later `build` of the same tools waits for it (the cache's locks)",
    )
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
        selected = selected_tools(args.tools)
        if args.background is not None:
            build_in_background(selected, args.background)
        else:
            for tool in selected:
                build.ensure(tool)
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
