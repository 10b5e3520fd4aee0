"""The plots `make bench` writes next to its results (PNG, matplotlib's Agg backend: no display).

The data of each plot is a pure function of the results document (tested in tests/bench); the
drawing only lays it out, so any stored `latest.json` can be drawn again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.costs import COMPONENTS, OUR_COMPONENTS, REQUEST_PATHS

LATENCY_PLOT = "latency_vs_rate.png"
CPU_PLOT = "cpu_per_request.png"
ORDER_COST_PLOT = "cost_per_order.png"
PERCENTILES = (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9"))


@dataclass(frozen=True, slots=True)
class LatencySeries:
    """One path's fixed-rate runs, by offered rate."""

    rates: list[float]
    percentiles_ms: dict[str, list[float]]  # label -> one value per rate


def latency_series(sweep: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, LatencySeries]:
    """Per path (`get`, `create`), the vegeta runs of `details.sweep` sorted by offered rate."""
    series = {}
    for path, runs in sweep.items():
        ordered = sorted(runs, key=lambda run: float(run["rate_per_s"]))
        if not ordered:
            continue
        series[path] = LatencySeries(
            rates=[float(run["rate_per_s"]) for run in ordered],
            percentiles_ms={
                label: [float(run[key]) for run in ordered] for key, label in PERCENTILES
            },
        )
    return series


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float
    highlighted: bool  # our path or process (the floors and the servers are not)


def cpu_bars(figures: Mapping[str, float]) -> list[Bar]:
    """CPU-µs per request of each measured path, each floor right before the path it bounds."""
    ours = {"get", "create"}
    return [
        Bar(label, figures[f"{name}_cpu_us"], name in ours)
        for name, label in REQUEST_PATHS
        if f"{name}_cpu_us" in figures
    ]


def order_cost_bars(figures: Mapping[str, float]) -> list[Bar]:
    """CPU-ms per processed order of each component; ours first."""
    return [
        Bar(component, figures[f"order_cpu_ms_{component}"], component in OUR_COMPONENTS)
        for component in COMPONENTS
        if f"order_cpu_ms_{component}" in figures
    ]


def write_plots(document: Mapping[str, Any], folder: Path) -> list[Path]:
    """Draw every plot the document has data for into `folder`; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: Mapping[str, float] = document["figures"]
    when = document.get("details", {}).get("when", "")
    written: list[Path] = []
    folder.mkdir(parents=True, exist_ok=True)

    series = latency_series(document.get("details", {}).get("sweep", {}))
    if series:
        fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 4), squeeze=False)
        for axis, (path, data) in zip(axes[0], sorted(series.items()), strict=True):
            for label, values in data.percentiles_ms.items():
                axis.plot(data.rates, values, marker="o", label=label)
            axis.set_yscale("log")
            axis.set_xlabel("offered rate (requests/s, fixed arrival rate)")
            axis.set_ylabel("latency (ms)")
            axis.set_title("cached GET" if path == "get" else path)
            axis.grid(True, which="both", alpha=0.3)
            axis.legend()
        fig.suptitle(f"Latency against offered rate (vegeta) {when}")
        written.append(_save(fig, folder / LATENCY_PLOT))

    for bars, name, unit, title in (
        (cpu_bars(figures), CPU_PLOT, "CPU-µs per request", "CPU per request beside its floor"),
        (
            order_cost_bars(figures),
            ORDER_COST_PLOT,
            "CPU-ms per processed order",
            "Cost per order by component",
        ),
    ):
        if not bars:
            continue
        fig, axis = plt.subplots(figsize=(7, 0.5 * len(bars) + 1.5))
        labels = [bar.label for bar in bars][::-1]
        values = [bar.value for bar in bars][::-1]
        colours = ["tab:blue" if bar.highlighted else "tab:gray" for bar in bars][::-1]
        axis.barh(labels, values, color=colours)
        for position, value in enumerate(values):
            axis.annotate(
                f"{value:,.1f}" if value >= 10 else f"{value:.2f}",
                (value, position),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
            )
        axis.set_xlabel(unit)
        axis.set_title(f"{title} {when}")
        axis.margins(x=0.15)
        written.append(_save(fig, folder / name))
    return written


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path
