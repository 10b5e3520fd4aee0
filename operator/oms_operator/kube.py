"""The few Kubernetes API calls the operator makes besides Kopf's watching, via kubernetes_asyncio.

Responses are read as plain JSON (not the generated models): the operator only needs a handful of
fields, and the scale subresource, Secrets and our custom resource all decode the same way.
Every patch is a JSON merge patch, the one type custom resources and their status accept.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config import ConfigException

from oms_operator.spec import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"


class KubeApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API answered {status}: {message}")
        self.status = status

    @property
    def conflict(self) -> bool:
        return self.status == 409


@dataclass(frozen=True, slots=True)
class SecretObject:
    name: str
    data: dict[str, bytes]
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    resource_version: str | None = None
    owner_uids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Replicas:
    desired: int  # spec.replicas of the scale subresource
    observed: int | None  # status.replicas, when the controller has reported it


async def load_configuration() -> client.Configuration:
    """In-cluster service account first, then the kubeconfig (`KUBECONFIG` read at call time)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        await config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    return configuration


def decode_secret(document: dict[str, Any]) -> SecretObject:
    metadata = document.get("metadata") or {}
    raw = document.get("data") or {}
    data = {key: base64.b64decode(value) for key, value in raw.items() if isinstance(value, str)}
    for key, value in (document.get("stringData") or {}).items():
        data[key] = str(value).encode()
    return SecretObject(
        name=str(metadata.get("name", "")),
        data=data,
        annotations=dict(metadata.get("annotations") or {}),
        labels=dict(metadata.get("labels") or {}),
        resource_version=metadata.get("resourceVersion"),
        owner_uids=tuple(str(ref.get("uid")) for ref in metadata.get("ownerReferences") or []),
    )


def encode_data(data: dict[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in data.items()}


class KubeApi:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._client = api_client
        self._core: Any = client.CoreV1Api(api_client)
        self._apps: Any = client.AppsV1Api(api_client)
        self._custom: Any = client.CustomObjectsApi(api_client)

    @classmethod
    async def connect(cls) -> KubeApi:
        return cls(client.ApiClient(await load_configuration()))

    async def close(self) -> None:
        await self._client.close()

    async def _call(
        self, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> dict[str, Any] | None:
        """Run one API call; the decoded body, or None on 404."""
        try:
            response = await method(*args, _preload_content=False, **kwargs)
        except aiohttp.ClientError as error:
            raise KubeApiError(0, f"{type(error).__name__}: {error}") from error
        try:
            body = await response.read()
            if response.status == 404:
                return None
            if not 200 <= response.status < 300:
                raise KubeApiError(response.status, body.decode(errors="replace")[:500])
            decoded = json.loads(body) if body else {}
            return decoded if isinstance(decoded, dict) else {}
        finally:
            response.release()

    async def read_secret(self, namespace: str, name: str) -> SecretObject | None:
        document = await self._call(self._core.read_namespaced_secret, name, namespace)
        return None if document is None else decode_secret(document)

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> None:
        await self._call(self._core.create_namespaced_secret, namespace, body)

    async def patch_secret(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        if (
            await self._call(
                self._core.patch_namespaced_secret, name, namespace, body, _content_type=MERGE_PATCH
            )
            is None
        ):
            raise KubeApiError(404, f"secret {namespace}/{name} vanished during the update")

    async def read_replicas(self, namespace: str, deployment: str) -> Replicas | None:
        document = await self._call(
            self._apps.read_namespaced_deployment_scale, deployment, namespace
        )
        if document is None:
            return None
        spec = document.get("spec") or {}
        status = document.get("status") or {}
        observed = status.get("replicas")
        return Replicas(int(spec.get("replicas") or 0), None if observed is None else int(observed))

    async def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        found = await self._call(
            self._apps.patch_namespaced_deployment_scale,
            deployment,
            namespace,
            {"spec": {"replicas": replicas}},
            _content_type=MERGE_PATCH,
        )
        if found is None:
            raise KubeApiError(404, f"deployment {namespace}/{deployment} not found")

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._call(
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )
