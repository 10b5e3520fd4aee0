"""Starts, updates and stops one control loop per OrderSystem, driven by watch events.

The loops are plain asyncio tasks rather than Kopf daemons on purpose: Kopf puts a finalizer on
every object that has a daemon, and a finalizer blocks `kubectl delete` for as long as the
operator is down. Our loops need no clean-up in the cluster (the key Secret is garbage-collected
through its owner reference), so deleting an OrderSystem never waits for the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from oms_operator import operator_metrics
from oms_operator.reconciler import Dependencies, OrderSystemController

log = logging.getLogger("oms_operator.supervisor")

Key = tuple[str, str]


class Supervisor:
    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps
        self._controllers: dict[Key, OrderSystemController] = {}
        self._tasks: dict[Key, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._controllers)

    async def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """Apply one watch event (None is the initial listing, as Kopf reports it)."""
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        if event_type == "DELETED" or metadata.get("deletionTimestamp"):
            await self.stop(key)
            operator_metrics.forget(*key)
            return
        controller = self._controllers.get(key)
        if controller is not None and controller.uid != str(metadata.get("uid") or ""):
            await self.stop(key)  # deleted and re-created under the same name
            controller = None
        if controller is None:
            controller = OrderSystemController(body, self._deps)
            self._controllers[key] = controller
            self._tasks[key] = asyncio.create_task(
                controller.run(), name=f"ordersystem:{key[0]}/{key[1]}"
            )
            log.info("watching OrderSystem", extra={"namespace": key[0], "ordersystem": key[1]})
        else:
            controller.update(body)

    async def stop(self, key: Key) -> None:
        self._controllers.pop(key, None)
        task = self._tasks.pop(key, None)
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("stopped OrderSystem loop", extra={"namespace": key[0], "ordersystem": key[1]})

    async def stop_all(self) -> None:
        for key in list(self._tasks):
            await self.stop(key)
