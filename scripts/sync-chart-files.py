"""Copy the dashboards and alert rules of observability/ into charts/oms/files/ (the chart can
only read files inside itself). `--check` changes nothing and fails when the copy is stale.

observability/dashboards/*.json       -> charts/oms/files/dashboards/   (Grafana ConfigMaps)
observability/prometheus/*.rules.yaml -> charts/oms/files/prometheus/   (PrometheusRules)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import deploylib
import yaml

MAPPINGS: list[tuple[str, str]] = [
    ("dashboards", "*.json"),
    ("prometheus", "*.rules.yaml"),
]
KEEP = ".gitkeep"


def _check_parses(path: Path) -> None:
    """A file the chart cannot parse would only fail at install time; fail here instead."""
    text = path.read_text()
    if path.suffix == ".json":
        json.loads(text)
        return
    document = yaml.safe_load(text)
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise ValueError(f"{path}: a Prometheus rules file needs a top-level `groups` list")


def plan(source_root: Path, chart_files: Path) -> tuple[dict[Path, bytes], list[Path]]:
    """Files to write (target -> content) and stale files to delete."""
    wanted: dict[Path, bytes] = {}
    stale: list[Path] = []
    for folder, pattern in MAPPINGS:
        sources = sorted((source_root / folder).glob(pattern))
        target_dir = chart_files / folder
        for source in sources:
            _check_parses(source)
            wanted[target_dir / source.name] = source.read_bytes()
        names = {source.name for source in sources}
        if target_dir.is_dir():
            stale.extend(
                path
                for path in sorted(target_dir.iterdir())
                if path.is_file() and path.name != KEEP and path.name not in names
            )
    return wanted, stale


def differences(wanted: dict[Path, bytes], stale: list[Path]) -> list[str]:
    problems = [
        f"stale or missing: {deploylib.shown(target)}"
        for target, content in wanted.items()
        if not target.is_file() or target.read_bytes() != content
    ]
    problems += [f"no longer in observability/: {deploylib.shown(path)}" for path in stale]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the chart copy is stale")
    parser.add_argument("--source", type=Path, default=deploylib.OBSERVABILITY)
    parser.add_argument("--chart-files", type=Path, default=deploylib.CHART / "files")
    args = parser.parse_args(argv)
    wanted, stale = plan(args.source, args.chart_files)
    problems = differences(wanted, stale)
    if args.check:
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("chart files are stale: run `make chart-files`", file=sys.stderr)
            return 1
        print(f"chart files: up to date ({len(wanted)} files)")
        return 0
    for target, content in wanted.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    for path in stale:
        path.unlink()
    print(f"chart files: {len(wanted)} copied, {len(stale)} removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
