"""`helm lint --strict` and `helm template` of charts/oms for the default values and every
ci/*-values.yaml scenario; every rendered document validated (kubernetes-validate --strict for
built-in kinds, the CRD's schema for OrderSystem), plus the dev backing services, the operator's
OrderSystem examples and k8s/."""

from __future__ import annotations

import sys

import deploylib


def main() -> int:
    ordersystem = deploylib.ordersystem_schema()
    failures: list[str] = []
    for values_file in deploylib.scenarios():
        name = deploylib.scenario_name(values_file)
        files = [] if values_file is None else [values_file]
        try:
            deploylib.helm_lint(files)
            rendered = deploylib.helm_template(files, include_crds=True)
        except deploylib.ToolError as error:
            failures.append(f"{name}: {error}")
            continue
        report = deploylib.validate_documents(deploylib.load_documents(rendered), ordersystem)
        failures.extend(f"{name}: {error}" for error in report.errors)
        for warning in report.warnings:
            print(f"  warning {name}: {warning}")
        print(
            f"  {name}: lint ok, {report.checked} documents "
            f"({report.custom_resources} custom resources), {len(report.errors)} errors"
        )
    for path in [
        deploylib.REPO / "deploy" / "dev" / "backing-services.yaml",
        *sorted((deploylib.REPO / "operator" / "examples").glob("*.yaml")),
        *sorted(deploylib.K8S_DIR.rglob("*.yaml")),
    ]:
        if path.name == "kustomization.yaml":
            continue
        report = deploylib.validate_documents(
            deploylib.load_documents(path.read_text()), ordersystem
        )
        failures.extend(f"{path.relative_to(deploylib.REPO)}: {error}" for error in report.errors)
    if ordersystem is None:
        print(f"  note: no OrderSystem CRD in {deploylib.CRD_DIR}; OrderSystems not validated")
    for failure in failures:
        print(failure, file=sys.stderr)
    print("chart check:", "FAILED" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
