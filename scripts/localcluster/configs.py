"""Every daemon's command line and configuration files, as pure functions of the layout.

The configuration files are templates in deploy/node/ (containerd.toml, cni.conflist,
kubelet.yaml, kube-proxy.yaml, Corefile, addons.yaml, registry.yaml) with `${name}`
placeholders filled from `template_values`; a placeholder without a value is an error, not an
empty string.
"""

from __future__ import annotations

import string
from pathlib import Path

from localcluster import layout

# In the order `up` starts them: each needs the ones before it.
COMPONENTS = ("containerd", *layout.KUBERNETES_BINARIES, "coredns", "traefik", "registry")

CNI_BIN_DIR = "/usr/lib/cni"
RUNC = "/usr/sbin/runc"
CONTAINERD = "/usr/bin/containerd"


def pause_image(tag: str) -> str:
    return f"localhost/oms/pause:{tag}"


def template_values(paths: layout.StatePaths, pause_tag: str) -> dict[str, str]:
    ports = layout.PORTS
    return {
        "state": str(paths.root),
        "containerd_socket": str(paths.containerd_socket),
        "pause_image": pause_image(pause_tag),
        "stream_port": str(ports.containerd_stream),
        "runc": RUNC,
        "cni_bin_dir": CNI_BIN_DIR,
        "bridge": layout.BRIDGE,
        "pod_cidr": layout.POD_CIDR,
        "node_ip": layout.NODE_IP,
        "node_name": layout.NODE_NAME,
        "kubelet_port": str(ports.kubelet),
        "kubelet_healthz_port": str(ports.kubelet_healthz),
        "dns_service_ip": layout.DNS_SERVICE_IP,
        "cluster_domain": layout.CLUSTER_DOMAIN,
        "cluster_name": layout.CLUSTER_NAME,
        "proxy_healthz_port": str(ports.proxy_healthz),
        "proxy_metrics_port": str(ports.proxy_metrics),
        "dns_port": str(ports.dns),
        "dns_health_port": str(ports.dns_health),
        "dns_ready_port": str(ports.dns_ready),
        "ingress_class": layout.INGRESS_CLASS,
        "registry_port": str(ports.registry),
    }


def render(template: Path, values: dict[str, str]) -> str:
    return string.Template(template.read_text()).substitute(values)


# Template in deploy/node/ -> file name in the state's config folder.
CONFIG_FILES = {
    "containerd.toml": "containerd.toml",
    "cni.conflist": "cni/10-oms.conflist",
    "kubelet.yaml": "kubelet.yaml",
    "kube-proxy.yaml": "kube-proxy.yaml",
    "Corefile": "Corefile",
    "addons.yaml": "addons.yaml",
    "registry.yaml": "registry.yaml",
}


def write_configs(paths: layout.StatePaths, pause_tag: str) -> None:
    values = template_values(paths, pause_tag)
    for template, target in CONFIG_FILES.items():
        destination = paths.config / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(render(layout.TEMPLATES / template, values))
    # Empty on purpose: see kubelet.yaml's resolvConf.
    (paths.config / "resolv.conf").write_text("")


