"""Shared helpers of the delivery scripts: render the chart with the real helm, validate the output.

Used by check-chart.py, the generators `make manifests` runs besides helm-docs
(sync-chart-files.py, render-manifests.py) and check-tiltfile.py. The binary paths come from
HELM_BIN / KUBECTL_BIN (set by mk/deploy.mk) or default to .tools/bin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "oms"
CRD_DIR = CHART / "crds"
CI_VALUES = CHART / "ci"
K8S_DIR = REPO / "k8s"
OBSERVABILITY = REPO / "observability"
KUBERNETES_VERSION = os.environ.get("KUBERNETES_VALIDATE_VERSION", "1.35.0")
ORDERSYSTEM_API_VERSION = "oms.dev/v1alpha1"
ORDERSYSTEM_KIND = "OrderSystem"

Document = dict[str, Any]


def shown(path: Path) -> str:
    """A path relative to the repository when it is inside it (for messages)."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def helm_bin() -> str:
    return os.environ.get("HELM_BIN") or str(REPO / ".tools" / "bin" / "helm")


def kubectl_bin() -> str:
    return os.environ.get("KUBECTL_BIN") or str(REPO / ".tools" / "bin" / "kubectl")


@dataclass
class Generated:
    """The files one generator owns: what each must contain, and files of its own that must go
    (with the reason). `check` only reports (for tests and CI); `write` makes it so."""

    what: str
    wanted: dict[Path, bytes]
    orphans: dict[Path, str] = field(default_factory=dict)

    def problems(self) -> list[str]:
        found = [
            f"{shown(path)} is stale or missing"
            for path, content in self.wanted.items()
            if not path.is_file() or path.read_bytes() != content
        ]
        return found + [f"{shown(path)}: {reason}" for path, reason in self.orphans.items()]

    def check(self) -> int:
        problems = self.problems()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"{self.what} is stale: run `make manifests`", file=sys.stderr)
            return 1
        print(f"{self.what}: up to date ({len(self.wanted)} files)")
        return 0

    def write(self) -> int:
        for path in self.orphans:
            path.unlink()
        changed = 0
        for path, content in self.wanted.items():
            # Only changed files are written, so unchanged ones keep their timestamps.
            if not path.is_file() or path.read_bytes() != content:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
                changed += 1
        print(
            f"{self.what}: {len(self.wanted)} files, {changed} written, {len(self.orphans)} removed"
        )
        return 0

    def run(self, *, check: bool) -> int:
        return self.check() if check else self.write()


class ToolError(RuntimeError):
    """A tool exited non-zero; the message carries its output."""


def run_tool(argv: Sequence[str]) -> str:
    result = subprocess.run(  # noqa: S603 (argv built from fixed tool paths and repo files)
        list(argv), capture_output=True, text=True, check=False, cwd=REPO
    )
    if result.returncode != 0:
        raise ToolError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def scenarios() -> list[Path | None]:
    """The default values (None) and every ci/*-values.yaml scenario."""
    return [None, *sorted(CI_VALUES.glob("*-values.yaml"))]


def scenario_name(values_file: Path | None) -> str:
    return "default" if values_file is None else values_file.name


def helm_lint(values_files: Iterable[Path] = ()) -> str:
    argv = [helm_bin(), "lint", "--strict", str(CHART)]
    for path in values_files:
        argv += ["--values", str(path)]
    return run_tool(argv)


def helm_template(
    values_files: Iterable[Path] = (),
    sets: Iterable[str] = (),
    *,
    release: str = "oms",
    namespace: str = "oms",
    include_crds: bool = False,
    show_only: str | None = None,
) -> str:
    argv = [helm_bin(), "template", release, str(CHART), "--namespace", namespace]
    for path in values_files:
        argv += ["--values", str(path)]
    for assignment in sets:
        argv += ["--set", assignment]
    if include_crds:
        argv.append("--include-crds")
    if show_only:
        argv += ["--show-only", show_only]
    return run_tool(argv)


def load_documents(text: str) -> list[Document]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def identify(doc: Document) -> str:
    metadata = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{metadata.get('name')}"


def crd_documents() -> list[Document]:
    docs: list[Document] = []
    for path in sorted(CRD_DIR.glob("*.yaml")):
        docs.extend(load_documents(path.read_text()))
    return docs


def ordersystem_schema(crds: Iterable[Document] | None = None) -> dict[str, Any] | None:
    """The openAPIV3Schema of OrderSystem v1alpha1 from the chart's CRD, or None if absent."""
    group, version = ORDERSYSTEM_API_VERSION.split("/")
    for crd in crd_documents() if crds is None else crds:
        spec = crd.get("spec") or {}
        if spec.get("group") != group or (spec.get("names") or {}).get("kind") != ORDERSYSTEM_KIND:
            continue
        for served in spec.get("versions") or []:
            if served.get("name") == version:
                schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
                return schema
    return None


def _structural(schema: Any) -> Any:
    """OpenAPI v3 structural schema -> JSON Schema: drop the x-kubernetes-* extensions and turn
    `nullable: true` into a null-admitting type, which is how the API server reads them."""
    if isinstance(schema, list):
        return [_structural(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {
        key: _structural(value)
        for key, value in schema.items()
        if not key.startswith("x-kubernetes-") and key != "nullable"
    }
    if schema.get("nullable") and isinstance(converted.get("type"), str):
        converted["type"] = [converted["type"], "null"]
    if schema.get("x-kubernetes-int-or-string"):
        converted.pop("type", None)
        converted["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
        converted.pop("additionalProperties", None)
    elif converted.get("type") == "object" and "properties" in converted:
        # Structural schemas prune unknown fields; strict validation flags them instead.
        converted.setdefault("additionalProperties", False)
    return converted


def validate_ordersystem(doc: Document, schema: dict[str, Any]) -> list[str]:
    """Errors of an OrderSystem against the CRD schema (unknown fields are errors too)."""
    body = {key: value for key, value in doc.items() if key not in ("apiVersion", "kind")}
    body.pop("metadata", None)
    validator = jsonschema.Draft7Validator(_structural(schema))
    return [
        f"{identify(doc)}: {'.'.join(str(part) for part in error.absolute_path) or '<root>'}: "
        f"{error.message}"
        for error in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    ]


@dataclass
class ValidationReport:
    checked: int = 0
    custom_resources: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def validate_documents(
    docs: Iterable[Document], ordersystem: dict[str, Any] | None
) -> ValidationReport:
    """kubernetes-validate --strict for built-in kinds; the CRD schema for OrderSystems; other
    custom resources (Prometheus Operator kinds) must at least carry apiVersion/kind/metadata."""
    report = ValidationReport()
    errors = report.errors
    for doc in docs:
        report.checked += 1
        if doc.get("apiVersion") == ORDERSYSTEM_API_VERSION and doc.get("kind") == ORDERSYSTEM_KIND:
            report.custom_resources += 1
            if ordersystem is None:
                # The CRD is written with the operator; until it lands there is nothing to check.
                report.warnings.append(f"{identify(doc)}: no OrderSystem CRD in {CRD_DIR} yet")
            else:
                errors.extend(validate_ordersystem(doc, ordersystem))
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            report.custom_resources += 1
            if not (doc.get("metadata") or {}).get("name"):
                errors.append(f"{identify(doc)}: custom resource without a name")
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"{identify(doc)}: {path}: {error.message}")
    return report
