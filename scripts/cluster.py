"""A local Kubernetes control plane for tests and development: etcd, kube-apiserver and
kube-controller-manager built from source, on 127.0.0.1, no kubelet (pods stay Pending).

    python scripts/cluster.py build      # compile the three binaries once (cached in .tools/)
    python scripts/cluster.py up         # certificates, etcd, apiserver, controller-manager
    python scripts/cluster.py status     # JSON: running?, kubeconfig, ports, pids
    python scripts/cluster.py restart kube-apiserver   # or stop / start one component
    python scripts/cluster.py down       # stop the processes and delete the state
    python scripts/cluster.py prometheus-crds DIR   # ServiceMonitor/PrometheusRule CRDs

Versions come from deploy/controlplane/go.mod (k8s.io/kubernetes, and the etcd server module that
release pins). Binaries go to .tools/controlplane/<versions>/, the Go module and build caches to
.tools/go/ (a second build, or one for a new patch release, reuses them). State, logs and the
admin kubeconfig live in data/cluster/ (OMS_CLUSTER_DIR overrides). See docs/kubernetes.md.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
GO_MODULE = REPO / "deploy" / "controlplane"
TOOLS = REPO / ".tools"
GO_ENV = {
    "GOMODCACHE": str(TOOLS / "go" / "mod"),
    "GOCACHE": str(TOOLS / "go" / "cache"),
    "GOFLAGS": "-modcacherw -buildvcs=false",
}
STATE_DIR = Path(os.environ.get("OMS_CLUSTER_DIR") or REPO / "data" / "cluster")
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
PROMETHEUS_CRDS = ("servicemonitors", "prometheusrules")
SERVICE_CIDR = "10.96.0.0/24"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
# Enough for Deployments, owner references and service-account tokens; nothing that needs nodes.
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "job-controller",  # the migration Job of k8s/ creates its pod
)


def log(message: str) -> None:
    print(f"cluster: {message}", flush=True)


# --- versions and binaries ------------------------------------------------------------------


def versions() -> dict[str, str]:
    text = (GO_MODULE / "go.mod").read_text()
    found = {}
    for name, module in (
        ("kubernetes", "k8s.io/kubernetes"),
        ("etcd", "go.etcd.io/etcd/server/v3"),
    ):
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", text, re.MULTILINE)
        if match is None:
            raise SystemExit(f"cluster: {module} not required in {GO_MODULE / 'go.mod'}")
        found[name] = match.group(1)
    return found


def bin_dir() -> Path:
    found = versions()
    return TOOLS / "controlplane" / f"kubernetes-{found['kubernetes']}-etcd-{found['etcd']}"


def binary(component: str) -> Path:
    return bin_dir() / component


def ldflags(kubernetes: str) -> str:
    """Version stamps the Kubernetes build scripts set (helm checks a chart's kubeVersion)."""
    major, minor = kubernetes.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={kubernetes}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def go_command() -> str:
    found = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if found is None:
        raise SystemExit(
            "cluster: Go is needed to build the control plane (go.dev/dl, 1.25 or newer)"
        )
    return found


def build() -> Path:
    """Compile etcd, kube-apiserver and kube-controller-manager unless this version exists."""
    target = bin_dir()
    if all((target / component).is_file() for component in COMPONENTS):
        return target
    found = versions()
    log(
        f"building kubernetes {found['kubernetes']} (kube-apiserver, kube-controller-manager) and "
        f"etcd {found['etcd']}: the first build takes a while (cache: .tools/go)"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    packages = [
        "go.etcd.io/etcd/server/v3",
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
    ]
    argv = ["nice", "-n", "10", go_command(), "build", "-trimpath"]
    argv += ["-ldflags", ldflags(found["kubernetes"]), "-o", f"{staging}/", *packages]
    started = time.monotonic()
    try:
        subprocess.run(argv, cwd=GO_MODULE, env={**os.environ, **GO_ENV}, check=True)  # noqa: S603
        (staging / "server").rename(staging / "etcd")  # go names it after .../server/v3
        elapsed = time.monotonic() - started
        (staging / "build.json").write_text(json.dumps({**found, "seconds": round(elapsed)}) + "\n")
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"built in {elapsed:.0f} s -> {target.relative_to(REPO)}")
    return target


# --- certificates ---------------------------------------------------------------------------


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _certificate(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None = None,
    *,
    ca: bool = False,
    server: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signing_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
        purpose = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else None
        purposes = [purpose] if purpose else [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(usage, critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def write_pki(pki: Path) -> None:
    """CA, apiserver serving cert, admin client cert (system:masters), service-account keys."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key, ca_name = _key(), _name("oms-local-ca")
    ca = _certificate(ca_name, ca_key, ca=True)
    (pki / "ca.crt").write_bytes(_pem(ca))
    _write_key(pki / "ca.key", ca_key)
    service_ip = ipaddress.IPv4Network(SERVICE_CIDR)[1]
    sans: list[x509.GeneralName] = [
        x509.DNSName(name)
        for name in (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
    ]
    sans += [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.IPAddress(service_ip)]
    server_key = _key()
    server = _certificate(
        _name("kube-apiserver"), server_key, (ca_name, ca_key), server=True, sans=sans
    )
    (pki / "apiserver.crt").write_bytes(_pem(server))
    _write_key(pki / "apiserver.key", server_key)
    admin_key = _key()
    admin = _certificate(_name("oms-admin", "system:masters"), admin_key, (ca_name, ca_key))
    (pki / "admin.crt").write_bytes(_pem(admin))
    _write_key(pki / "admin.key", admin_key)
    sa_key = _key()
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def kubeconfig(server: str, pki: Path) -> dict[str, Any]:
    def encoded(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "oms-local",
                "cluster": {"server": server, "certificate-authority-data": encoded("ca.crt")},
            }
        ],
        "users": [
            {
                "name": "oms-admin",
                "user": {
                    "client-certificate-data": encoded("admin.crt"),
                    "client-key-data": encoded("admin.key"),
                },
            }
        ],
        "contexts": [
            {"name": "oms-local", "context": {"cluster": "oms-local", "user": "oms-admin"}}
        ],
        "current-context": "oms-local",
    }


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def state_file() -> Path:
    return STATE_DIR / "state.json"


def load_state() -> dict[str, Any] | None:
    try:
        loaded = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def save_state(state: dict[str, Any]) -> None:
    temporary = state_file().with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2) + "\n")
    temporary.replace(state_file())


def alive(pid: int | None, executable: str) -> bool:
    """The process is ours: running, and its command line starts with our binary."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return status != "Z" and cmdline[0].decode(errors="replace") == executable


def spawn(component: str, argv: list[str]) -> subprocess.Popen[bytes]:
    logfile = (STATE_DIR / "logs" / f"{component}.log").open("ab")
    with logfile:
        process = subprocess.Popen(  # noqa: S603 (our own binaries, argv built here)
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=STATE_DIR,
        )
    return process


def stop_pid(pid: int | None, executable: str, timeout: float = 20.0) -> None:
    if not alive(pid, executable):
        return
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid, executable) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid, executable):
        os.kill(pid, signal.SIGKILL)
        while alive(pid, executable):
            time.sleep(0.05)


def https_context(pki: Path, client: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if client:
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return context


def get(url: str, context: ssl.SSLContext | None = None, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as error:
        return 0, str(error)


def wait_for(
    what: str, probe: Any, component: str, process: subprocess.Popen[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        ok, last = probe()
        if ok:
            return
        # Our own child: poll() is exact (its /proc cmdline is Python's until it has exec'd).
        if process.poll() is not None:
            tail = (STATE_DIR / "logs" / f"{component}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"cluster: {component} exited while waiting for {what}:\n{tail}")
        time.sleep(0.2)
    raise SystemExit(f"cluster: {what} not ready within {timeout:.0f}s; last answer: {last[:500]}")


def component_argv(component: str, state: dict[str, Any]) -> list[str]:
    pki = STATE_DIR / "pki"
    ports = state["ports"]
    executable = str(binary(component))
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    if component == "etcd":
        peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        return [
            executable,
            "--name=oms-local",
            f"--data-dir={STATE_DIR / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=oms-local={peer}",
            "--listen-metrics-urls=",
            "--unsafe-no-fsync",  # throw-away test data: spare the shared disk
            "--log-level=warn",
        ]
    if component == "kube-apiserver":
        return [
            executable,
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['kube-apiserver']}",
            # A loopback address cannot be the `kubernetes` Service's endpoint.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer=https://127.0.0.1:{ports['kube-apiserver']}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--api-audiences=https://kubernetes.default.svc",
            "--profiling=false",
            "--v=1",
        ]
    if component == "kube-controller-manager":
        return [
            executable,
            f"--kubeconfig={STATE_DIR / 'kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-controller-manager']}",
            "--leader-elect=false",
            f"--controllers={','.join(CONTROLLERS)}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=false",
            # Deleted objects' dependents go quickly in tests.
            "--concurrent-gc-syncs=10",
            "--profiling=false",
            "--v=1",
        ]
    raise ValueError(component)


def start_component(component: str, state: dict[str, Any], timeout: float = 120.0) -> None:
    process = spawn(component, component_argv(component, state))
    state["pids"][component] = process.pid
    save_state(state)
    pki = STATE_DIR / "pki"
    ports = state["ports"]
    if component == "etcd":
        url = f"http://127.0.0.1:{ports['etcd']}/health"

        def probe() -> tuple[bool, str]:
            status, body = get(url)
            return status == 200 and '"true"' in body, body

    elif component == "kube-apiserver":
        url = f"https://127.0.0.1:{ports['kube-apiserver']}/readyz"
        context = https_context(pki)

        def probe() -> tuple[bool, str]:
            status, body = get(url, context)
            return status == 200, body

    else:
        # The controllers run: the serviceaccount controller has given `default` its account.
        url = f"https://127.0.0.1:{ports['kube-apiserver']}/api/v1/namespaces/default/serviceaccounts/default"
        context = https_context(pki)

        def probe() -> tuple[bool, str]:
            status, body = get(url, context)
            return status == 200, body

    wait_for(f"{component} ({url})", probe, component, process, timeout)


def running(state: dict[str, Any] | None) -> bool:
    if state is None or state.get("bin_dir") != str(bin_dir()):
        return False
    if not all(alive(state["pids"].get(c), str(binary(c))) for c in COMPONENTS):
        return False
    url = f"https://127.0.0.1:{state['ports']['kube-apiserver']}/readyz"
    try:
        return get(url, https_context(STATE_DIR / "pki"))[0] == 200
    except (OSError, ssl.SSLError):
        return False


def status_document() -> dict[str, Any]:
    state = load_state()
    return {
        "running": running(state),
        "kubeconfig": str(STATE_DIR / "kubeconfig"),
        "state_dir": str(STATE_DIR),
        "bin_dir": str(bin_dir()),
        "versions": versions(),
        "ports": (state or {}).get("ports", {}),
        "pids": (state or {}).get("pids", {}),
        "server": (state or {}).get("server"),
    }


def down() -> None:
    state = load_state()
    if state is not None:
        for component in reversed(COMPONENTS):
            executable = str(Path(state.get("bin_dir", bin_dir())) / component)
            stop_pid(state["pids"].get(component), executable)
    shutil.rmtree(STATE_DIR, ignore_errors=True)


def up() -> dict[str, Any]:
    if running(load_state()):
        log(f"already running; KUBECONFIG={STATE_DIR / 'kubeconfig'}")
        return status_document()
    build()
    down()
    started = time.monotonic()
    (STATE_DIR / "logs").mkdir(parents=True)
    write_pki(STATE_DIR / "pki")
    ports = {c: free_port() for c in (*COMPONENTS, "etcd-peer")}
    server = f"https://127.0.0.1:{ports['kube-apiserver']}"
    state: dict[str, Any] = {
        "bin_dir": str(bin_dir()),
        "ports": ports,
        "pids": {},
        "server": server,
    }
    (STATE_DIR / "kubeconfig").write_text(
        json.dumps(kubeconfig(server, STATE_DIR / "pki"), indent=2)
    )
    (STATE_DIR / "kubeconfig").chmod(0o600)
    for component in COMPONENTS:
        start_component(component, state)
    elapsed = time.monotonic() - started
    state["startup_seconds"] = round(elapsed, 1)
    save_state(state)
    log(f"ready in {elapsed:.1f} s: {server}")
    log(f"export KUBECONFIG={STATE_DIR / 'kubeconfig'}")
    return status_document()


def stop_component(component: str) -> None:
    state = load_state()
    if state is None:
        raise SystemExit("cluster: not running")
    # The API server stops listening at once but can linger afterwards: do not wait long.
    stop_pid(state["pids"].get(component), str(binary(component)), timeout=5.0)
    log(f"{component} stopped")


def start_again(component: str) -> None:
    state = load_state()
    if state is None:
        raise SystemExit("cluster: not running")
    if alive(state["pids"].get(component), str(binary(component))):
        raise SystemExit(f"cluster: {component} runs already")
    start_component(component, state)
    log(f"{component} started")


def restart(component: str) -> None:
    stop_component(component)
    start_again(component)


# --- prometheus-operator CRDs ---------------------------------------------------------------


def prometheus_crds(target: Path) -> list[Path]:
    """Copy the ServiceMonitor and PrometheusRule CRDs the prometheus-operator module ships."""
    result = subprocess.run(  # noqa: S603
        [
            go_command(),
            "mod",
            "download",
            "-json",
            f"{PROMETHEUS_OPERATOR}@{PROMETHEUS_OPERATOR_VERSION}",
        ],
        cwd=GO_MODULE,
        env={**os.environ, **GO_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    module_dir = Path(json.loads(result.stdout)["Dir"])
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
    commands.add_parser("build", help="compile the binaries (once per version)")
    commands.add_parser("up", help="start the control plane unless it runs")
    commands.add_parser("down", help="stop it and delete its state")
    commands.add_parser("status", help="print a JSON status")
    for verb in ("restart", "stop", "start"):
        verb_parser = commands.add_parser(verb, help=f"{verb} one component of a running cluster")
        verb_parser.add_argument("component", choices=COMPONENTS)
    crds_parser = commands.add_parser("prometheus-crds", help="copy prometheus-operator CRDs")
    crds_parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    if args.command == "build":
        log(f"binaries in {build().relative_to(REPO)}")
    elif args.command == "up":
        up()
    elif args.command == "down":
        down()
        log("stopped")
    elif args.command == "status":
        print(json.dumps(status_document(), indent=2))
    elif args.command == "restart":
        restart(args.component)
    elif args.command == "stop":
        stop_component(args.component)
    elif args.command == "start":
        start_again(args.component)
    else:
        for path in prometheus_crds(args.directory):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
