"""The node's certificate authority, a client or serving certificate per component, and a
kubeconfig per client. A fresh set is made for every `up`, valid for a year.

Each component authenticates as the identity Kubernetes' default RBAC expects of it
(system:kube-scheduler, system:node:<node> in system:nodes, ...); CoreDNS and Traefik get users of
their own whose ClusterRoles are in deploy/node/addons.yaml.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from localcluster import layout

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Identity:
    """A certificate to issue: file stem, subject, and what it is for."""

    stem: str
    common_name: str
    organization: str | None = None
    server: bool = False
    client: bool = True
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


API_SERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    f"kubernetes.default.svc.{layout.CLUSTER_DOMAIN}",
)

IDENTITIES = (
    Identity(
        "apiserver",
        "kube-apiserver",
        server=True,
        client=False,
        dns_names=API_SERVER_NAMES,
        ip_addresses=("127.0.0.1", layout.KUBERNETES_SERVICE_IP, layout.NODE_IP),
    ),
    # kube-apiserver -> kubelet (logs, exec, port-forward).
    Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
    Identity("admin", "oms-admin", "system:masters"),
    Identity("kubelet", f"system:node:{layout.NODE_NAME}", "system:nodes"),
    Identity(
        "kubelet-serving",
        f"system:node:{layout.NODE_NAME}",
        "system:nodes",
        server=True,
        client=False,
        dns_names=(layout.NODE_NAME, "localhost"),
        ip_addresses=(layout.NODE_IP, "127.0.0.1"),
    ),
    Identity("kube-controller-manager", "system:kube-controller-manager"),
    Identity("kube-scheduler", "system:kube-scheduler"),
    Identity("kube-proxy", "system:kube-proxy"),
    Identity("coredns", "oms:coredns"),
    Identity("traefik", "oms:traefik"),
)

# The identities that talk to the API server, each with a kubeconfig of its own.
KUBECONFIG_USERS = (
    "admin",
    "kubelet",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "coredns",
    "traefik",
)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _certificate(
    subject: x509.Name,
    public_key: Any,
    issuer: tuple[x509.Name, PrivateKey],
    *,
    ca: bool = False,
    identity: Identity | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signing_key = issuer
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    elif identity is not None:
        usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
        purposes = [ExtendedKeyUsageOID.SERVER_AUTH] if identity.server else []
        purposes += [ExtendedKeyUsageOID.CLIENT_AUTH] if identity.client else []
        builder = builder.add_extension(usage, critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in identity.dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in identity.ip_addresses]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write_key(path: Path, key: PrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_certificate(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def write_pki(pki: Path) -> None:
    """CA, every identity's key and certificate, and the service-account signing key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{layout.CLUSTER_NAME}-ca")
    _write_certificate(
        pki / "ca.crt", _certificate(ca_name, ca_key.public_key(), (ca_name, ca_key), ca=True)
    )
    _write_key(pki / "ca.key", ca_key)
    for identity in IDENTITIES:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(identity.common_name, identity.organization)
        certificate = _certificate(subject, key.public_key(), (ca_name, ca_key), identity=identity)
        _write_certificate(pki / f"{identity.stem}.crt", certificate)
        _write_key(pki / f"{identity.stem}.key", key)
    service_accounts = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki / "sa.key", service_accounts)
    (pki / "sa.pub").write_bytes(
        service_accounts.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def server_url() -> str:
    return f"https://{layout.NODE_IP}:{layout.PORTS.apiserver}"


def kubeconfig(user: str, pki: Path) -> dict[str, Any]:
    def encoded(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    cluster = layout.CLUSTER_NAME
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {
                    "server": server_url(),
                    "certificate-authority-data": encoded("ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": encoded(f"{user}.crt"),
                    "client-key-data": encoded(f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    }


def write_kubeconfigs(paths: layout.StatePaths) -> None:
    paths.config.mkdir(parents=True, exist_ok=True)
    for user in KUBECONFIG_USERS:
        target = paths.kubeconfig if user == "admin" else paths.component_kubeconfig(user)
        target.write_text(json.dumps(kubeconfig(user, paths.pki), indent=2) + "\n")
        target.chmod(0o600)
