"""The order a whole run takes: the tests that need nothing built first, then the ones needing
the images, the cluster and the chart on the node, Tilt's last; and the wait for their tools.

`make test` starts compiling the node's tools, then Tilt (scripts/cluster.py build --background,
at the lowest priority) as the run begins; the suites that need them come last, so on a bare
machine the compilers use the CPU the other suites leave idle instead of making them wait. Before
the first test that needs them, `cluster.py build` runs in the foreground: it waits for the
background build (the cache's locks) or, when none was started (plain `pytest`), compiles them
itself. Only Tilt's tests need Tilt, so they run after the rest of the node suite, whose waits for
alerts and rollouts leave the CPU to Tilt's compiler. Only whole suites move: a narrowed run keeps
its own order within them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CLUSTER_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cluster.py"
# Markers set by the suites' own conftests (and test_tilt.py), in the order they run; a test
# with none runs first, a test with several where its last one says.
LATE_MARKERS = ("images", "cluster", "node", "tilt")
_waited: set[str] = set()


def rank(item: pytest.Item) -> int:
    return max(
        (
            position
            for position, marker in enumerate(LATE_MARKERS, 1)
            if item.get_closest_marker(marker)
        ),
        default=0,
    )


def tools_needed(item_rank: int) -> list[str]:
    """What `cluster.py build` must have finished before a test of this rank: the node's tools
    (not for a cluster OMS_E2E_KUBECONFIG names), and Tilt for Tilt's tests."""
    tools = [] if os.environ.get("OMS_E2E_KUBECONFIG") or item_rank == 0 else ["node"]
    return [*tools, "tilt"] if item_rank >= LATE_MARKERS.index("tilt") + 1 else tools


@pytest.hookimpl(trylast=True)  # after the suites' hooks have set their markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=rank)  # stable: each group keeps its collection order


# Outermost (tryfirst): the wait happens before pytest-timeout starts a test's clock.
@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    missing = [tool for tool in tools_needed(rank(item)) if tool not in _waited]
    if missing:
        _waited.update(missing)
        wait_for_tools(item.config, missing)
    yield


def wait_for_tools(config: pytest.Config, tools: list[str]) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(CLUSTER_SCRIPT), "build", *tools],
        capture_output=True,
        text=True,
        check=False,
    )
    waited = time.monotonic() - started
    if reporter is not None and (waited > 1 or done.returncode != 0):
        reporter.write_line(f"\n{' and '.join(tools)} tools: waited {waited:.0f} s for the build")
        if done.returncode != 0:
            # The tests needing them fail with their own message (tests/cluster/conftest.py).
            reporter.write_line(f"the build failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
