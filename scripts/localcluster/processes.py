"""Detached daemons: started in a session of their own (they outlive the command and the test run
that started them), logged to a file each, recorded by pid, and stopped only if the pid is still
the binary we started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def spawn(
    argv: list[str], logfile: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("ab") as output:
        return subprocess.Popen(  # noqa: S603 (our own binaries, argv built here)
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )


def alive(pid: int | None, executable: str) -> bool:
    """The process runs (not a zombie) and its command line starts with our binary."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return status != "Z" and cmdline[0].decode(errors="replace") == executable


def stop(pid: int | None, executable: str, timeout: float = 20.0) -> None:
    if not alive(pid, executable):
        return
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid, executable) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid, executable):
        os.kill(pid, signal.SIGKILL)
        while alive(pid, executable):
            time.sleep(0.05)


class NotReady(SystemExit):
    """A daemon did not become ready in time, or exited; the message has its log's end."""


def wait_until_ready(
    what: str,
    probe: Callable[[], tuple[bool, str]],
    *,
    process: subprocess.Popen[bytes],
    logfile: Path,
    timeout: float,
) -> float:
    """Poll `probe` until it says ready; returns the seconds it took. The daemon is this
    command's own child here, so `poll()` says exactly whether it exited (its /proc entry can
    still show the forking Python for a moment, which once made a healthy daemon look gone)."""
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        ok, last = probe()
        if ok:
            return time.monotonic() - started
        if process.poll() is not None:
            tail = logfile.read_text(errors="replace")[-3000:] if logfile.exists() else ""
            raise NotReady(f"cluster: {what} exited before it was ready (log {logfile}):\n{tail}")
        time.sleep(0.2)
    tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
    raise NotReady(
        f"cluster: {what} not ready within {timeout:.0f} s; last answer: {last[:300]}\n"
        f"log {logfile}:\n{tail}"
    )
