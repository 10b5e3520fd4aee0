"""The chart installed on the one-node cluster of `make cluster`, and a client in front of it.

A release here is what the README's install commands make: a namespace enforcing the `restricted`
Pod Security Standard, deploy/dev/backing-services.yaml in it (PostgreSQL, Redis and RabbitMQ
pods), and `helm install` of charts/oms with charts/oms/ci/local-values.yaml: hooks, the operator
and an OrderSystem, Traefik in front. Each release gets an ingress host of its own, so several
can exist at once; the tests reach the in-cluster PostgreSQL and RabbitMQ at their Service
addresses, which the node routes to from the host (the cluster's own bridge, nothing else).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml
from tests.cluster.support import CHART, REPO, Kube, wait_until
from tests.conftest import Account, register
from tests.pipeline.support import ORDER_BODY, create_orders

from oms.settings import Settings

LOCAL_VALUES = CHART / "ci" / "local-values.yaml"
BACKING_SERVICES = REPO / "deploy" / "dev" / "backing-services.yaml"
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
# High enough that a test's own traffic never meets them (tests/api checks the limits themselves).
UNLIMITED = [
    f"config.rateLimit.{route}=100000/minute"
    for route in ("createOrder", "getOrder", "updateOrder", "listOrders", "token", "register")
]
COMPONENTS = ("api", "consumer", "worker", "operator")


def dev_credentials() -> dict[str, str]:
    """The fixed development credentials the backing-services manifest ships."""
    for document in yaml.safe_load_all(BACKING_SERVICES.read_text()):
        if document and document["kind"] == "Secret":
            return dict(document["stringData"])
    raise AssertionError(f"no Secret in {BACKING_SERVICES}")


@dataclass
class Release:
    kube: Kube
    namespace: str
    host: str
    ingress_url: str
    name: str = "oms"
    # None: local-values.yaml's (the node's Traefik); another cluster names its own.
    ingress_class: str | None = None
    installed_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    service_ips: dict[str, str] = field(default_factory=dict)

    # --- Kubernetes views ---------------------------------------------------------------------

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.kube.run("-n", self.namespace, *args, check=check).stdout

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = self.kube.helm(*args, "-n", self.namespace, check=check)
        return subprocess.CompletedProcess(args, result.returncode, result.stdout, result.stderr)

    def deployment(self, component: str) -> str:
        return f"{self.name}-{component}"

    def selector(self, component: str) -> str:
        return f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component={component}"

    def pods(self, component: str) -> list[dict[str, Any]]:
        listed = json.loads(
            self.kubectl("get", "pods", "-l", self.selector(component), "-o", "json")
        )
        return [pod for pod in listed["items"] if not pod["metadata"].get("deletionTimestamp")]

    def running_pods(self, component: str) -> list[str]:
        """Names of the component's pods that run with every container ready."""
        names = []
        for pod in self.pods(component):
            statuses = pod["status"].get("containerStatuses") or []
            if (
                pod["status"].get("phase") == "Running"
                and statuses
                and all(status.get("ready") for status in statuses)
            ):
                names.append(pod["metadata"]["name"])
        return sorted(names)

    def replicas(self, component: str) -> int:
        scale = json.loads(
            self.kubectl(
                "get", "deployment", self.deployment(component), "--subresource=scale", "-o", "json"
            )
        )
        return int(scale["spec"].get("replicas") or 0)

    def wait_available(self, timeout: float = 180) -> None:
        self.kubectl(
            "wait", "--for=condition=Available", "deployment", "--all", f"--timeout={timeout:.0f}s"
        )

    def service_ip(self, service: str) -> str:
        """A Service's ClusterIP (fixed for its lifetime: asked once per release)."""
        if service not in self.service_ips:
            jsonpath = "jsonpath={.spec.clusterIP}"
            self.service_ips[service] = self.kubectl(
                "get", "service", service, "-o", jsonpath
            ).strip()
        return self.service_ips[service]

    def logs(self, component: str) -> str:
        """The logs of every current pod of a component (previous containers' too)."""
        text = []
        for pod in self.pods(component):
            name = pod["metadata"]["name"]
            text.append(self.kubectl("logs", name, "--tail=-1", check=False))
            text.append(self.kubectl("logs", name, "--previous", "--tail=-1", check=False))
        return "\n".join(text)

    def secret(self, name: str) -> dict[str, str]:
        data = json.loads(self.kubectl("get", "secret", name, "-o", "json")).get("data") or {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    # --- the backing services -----------------------------------------------------------------

    def settings(self) -> Settings:
        """Settings that reach this release's PostgreSQL (for the tests' own queries)."""
        return Settings(
            _env_file=None,
            POSTGRES_HOST=self.service_ip("postgresql"),
            POSTGRES_PORT=5432,
            POSTGRES_USER="oms",
            POSTGRES_PASSWORD=dev_credentials()["POSTGRES_PASSWORD"],
            POSTGRES_DB="order_db",
        )

    def amqp_url(self) -> str:
        password = dev_credentials()["POSTGRES_PASSWORD"]
        return f"amqp://oms:{password}@{self.service_ip('rabbitmq')}:5672/"

    # --- the API, through the ingress ---------------------------------------------------------

    def client(self, timeout: float = 30) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.ingress_url, headers={"Host": self.host}, timeout=timeout
        )


