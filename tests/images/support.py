"""The images as `make images` builds them, and containers run the way the chart runs pods:
non-root, read-only root filesystem with the chart's emptyDirs (/tmp, /var/lib/oms) writable, no
capabilities; on the host network, bound to 127.0.0.1."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


def _load_images_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oms_images_script", REPO / "scripts/images.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


images_script = _load_images_script()
SERVICES: tuple[str, ...] = images_script.SERVICES
# Each image's workspace member (the Dockerfile's `uv sync --package oms-<service>`).
MEMBERS = {service: f"oms-{service}" for service in SERVICES}


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((REPO / "charts/oms/values.yaml").read_text())
    return values


def grace_seconds(service: str) -> int:
    """The pod's terminationGracePeriodSeconds (the operator's is fixed in its template)."""
    if service == "operator":
        template = (REPO / "charts/oms/templates/deployment.yaml").read_text()
        assert "terminationGracePeriodSeconds: 30\n" in template
        return 30
    return int(chart_values()[service]["terminationGracePeriodSeconds"])


def docker(*args: str, env: Mapping[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"docker {' '.join(args)[:300]}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


# The chart's pod shape (templates/_helpers.tpl scratch volumes, values securityContext).
POD_SHAPE = (
    "--network=host",
    "--read-only",
    "--tmpfs=/tmp:mode=1777",
    # The chart's fsGroup makes the emptyDir the app group's; docker keeps the image's mode.
    "--tmpfs=/var/lib/oms:uid=10001,gid=10001",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
)


def run_once(image: str, *argv: str, env: Mapping[str, str] | None = None) -> str:
    """A throw-away container of `image` shaped like the pod, running `argv`."""
    names = [item for key in (env or {}) for item in ("--env", key)]
    return docker("run", "--rm", *POD_SHAPE, *names, image, *argv, env=env)


@dataclass
class Container:
    name: str
    image: str

    def logs(self) -> str:
        result = subprocess.run(
            ["docker", "logs", self.name], capture_output=True, text=True, check=False
        )
        return result.stdout + result.stderr

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(
            docker("inspect", "--format", "{{json .State}}", self.name)
        )
        return state

    def wait_http(self, url: str, timeout: float = START_TIMEOUT) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.state()["Running"]:
                raise AssertionError(f"{self.name} exited before {url} answered:\n{self.logs()}")
            try:
                response = httpx.get(url, timeout=2.0)
            except httpx.TransportError as error:
                last = repr(error)
            else:
                if response.status_code == 200:
                    return response
                last = f"{response.status_code} {response.text}"
            time.sleep(0.25)
        raise AssertionError(f"{url} not 200 within {timeout}s ({last}):\n{self.logs()[-4000:]}")

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """The image's own HEALTHCHECK command says healthy (run every second, see `start`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.state().get("Health") or {}
            if health.get("Status") == "healthy":
                return
            time.sleep(0.5)
        raise AssertionError(f"{self.name} not healthy within {timeout}s: {self.state()}")

    def stop(self, grace: int) -> tuple[int, float]:
        """What the kubelet does: the image's STOPSIGNAL, SIGKILL after `grace` seconds. Returns
        the exit code and the seconds it took; a kill shows as 137."""
        started = time.monotonic()
        docker("stop", "--time", str(grace), self.name, timeout=grace + 30)
        elapsed = time.monotonic() - started
        return int(self.state()["ExitCode"]), elapsed

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "--force", self.name], capture_output=True, check=False)


@contextlib.contextmanager
def started(
    image: str,
    env: Mapping[str, str],
    *argv: str,
    volumes: tuple[str, ...] = (),
) -> Iterator[Container]:
    """A detached container shaped like the pod; `env` goes in by name (values may hold
    newlines, e.g. PEM keys). The HEALTHCHECK command stays the image's; it only runs every
    second here instead of every 30."""
    name = f"oms-test-{uuid.uuid4().hex[:10]}"
    names = [item for key in env for item in ("--env", key)]
    mounts = [item for volume in volumes for item in ("--volume", volume)]
    docker(
        "run",
        "--detach",
        "--name",
        name,
        *POD_SHAPE,
        "--health-interval=1s",
        "--health-start-period=0s",
        *names,
        *mounts,
        image,
        *argv,
        env=env,
    )
    container = Container(name, image)
    try:
        yield container
    finally:
        container.remove()


def installed_distributions(image: str) -> list[str]:
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps(sorted(d.metadata['Name'] + '==' + d.version "
        "for d in m.distributions())))"
    )
    result: list[str] = json.loads(run_once(image, "python", "-c", code))
    return result
