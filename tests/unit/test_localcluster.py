"""The local cluster's pure parts (scripts/localcluster), without starting anything: every
configuration renders completely and parses, carries the settings this machine cannot do without,
keeps the cluster on the machine; the certificates chain to the CA with the right names; the pause
image archive is reproducible."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from localcluster import configs, layout, ociimage, pki  # noqa: E402


@pytest.fixture
def rendered(tmp_path: Path) -> dict[str, str]:
    paths = layout.StatePaths(tmp_path / "state")
    values = configs.template_values(paths, "1.35.4")
    return {name: configs.render(layout.TEMPLATES / name, values) for name in configs.CONFIG_FILES}


def test_every_template_is_filled_and_parses(rendered: dict[str, str]) -> None:
    for name, text in rendered.items():
        assert "${" not in text, name
    containerd = tomllib.loads(rendered["containerd.toml"])
    kubelet = yaml.safe_load(rendered["kubelet.yaml"])
    proxy = yaml.safe_load(rendered["kube-proxy.yaml"])
    cni = json.loads(rendered["cni.conflist"])
    addons = list(yaml.safe_load_all(rendered["addons.yaml"]))
    assert containerd["version"] == 2
    assert kubelet["kind"] == "KubeletConfiguration"
    assert proxy["mode"] == "iptables"
    assert [plugin["type"] for plugin in cni["plugins"]] == ["bridge", "portmap", "firewall"]
    assert {doc["kind"] for doc in addons} >= {"ClusterRole", "Service", "IngressClass"}


def test_this_machines_must_knows_are_set(rendered: dict[str, str]) -> None:
    cri = tomllib.loads(rendered["containerd.toml"])["plugins"]["io.containerd.grpc.v1.cri"]
    # No CAP_SYS_RESOURCE here: without it every pod sandbox fails.
    assert cri["restrict_oom_score_adj"] is True
    kubelet = yaml.safe_load(rendered["kubelet.yaml"])
    # cgroup v1 here, which the 1.35 kubelet refuses unless told.
    assert kubelet["failCgroupV1"] is False
    assert kubelet["cgroupDriver"] == "cgroupfs"
    runc = cri["containerd"]["runtimes"]["runc"]["options"]
    assert runc["SystemdCgroup"] is False
    # An imported image the kubelet also pulled from the node's registry under another name
    # would otherwise be re-pulled from afar (and fail) to check credentials nobody has.
    assert kubelet["imagePullCredentialsVerificationPolicy"] == "NeverVerify"


def test_the_cluster_stays_on_this_machine(rendered: dict[str, str], tmp_path: Path) -> None:
    paths = layout.StatePaths(tmp_path)
    binaries = {name: Path(f"/bin/{name}") for name in ("kube-apiserver", "etcd")}
    apiserver = configs.argv("kube-apiserver", paths, binaries)
    # Resolving the node's name would ask the machine's DNS server.
    assert "--kubelet-preferred-address-types=InternalIP" in apiserver
    assert f"--bind-address={layout.NODE_IP}" in apiserver
    # The cluster's DNS answers cluster names only: no forward to an upstream resolver.
    corefile = rendered["Corefile"]
    directives = [
        line.split()[0]
        for line in corefile.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "forward" not in directives
    assert f"bind {layout.NODE_IP}" in corefile
    # Pods get no upstream nameserver either.
    kubelet = yaml.safe_load(rendered["kubelet.yaml"])
    assert kubelet["resolvConf"].endswith("/config/resolv.conf")
    # Every registry connection of containerd goes to a loopback port.
    proxy = configs.environment("containerd", paths)
    assert proxy["HTTPS_PROXY"].startswith("http://127.0.0.1:")
    assert proxy["HTTP_PROXY"] == proxy["HTTPS_PROXY"]
    # Traefik and etcd listen on loopback only; no phoning home.
    traefik = configs.traefik_arguments()
    assert all("127.0.0.1:" in a for a in traefik if a.startswith("--entryPoints."))
    assert "--global.checknewversion=false" in traefik
    assert "--global.sendanonymoususage=false" in traefik
    etcd = configs.argv("etcd", paths, binaries)
    listeners = [a.split("=", 1)[1] for a in etcd if a.startswith("--listen-")]
    assert all(url.startswith("http://127.0.0.1:") for url in listeners if url), listeners


def test_every_component_has_a_command_line(tmp_path: Path) -> None:
    binaries = {name: Path(f"/bin/{name}") for name in configs.COMPONENTS}
    for component in configs.COMPONENTS:
        argv = configs.argv(component, layout.StatePaths(tmp_path), binaries)
        assert Path(argv[0]).name == component or argv[0] == configs.CONTAINERD


def test_certificates_chain_to_the_ca_with_the_right_names(tmp_path: Path) -> None:
    pki.write_pki(tmp_path)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    for identity in pki.IDENTITIES:
        certificate = x509.load_pem_x509_certificate(
            (tmp_path / f"{identity.stem}.crt").read_bytes()
        )
        certificate.verify_directly_issued_by(ca)
        subject = certificate.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        assert subject[0].value == identity.common_name
    server = x509.load_pem_x509_certificate((tmp_path / "apiserver.crt").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert {layout.NODE_IP, layout.KUBERNETES_SERVICE_IP} <= ips
    assert "kubernetes.default.svc.cluster.local" in names.get_values_for_type(x509.DNSName)
    node = x509.load_pem_x509_certificate((tmp_path / "kubelet.crt").read_bytes())
    organization = node.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATION_NAME)
    assert organization[0].value == "system:nodes"  # what the Node authorizer requires


def test_the_pause_image_archive_is_reproducible(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    first = ociimage.single_binary_image("localhost/oms/pause:1", binary, "/pause")
    assert first == ociimage.single_binary_image("localhost/oms/pause:1", binary, "/pause")
    with tarfile.open(fileobj=io.BytesIO(first)) as archive:
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        (entry,) = manifest
        assert entry["RepoTags"] == ["localhost/oms/pause:1"]
        config = json.loads(archive.extractfile(entry["Config"]).read())  # type: ignore[union-attr]
        layer = archive.extractfile(entry["Layers"][0])
        assert layer is not None
        with tarfile.open(fileobj=io.BytesIO(layer.read())) as files:
            assert files.getnames() == ["pause"]
    assert config["config"]["Entrypoint"] == ["/pause"]


def test_the_registry_listens_on_loopback_where_the_configmap_says(
    rendered: dict[str, str], tmp_path: Path
) -> None:
    registry = yaml.safe_load(rendered["registry.yaml"])
    assert registry["http"]["addr"] == f"127.0.0.1:{layout.PORTS.registry}"
    assert registry["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "state/registry")
    (hosting,) = [
        doc
        for doc in yaml.safe_load_all(rendered["addons.yaml"])
        if doc["metadata"]["name"] == "local-registry-hosting"
    ]
    # KEP-1755: where Tilt looks, what it pushes to (and the node's containerd pulls from).
    assert hosting["metadata"]["namespace"] == "kube-public"
    advertised = yaml.safe_load(hosting["data"]["localRegistryHosting.v1"])
    assert advertised["host"] == f"localhost:{layout.PORTS.registry}"
    # No spans sent to a collector that is not there.
    assert (
        configs.environment("registry", layout.StatePaths(tmp_path))["OTEL_TRACES_EXPORTER"]
        == "none"
    )