def argv(component: str, paths: layout.StatePaths, binaries: dict[str, Path]) -> list[str]:
    """The command line of one daemon."""
    ports = layout.PORTS
    pki = paths.pki
    config = paths.config
    etcd_url = f"http://127.0.0.1:{ports.etcd}"
    if component == "containerd":
        return [CONTAINERD, "--config", str(config / "containerd.toml")]
    if component == "etcd":
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        return [
            str(binaries["etcd"]),
            f"--name={layout.CLUSTER_NAME}",
            f"--data-dir={paths.root / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={layout.CLUSTER_NAME}={peer}",
            "--listen-metrics-urls=",
            "--unsafe-no-fsync",  # throw-away data: spare the shared disk
            "--log-level=warn",
        ]
    if component == "kube-apiserver":
        return [
            str(binaries["kube-apiserver"]),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={layout.NODE_IP}",
            f"--advertise-address={layout.NODE_IP}",
            f"--secure-port={ports.apiserver}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            # Reach the kubelet at the node's address: resolving the node's name would ask the
            # machine's DNS server, which is off this machine.
            "--kubelet-preferred-address-types=InternalIP",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--anonymous-auth=false",
            "--allow-privileged=false",
            f"--service-cluster-ip-range={layout.SERVICE_CIDR}",
            "--service-node-port-range=30000-32767",
            f"--service-account-issuer=https://kubernetes.default.svc.{layout.CLUSTER_DOMAIN}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--api-audiences=https://kubernetes.default.svc.{layout.CLUSTER_DOMAIN}",
            "--profiling=false",
            "--v=1",
        ]
    if component == "kube-controller-manager":
        return [
            *_secure_client(binaries, component, paths, ports.controller_manager),
            f"--cluster-name={layout.CLUSTER_NAME}",
            f"--service-cluster-ip-range={layout.SERVICE_CIDR}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=true",
            # Deleted objects' dependents go quickly in tests.
            "--concurrent-gc-syncs=10",
        ]
    if component == "kube-scheduler":
        return _secure_client(binaries, component, paths, ports.scheduler)
    if component == "kubelet":
        return [
            str(binaries["kubelet"]),
            f"--config={config / 'kubelet.yaml'}",
            f"--kubeconfig={paths.component_kubeconfig('kubelet')}",
            f"--root-dir={paths.root / 'kubelet' / 'root'}",
            f"--cert-dir={paths.root / 'kubelet' / 'pki'}",
            f"--node-ip={layout.NODE_IP}",
            f"--hostname-override={layout.NODE_NAME}",
            "--v=1",
        ]
    if component == "kube-proxy":
        return [str(binaries["kube-proxy"]), f"--config={config / 'kube-proxy.yaml'}", "--v=1"]
    if component == "coredns":
        return [str(binaries["coredns"]), "-conf", str(config / "Corefile")]
    if component == "traefik":
        return [str(binaries["traefik"]), *traefik_arguments()]
    if component == "registry":
        return [str(binaries["registry"]), "serve", str(config / "registry.yaml")]
    raise ValueError(component)


def _secure_client(
    binaries: dict[str, Path], component: str, paths: layout.StatePaths, port: int
) -> list[str]:
    """What the controller manager and the scheduler share: their own kubeconfig for the API and
    for checking their callers, and a loopback-only secure port (/healthz) without profiling."""
    kubeconfig = str(paths.component_kubeconfig(component))
    return [
        str(binaries[component]),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def traefik_arguments() -> list[str]:
    """Traefik's static configuration: the Kubernetes Ingress provider, one HTTP entry point on
    loopback, and its ping endpoint on an entry point of its own."""
    ports = layout.PORTS
    return [
        f"--entryPoints.web.address=127.0.0.1:{ports.ingress}",
        f"--entryPoints.admin.address=127.0.0.1:{ports.ingress_admin}",
        "--ping=true",
        "--ping.entryPoint=admin",
        "--providers.kubernetesingress=true",
        f"--providers.kubernetesingress.ingressclass={layout.INGRESS_CLASS}",
        # What `kubectl get ingress` shows as the address.
        "--providers.kubernetesingress.ingressendpoint.ip=127.0.0.1",
        "--log.level=INFO",
        "--log.format=json",
        "--accesslog=false",
        # Nothing may reach off this machine: no version check, no anonymous usage report.
        "--global.checknewversion=false",
        "--global.sendanonymoususage=false",
    ]


def environment(component: str, paths: layout.StatePaths) -> dict[str, str]:
    """Variables a daemon needs beyond its command line."""
    if component == "traefik":
        # Traefik's provider reads a kubeconfig only from $KUBECONFIG.
        return {"KUBECONFIG": str(paths.component_kubeconfig("traefik"))}
    if component == "containerd":
        # Images are imported, never pulled; a pull of an image that is not there must fail
        # here and not look up or reach a registry off this machine. Every registry connection
        # goes to a proxy on a loopback port where nothing listens (loopback itself is never
        # proxied, so a registry on 127.0.0.1 would still work).
        nowhere = f"http://127.0.0.1:{layout.PORTS.registry_sink}"
        return {"HTTP_PROXY": nowhere, "HTTPS_PROXY": nowhere, "NO_PROXY": ""}
    if component == "registry":
        # Its OpenTelemetry exporter would otherwise send every request's spans to an OTLP
        # collector on localhost:4318 that is not there.
        return {"OTEL_TRACES_EXPORTER": "none"}
    return {}
