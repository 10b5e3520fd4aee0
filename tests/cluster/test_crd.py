"""The OrderSystem CRD on a real API server: structural schema, defaulting, CEL rules, columns."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from tests.cluster.support import REPO, Kube

DOCS = REPO / "docs" / "operator.md"
EXAMPLES = sorted((REPO / "operator" / "examples").glob("*.yaml"))

MINIMAL: dict[str, Any] = {
    "apiVersion": "oms.dev/v1alpha1",
    "kind": "OrderSystem",
    "metadata": {"name": "minimal"},
    "spec": {
        "workers": {"deploymentName": "oms-worker"},
        "rabbitmq": {"urlSecretRef": {"name": "oms-rabbitmq"}},
    },
}


def documented_examples() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in EXAMPLES:
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document:
                found.append((f"{path.name}#{index}", document))
    for index, block in enumerate(re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.DOTALL)):
        document = yaml.safe_load(block)
        if isinstance(document, dict) and document.get("kind") == "OrderSystem":
            found.append((f"operator.md#{index}", document))
    return found


def dry_run(kube: Kube, namespace: str, document: dict[str, Any]) -> tuple[bool, str, Any]:
    """Create the object with `--dry-run=server`: everything but storing it."""
    body = copy.deepcopy(document)
    body.setdefault("metadata", {})["namespace"] = namespace
    result = kube.run(
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        stdin=yaml.safe_dump(body),
        check=False,
    )
    created = yaml.safe_load(result.stdout) if result.ok else None
    return result.ok, result.stderr, created


def with_spec(**changes: Any) -> dict[str, Any]:
    """MINIMAL with `section__field=value` changes (value None removes the field)."""
    document = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = document["spec"]
        for part in parents:
            target = target.setdefault(part, {})
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return document


def test_the_crd_is_established_with_its_names(crd: dict[str, Any], kube: Kube) -> None:
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    # A structural schema: the server reports no NonStructuralSchema condition.
    assert "NonStructuralSchema" not in conditions
    resources = kube.run("api-resources", "--api-group=oms.dev", "-o", "wide").stdout
    assert "omsys" in resources
    assert "ordersystems" in resources


@pytest.mark.parametrize(("name", "document"), documented_examples())
def test_every_documented_example_is_accepted(
    crd: dict[str, Any], kube: Kube, namespace: str, name: str, document: dict[str, Any]
) -> None:
    ok, stderr, created = dry_run(kube, namespace, document)
    assert ok, f"{name}: {stderr}"
    # Nothing the example sets was pruned as unknown or changed.
    assert unset(document["spec"], created["spec"]) == [], name


def unset(given: Any, stored: Any, path: str = "spec") -> list[str]:
    """Paths of `given` that `stored` does not hold with the same value (defaults may add)."""
    if isinstance(given, dict) and isinstance(stored, dict):
        found: list[str] = []
        for key, value in given.items():
            found += unset(value, stored[key], f"{path}.{key}") if key in stored else [key]
        return found
    return [] if given == stored else [path]


def test_there_are_examples_to_check() -> None:
    names = [name for name, _ in documented_examples()]
    assert any(name.startswith("operator.md") for name in names)
    assert len(names) >= 3


INVALID = [
    (
        with_spec(jwt__tokenLifetime="1h", jwt__retiredKeyRetention="30m"),
        "retiredKeyRetention must be at least tokenLifetime + clockSkew",
    ),
    (
        # CEL adds the skew: 1h retention is not enough for a 1h token with 30s leeway.
        with_spec(jwt__tokenLifetime="1h", jwt__clockSkew="30s", jwt__retiredKeyRetention="1h"),
        "retiredKeyRetention must be at least tokenLifetime + clockSkew",
    ),
    (
        with_spec(jwt__rotationInterval="1h", jwt__propagationDelay="2h"),
        "propagationDelay must be shorter than rotationInterval",
    ),
    (
        with_spec(workers__minReplicas=5, workers__maxReplicas=2),
        "maxReplicas must be greater than or equal to minReplicas",
    ),
    (
        with_spec(jwt__keySize=1024),
        'spec.jwt.keySize: Unsupported value: 1024: supported values: "2048", "3072", "4096"',
    ),
    (with_spec(jwt__rotationInterval="30 days"), "spec.jwt.rotationInterval in body should match"),
    (with_spec(jwt__secretName="Bad_Name"), "spec.jwt.secretName in body should match"),
    (with_spec(workers__deploymentName=None), "spec.workers.deploymentName: Required value"),
    (with_spec(rabbitmq=None), "spec.rabbitmq: Required value"),
    (with_spec(rabbitmq__urlSecretRef={}), "spec.rabbitmq.urlSecretRef.name: Required value"),
    (
        with_spec(workers__queues=[]),
        "spec.workers.queues in body should have at least 1 items",
    ),
    (
        with_spec(workers__minReplicas=-1),
        "spec.workers.minReplicas in body should be greater than or equal to 0",
    ),
    (
        with_spec(workers__maxReplicas=1001),
        "spec.workers.maxReplicas in body should be less than or equal to 1000",
    ),
    (
        with_spec(workers__messagesPerReplica=0),
        "spec.workers.messagesPerReplica in body should be greater than or equal to 1",
    ),
    (
        with_spec(workers__fallbackAfterFailures=0),
        "spec.workers.fallbackAfterFailures in body should be greater than or equal to 1",
    ),
    (
        with_spec(workers__paused="yes"),
        "spec.workers.paused in body must be of type boolean",
    ),
    (with_spec(workers__replicas=3), 'unknown field "spec.workers.replicas"'),
]


@pytest.mark.parametrize(("document", "message"), INVALID, ids=[m[:40] for _, m in INVALID])
def test_invalid_ordersystems_are_rejected_by_the_server(
    crd: dict[str, Any], kube: Kube, namespace: str, document: dict[str, Any], message: str
) -> None:
    ok, stderr, _ = dry_run(kube, namespace, document)
    assert not ok, f"accepted: {document['spec']}"
    assert message in stderr, stderr


def test_the_minimal_object_is_valid(crd: dict[str, Any], kube: Kube, namespace: str) -> None:
    # The control for the table above: the rejections come from the changed fields.
    ok, stderr, _ = dry_run(kube, namespace, MINIMAL)
    assert ok, stderr


def documented_defaults() -> dict[str, dict[str, Any]]:
    """`| \\`field\\` | \\`default\\` | ...` rows of the spec.jwt and spec.workers tables."""
    text = DOCS.read_text()
    defaults: dict[str, dict[str, Any]] = {}
    for section in ("jwt", "workers"):
        body = text.split(f"### `spec.{section}`")[1].split("\n### ")[0]
        rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", body, re.MULTILINE)
        defaults[section] = {}
        for field, cell in rows:
            cell = cell.strip()
            if not cell.startswith("`"):
                continue  # "required", "unset": no default
            defaults[section][field] = yaml.safe_load(cell.strip("`"))
    return defaults


def test_server_defaults_are_the_documented_ones(
    crd: dict[str, Any], kube: Kube, namespace: str
) -> None:
    documented = documented_defaults()
    assert len(documented["jwt"]) == 7
    assert len(documented["workers"]) >= 9
    ok, stderr, created = dry_run(kube, namespace, MINIMAL)
    assert ok, stderr
    for section, fields in documented.items():
        for field, value in fields.items():
            assert created["spec"][section].get(field) == value, (section, field)
    # And the unset ones stay unset.
    assert "fallbackReplicas" not in created["spec"]["workers"]
    assert created["spec"]["rabbitmq"]["urlSecretRef"]["key"] == "RABBITMQ_URL"


def test_printer_columns(crd: dict[str, Any], kube: Kube, namespace: str) -> None:
    body = copy.deepcopy(MINIMAL)
    body["metadata"]["namespace"] = namespace
    kube.apply(body)
    status = {
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KeysProvisioned",
                    "message": "ok",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "queueDepth": 35,
            "currentReplicas": 4,
            "desiredReplicas": 5,
            "keyId": "kid-123",
        }
    }
    kube.run(
        "-n", namespace, "patch", "ordersystem", "minimal", "--subresource=status",
        "--type=merge", "-p", yaml.safe_dump(status),
    )  # fmt: skip
    table = kube.run("-n", namespace, "get", "omsys").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "QUEUE", "DEPTH", "WORKERS", "KEY", "ID", "AGE"]
    assert table[1].split()[:5] == ["minimal", "True", "35", "4", "kid-123"]
    wide = kube.run("-n", namespace, "get", "ordersystems", "-o", "wide").stdout.splitlines()
    assert "DESIRED" in wide[0].split()
    assert wide[1].split()[:6] == ["minimal", "True", "35", "4", "5", "kid-123"]
    # The status subresource takes only status: a spec change sent there is ignored.
    kube.run(
        "-n", namespace, "patch", "ordersystem", "minimal", "--subresource=status",
        "--type=merge", "-p", '{"spec": {"workers": {"maxReplicas": 99}}}',
    )  # fmt: skip
    stored = kube.json("-n", namespace, "get", "ordersystem", "minimal")
    assert stored["spec"]["workers"]["maxReplicas"] == 10
    assert stored["metadata"]["generation"] == 1
