# ruff: noqa: S603, S607
# (Every command here is ours, argv built here, found on PATH as the tools' packages install them.)
"""Container images: a Docker engine that answers, a Python base image, the four service images.

    python scripts/images.py engine     # make sure an engine answers (starts one if it can)
    python scripts/images.py base       # print the base image to build on (builds it if needed)
    python scripts/images.py build      # engine + base + the four images (`make images`)
    python scripts/images.py backing    # PostgreSQL, Redis, RabbitMQ for dev clusters (deploy/dev)
    python scripts/images.py sizes      # the images' sizes in MB

No registry needs to be reachable. With no engine answering, and when running as root on Debian or
Ubuntu, Debian's `docker.io` (the engine only: no systemd unit needed) is installed if missing and
`dockerd` started in the background with its own data root (.tools/docker/, log
.tools/docker/dockerd.log). When the configured base (`python:3.11-slim`) is not in the engine, a
Debian bookworm base with its own Python 3.11 is made with debootstrap and `docker import` (~50 s)
and the images build on that instead. A registry is asked for the configured base only when
IMAGE_PULL=1 (`--pull`): nothing here reaches a registry unless told to. See docs/kubernetes.md.

Builds use the classic builder when buildx is missing (Debian bookworm has no package for it): the
Dockerfile therefore uses no `RUN --mount` and no `# syntax=` line (that would fetch a frontend
image from a registry). An extra CA bundle for TLS-intercepting proxies goes in as the build
argument EXTRA_CA_CERTS (only the builder stages see it; off unless --ca-file is given).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import progress

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / ".tools"
DOCKER_STATE = Path(os.environ.get("OMS_DOCKER_DIR", TOOLS / "docker")).resolve()
# Service name -> Dockerfile target (also the image name's suffix), in the Dockerfile's order: the
# classic builder builds every stage before the target, so building in this order reuses them.
SERVICES = ("api", "consumer", "worker", "operator")
# Development-only PostgreSQL, Redis and RabbitMQ (deploy/dev/Dockerfile, from Debian packages) for
# the backing services of deploy/dev/backing-services.yaml: Tilt and the end-to-end tests.
BACKING_SERVICES = ("postgresql", "redis", "rabbitmq")
BACKING_CONTEXT = REPO / "deploy" / "dev"
BACKING_TAG = "bookworm"
BACKING_BASE = "debian:bookworm-slim"
DEFAULT_BASE = "python:3.11-slim"
LOCAL_BASE = "oms-python:3.11-bookworm"
ENGINE_TIMEOUT = 60.0
PULL_TIMEOUT = 120.0
# What the local base needs beyond minbase: Python with venv (the builder makes one for uv),
# `python` on PATH as in python:3.11-slim, and the CA bundle that TLS to PyPI is checked against.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")


class ImagesError(RuntimeError):
    """Something the caller has to fix; the message says what."""


def docker(*args: str, check: bool = True, timeout: float | None = None) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and result.returncode != 0:
        raise ImagesError(f"docker {' '.join(args)}: {result.stderr.strip() or result.stdout}")
    return result.stdout


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        version = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return version.strip() != ""


def _debian_like() -> bool:
    try:
        release = Path("/etc/os-release").read_text()
    except OSError:
        return False
    return any(f"ID={name}" in release or f"ID_LIKE={name}" in release for name in ("debian",))


def apt_install(*packages: str) -> None:
    """Install Debian packages (root on Debian/Ubuntu only); refresh the lists once if needed."""
    if os.geteuid() != 0 or not _debian_like() or shutil.which("apt-get") is None:
        raise ImagesError(
            f"{', '.join(packages)} missing and this is not root on Debian/Ubuntu: install them"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "--yes", "--no-install-recommends", *packages]
    if subprocess.run(argv, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(argv, env=env, check=True)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One starter at a time (several worktrees share .tools): a second caller waits, then finds
    the engine or base the first one made."""
    DOCKER_STATE.mkdir(parents=True, exist_ok=True)
    with (DOCKER_STATE / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_engine() -> None:
    if engine_answers():
        return
    with _locked("engine"):
        if engine_answers():
            return
        if os.geteuid() != 0:
            raise ImagesError(
                "no Docker engine answers: start one (Docker Desktop, `sudo systemctl start "
                "docker`, or `sudo dockerd &`), or point DOCKER_HOST at one"
            )
        if shutil.which("dockerd") is None:
            print("images: installing Debian's docker.io (the engine)", flush=True)
            apt_install("docker.io")
        if shutil.which("docker") is None:
            raise ImagesError("docker.io installed but no `docker` command on PATH")
        data_root = DOCKER_STATE / "data"
        data_root.mkdir(parents=True, exist_ok=True)
        log = DOCKER_STATE / "dockerd.log"
        print(f"images: starting dockerd (data root {data_root}, log {log})", flush=True)
        with log.open("ab") as output:
            # Its own session: the engine outlives this command and the test run that called it.
            subprocess.Popen(
                [
                    "dockerd",
                    "--data-root",
                    str(data_root),
                    "--exec-root",
                    str(DOCKER_STATE / "exec"),
                    "--pidfile",
                    str(DOCKER_STATE / "dockerd.pid"),
                    "--host",
                    "unix:///var/run/docker.sock",
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + ENGINE_TIMEOUT
        while not engine_answers():
            if time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise ImagesError(f"dockerd did not answer within {ENGINE_TIMEOUT}s:\n{tail}")
            time.sleep(0.5)


def image_exists(reference: str) -> bool:
    return docker("image", "inspect", reference, check=False).strip() not in ("", "[]")


def _pull(reference: str) -> bool:
    try:
        result = subprocess.run(
            ["docker", "pull", "--quiet", reference],
            capture_output=True,
            text=True,
            check=False,
            timeout=PULL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def build_local_base(reference: str = LOCAL_BASE) -> None:
    """Debian bookworm minbase with its own Python 3.11, imported as an image."""
    if shutil.which("debootstrap") is None:
        apt_install("debootstrap")
    with tempfile.TemporaryDirectory(prefix="oms-base-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                "bookworm",
                str(rootfs),
                os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # What a slim image leaves out too: package lists, caches, docs and man pages.
        for leftover in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(rootfs / leftover, ignore_errors=True)
            (rootfs / leftover).mkdir(parents=True, exist_ok=True)
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
        )
        subprocess.run(
            [
                "docker",
                "import",
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change",
                "ENV LANG=C.UTF-8",
                "--change",
                'CMD ["python3"]',
                "-",
                reference,
            ],
            stdin=tar.stdout,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if tar.wait() != 0:
            raise ImagesError("tar of the bookworm root filesystem failed")


def pull_allowed() -> bool:
    """IMAGE_PULL=1: the configured bases may be pulled from a registry. Off by default, so that a
    build reaches no registry (on a machine without one, a pull attempt only costs time)."""
    return os.environ.get("IMAGE_PULL", "") in ("1", "true", "yes")


def ensure_base(configured: str, *, pull: bool | None = None) -> str:
    """The base image to build on: the configured one if present (or pulled, when allowed), else
    ours, built from Debian's packages."""
    if image_exists(configured) or (
        (pull_allowed() if pull is None else pull) and _pull(configured)
    ):
        return configured
    with _locked("base"):
        if not image_exists(LOCAL_BASE):
            print(f"images: {configured} is not in the engine; building {LOCAL_BASE}", flush=True)
            started = time.monotonic()
            build_local_base()
            print(f"images: {LOCAL_BASE} built in {time.monotonic() - started:.0f}s", flush=True)
    return LOCAL_BASE


def image_name(registry: str, service: str, tag: str) -> str:
    return f"{registry.rstrip('/')}/oms-{service}:{tag}" if registry else f"oms-{service}:{tag}"


def has_buildx() -> bool:
    """Whether BuildKit can build; without buildx the classic builder has to (DOCKER_BUILDKIT=0
    says so, or the CLI refuses)."""
    result = subprocess.run(["docker", "buildx", "version"], capture_output=True, check=False)
    return result.returncode == 0


PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def extra_certificates(ca_file: Path, base: str) -> str:
    """The certificates of `ca_file` that the base image's bundle lacks. A host's whole bundle
    (SSL_CERT_FILE) is fine to pass: only what it adds goes into the build argument, which has to
    stay under the kernel's 128 KiB limit for one argument."""
    wanted = PEM_BLOCK.findall(ca_file.read_text())
    if not wanted:
        raise ImagesError(f"{ca_file}: no PEM certificate in it")
    shipped = docker(
        "run", "--rm", "--network", "none", base, "cat", "/etc/ssl/certs/ca-certificates.crt"
    )
    known = {"".join(block.split()) for block in PEM_BLOCK.findall(shipped)}
    return "\n".join(block for block in wanted if "".join(block.split()) not in known)


def build_args(base: str, ca_file: Path | None, version: str, revision: str) -> list[str]:
    args = {"PYTHON_IMAGE": base, "VERSION": version, "REVISION": revision}
    if ca_file is not None:
        args["EXTRA_CA_CERTS"] = extra_certificates(ca_file, base)
    return [item for key, value in args.items() for item in ("--build-arg", f"{key}={value}")]


def build_command(
    *,
    context: Path,
    service: str,
    tag: str,
    base: str,
    ca_file: Path | None,
    extra: tuple[str, ...] = (),
) -> tuple[list[str], dict[str, str]]:
    """The `docker build` of one service's target, and the environment to run it in."""
    env = dict(os.environ)
    progress: list[str] = ["--progress=plain"]
    if not has_buildx():
        env["DOCKER_BUILDKIT"] = "0"
        progress = []
    revision = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, cwd=REPO
    ).stdout.strip()
    argv = [
        "docker",
        "build",
        "--file",
        str(context / "Dockerfile"),
        "--target",
        service,
        "--tag",
        tag,
        # The builder reaches PyPI through the host's network (works with and without a
        # bridge); the images themselves take no network setting from this.
        "--network",
        "host",
        *progress,
        *build_args(base, ca_file, _project_version(context), revision or "unknown"),
        *extra,
        str(context),
    ]
    return argv, env


def build(
    *,
    services: tuple[str, ...],
    registry: str,
    tag: str,
    base: str,
    ca_file: Path | None,
) -> dict[str, float]:
    """Build each service's target; returns the seconds each took."""
    timings: dict[str, float] = {}
    for service in services:
        started = time.monotonic()
        name = image_name(registry, service, tag)
        argv, env = build_command(
            context=REPO, service=service, tag=name, base=base, ca_file=ca_file
        )
        # The builder's own output (every stage replayed, the classic builder's deprecation
        # notice) goes to a log; a person sees one line per image, and one every half minute.
        progress.run_logged(
            f"building {name}",
            argv,
            cwd=REPO,
            logfile=DOCKER_STATE / "logs" / f"build-{service}.log",
            expected="seconds when cached, 1-2 minutes from nothing",
            prefix="images",
            env=env,
        )
        timings[service] = time.monotonic() - started
    return timings


def backing_image_name(service: str) -> str:
    return f"oms-dev-{service}:{BACKING_TAG}"


def build_backing(base: str) -> dict[str, float]:
    """The development backing services' images (quiet unless a build fails)."""
    env = dict(os.environ)
    if not has_buildx():
        env["DOCKER_BUILDKIT"] = "0"
    timings: dict[str, float] = {}
    for service in BACKING_SERVICES:
        started = time.monotonic()
        argv = ["docker", "build", "--quiet", "--network", "host", "--target", service]
        argv += ["--build-arg", f"BASE_IMAGE={base}", "--tag", backing_image_name(service)]
        result = subprocess.run(
            [*argv, str(BACKING_CONTEXT)], env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ImagesError(f"building {backing_image_name(service)}:\n{result.stderr[-3000:]}")
        timings[service] = time.monotonic() - started
    return timings


def _project_version(context: Path) -> str:
    return str(tomllib.loads((context / "pyproject.toml").read_text())["project"]["version"])


def sizes(registry: str, tag: str, services: tuple[str, ...] = SERVICES) -> dict[str, float]:
    """Each image's size in MB (10^6 bytes, as `docker images` counts)."""
    result: dict[str, float] = {}
    for service in services:
        inspected = json.loads(docker("image", "inspect", image_name(registry, service, tag)))
        result[service] = int(inspected[0]["Size"]) / 1e6
    return result


def _ca_file(value: str) -> Path | None:
    return Path(value) if value else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["engine", "base", "build", "backing", "sizes"])
    parser.add_argument("--base", default=os.environ.get("PYTHON_IMAGE", DEFAULT_BASE))
    parser.add_argument("--registry", default="")
    parser.add_argument("--tag", default="dev")
    parser.add_argument(
        "--pull",
        action="store_true",
        default=pull_allowed(),
        help="pull the configured base when the engine lacks it (default: IMAGE_PULL=1)",
    )
    parser.add_argument(
        "--ca-file",
        type=_ca_file,
        default=None,
        help="extra CA bundle (PEM) the builder trusts for PyPI; default: none",
    )
    parser.add_argument("--service", action="append", choices=SERVICES, dest="services")
    args = parser.parse_args(argv)
    services = tuple(args.services or SERVICES)
    try:
        if args.command == "sizes":
            for service, size in sizes(args.registry, args.tag, services).items():
                print(f"{image_name(args.registry, service, args.tag)}\t{size:.0f} MB")
            return 0
        ensure_engine()
        if args.command == "engine":
            return 0
        if args.command == "backing":
            for service, seconds in build_backing(
                ensure_base(BACKING_BASE, pull=args.pull)
            ).items():
                print(f"{backing_image_name(service)}\tbuilt in {seconds:.0f}s")
            return 0
        base = ensure_base(args.base, pull=args.pull)
        if args.command == "base":
            print(base)
            return 0
        timings = build(
            services=services, registry=args.registry, tag=args.tag, base=base, ca_file=args.ca_file
        )
        built = sizes(args.registry, args.tag, services)
        for service in services:
            print(
                f"{image_name(args.registry, service, args.tag)}\t{built[service]:.0f} MB"
                f"\tbuilt in {timings[service]:.0f}s"
            )
    except (ImagesError, subprocess.CalledProcessError) as error:
        print(f"images: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
