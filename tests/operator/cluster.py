"""A kmock Kubernetes emulator prepared for the operator, and kubectl-like helpers for tests.

kmock's gaps, filled here or worked around (see docs/operator.md):
- resources must be declared for API discovery (`v1/namespaces`, `v1/secrets`, `v1/events`,
  `apps/v1/deployments`, and our CRD's resource), with verbs, since nothing is installed;
- `generateName` is ignored, so only the first Event of a namespace is stored (later ones get
  409): tests read the posted Events from kmock's request log instead;
- objects get no server-side `uid`, `resourceVersion`, `generation` or `creationTimestamp`:
  tests put them in the objects they create (the operator needs the `uid` for owner references);
- no schema validation or defaulting (the CRD schema is checked separately with jsonschema),
  no garbage collection through owner references, no controllers (a Deployment's
  `status.replicas` never follows `spec.replicas`), and the scale subresource is the
  Deployment object itself.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import kmock

from oms_operator.spec import API_VERSION, KIND

T = TypeVar("T")

ORDERSYSTEMS = "oms.dev/v1alpha1/ordersystems"


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    verbs = {"get", "list", "watch", "create", "patch", "update", "delete"}
    info = kmock.ResourceInfo
    emulator.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False, verbs=verbs)
    emulator.resources["v1/events"] = info(kind="Event", namespaced=True, verbs=verbs)
    emulator.resources["v1/secrets"] = info(kind="Secret", namespaced=True, verbs=verbs)
    emulator.resources["apps/v1/deployments"] = info(
        kind="Deployment", namespaced=True, verbs=verbs, subresources={"scale", "status"}
    )
    emulator.resources[ORDERSYSTEMS] = info(
        kind=KIND,
        singular="ordersystem",
        namespaced=True,
        verbs=verbs,
        shortnames={"omsys"},
        subresources={"status"},
    )


def server_metadata(name: str, namespace: str) -> dict[str, Any]:
    """The fields a real API server fills in and kmock does not."""
    return {
        "name": name,
        "namespace": namespace,
        "uid": str(uuid.uuid4()),
        "resourceVersion": "1",
        "generation": 1,
        "creationTimestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }


class Cluster:
    """kubectl for one namespace of the emulator."""

    def __init__(self, emulator: kmock.KubernetesEmulator, namespace: str) -> None:
        self.emulator = emulator
        self.namespace = namespace

    def _path(self, group_version: str, plural: str, name: str | None = None) -> str:
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        path = f"{prefix}/namespaces/{self.namespace}/{plural}"
        return f"{path}/{name}" if name else path

    async def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any] | None:
        async with self.emulator.request(method, path, json=body) as response:
            if response.status == 404:
                return None
            assert response.status < 300, (method, path, response.status, await response.text())
            document: dict[str, Any] = await response.json()
            return document

    async def create(self, group_version: str, plural: str, body: dict[str, Any]) -> None:
        await self._json("POST", self._path(group_version, plural), body)

    async def get(self, group_version: str, plural: str, name: str) -> dict[str, Any] | None:
        return await self._json("GET", self._path(group_version, plural, name))

    async def patch(self, group_version: str, plural: str, name: str, body: dict[str, Any]) -> None:
        await self._json("PATCH", self._path(group_version, plural, name), body)

    async def delete(self, group_version: str, plural: str, name: str) -> None:
        await self._json("DELETE", self._path(group_version, plural, name))

    # --- typed shortcuts ------------------------------------------------------------------

    async def create_secret(self, name: str, values: dict[str, str]) -> None:
        data = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": server_metadata(name, self.namespace),
            "data": data,
        }
        await self.create("v1", "secrets", body)

    async def secret_data(self, name: str) -> dict[str, bytes] | None:
        secret = await self.get("v1", "secrets", name)
        if secret is None:
            return None
        return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}

    async def create_deployment(self, name: str, replicas: int) -> None:
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": server_metadata(name, self.namespace),
            "spec": {"replicas": replicas},
            "status": {"replicas": replicas},
        }
        await self.create("apps/v1", "deployments", body)

    async def replicas(self, deployment: str) -> int:
        found = await self.get("apps/v1", "deployments", deployment)
        assert found is not None
        return int(found["spec"]["replicas"])

    async def create_ordersystem(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": server_metadata(name, self.namespace),
            "spec": spec,
        }
        await self.create("oms.dev/v1alpha1", "ordersystems", body)
        return body

    async def ordersystem(self, name: str) -> dict[str, Any]:
        found = await self.get("oms.dev/v1alpha1", "ordersystems", name)
        assert found is not None
        return found

    def mark(self) -> int:
        """A point in kmock's request log, for `writes`."""
        return len(list(self.emulator))

    def writes(
        self, plural: str, name: str, since: int = 0, subresource: str | None = None
    ) -> list[kmock.Request]:
        """Object-changing requests (POST, PATCH, PUT, DELETE) to one object after `since`."""
        changing = {kmock.method.POST, kmock.method.PATCH, kmock.method.PUT, kmock.method.DELETE}
        found = []
        for request in list(self.emulator)[since:]:
            if request.method not in changing or request.resource is None:
                continue
            if request.resource.plural != plural or request.namespace != self.namespace:
                continue
            target = request.name or (request.data or {}).get("metadata", {}).get("name")
            if target == name and request.subresource == subresource:
                found.append(request)
        return found

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        """Kubernetes Events posted in the namespace, from the request log: kmock ignores
        `generateName`, so it stores only the first Event of a namespace."""
        found = []
        for request in self.emulator:
            resource = request.resource
            if request.method != kmock.method.POST or resource is None:
                continue
            if resource.plural != "events" or request.namespace != self.namespace:
                continue
            event = request.data
            if isinstance(event, dict) and reason in (None, event.get("reason")):
                found.append(event)
        return found


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout: float = 20.0, interval: float = 0.1
) -> T:
    """Poll until `probe` returns something truthy; fail with the last value on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")
