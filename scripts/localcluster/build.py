# ruff: noqa: S603
# (Every command here is ours: argv built here, tools found on PATH or installed by this module.)
"""The node's binaries, each compiled once per version into the cache outside the checkout.

    <cache>/kubernetes/<k8s>-etcd-<etcd>/   etcd, kube-apiserver, kube-controller-manager,
                                            kube-scheduler, kubelet, kube-proxy (one `go build`)
    <cache>/coredns/<version>/coredns       CoreDNS with the plugins of deploy/node/coredns/main.go
    <cache>/traefik/<version>/traefik       the ingress controller (layout.TRAEFIK_VERSION)
    <cache>/pause/<version>/pause           the pod sandbox: Kubernetes' own pause.c, static
    <cache>/registry/<version>/registry     the node's image registry (layout.REGISTRY_VERSION)
    <cache>/tilt/<version>/tilt             the dev loop (layout.TILT_VERSION; not part of the
                                            node: `make tilt` builds it, `build` does not)

A build goes to a temporary folder next to its target and is renamed into place when complete, so
an interrupted build leaves nothing that looks finished; a lock file lets two clones share one
cache (the second waits, then finds the binaries). Long steps print what they do and a line every
half minute; the compiler's own output goes to a log shown only when it fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import progress

from localcluster import layout


def log(message: str) -> None:
    print(f"cluster: {message}", flush=True)


@dataclass(frozen=True)
class Tool:
    """A set of binaries built together, cached under <cache>/<name>/<version>/."""

    name: str
    version: str
    binaries: tuple[str, ...]
    # What a person should expect on a first build (2 cores), shown while it runs.
    expected: str

    @property
    def directory(self) -> Path:
        return layout.cache_root() / self.name / self.version

    def path(self, binary: str | None = None) -> Path:
        return self.directory / (binary or self.binaries[0])

    @property
    def built(self) -> bool:
        return all((self.directory / binary).is_file() for binary in self.binaries)


KUBERNETES_BINARIES = layout.KUBERNETES_BINARIES


def kubernetes() -> Tool:
    version = f"{layout.kubernetes_version()}-etcd-{layout.etcd_version()}"
    return Tool("kubernetes", version, KUBERNETES_BINARIES, "4-12 minutes")


def coredns() -> Tool:
    return Tool("coredns", layout.coredns_version(), ("coredns",), "about 1 minute")


def traefik() -> Tool:
    return Tool("traefik", layout.TRAEFIK_VERSION, ("traefik",), "3-8 minutes")


def pause() -> Tool:
    # pause.c comes with the Kubernetes source: its version is that release's.
    return Tool("pause", layout.kubernetes_version(), ("pause",), "seconds")


def registry() -> Tool:
    return Tool("registry", layout.REGISTRY_VERSION, ("registry",), "1-3 minutes")


def tilt() -> Tool:
    return Tool("tilt", layout.TILT_VERSION, ("tilt",), "6-10 minutes")


def tools() -> list[Tool]:
    """What the node needs (`cluster.py build`, `up`)."""
    return [kubernetes(), coredns(), traefik(), pause(), registry()]


def optional_tools() -> list[Tool]:
    """Built only when asked for by name (`cluster.py build tilt`)."""
    return [tilt()]


# --- running long commands readably ----------------------------------------------------------


def go_command() -> str:
    found = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if found is None:
        raise SystemExit("cluster: Go 1.25 or newer is needed to build the node (go.dev/dl)")
    return found


def run_logged(what: str, argv: list[str], *, cwd: Path, logfile: Path, expected: str) -> None:
    """A Go build (or download) with progress lines and its output in `logfile`."""
    progress.run_logged(
        what,
        argv,
        cwd=cwd,
        logfile=logfile,
        expected=expected,
        prefix="cluster",
        env=layout.go_environment(),
    )


@contextlib.contextmanager
def _staged(tool: Tool) -> Iterator[Path]:
    """A temporary folder that becomes the tool's folder when the block completes."""
    tool.directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{tool.version}.", dir=tool.directory.parent))
    try:
        yield staging
        shutil.rmtree(tool.directory, ignore_errors=True)
        staging.rename(tool.directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _locked(tool: Tool) -> Iterator[None]:
    tool.directory.parent.mkdir(parents=True, exist_ok=True)
    with (tool.directory.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def module_source(module: str, version: str) -> Path:
    """The module's folder in the module cache (downloaded if needed; read-only there)."""
    with tempfile.TemporaryDirectory() as empty:
        result = subprocess.run(
            [go_command(), "mod", "download", "-json", f"{module}@{version}"],
            cwd=empty,
            env={**os.environ, **layout.go_environment()},
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise SystemExit(f"cluster: cannot download {module}@{version}: {result.stderr.strip()}")
    return Path(json.loads(result.stdout)["Dir"])


# --- the builds --------------------------------------------------------------------------------


def version_ldflags(kubernetes_version: str) -> str:
    """The version stamps Kubernetes' own build scripts set (Helm checks a chart's kubeVersion
    against the server's)."""
    major, minor = kubernetes_version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={kubernetes_version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def _build_kubernetes(tool: Tool, target: Path) -> None:
    module = layout.KUBERNETES_MODULE
    packages = [
        "go.etcd.io/etcd/server/v3",
        *(f"k8s.io/kubernetes/cmd/{binary}" for binary in KUBERNETES_BINARIES[1:]),
    ]
    ldflags = version_ldflags(layout.kubernetes_version())
    run_logged(
        f"downloading modules and compiling {tool.name} {tool.version}",
        go_build("-ldflags", ldflags, "-o", f"{target}/", *packages),
        cwd=module,
        logfile=target / "build.log",
        expected=tool.expected,
    )
    (target / "server").rename(target / "etcd")  # go names it after .../server/v3


def go_build(*arguments: str) -> list[str]:
    """`go build` at low priority (the machine stays usable), paths trimmed from the binaries."""
    return ["nice", "-n", "10", go_command(), "build", "-trimpath", *arguments]


def _build_coredns(tool: Tool, target: Path) -> None:
    run_logged(
        f"downloading modules and compiling coredns {tool.version}",
        go_build("-ldflags", "-s -w", "-o", str(target / "coredns"), "."),
        cwd=layout.COREDNS_MODULE,
        logfile=target / "build.log",
        expected=tool.expected,
    )


def _build_in_module_copy(
    tool: Tool,
    target: Path,
    module: str,
    package: str,
    version_flag: str,
    *,
    prepare: Callable[[Path], None] | None = None,
    leave_out: tuple[str, ...] = (),
) -> None:
    """`go build` of one of a module's commands inside a writable copy of the module: its go.mod
    `replace` directives only count in its own module, and some need files added first.
    `leave_out` names top-level folders not to copy."""
    source = module_source(module, tool.version)

    def left_out(directory: str, names: list[str]) -> list[str]:
        return [name for name in names if Path(directory) == source and name in leave_out]

    with tempfile.TemporaryDirectory(prefix=f"{tool.name}-") as scratch:
        copy = Path(scratch) / "src"
        shutil.copytree(source, copy, ignore=left_out)
        for path in copy.rglob("*"):
            path.chmod(path.stat().st_mode | 0o200)
        if prepare is not None:
            prepare(copy)
        run_logged(
            f"downloading modules and compiling {tool.name} {tool.version}",
            go_build(
                "-ldflags", f"-s -w {version_flag}", "-o", str(target / tool.binaries[0]), package
            ),
            cwd=copy,
            logfile=target / "build.log",
            expected=tool.expected,
        )


def _build_traefik(tool: Tool, target: Path) -> None:
    version_flag = f"-X {layout.TRAEFIK_MODULE}/pkg/version.Version={tool.version}"
    _build_in_module_copy(tool, target, layout.TRAEFIK_MODULE, "./cmd/traefik", version_flag)


def _build_registry(tool: Tool, target: Path) -> None:
    version_flag = f"-X {layout.REGISTRY_MODULE}/version.version={tool.version}"
    _build_in_module_copy(tool, target, layout.REGISTRY_MODULE, "./cmd/registry", version_flag)


TILT_PLACEHOLDER_PAGE = """<!doctype html>
<title>Tilt</title>
<p>This Tilt was built from its Go module without its web UI (no Node.js build here).
Use the terminal: <code>tilt up --stream</code>, <code>tilt get uiresources</code>,
<code>tilt logs</code>.</p>
"""


def _tilt_placeholder_assets(copy: Path) -> None:
    # The web UI is a Node.js build that is not in the module; without an index.html in the
    # embedded folder `tilt up`/`tilt ci` stop ("Could not find Tilt web static files").
    build_dir = copy / "pkg" / "assets" / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "index.html").write_text(TILT_PLACEHOLDER_PAGE)


def _build_tilt(tool: Tool, target: Path) -> None:
    # Without -X main.version Tilt takes itself for a development build and serves its web UI
    # from a webpack dev server it would start. The module ships a vendor folder holding only
    # modules.txt: left in, go build insists on -mod=vendor and fails.
    _build_in_module_copy(
        tool,
        target,
        layout.TILT_MODULE,
        "./cmd/tilt",
        f"-X main.version={tool.version.lstrip('v')}",
        prepare=_tilt_placeholder_assets,
        leave_out=("vendor", "node_modules"),
    )


def pause_tag(kubernetes_source: Path) -> str:
    """The TAG of Kubernetes' build/pause/Makefile (what `pause -v` reports)."""
    makefile = (kubernetes_source / "build" / "pause" / "Makefile").read_text()
    match = re.search(r"^TAG \?= (\S+)", makefile, re.MULTILINE)
    return match.group(1) if match else "unknown"


def _build_pause(tool: Tool, target: Path) -> None:
    kubernetes_source = module_source("k8s.io/kubernetes", layout.kubernetes_version())
    source = kubernetes_source / "build" / "pause" / "linux" / "pause.c"
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise SystemExit("cluster: a C compiler (gcc) is needed for the pod sandbox (pause.c)")
    version = f"-DVERSION=v{pause_tag(kubernetes_source)}"
    output = str(target / "pause")
    subprocess.run(
        [compiler, "-Os", "-Wall", "-Werror", "-static", version, "-o", output, str(source)],
        check=True,
    )


BUILDERS = {
    "kubernetes": _build_kubernetes,
    "coredns": _build_coredns,
    "traefik": _build_traefik,
    "pause": _build_pause,
    "registry": _build_registry,
    "tilt": _build_tilt,
}


def ensure(tool: Tool) -> Tool:
    """Build the tool unless this version is in the cache."""
    if tool.built:
        return tool
    with _locked(tool):
        if tool.built:
            return tool
        log(f"building {tool.name} {tool.version} (once; expect {tool.expected})")
        started = time.monotonic()
        with _staged(tool) as target:
            BUILDERS[tool.name](tool, target)
            elapsed = time.monotonic() - started
            record = {"version": tool.version, "seconds": round(elapsed)}
            (target / "build.json").write_text(json.dumps(record) + "\n")
        log(f"built {tool.name} in {elapsed:.0f} s -> {tool.directory}")
    return tool


def ensure_all() -> list[Tool]:
    return [ensure(tool) for tool in tools()]
