"""The images build (from a clean cache and a warm one), carry the code of the sources they were
built from, only their own member, and stay within their size budgets."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.chart import containers, render, workloads
from tests.images.conftest import BuiltImages
from tests.images.support import (
    MEMBERS,
    REPO,
    SERVICES,
    docker,
    images_script,
    installed_distributions,
    run_once,
)

# Sizes in MB (10^6 bytes) as `docker image inspect` reports them, measured on the bookworm base
# (156 MB) that scripts/images.py makes: api 296, consumer 206, worker 255, operator 264 (one
# image with every member's dependencies: 370). The budgets leave ~10% for dependency updates;
# docs/kubernetes.md states them.
SIZE_BUDGET_MB = {"api": 325, "consumer": 225, "worker": 280, "operator": 290}

# Each member's top-level package: every module in it must import in the image (the
# .dockerignore regression: the package was left out of the build context and the image died
# with `No module named 'oms_api'`).
PACKAGES = {
    "api": "oms_api",
    "consumer": "oms_consumer",
    "worker": "oms_worker",
    "operator": "oms_operator",
}

# What each image must not carry: the other processes' frameworks, and the shared library's
# extras the process does not use: each image holds only what its process runs, so it stays small
# and its attack surface with it.
FOREIGN = {
    "api": ("kopf", "kubernetes_asyncio", "celery"),
    "consumer": (
        "fastapi", "uvicorn", "kopf", "kubernetes_asyncio",
        "sqlalchemy", "asyncpg", "alembic", "argon2", "redis", "cryptography", "jwt",
    ),
    "worker": (
        "fastapi", "uvicorn", "kopf", "kubernetes_asyncio",
        "argon2", "jwt", "cryptography", "email_validator",
    ),
    "operator": ("sqlalchemy", "fastapi", "uvicorn", "celery", "alembic"),
}  # fmt: skip


@pytest.mark.parametrize("service", SERVICES)
def test_every_module_of_the_member_imports_from_the_installed_wheel(
    built: BuiltImages, service: str
) -> None:
    package = PACKAGES[service]
    code = (
        "import importlib, json, pkgutil, " + package + " as p, oms; "
        "names = [m.name for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]; "
        "[importlib.import_module(n) for n in names]; "
        "print(json.dumps({'package': p.__file__, 'oms': oms.__file__, 'modules': len(names)}))"
    )
    # Importing the worker's Celery app needs a broker URL (nothing connects at import).
    env = {"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5672/"}
    found = json.loads(run_once(built.names[service], "python", "-c", code, env=env))
    site = "/opt/venv/lib/python3.11/site-packages/"
    assert found["package"] == f"{site}{package}/__init__.py"
    assert found["oms"] == f"{site}oms/__init__.py"
    assert found["modules"] >= 2


@pytest.mark.parametrize("service", SERVICES)
def test_image_installs_only_its_member_and_the_library(built: BuiltImages, service: str) -> None:
    distributions = installed_distributions(built.names[service])
    ours = sorted(name.split("==")[0] for name in distributions if name.startswith("oms"))
    assert ours == sorted(["oms", MEMBERS[service]])
    code = (
        "import importlib.util as u; "
        f"print([name for name in {FOREIGN[service]!r} if u.find_spec(name)])"
    )
    assert run_once(built.names[service], "python", "-c", code).strip() == "[]"
    # No build tools in the production image: uv stays in the builder.
    assert not any(name.startswith(("uv==", "pip==")) for name in distributions)


def test_image_sizes_within_budget(built: BuiltImages) -> None:
    sizes = {
        service: int(json.loads(docker("image", "inspect", name))[0]["Size"]) / 1e6
        for service, name in built.names.items()
    }
    base = int(json.loads(docker("image", "inspect", built.base))[0]["Size"]) / 1e6
    print("\nimage sizes (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in sizes.items()))
    print(f"base {built.base}: {base:.0f} MB")
    for service, size in sizes.items():
        assert size <= SIZE_BUDGET_MB[service], f"{service}: {size:.0f} MB"
    # The pipeline images skip the API's web stack and the extras they do not use; their own
    # layer is clearly smaller (measured: api 140, consumer 50, worker 99, operator 108 MB).
    own = {service: size - base for service, size in sizes.items()}
    for service, share in {"consumer": 0.5, "worker": 0.8, "operator": 0.9}.items():
        assert own[service] <= share * own["api"], own


def test_warm_build_uses_the_cache_and_ships_changed_sources(
    built: BuiltImages, tmp_path: Path
) -> None:
    """The stale-code regression: a change only under services/ must be in the rebuilt image
    (uv's cache keyed on pyproject.toml used to reinstall the old wheel). Built twice from a copy
    of the build context with the worker's package changed; the dependency layer comes from the
    cache, the code does not."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock"):
        shutil.copy2(REPO / name, context / name)
    for tree in ("src", "services", "operator"):
        shutil.copytree(
            REPO / tree, context / tree, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    module = context / "services/worker/oms_worker/__init__.py"
    original = module.read_text()
    tag = f"oms-worker:stale-check-{uuid.uuid4().hex[:8]}"
    with layers_removed_afterwards():
        for _ in range(2):
            marker = uuid.uuid4().hex
            module.write_text(f"{original}\nIMAGE_BUILD_MARKER = {marker!r}\n")
            output = build_target(built, context, "worker", tag)
            # Up to the dependency layer, the copy builds like the repository: from the cache.
            assert "--no-install-workspace" in output
            code = "import oms_worker; print(oms_worker.IMAGE_BUILD_MARKER)"
            assert run_once(tag, "python", "-c", code).strip() == marker
        assert cached_steps(output) >= 5, output


def test_builds_from_a_clean_cache(built: BuiltImages) -> None:
    """From nothing, the lock file gives the same packages. A session that started on an empty
    engine (fresh CI) has just done that for all four; otherwise the API is rebuilt without the
    cache (the classic builder would rebuild every stage above a later target)."""
    if built.cold:
        assert set(built.seconds) == set(SERVICES)
        return
    tag = f"oms-api:clean-check-{uuid.uuid4().hex[:8]}"
    with layers_removed_afterwards():
        output = build_target(built, REPO, "api", tag, "--no-cache")
        assert cached_steps(output) == 0
        assert installed_distributions(tag) == installed_distributions(built.names["api"])


def _image_ids() -> set[str]:
    return set(docker("images", "--all", "--quiet", "--no-trunc").split())


@contextlib.contextmanager
def layers_removed_afterwards() -> Iterator[None]:
    """Remove every image (intermediate layers included) built inside. Left behind, the layers of
    a --no-cache build would be the newest candidates for the classic builder's cache, and the
    next `make images` would rebuild every stage on top of them."""
    before = _image_ids()
    try:
        yield
    finally:
        created = {
            image: docker("image", "inspect", "--format", "{{.Created}}", image).strip()
            for image in _image_ids() - before
        }
        # Children before their parents: a parent with a child cannot be removed.
        for image in sorted(created, key=created.__getitem__, reverse=True):
            docker("image", "rm", "--force", image)


def build_target(built: BuiltImages, context: Path, service: str, tag: str, *extra: str) -> str:
    """`docker build` of one target as scripts/images.py runs it; the build output."""
    argv, env = images_script.build_command(
        context=context,
        service=service,
        tag=tag,
        base=built.base,
        ca_file=built.ca_file,
        extra=extra,
    )
    result = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def cached_steps(output: str) -> int:
    """Steps taken from the layer cache (classic builder and BuildKit spell it differently)."""
    return output.count("Using cache") + output.count(" CACHED")


def test_chart_defaults_name_the_images_make_builds(built: BuiltImages) -> None:
    """`helm install` with the chart's default values runs exactly the images `make images`
    tagged (registry, name and tag = appVersion), the operator's included."""
    docs = render(sets=["operator.enabled=true"])
    referenced = {container["image"] for doc in workloads(docs) for container in containers(doc)}
    assert referenced <= set(built.names.values()), referenced
    assert {built.names[service] for service in SERVICES} <= referenced
    for name in referenced:
        docker("image", "inspect", name)
