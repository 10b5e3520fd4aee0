"""Each image's entry command, started exactly as its Dockerfile would start it, from installed
wheels (no source tree): a fresh venv per workspace member gets what its Dockerfile's builder
installs (`uv sync --frozen --no-dev --package <member> --no-editable`: the locked dependencies of
that member only, the member and the shared library as wheels), the command comes from the
Dockerfile's CMD and its environment from the Dockerfile's ENV, and the process runs from a
directory outside the repository against real local services."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.deploy.chart import REPO
from tests.deploy.dockerfile import Image, parse
from tests.harness import free_port

IMAGE_VENV = "/opt/venv"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
RABBITMQCTL = os.environ.get("TEST_RABBITMQCTL", "rabbitmqctl")
REDIS_BASE = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")


def _uv() -> str:
    found = shutil.which("uv") or str(REPO / ".tools" / "uv" / "bin" / "uv")
    assert Path(found).exists(), "uv not found (make install provides it)"
    return found


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd, env=env)
    assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
    return result.stdout


@dataclass(frozen=True)
class InstalledWheel:
    venv: Path
    workdir: Path


class Installer:
    """One venv per workspace member, built on first use and kept for the session."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._venvs: dict[str, InstalledWheel] = {}

    def __call__(self, dockerfile: Path) -> InstalledWheel:
        member = tomllib.loads((dockerfile.parent / "pyproject.toml").read_text())["project"]
        name = str(member["name"])
        if name not in self._venvs:
            root = self._root / name
            root.mkdir()
            env = {
                key: value
                for key, value in os.environ.items()
                if key not in {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"}
            }
            env |= {"UV_PROJECT_ENVIRONMENT": str(root / "venv"), "UV_PYTHON": "3.11"}
            # What the Dockerfile's builder runs (both steps at once: no layer cache to keep).
            _run(
                [_uv(), "sync", "--frozen", "--no-dev", "--package", name, "--no-editable"],
                cwd=REPO,
                env=env,
            )
            workdir = root / "app"
            workdir.mkdir()
            self._venvs[name] = InstalledWheel(venv=root / "venv", workdir=workdir)
        return self._venvs[name]


@pytest.fixture(scope="session")
def install(tmp_path_factory: pytest.TempPathFactory) -> Installer:
    return Installer(tmp_path_factory.mktemp("images"))


def image_env(image: Image, installed: InstalledWheel, **overrides: str) -> dict[str, str]:
    """The Dockerfile's ENV with the image's venv path mapped to ours; nothing from our shell."""
    env = {key: value.replace(IMAGE_VENV, str(installed.venv)) for key, value in image.env.items()}
    env["PATH"] = env["PATH"].rstrip(":") + ":/usr/local/bin:/usr/bin:/bin"
    env["HOME"] = str(installed.workdir)
    env.update(overrides)
    return env


@contextlib.contextmanager
def started(image: Image, env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """Start the image's command; on exit make sure it is gone (SIGKILL after the test)."""
    process = subprocess.Popen(
        image.command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=STOP_TIMEOUT)


def wait_for_http(process: subprocess.Popen[str], url: str) -> httpx.Response:
    deadline = time.monotonic() + START_TIMEOUT
    last: str = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"exited with {process.returncode} before {url} answered:\n{output}")
        try:
            response = httpx.get(url, timeout=2.0)
        except httpx.TransportError as error:
            last = repr(error)
        else:
            if response.status_code == 200:
                return response
            last = f"{response.status_code} {response.text}"
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer 200 within {START_TIMEOUT}s: {last}")


def stop_with_the_image_stop_signal(
    image: Image, process: subprocess.Popen[str], allowed: frozenset[int] = frozenset({0})
) -> str:
    """What `docker stop` / the kubelet does: the STOPSIGNAL, then an exit well within the grace
    period. `allowed` may admit death by the signal itself, which uvicorn re-raises on purpose
    once its graceful shutdown is done."""
    assert image.stop_signal is not None
    process.send_signal(getattr(signal, image.stop_signal))
    output, _ = process.communicate(timeout=STOP_TIMEOUT)
    assert process.returncode in allowed, f"exit {process.returncode}:\n{output}"
    return output


def migrate(installed: InstalledWheel, env: dict[str, str]) -> None:
    output = _run(["oms", "migrate"], cwd=installed.workdir, env=env)
    assert "is at head" in output


def assert_loaded_from_venv(installed: InstalledWheel, env: dict[str, str], script: str) -> None:
    """The console script resolves to the installed wheel, never to the source tree."""
    code = (
        "import importlib.metadata as m, sys; "
        f"ep = m.entry_points(group='console_scripts')['{script}']; ep.load(); "
        "module = sys.modules[ep.module]; print(module.__file__)"
    )
    location = _run(["python", "-c", code], cwd=installed.workdir, env=env).strip()
    assert location.startswith(str(installed.venv)), location
    assert (installed.venv / "bin" / script).is_file()


@pytest.fixture
def vhost() -> Iterator[str]:
    name = f"oms_image_{uuid.uuid4().hex[:10]}"
    subprocess.run([RABBITMQCTL, "add_vhost", name, "-q"], check=True, capture_output=True)
    subprocess.run(
        [RABBITMQCTL, "set_permissions", "-p", name, "guest", ".*", ".*", ".*", "-q"],
        check=True,
        capture_output=True,
    )
    try:
        yield name
    finally:
        subprocess.run([RABBITMQCTL, "delete_vhost", name, "-q"], check=False, capture_output=True)


def test_api_image_command_serves_health_and_stops_cleanly(
    install: Installer, tmp_path: Path
) -> None:
    image = parse(REPO / "services/api/Dockerfile")
    installed = install(REPO / "services/api/Dockerfile")
    port = free_port()
    # Only what differs from the image: a writable data dir here, and loopback for the test.
    env = image_env(
        image, installed, DATA_DIR=str(tmp_path / "data"), HOST="127.0.0.1", PORT=str(port)
    )
    assert_loaded_from_venv(installed, env, image.command[0])
    migrate(installed, env)
    assert (tmp_path / "data" / "oms.db").is_file()
    with started(image, env, installed.workdir) as process:
        health = wait_for_http(process, f"http://127.0.0.1:{port}/health")
        assert health.json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5.0)
        assert ready.status_code == 200, ready.text
        output = stop_with_the_image_stop_signal(
            image, process, frozenset({0, -getattr(signal, str(image.stop_signal))})
        )
        assert "Application shutdown complete" in output


