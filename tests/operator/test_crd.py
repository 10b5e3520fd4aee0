"""The CRD: examples validate against its openAPIV3Schema, broken ones do not, and the operator's
own spec model agrees with it on every default."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import BaseModel

from oms.broker.celery_app import TASK_QUEUE
from oms_operator.durations import DURATION_PATTERN, parse_duration
from oms_operator.spec import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    InvalidSpecError,
    OrderSystemSpec,
    parse_spec,
)
from tests.operator.crd import errors, example_documents, load_crd, openapi_schema

EXAMPLES = example_documents()


def test_the_crd_names_and_serves_the_resource() -> None:
    crd = load_crd()
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert crd["spec"]["group"] == GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == KIND
    assert crd["spec"]["names"]["shortNames"] == ["omsys"]
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}
    columns = {column["name"]: column["jsonPath"] for column in version["additionalPrinterColumns"]}
    assert set(columns) >= {"Ready", "Queue depth", "Workers", "Key id", "Age"}
    status_fields = set(openapi_schema()["properties"]["status"]["properties"])
    for path in columns.values():
        if path.startswith(".status."):
            assert path.removeprefix(".status.").split("[")[0] in status_fields


@pytest.mark.parametrize(("label", "document"), EXAMPLES, ids=[label for label, _ in EXAMPLES])
def test_examples_validate_against_the_schema_and_the_operator(
    label: str, document: dict[str, Any]
) -> None:
    assert errors(document) == [], label
    parse_spec(document["spec"])  # the operator accepts them too


BREAKAGES = {
    "key size not offered": (("spec", "jwt", "keySize"), 1024, "jwt.keySize"),
    "negative minimum": (("spec", "workers", "minReplicas"), -1, "workers.minReplicas"),
    "prose duration": (("spec", "jwt", "rotationInterval"), "30 days", "jwt.rotationInterval"),
    "no queues": (("spec", "workers", "queues"), [], "workers.queues"),
    "zero per replica": (
        ("spec", "workers", "messagesPerReplica"),
        0,
        "workers.messagesPerReplica",
    ),
    "replicas as text": (("spec", "workers", "maxReplicas"), "ten", "workers.maxReplicas"),
    "no deployment": (("spec", "workers", "deploymentName"), None, "workers"),
    "no url secret": (("spec", "rabbitmq", "urlSecretRef"), None, "rabbitmq"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_check_fails_on_a_broken_example(breakage: str) -> None:
    path, value, where = BREAKAGES[breakage]
    (full,) = [document for label, document in EXAMPLES if label == "ordersystem.yaml#0"]
    document = copy.deepcopy(full)
    parent = document
    for part in path[:-1]:
        parent = parent[part]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    found = errors(document)
    assert found, breakage
    assert any(where in error for error in found), found
    with pytest.raises(InvalidSpecError):
        parse_spec(document["spec"])  # the operator refuses it as well (kmock validates nothing)


def test_status_written_by_the_operator_matches_the_schema() -> None:
    status_schema = openapi_schema()["properties"]["status"]
    status: dict[str, Any] = {
        "observedGeneration": 3,
        "keySecret": "oms-jwt-keys",
        "keyId": "abc",
        "lastRotation": "2026-01-01T00:00:00Z",
        "nextRotation": "2026-01-31T00:02:00Z",
        "publishedKeyIds": ["abc", "def"],
        "queueDepth": 7,
        "queues": [{"name": "order_tasks", "ready": 7, "unacked": None}],
        "desiredReplicas": 1,
        "currentReplicas": 1,
        "lastScaleTime": None,
        "paused": False,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Reconciled",
                "message": "ok",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    assert errors(status, status_schema) == []
    status["conditions"][0]["status"] = "yes"
    assert errors(status, status_schema)


def _crd_defaults(schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, field in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        if "default" in field and field.get("type") != "object":
            found[path] = field["default"]
        if field.get("type") == "object":
            found.update(_crd_defaults(field, f"{path}."))
    return found


def _model_value(model: BaseModel, dotted: str) -> Any:
    value: Any = model
    for alias in dotted.split("."):
        fields = type(value).model_fields
        (name,) = [key for key, info in fields.items() if (info.alias or key) == alias]
        value = getattr(value, name)
    return list(value) if isinstance(value, tuple) else value


def test_operator_defaults_equal_the_crd_defaults() -> None:
    spec_schema = openapi_schema()["properties"]["spec"]
    defaults = _crd_defaults(spec_schema)
    assert len(defaults) >= 15
    minimal = OrderSystemSpec.model_validate(
        {
            "workers": {"deploymentName": "w"},
            "rabbitmq": {
                "urlSecretRef": {"name": "r"},
                "managementUrlSecretRef": {"name": "m"},
            },
        }
    )
    for path, default in defaults.items():
        assert _model_value(minimal, path) == default, path
    assert defaults["workers.queues"] == [TASK_QUEUE]  # the queue the Celery worker consumes


def test_the_jwt_default_object_spells_out_the_field_defaults() -> None:
    # The API server evaluates the CEL rules on the object default without defaulting inside it
    # (tests/cluster/test_crd.py found `default: {}` rejected), so it lists every field.
    jwt = openapi_schema()["properties"]["spec"]["properties"]["jwt"]
    fields = {name: schema["default"] for name, schema in jwt["properties"].items()}
    assert jwt["default"] == fields


def test_cross_field_rules_live_in_both_places() -> None:
    spec_schema = openapi_schema()["properties"]["spec"]["properties"]
    jwt_rules = " ".join(rule["rule"] for rule in spec_schema["jwt"]["x-kubernetes-validations"])
    assert "retiredKeyRetention" in jwt_rules
    assert "tokenLifetime" in jwt_rules
    worker_rules = spec_schema["workers"]["x-kubernetes-validations"][0]["rule"]
    assert worker_rules == "self.maxReplicas >= self.minReplicas"
    base = {"workers": {"deploymentName": "w"}, "rabbitmq": {"urlSecretRef": {"name": "r"}}}
    with pytest.raises(InvalidSpecError, match="retiredKeyRetention"):
        parse_spec({**base, "jwt": {"tokenLifetime": "2h", "retiredKeyRetention": "2h"}})
    with pytest.raises(InvalidSpecError, match="maxReplicas"):
        parse_spec({**base, "workers": {"deploymentName": "w", "minReplicas": 5, "maxReplicas": 2}})
    with pytest.raises(InvalidSpecError, match="propagationDelay"):
        parse_spec({**base, "jwt": {"rotationInterval": "1m", "propagationDelay": "1m"}})


def format_duration(seconds: float) -> str:
    """The shortest Go-style form, e.g. 5400 -> "1h30m", 0.5 -> "500ms"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts) or "0s"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("1h30m", 5400),
        ("720h", 2_592_000),
        ("500ms", 0.5),
        ("1.5h", 5400),
    ],
)
def test_durations_parse_like_go(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "30", "1d", "1 h", "-5s", "h"])
def test_durations_reject_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_duration_pattern_is_the_crds() -> None:
    jwt = openapi_schema()["properties"]["spec"]["properties"]["jwt"]["properties"]
    assert jwt["rotationInterval"]["pattern"] == DURATION_PATTERN
