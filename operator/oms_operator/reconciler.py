"""One control loop per OrderSystem: keys, then scaling, then status. All decisions are made by
the pure functions in `keys` and `scaling`, and everything reported (status, conditions, Event
text) is rendered by the pure functions in `reports`; this module only does the I/O around them,
and never lets one failing part stop the others.

A scaling poll is read (replicas, queue depth), decide (`scaling.plan_scale`), apply (the scale
request), report (metrics and Events from `reports.render_scaling`)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from oms.backoff import exponential_delay
from oms.observability.tracing import tracer as named_tracer
from oms.security.jwk import generate_private_key, private_key_to_pem
from oms_operator import keys, operator_metrics, reports
from oms_operator.conditions import Condition, merge_conditions, timestamp
from oms_operator.keys import KeyAction, KeyPolicy, KeyRing, SecretReading
from oms_operator.kube import KubeApi, KubeApiError, SecretObject, encode_data
from oms_operator.queue_depth import DepthReading, QueueUnreadableError, RabbitMQDepthReader
from oms_operator.reports import (
    Event,
    KeysOutcome,
    ScaleChange,
    ScalingInputs,
    ScalingOutcome,
    error_text,
)
from oms_operator.scaling import Recommendation, ScaleDecision, plan_scale, seed_history
from oms_operator.spec import API_VERSION, KIND, InvalidSpecError, OrderSystemSpec, parse_spec

log = logging.getLogger("oms_operator.reconciler")
tracer = named_tracer("oms_operator")

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "oms-operator"
OWNER_LABEL = "oms.dev/ordersystem"
MAX_KEY_STEPS = 4  # create/repair, prune, stage, promote: never more in one pass


class EventSink(Protocol):
    def __call__(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


def _private_pems(ring: KeyRing) -> set[bytes]:
    return {ring.current.pem} | (set() if ring.staged is None else {ring.staged.pem})


async def generate_key_pem(key_size: int) -> bytes:
    """RSA generation takes up to a second at 4096 bits: keep it off the event loop."""
    return await asyncio.to_thread(lambda: private_key_to_pem(generate_private_key(key_size)))


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Dependencies:
    kube: KubeApi
    emit_event: EventSink
    generate_key: Callable[[int], Awaitable[bytes]] = generate_key_pem
    clock: Callable[[], datetime] = wall_clock
    monotonic: Callable[[], float] = time.monotonic
    max_backoff: float = 300.0
    key_resync: float = 300.0
    reader_factory: Callable[[], RabbitMQDepthReader] = RabbitMQDepthReader


class OrderSystemController:
    def __init__(self, body: dict[str, Any], deps: Dependencies) -> None:
        metadata = body.get("metadata") or {}
        self.namespace = str(metadata["namespace"])
        self.name = str(metadata["name"])
        self.uid = str(metadata.get("uid") or "")
        self._deps = deps
        self._body = copy.deepcopy(body)
        self._wakeup = asyncio.Event()
        self._poll_now = True
        self._next_poll_at = 0.0
        self._failures = 0
        self._crashes = 0
        self._history: tuple[Recommendation, ...] | None = None
        self._reader = deps.reader_factory()
        self._reader_url: str | None = None
        self._secret_cache: tuple[str, SecretReading] | None = None
        # Keys generated for a Secret that could not be written yet, reused by the next pass: a
        # write failing at every retry must not cost a new RSA key (~1 CPU-second at 4096 bits)
        # each time, and a key never published is as good as a new one.
        self._unwritten_keys: list[tuple[int, bytes]] = []
        self._scaling: ScalingOutcome | None = None
        # Kept across operator restarts: the status is the only memory of the last scale.
        self._last_scale_time: str | None = (body.get("status") or {}).get("lastScaleTime")
        self._published: dict[str, Any] | None = None
        self._conditions: list[dict[str, Any]] = list(
            (body.get("status") or {}).get("conditions") or []
        )
        self._invalid_spec_reported: str | None = None

    # --- inputs ---------------------------------------------------------------------------

    def update(self, body: dict[str, Any]) -> None:
        """A newer version of the object; a spec change is acted on at once."""
        if (body.get("spec") or {}) != (self._body.get("spec") or {}):
            self._poll_now = True
            self._wakeup.set()
        self._body = copy.deepcopy(body)

    def wake(self) -> None:
        self._wakeup.set()

    @property
    def reference(self) -> dict[str, Any]:
        """What Kubernetes Events point at."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }

    def _labels(self) -> dict[str, str]:
        return {"namespace": self.namespace, "ordersystem": self.name}

    def _post(self, event: Event) -> None:
        self._deps.emit_event(self.reference, event.type, event.reason, event.message)

    # --- loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                self._wakeup.clear()
                try:
                    delay = await self.reconcile_once()
                    self._crashes = 0
                except Exception:
                    # A bug or an unexpected answer must not end the loop for good: log it,
                    # count it, and try again later with a growing delay.
                    self._crashes += 1
                    operator_metrics.RECONCILE_ERRORS.labels(
                        **self._labels(), stage="unexpected"
                    ).inc()
                    log.exception(
                        "reconcile failed",
                        extra={"namespace": self.namespace, "ordersystem": self.name},
                    )
                    delay = exponential_delay(self._crashes + 1, 5.0, self._deps.max_backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), max(delay, 0.05))
        finally:
            await self._reader.close()

    async def reconcile_once(self) -> float:
        """One pass; returns the seconds until the next one is needed."""
        with tracer.start_as_current_span(
            "ordersystem.reconcile",
            attributes={"k8s.namespace.name": self.namespace, "oms.ordersystem": self.name},
        ):
            try:
                spec = parse_spec(self._body.get("spec") or {})
            except InvalidSpecError as error:
                await self._report_invalid_spec(str(error))
                return self._deps.key_resync
            self._invalid_spec_reported = None
            key_outcome = await self._reconcile_keys(spec)
            mono = self._deps.monotonic()
            if self._poll_now or mono >= self._next_poll_at or self._scaling is None:
                self._poll_now = False
                self._scaling = await self._reconcile_scaling(spec)
                interval = spec.workers.polling_interval_seconds
                # The interval while healthy, doubling per consecutive failure (capped).
                self._next_poll_at = mono + exponential_delay(
                    self._failures + 1, interval, self._deps.max_backoff
                )
            await self._publish(spec, key_outcome, self._scaling)
            until_poll = self._next_poll_at - self._deps.monotonic()
            return min(until_poll, key_outcome.next_check_in, self._deps.key_resync)

    # --- keys -----------------------------------------------------------------------------

    async def _read_keys(self, secret: SecretObject, policy: KeyPolicy) -> SecretReading:
        annotation = secret.annotations.get(keys.LIFECYCLE_ANNOTATION, "")
        digest = keys.data_digest({**secret.data, "\0annotation": annotation.encode()})
        if self._secret_cache is not None and self._secret_cache[0] == digest:
            return self._secret_cache[1]
        reading = await asyncio.to_thread(
            keys.read_secret, secret.data, secret.annotations, policy, self._deps.clock()
        )
        self._secret_cache = (digest, reading)
        return reading

    async def _reconcile_keys(self, spec: OrderSystemSpec) -> KeysOutcome:
        policy = spec.jwt.policy()
        secret_name = spec.jwt.secret_name
        now = self._deps.clock()
        try:
            secret = await self._deps.kube.read_secret(self.namespace, secret_name)
            owned_elsewhere = (
                secret is not None
                and bool(self.uid)
                and bool(secret.owner_uids)
                and self.uid not in secret.owner_uids
            )
            if owned_elsewhere:
                message = f"Secret {secret_name} is owned by another object; not touching it"
                return reports.keys_failed("SecretOwnedElsewhere", message)
            reading = None if secret is None else await self._read_keys(secret, policy)
            ring, actions = await self._advance_keys(reading, policy, now)
            if actions or (secret is not None and self.uid not in secret.owner_uids):
                await self._write_secret(secret_name, secret, ring)
                self._unwritten_keys = []
                for action, reason in actions:
                    self._announce_key_action(action, reason, ring, secret_name)
        except KubeApiError as error:
            operator_metrics.RECONCILE_ERRORS.labels(**self._labels(), stage="keys").inc()
            log.warning(
                "key reconcile failed",
                extra={"namespace": self.namespace, "ordersystem": self.name, "error": str(error)},
            )
            return reports.keys_failed("KubernetesApiError", error_text(error), next_check_in=10.0)

        plan = keys.plan_keys(SecretReading(ring), policy, now)
        due = ring.rotation_due_at(policy) + policy.propagation_delay
        if ring.staged is not None:
            due = ring.staged.published_at + policy.propagation_delay
        operator_metrics.KEY_ROTATION_DUE.labels(**self._labels()).set(due.timestamp())
        operator_metrics.KEY_ACTIVE_SINCE.labels(**self._labels()).set(
            ring.current.active_since.timestamp()
        )
        next_check_in = self._deps.key_resync
        if plan.next_check_at is not None:
            next_check_in = max((plan.next_check_at - now).total_seconds(), 0.05)
        return reports.keys_ready(ring, secret_name, due, next_check_in)

    async def _advance_keys(
        self, reading: SecretReading | None, policy: KeyPolicy, now: datetime
    ) -> tuple[KeyRing, list[tuple[KeyAction, str]]]:
        """Apply key plans until nothing is due (a zero propagation delay stages and promotes in
        one pass); the Secret is then written once."""
        actions: list[tuple[KeyAction, str]] = []
        state = reading
        in_secret = (
            set() if reading is None or reading.ring is None else _private_pems(reading.ring)
        )
        spares = [
            pem
            for size, pem in self._unwritten_keys
            if size == policy.key_size and pem not in in_secret
        ]
        used: list[tuple[int, bytes]] = []

        async def new_key() -> bytes:
            pem = spares.pop(0) if spares else await self._deps.generate_key(policy.key_size)
            used.append((policy.key_size, pem))
            return pem

        for _ in range(MAX_KEY_STEPS):
            plan = keys.plan_keys(state, policy, now)
            if plan.action is KeyAction.NONE:
                break
            ring = state.ring if state is not None else None
            if plan.action in (KeyAction.CREATE, KeyAction.REPAIR) or ring is None:
                salvaged = state.salvaged if state is not None else ()
                pem = await new_key()
                ring = await asyncio.to_thread(
                    keys.new_ring, pem, policy.key_size, now, policy, salvaged
                )
            elif plan.action is KeyAction.STAGE:
                pem = await new_key()
                ring = await asyncio.to_thread(keys.stage, ring, pem, policy.key_size, now)
            elif plan.action is KeyAction.PROMOTE:
                ring = keys.promote(ring, now, policy)
            elif plan.action is KeyAction.PRUNE:
                ring = keys.prune(ring, now)
            actions.append((plan.action, plan.reason))
            state = SecretReading(ring)
        if state is None or state.ring is None:
            raise RuntimeError("key plan left no usable key ring")  # plan_keys never does this
        self._unwritten_keys = used
        return state.ring, actions

    async def _write_secret(self, name: str, existing: SecretObject | None, ring: KeyRing) -> None:
        data = keys.render_secret_data(ring)
        metadata: dict[str, Any] = {
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, OWNER_LABEL: self.name},
            "annotations": {keys.LIFECYCLE_ANNOTATION: keys.render_lifecycle(ring)},
        }
        if self.uid:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": self.name,
                    "uid": self.uid,
                    "controller": True,
                }
            ]
        if existing is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": name, "namespace": self.namespace, **metadata},
                "data": encode_data(data),
            }
            await self._deps.kube.create_secret(self.namespace, body)
        else:
            patch_data: dict[str, Any] = dict(encode_data(data))
            if keys.NEXT_PRIVATE_KEY in existing.data and keys.NEXT_PRIVATE_KEY not in data:
                patch_data[keys.NEXT_PRIVATE_KEY] = None
            if existing.resource_version:
                # Optimistic concurrency: a concurrent writer makes this a 409, retried next pass.
                metadata["resourceVersion"] = existing.resource_version
            await self._deps.kube.patch_secret(
                self.namespace, name, {"metadata": metadata, "data": patch_data}
            )
        annotation = metadata["annotations"][keys.LIFECYCLE_ANNOTATION]
        digest = keys.data_digest({**data, "\0annotation": annotation.encode()})
        self._secret_cache = (digest, SecretReading(ring))

    def _announce_key_action(
        self, action: KeyAction, reason: str, ring: KeyRing, secret_name: str
    ) -> None:
        operator_metrics.KEY_ROTATIONS.labels(**self._labels(), action=action.value.lower()).inc()
        event = reports.key_event(action, reason, ring, secret_name)
        self._post(event)
        log.info(
            event.message,
            extra={"namespace": self.namespace, "ordersystem": self.name, "kid": ring.current.kid},
        )

    # --- scaling: read, decide, apply, report ------------------------------------------------

    async def _reconcile_scaling(self, spec: OrderSystemSpec) -> ScalingOutcome:
        policy = spec.workers.policy()
        operator_metrics.MAX_REPLICAS.labels(**self._labels()).set(policy.max_replicas)
        inputs = await self._read_scaling_inputs(spec)
        if isinstance(inputs, ScalingOutcome):  # no Deployment to decide for
            self._failures += 1
            return inputs
        self._failures = 0 if inputs.unreadable is None else self._failures + 1
        self._report_poll(inputs)
        if self._history is None:
            self._history = seed_history(policy, inputs.replicas, inputs.at)
        decision = plan_scale(
            policy, inputs.replicas, inputs.depth, self._history, inputs.at, self._failures
        )
        self._history = decision.history
        current = await self._apply_scale(spec, inputs, decision)
        if isinstance(current, ScalingOutcome):  # the scale request failed
            return current
        report = reports.render_scaling(
            policy,
            spec.workers.queues,
            inputs,
            decision,
            current,
            self._last_scale_time,
            self._failures,
        )
        self._report_scaling(inputs, decision, current, report.events)
        return report.outcome

    async def _read_scaling_inputs(self, spec: OrderSystemSpec) -> ScalingInputs | ScalingOutcome:
        """Read: the worker replicas, then the queue depth (or why it cannot be read)."""
        deployment = spec.workers.deployment_name
        try:
            replicas = await self._deps.kube.read_replicas(self.namespace, deployment)
        except KubeApiError as error:
            operator_metrics.RECONCILE_ERRORS.labels(**self._labels(), stage="scaling").inc()
            return reports.scaling_inactive("KubernetesApiError", error_text(error))
        if replicas is None:
            message = f"Deployment {deployment} not found"
            return reports.scaling_inactive("DeploymentNotFound", message)
        at = self._deps.monotonic()
        try:
            reading = await self._read_depth(spec)
        except KubeApiError as error:
            unreadable = QueueUnreadableError("KubernetesApiError", error_text(error))
            return ScalingInputs(replicas.desired, at, unreadable=unreadable)
        except QueueUnreadableError as error:
            return ScalingInputs(replicas.desired, at, unreadable=error)
        return ScalingInputs(replicas.desired, at, reading)

    async def _rabbitmq_urls(self, spec: OrderSystemSpec) -> tuple[str, str | None]:
        ref = spec.rabbitmq.url_secret_ref
        secret = await self._deps.kube.read_secret(self.namespace, ref.name)
        if secret is None or not secret.data.get(ref.key):
            raise QueueUnreadableError(
                "RabbitMQSecretMissing", f"Secret {ref.name} has no key {ref.key}"
            )
        amqp_url = secret.data[ref.key].decode().strip()
        management_url = None
        management_ref = spec.rabbitmq.management_url_secret_ref
        if management_ref is not None:
            management = await self._deps.kube.read_secret(self.namespace, management_ref.name)
            if management is None or not management.data.get(management_ref.key):
                raise QueueUnreadableError(
                    "RabbitMQSecretMissing",
                    f"Secret {management_ref.name} has no key {management_ref.key}",
                )
            management_url = management.data[management_ref.key].decode().strip()
        return amqp_url, management_url

    async def _read_depth(self, spec: OrderSystemSpec) -> DepthReading:
        with tracer.start_as_current_span(
            "ordersystem.poll_queue",
            attributes={
                "k8s.namespace.name": self.namespace,
                "oms.ordersystem": self.name,
                "messaging.system": "rabbitmq",
                "messaging.destination.name": ",".join(spec.workers.queues),
            },
        ) as span:
            amqp_url, management_url = await self._rabbitmq_urls(spec)
            if self._reader_url not in (None, amqp_url):
                await self._reader.close()  # the URL changed: do not keep the old connection
                self._reader = self._deps.reader_factory()
            self._reader_url = amqp_url
            reading = await self._reader.read(amqp_url, spec.workers.queues, management_url)
            span.set_attribute("oms.queue_depth", reading.total)
            return reading

    async def _apply_scale(
        self, spec: OrderSystemSpec, inputs: ScalingInputs, decision: ScaleDecision
    ) -> int | ScalingOutcome:
        """Apply: the replicas after this poll, or what to report when the scale failed."""
        if not decision.changes(inputs.replicas):
            return inputs.replicas
        deployment = spec.workers.deployment_name
        try:
            await self._deps.kube.scale(self.namespace, deployment, decision.desired)
        except KubeApiError as error:
            operator_metrics.RECONCILE_ERRORS.labels(**self._labels(), stage="scaling").inc()
            return reports.scaling_inactive("ScaleFailed", error_text(error))
        self._announce_scale(
            ScaleChange(inputs.replicas, decision.desired, decision.reason, inputs.depth)
        )
        return decision.desired

    def _announce_scale(self, change: ScaleChange) -> None:
        operator_metrics.SCALE_EVENTS.labels(**self._labels(), direction=change.direction).inc()
        self._last_scale_time = timestamp(self._deps.clock())
        event = reports.scale_event(change)
        self._post(event)
        log.info(
            event.message,
            extra={"namespace": self.namespace, "ordersystem": self.name, "replicas": change.after},
        )

    def _report_poll(self, inputs: ScalingInputs) -> None:
        labels = self._labels()
        if inputs.unreadable is not None:
            operator_metrics.RECONCILE_ERRORS.labels(**labels, stage="poll").inc()
            operator_metrics.QUEUE_READABLE.labels(**labels).set(0)
        else:
            operator_metrics.QUEUE_READABLE.labels(**labels).set(1)
            operator_metrics.LAST_SUCCESSFUL_POLL.labels(**labels).set(time.time())

    def _report_scaling(
        self,
        inputs: ScalingInputs,
        decision: ScaleDecision,
        current: int,
        events: tuple[Event, ...],
    ) -> None:
        labels = self._labels()
        operator_metrics.DESIRED_REPLICAS.labels(**labels).set(decision.desired)
        operator_metrics.CURRENT_REPLICAS.labels(**labels).set(current)
        if decision.required is not None:
            operator_metrics.REQUIRED_REPLICAS.labels(**labels).set(decision.required)
        for queue in inputs.reading.queues if inputs.reading is not None else ():
            depth = operator_metrics.QUEUE_DEPTH.labels(**labels, queue=queue.queue, state="ready")
            depth.set(queue.ready)
            if queue.unacked is not None:
                unacked = operator_metrics.QUEUE_DEPTH.labels(
                    **labels, queue=queue.queue, state="unacked"
                )
                unacked.set(queue.unacked)
        for event in events:
            self._post(event)

    # --- status ---------------------------------------------------------------------------

    async def _publish(
        self, spec: OrderSystemSpec, key_outcome: KeysOutcome, scaling: ScalingOutcome
    ) -> None:
        generation = (self._body.get("metadata") or {}).get("generation")
        status, conditions = reports.render_status(
            key_outcome, scaling, spec.workers.paused, generation
        )
        await self._patch_status(status, conditions)

    async def _report_invalid_spec(self, message: str) -> None:
        if self._invalid_spec_reported != message:
            self._post(Event("Warning", "InvalidSpec", message[:1000]))
            self._invalid_spec_reported = message
        operator_metrics.RECONCILE_ERRORS.labels(**self._labels(), stage="spec").inc()
        await self._patch_status({}, reports.invalid_spec_conditions(message))

    async def _patch_status(self, status: dict[str, Any], conditions: list[Condition]) -> None:
        merged = merge_conditions(self._conditions, conditions, self._deps.clock())
        document = {**status, "conditions": merged}
        if document == self._published:
            return
        try:
            await self._deps.kube.patch_status(self.namespace, self.name, document)
        except KubeApiError as error:
            operator_metrics.RECONCILE_ERRORS.labels(**self._labels(), stage="status").inc()
            log.warning(
                "status update failed",
                extra={"namespace": self.namespace, "ordersystem": self.name, "error": str(error)},
            )
            return
        self._conditions = merged
        self._published = document
