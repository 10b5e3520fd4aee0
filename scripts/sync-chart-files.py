"""Copy the dashboards and alert rules of observability/ into charts/oms/files/ (the chart can
only read files inside itself). Run by `make manifests`; `--check` changes nothing and fails when
the copy is stale (tests/deploy runs it).

observability/dashboards/*.json       -> charts/oms/files/dashboards/   (Grafana ConfigMaps)
observability/prometheus/*.rules.yaml -> charts/oms/files/prometheus/   (PrometheusRules)
"""

from __future__ import annotations

import argparse
import json
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


def generated(source_root: Path, chart_files: Path) -> deploylib.Generated:
    """The copies to write, and chart files whose source is gone."""
    wanted: dict[Path, bytes] = {}
    orphans: dict[Path, str] = {}
    for folder, pattern in MAPPINGS:
        sources = sorted((source_root / folder).glob(pattern))
        target_dir = chart_files / folder
        for source in sources:
            _check_parses(source)
            wanted[target_dir / source.name] = source.read_bytes()
        names = {source.name for source in sources}
        if target_dir.is_dir():
            orphans |= {
                path: "no longer in observability/"
                for path in sorted(target_dir.iterdir())
                if path.is_file() and path.name != KEEP and path.name not in names
            }
    return deploylib.Generated("chart files", wanted, orphans)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the chart copy is stale")
    parser.add_argument("--source", type=Path, default=deploylib.OBSERVABILITY)
    parser.add_argument("--chart-files", type=Path, default=deploylib.CHART / "files")
    args = parser.parse_args(argv)
    return generated(args.source, args.chart_files).run(check=args.check)


if __name__ == "__main__":
    raise SystemExit(main())
