"""Kopf entry points: login, start-up and clean-up, and the OrderSystem watch.

Run with `oms-operator` (see `main.py`) or `kopf run --standalone -m oms_operator.handlers`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

import kopf

from oms.observability.probe_server import MetricsServer
from oms.observability.tracing import configure_tracing, shutdown_tracing
from oms_operator import kube, operator_metrics
from oms_operator.config import OperatorConfig
from oms_operator.kube import KubeApi
from oms_operator.reconciler import Dependencies
from oms_operator.spec import GROUP, PLURAL, VERSION
from oms_operator.supervisor import Supervisor


@kopf.on.login()
async def login(**_: Any) -> kopf.ConnectionInfo:
    """Kopf authenticates exactly like our own client: service account in a pod, else the
    kubeconfig named by `KUBECONFIG` (read when the operator starts, not at import)."""
    configuration = await kube.load_configuration()
    header = await configuration.get_api_key_with_prefix("BearerToken")
    scheme, token = None, None
    if header:
        parts = str(header).split(" ", 1)
        scheme, token = (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=str(configuration.host),
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def post_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    objects = cast(Iterable[kopf.Body], [body])
    kopf.event(objects, type=type_, reason=reason, message=message)


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    # One documented replica: no peering objects, so no extra CRDs or RBAC for them.
    settings.peering.standalone = True
    # Resources are discovered once at start-up: no cluster-wide watch on CRDs or namespaces.
    settings.scanning.disabled = True
    # Kubernetes Events for our own decisions (scaling, rotation) are posted explicitly.
    settings.posting.level = logging.WARNING
    # Kopf sets no watch timeouts by default, so a watch that stays open but silent would never
    # be replaced (nolar/kopf#204, #585, #698; dask-kubernetes sets them for the same reason).
    settings.watching.server_timeout = config.WATCH_SERVER_TIMEOUT_SECONDS
    settings.watching.client_timeout = config.WATCH_CLIENT_TIMEOUT_SECONDS
    settings.watching.connect_timeout = config.WATCH_CONNECT_TIMEOUT_SECONDS


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorConfig()
    configure_kopf(settings, config)
    configure_tracing("oms-operator")
    api = await KubeApi.connect()
    memo.kube = api
    memo.metrics_server = operator_metrics.serve(config.METRICS_HOST, config.METRICS_PORT)
    memo.supervisor = Supervisor(
        Dependencies(
            kube=api,
            emit_event=post_event,
            max_backoff=config.MAX_BACKOFF_SECONDS,
            key_resync=config.KEY_RESYNC_SECONDS,
        )
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    supervisor: Supervisor | None = memo.get("supervisor")
    if supervisor is not None:
        await supervisor.stop_all()
    api: KubeApi | None = memo.get("kube")
    if api is not None:
        await api.close()
    server: MetricsServer | None = memo.get("metrics_server")
    if server is not None:
        server.stop()
    shutdown_tracing()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def ordersystem_event(
    event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    supervisor: Supervisor = memo.supervisor
    raw = cast(dict[str, Any], event.get("object") or dict(body))
    await supervisor.observe(event.get("type"), raw)


@kopf.on.probe(id="ordersystems")
def ordersystems_probe(memo: kopf.Memo, **_: Any) -> int:
    supervisor: Supervisor | None = memo.get("supervisor")
    return 0 if supervisor is None else len(supervisor)