@pytest.mark.parametrize(
    ("dockerfile", "port_setting"),
    [
        ("services/consumer/Dockerfile", "CONSUMER_METRICS_PORT"),
        ("services/worker/Dockerfile", "WORKER_METRICS_PORT"),
    ],
    ids=["consumer", "worker"],
)
def test_pipeline_image_command_becomes_ready_and_stops_cleanly(
    install: Installer, tmp_path: Path, vhost: str, dockerfile: str, port_setting: str
) -> None:
    image = parse(REPO / dockerfile)
    installed = install(REPO / dockerfile)
    assert port_setting in image.env
    port = free_port()
    prefix = f"test:image:{uuid.uuid4().hex[:10]}:"
    env = image_env(
        image,
        installed,
        DATA_DIR=str(tmp_path / "data"),
        HOST="127.0.0.1",
        **{port_setting: str(port)},
        RABBITMQ_URL=f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        REDIS_URL=f"{REDIS_BASE}/0",
        REDIS_URL_RATE_LIMIT=f"{REDIS_BASE}/0",
        REDIS_URL_CELERY=f"{REDIS_BASE}/0",
        REDIS_KEY_PREFIX=prefix,
    )
    assert_loaded_from_venv(installed, env, image.command[0])
    migrate(installed, env)
    with started(image, env, installed.workdir) as process:
        wait_for_http(process, f"http://127.0.0.1:{port}/health")
        ready = wait_for_http(process, f"http://127.0.0.1:{port}/health/ready")
        assert ready.json()["status"] == "ok"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0)
        assert metrics.status_code == 200
        stop_with_the_image_stop_signal(image, process)


def test_operator_image_command_resolves_from_the_wheel(install: Installer) -> None:
    """Kopf needs a Kubernetes API to start; without a cluster we prove the entry point and every
    module it imports (the handlers register on import) load from the installed wheel."""
    image = parse(REPO / "operator/Dockerfile")
    installed = install(REPO / "operator/Dockerfile")
    env = image_env(image, installed)
    assert_loaded_from_venv(installed, env, image.command[0])
    code = "import oms_operator.main, oms_operator.handlers, kopf; print(kopf.__version__)"
    assert _run(["python", "-c", code], cwd=installed.workdir, env=env).strip()


# What each image must not carry (issue 12): the other processes' frameworks.
FOREIGN = {
    "services/api/Dockerfile": ("kopf", "kubernetes_asyncio", "celery"),
    "services/consumer/Dockerfile": ("fastapi", "uvicorn", "kopf", "kubernetes_asyncio"),
    "services/worker/Dockerfile": ("fastapi", "uvicorn", "kopf", "kubernetes_asyncio"),
    "operator/Dockerfile": ("sqlalchemy", "fastapi", "uvicorn", "celery", "alembic"),
}


@pytest.mark.parametrize("dockerfile", FOREIGN, ids=lambda path: path.split("/")[-2])
def test_image_installs_only_its_member_and_the_library(
    install: Installer, dockerfile: str
) -> None:
    installed = install(REPO / dockerfile)
    python = str(installed.venv / "bin" / "python")
    code = (
        "import importlib.util as u, importlib.metadata as m; "
        "print(sorted(d.metadata['Name'] for d in m.distributions() "
        "if d.metadata['Name'].startswith('oms'))); "
        f"print([name for name in {FOREIGN[dockerfile]!r} if u.find_spec(name)])"
    )
    ours, foreign = _run([python, "-c", code], cwd=installed.workdir).splitlines()
    member = tomllib.loads((REPO / dockerfile).with_name("pyproject.toml").read_text())["project"]
    assert ours == str(sorted(["oms", member["name"]]))
    assert foreign == "[]"
    # The dev stage (Tilt) restarts the process with watchfiles from the same venv.
    assert "watchfiles" in (REPO / dockerfile).read_text()
    assert (installed.venv / "bin" / "watchfiles").is_file()