def create_namespace(kube: Kube, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kube.run("create", "namespace", name)
    kube.run("label", "namespace", name, RESTRICTED)
    return name


def install(
    kube: Kube,
    node: dict[str, Any],
    prefix: str,
    *,
    sets: Sequence[str] = (),
    set_json: Sequence[str] = (),
) -> Release:
    """A namespace, its backing services, and the chart installed the way the README says."""
    started = time.monotonic()
    namespace = create_namespace(kube, prefix)
    release = Release(kube, namespace, f"{namespace}.localhost", node["ingress_url"])
    if node.get("external"):
        release.ingress_class = node["ingress_class"]
    try:
        _install_into(release, sets, set_json)
    except BaseException:
        remove(release)  # a failed set-up leaves nothing running behind
        raise
    release.installed_seconds = time.monotonic() - started
    return release


def _install_into(release: Release, sets: Sequence[str], set_json: Sequence[str]) -> None:
    started = time.monotonic()
    release.kubectl("apply", "-f", str(BACKING_SERVICES))
    release.wait_available()
    release.timings["backing services"] = time.monotonic() - started
    hosts = [{"host": release.host, "paths": [{"path": "/", "pathType": "Prefix"}]}]
    argv = ["install", release.name, str(CHART), "--values", str(LOCAL_VALUES)]
    argv += ["--set-json", f"ingress.hosts={json.dumps(hosts)}"]
    if release.ingress_class is not None:
        argv += ["--set", f"ingress.className={release.ingress_class}"]
    for assignment in [*UNLIMITED, *sets]:
        argv += ["--set", assignment]
    for assignment in set_json:
        argv += ["--set-json", assignment]
    helm_started = time.monotonic()
    release.helm(*argv, "--wait", "--timeout", "5m")
    release.timings["helm install --wait"] = time.monotonic() - helm_started
    routed_started = time.monotonic()
    wait_until_routed(release)
    release.timings["ingress routes"] = time.monotonic() - routed_started


def wait_until_routed(release: Release, timeout: float = 60) -> None:
    """Traefik picks up a new Ingress a moment after it exists; until then it answers 404."""

    def routed() -> bool:
        try:
            answer = httpx.get(
                f"{release.ingress_url}/health", headers={"Host": release.host}, timeout=5
            )
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    wait_until(routed, timeout=timeout, interval=0.2)


def remove(release: Release) -> None:
    release.kube.run("delete", "namespace", release.namespace, "--wait=false", check=False)


# --- a client's view ----------------------------------------------------------------------------


async def sign_up(http: httpx.AsyncClient) -> Account:
    """A fresh account, registered and logged in through the ingress."""
    return await register(http, f"e2e-{uuid.uuid4().hex[:12]}@example.com")


async def log_in(http: httpx.AsyncClient, email: str, password: str) -> str:
    answer = await http.post("/token", data={"username": email, "password": password})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


async def create_order(http: httpx.AsyncClient, account: Account) -> str:
    (order_id,) = await create_orders(http, account.token, 1)
    return order_id


PROCESSED_LINE = re.compile(r'"msg": "order processed", "order_id": "([0-9a-f-]{36})"')


def processed_in_logs(log: str) -> set[str]:
    """Order ids a worker's JSON log says it processed."""
    return set(PROCESSED_LINE.findall(log))


@dataclass
class Load:
    """A steady client: a few concurrent loops, each creating an order and reading it back,
    counting every answer that is not the expected one as a failure."""

    created: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    requests: int = 0


@contextlib.asynccontextmanager
async def steady_load(
    release: Release, account: Account, *, clients: int = 4, pause: float = 0.05
) -> AsyncIterator[Load]:
    load = Load()
    stop = asyncio.Event()

    async def loop(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                created = await http.post("/orders/", json=ORDER_BODY, headers=account.headers)
                load.requests += 1
                if created.status_code != 201:
                    load.failures.append(f"POST {created.status_code} {created.text[:200]}")
                    continue
                order_id = created.json()["id"]
                load.created.append(order_id)
                read = await http.get(f"/orders/{order_id}/", headers=account.headers)
                load.requests += 1
                if read.status_code != 200:
                    load.failures.append(f"GET {read.status_code} {read.text[:200]}")
            except httpx.HTTPError as error:
                load.failures.append(f"{type(error).__name__}: {error}")
            await asyncio.sleep(pause)

    async with release.client() as http:
        tasks = [asyncio.create_task(loop(http)) for _ in range(clients)]
        try:
            yield load
        finally:
            stop.set()
            await asyncio.gather(*tasks)


async def all_of(*waits: Coroutine[Any, Any, object]) -> None:
    """Wait for all; the first to fail cancels the others."""
    async with asyncio.TaskGroup() as group:
        for wait in waits:
            group.create_task(wait)


@contextlib.asynccontextmanager
async def open_loop(
    release: Release,
    per_second: float,
    send: Callable[[httpx.AsyncClient, int], Coroutine[Any, Any, None]],
) -> AsyncIterator[None]:
    """Requests through the ingress started at a fixed pace whatever the earlier ones take, as
    real clients send them (a closed loop would slow down with the system and hide how many
    requests a slow dependency delays). `send(http, tick)` makes the tick-th request (from 1)
    and records its answer; those still running when the block ends are waited for."""
    stop = asyncio.Event()

    async def pace(http: httpx.AsyncClient) -> None:
        running: set[asyncio.Task[None]] = set()
        tick = 0
        while not stop.is_set():
            tick += 1
            task = asyncio.create_task(send(http, tick))
            running.add(task)
            task.add_done_callback(running.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / per_second)
        await asyncio.gather(*running)

    async with release.client() as http:
        pacer = asyncio.create_task(pace(http))
        try:
            yield
        finally:
            stop.set()
            await pacer


def wait_for_pods(
    release: Release, component: str, predicate: Callable[[int], bool], timeout: float
) -> list[str]:
    """Poll the component's running, ready pods until their number satisfies `predicate`."""
    deadline = time.monotonic() + timeout
    while True:
        names = release.running_pods(component)
        if predicate(len(names)):
            return names
        if time.monotonic() > deadline:
            raise AssertionError(f"{component} pods after {timeout:.0f}s: {names}")
        time.sleep(1)
