"""The OrderSystem CRD and its schema as a JSON Schema (kmock validates nothing, so we do)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "charts" / "oms" / "crds" / "ordersystems.oms.dev.yaml"
EXAMPLES = sorted((ROOT / "operator" / "examples").glob("*.yaml"))


def load_crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return document


def openapi_schema() -> dict[str, Any]:
    version = load_crd()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def to_json_schema(schema: Any) -> Any:
    """OpenAPI v3 (Kubernetes flavour) to JSON Schema: `nullable` becomes a null type; the
    x-kubernetes-* extensions (CEL rules, list types) are left for the API server and ignored."""
    if isinstance(schema, list):
        return [to_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: to_json_schema(value) for key, value in schema.items()}
    if converted.pop("nullable", False) and "type" in converted:
        converted["type"] = [converted["type"], "null"]
    return converted


def validator(schema: dict[str, Any] | None = None) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        to_json_schema(copy.deepcopy(schema if schema is not None else openapi_schema())),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def errors(document: dict[str, Any], schema: dict[str, Any] | None = None) -> list[str]:
    return [
        f"{'.'.join(str(part) for part in error.absolute_path)}: {error.message}"
        for error in validator(schema).iter_errors(document)
    ]


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}#{index}", document)
        for path in EXAMPLES
        for index, document in enumerate(yaml.safe_load_all(path.read_text()))
        if document
    ]
