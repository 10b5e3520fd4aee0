# ruff: noqa: S603
# (The caller builds argv from its own commands.)
"""Long commands that show progress a person can read: the command's own output goes to a log
file, a line every half minute says what is still going on and for how long, success stays
quiet, and a failure shows the end of the log. Used by the cluster's builds and `make images`."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

HEARTBEAT_SECONDS = 30.0


def run_logged(
    what: str,
    argv: list[str],
    *,
    cwd: Path,
    logfile: Path,
    expected: str,
    prefix: str,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run `argv` with its output in `logfile`; raise SystemExit with the log's end if it fails."""
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            minutes, seconds = divmod(int(time.monotonic() - started), 60)
            print(
                f"{prefix}: ... {what}: {minutes} min {seconds:02d} s so far (expect {expected})",
                flush=True,
            )

    logfile.parent.mkdir(parents=True, exist_ok=True)
    ticker = threading.Thread(target=heartbeat, daemon=True)
    ticker.start()
    try:
        with logfile.open("wb") as output:
            result = subprocess.run(
                argv,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                stdout=output,
                stderr=subprocess.STDOUT,
                check=False,
            )
    finally:
        done.set()
    if result.returncode != 0:
        tail = logfile.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{prefix}: {what} failed (log: {logfile}):\n{tail}")
