"""One control loop per OrderSystem: keys, then scaling, then status. All decisions are made by
the pure functions in `keys`, `scaling` and `conditions`; this module only does the I/O around
them, and never lets one failing part stop the others."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from oms.backoff import exponential_delay
from oms.security.jwk import generate_private_key, private_key_to_pem
from oms.telemetry import tracer as named_tracer
from oms_operator import metrics
from oms_operator.conditions import (
    KEYS_READY,
    SCALING_ACTIVE,
    Condition,
    merge_conditions,
    summarize,
    timestamp,
)
from oms_operator.keys import (
    LIFECYCLE_ANNOTATION,
    NEXT_PRIVATE_KEY,
    KeyAction,
    KeyPolicy,
    KeyRing,
    SecretReading,
    data_digest,
    new_ring,
    plan_keys,
    promote,
    prune,
    read_secret,
    render_lifecycle,
    render_secret_data,
    stage,
)
from oms_operator.kube import KubeApi, KubeApiError, SecretObject, encode_data
from oms_operator.queues import DepthReading, QueueUnreadableError, RabbitMQDepthReader
from oms_operator.scaling import (
    Recommendation,
    ScaleReason,
    ScalingPolicy,
    plan_scale,
    seed_history,
)
from oms_operator.spec import API_VERSION, KIND, InvalidSpecError, OrderSystemSpec, parse_spec

log = logging.getLogger("oms_operator.reconciler")
tracer = named_tracer("oms_operator")

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "oms-operator"
OWNER_LABEL = "oms.dev/ordersystem"
MAX_KEY_STEPS = 4  # create/repair, prune, stage, promote: never more in one pass


class EventSink(Protocol):
    def __call__(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


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


def key_policy(spec: OrderSystemSpec) -> KeyPolicy:
    jwt = spec.jwt
    return KeyPolicy(
        key_size=jwt.key_size,
        rotation_interval=timedelta(seconds=jwt.rotation_interval_seconds),
        propagation_delay=timedelta(seconds=jwt.propagation_delay_seconds),
        retention=timedelta(seconds=jwt.retired_key_retention_seconds),
    )


def scaling_policy(spec: OrderSystemSpec) -> ScalingPolicy:
    workers = spec.workers
    return ScalingPolicy(
        min_replicas=workers.min_replicas,
        max_replicas=workers.max_replicas,
        messages_per_replica=workers.messages_per_replica,
        activation_threshold=workers.activation_threshold,
        scale_down_window=workers.scale_down_stabilization_seconds,
        fallback_replicas=workers.fallback_replicas,
        fallback_after_failures=workers.fallback_after_failures,
        paused=workers.paused,
    )


@dataclass
class KeysOutcome:
    condition: Condition
    status: dict[str, Any] = field(default_factory=dict)
    next_check_in: float = 300.0
    problem: Condition | None = None


@dataclass
class ScalingOutcome:
    condition: Condition
    status: dict[str, Any] = field(default_factory=dict)
    problems: list[Condition] = field(default_factory=list)


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

    def _event(self, type_: str, reason: str, message: str) -> None:
        self._deps.emit_event(self.reference, type_, reason, message)

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
                    metrics.RECONCILE_ERRORS.labels(**self._labels(), stage="unexpected").inc()
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
            keys = await self._reconcile_keys(spec)
            mono = self._deps.monotonic()
            if self._poll_now or mono >= self._next_poll_at or self._scaling is None:
                self._poll_now = False
                self._scaling = await self._reconcile_scaling(spec)
                interval = spec.workers.polling_interval_seconds
                # The interval while healthy, doubling per consecutive failure (capped).
                self._next_poll_at = mono + exponential_delay(
                    self._failures + 1, interval, self._deps.max_backoff
                )
            await self._publish(spec, keys, self._scaling)
            until_poll = self._next_poll_at - self._deps.monotonic()
            return min(until_poll, keys.next_check_in, self._deps.key_resync)

    # --- keys -----------------------------------------------------------------------------

    async def _read_keys(self, secret: SecretObject, policy: KeyPolicy) -> SecretReading:
        annotation = secret.annotations.get(LIFECYCLE_ANNOTATION, "")
        digest = data_digest({**secret.data, "\0annotation": annotation.encode()})
        if self._secret_cache is not None and self._secret_cache[0] == digest:
            return self._secret_cache[1]
        reading = await asyncio.to_thread(
            read_secret, secret.data, secret.annotations, policy, self._deps.clock()
        )
        self._secret_cache = (digest, reading)
        return reading

    async def _reconcile_keys(self, spec: OrderSystemSpec) -> KeysOutcome:
        policy = key_policy(spec)
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
                condition = Condition(KEYS_READY, False, "SecretOwnedElsewhere", message)
                return KeysOutcome(condition, problem=condition)
            reading = None if secret is None else await self._read_keys(secret, policy)
            ring, actions = await self._advance_keys(reading, policy, now)
            if actions or (secret is not None and self.uid not in secret.owner_uids):
                await self._write_secret(secret_name, secret, ring)
                for action, reason in actions:
                    self._announce_key_action(action, reason, ring, secret_name)
        except KubeApiError as error:
            metrics.RECONCILE_ERRORS.labels(**self._labels(), stage="keys").inc()
            log.warning(
                "key reconcile failed",
                extra={"namespace": self.namespace, "ordersystem": self.name, "error": str(error)},
            )
            condition = Condition(KEYS_READY, False, "KubernetesApiError", str(error)[:300])
            return KeysOutcome(condition, next_check_in=10.0, problem=condition)

        plan = plan_keys(SecretReading(ring), policy, now)
        due = ring.rotation_due_at(policy) + policy.propagation_delay
        if ring.staged is not None:
            due = ring.staged.published_at + policy.propagation_delay
        metrics.KEY_ROTATION_DUE.labels(**self._labels()).set(due.timestamp())
        metrics.KEY_ACTIVE_SINCE.labels(**self._labels()).set(ring.current.active_since.timestamp())
        next_check_in = self._deps.key_resync
        if plan.next_check_at is not None:
            next_check_in = max((plan.next_check_at - now).total_seconds(), 0.05)
        published = len(ring.published_kids())
        message = (
            f"Signing with key {ring.current.kid}; {published} key(s) published; "
            f"next key signs from {timestamp(due)}"
        )
        return KeysOutcome(
            Condition(KEYS_READY, True, "KeysProvisioned", message),
            {
                "keySecret": secret_name,
                "keyId": ring.current.kid,
                "lastRotation": timestamp(ring.current.active_since),
                "nextRotation": timestamp(due),
                "publishedKeyIds": ring.published_kids(),
            },
            next_check_in,
        )

    async def _advance_keys(
        self, reading: SecretReading | None, policy: KeyPolicy, now: datetime
    ) -> tuple[KeyRing, list[tuple[KeyAction, str]]]:
        """Apply key plans until nothing is due (a zero propagation delay stages and promotes in
        one pass); the Secret is then written once."""
        actions: list[tuple[KeyAction, str]] = []
        state = reading
        for _ in range(MAX_KEY_STEPS):
            plan = plan_keys(state, policy, now)
            if plan.action is KeyAction.NONE:
                break
            ring = state.ring if state is not None else None
            if plan.action in (KeyAction.CREATE, KeyAction.REPAIR) or ring is None:
                salvaged = state.salvaged if state is not None else ()
                pem = await self._deps.generate_key(policy.key_size)
                ring = await asyncio.to_thread(
                    new_ring, pem, policy.key_size, now, policy, salvaged
                )
            elif plan.action is KeyAction.STAGE:
                pem = await self._deps.generate_key(policy.key_size)
                ring = await asyncio.to_thread(stage, ring, pem, policy.key_size, now)
            elif plan.action is KeyAction.PROMOTE:
                ring = promote(ring, now, policy)
            elif plan.action is KeyAction.PRUNE:
                ring = prune(ring, now)
            actions.append((plan.action, plan.reason))
            state = SecretReading(ring)
        if state is None or state.ring is None:
            raise RuntimeError("key plan left no usable key ring")  # plan_keys never does this
        return state.ring, actions

    async def _write_secret(self, name: str, existing: SecretObject | None, ring: KeyRing) -> None:
        data = render_secret_data(ring)
        metadata: dict[str, Any] = {
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, OWNER_LABEL: self.name},
            "annotations": {LIFECYCLE_ANNOTATION: render_lifecycle(ring)},
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
            if NEXT_PRIVATE_KEY in existing.data and NEXT_PRIVATE_KEY not in data:
                patch_data[NEXT_PRIVATE_KEY] = None
            if existing.resource_version:
                # Optimistic concurrency: a concurrent writer makes this a 409, retried next pass.
                metadata["resourceVersion"] = existing.resource_version
            await self._deps.kube.patch_secret(
                self.namespace, name, {"metadata": metadata, "data": patch_data}
            )
        annotation = metadata["annotations"][LIFECYCLE_ANNOTATION]
        digest = data_digest({**data, "\0annotation": annotation.encode()})
        self._secret_cache = (digest, SecretReading(ring))

    def _announce_key_action(
        self, action: KeyAction, reason: str, ring: KeyRing, secret_name: str
    ) -> None:
        metrics.KEY_ROTATIONS.labels(**self._labels(), action=action.value.lower()).inc()
        messages = {
            KeyAction.CREATE: f"Created signing key {ring.current.kid} in Secret {secret_name}",
            KeyAction.REPAIR: f"Secret {secret_name} was unusable; new signing key "
            f"{ring.current.kid}",
            KeyAction.STAGE: f"Published the next key ahead of rotation ({reason})",
            KeyAction.PROMOTE: f"Rotated: key {ring.current.kid} signs now; the previous key "
            "stays published until its tokens expire",
            KeyAction.PRUNE: "Removed expired retired keys from the JWKS",
        }
        reasons = {
            KeyAction.CREATE: "KeyCreated",
            KeyAction.REPAIR: "KeyRepaired",
            KeyAction.STAGE: "KeyStaged",
            KeyAction.PROMOTE: "KeyRotated",
            KeyAction.PRUNE: "RetiredKeysPruned",
        }
        event_type = "Warning" if action is KeyAction.REPAIR else "Normal"
        self._event(event_type, reasons[action], messages[action])
        log.info(
            messages[action],
            extra={"namespace": self.namespace, "ordersystem": self.name, "kid": ring.current.kid},
        )

    # --- scaling --------------------------------------------------------------------------

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

    async def _reconcile_scaling(self, spec: OrderSystemSpec) -> ScalingOutcome:
        policy = scaling_policy(spec)
        workers = spec.workers
        labels = self._labels()
        metrics.MAX_REPLICAS.labels(**labels).set(policy.max_replicas)
        try:
            replicas = await self._deps.kube.read_replicas(self.namespace, workers.deployment_name)
        except KubeApiError as error:
            self._failures += 1
            metrics.RECONCILE_ERRORS.labels(**labels, stage="scaling").inc()
            condition = Condition(SCALING_ACTIVE, False, "KubernetesApiError", str(error)[:300])
            return ScalingOutcome(condition, problems=[condition])
        if replicas is None:
            self._failures += 1
            message = f"Deployment {workers.deployment_name} not found"
            condition = Condition(SCALING_ACTIVE, False, "DeploymentNotFound", message)
            return ScalingOutcome(condition, problems=[condition])
        now = self._deps.monotonic()
        if self._history is None:
            self._history = seed_history(policy, replicas.desired, now)

        problems: list[Condition] = []
        reading: DepthReading | None = None
        unreadable: QueueUnreadableError | None = None
        try:
            reading = await self._read_depth(spec)
        except KubeApiError as error:
            unreadable = QueueUnreadableError("KubernetesApiError", str(error)[:300])
        except QueueUnreadableError as error:
            unreadable = error
        if unreadable is not None:
            self._failures += 1
            metrics.RECONCILE_ERRORS.labels(**labels, stage="poll").inc()
            metrics.QUEUE_READABLE.labels(**labels).set(0)
        else:
            self._failures = 0
            metrics.QUEUE_READABLE.labels(**labels).set(1)
            metrics.LAST_SUCCESSFUL_POLL.labels(**labels).set(time.time())

        depth = None if reading is None else reading.total
        decision = plan_scale(policy, replicas.desired, depth, self._history, now, self._failures)
        self._history = decision.history
        current = replicas.desired
        if decision.changes(current):
            try:
                await self._deps.kube.scale(
                    self.namespace, workers.deployment_name, decision.desired
                )
            except KubeApiError as error:
                metrics.RECONCILE_ERRORS.labels(**labels, stage="scaling").inc()
                condition = Condition(SCALING_ACTIVE, False, "ScaleFailed", str(error)[:300])
                return ScalingOutcome(condition, problems=[condition])
            self._announce_scale(current, decision.desired, decision.reason, depth)
            current = decision.desired
        metrics.DESIRED_REPLICAS.labels(**labels).set(decision.desired)
        metrics.CURRENT_REPLICAS.labels(**labels).set(current)
        if decision.required is not None:
            metrics.REQUIRED_REPLICAS.labels(**labels).set(decision.required)

        status: dict[str, Any] = {
            "desiredReplicas": decision.desired,
            "currentReplicas": current,
            "lastScaleTime": self._last_scale_time,
        }
        if reading is not None:
            for queue in reading.queues:
                metrics.QUEUE_DEPTH.labels(**labels, queue=queue.queue, state="ready").set(
                    queue.ready
                )
                if queue.unacked is not None:
                    metrics.QUEUE_DEPTH.labels(**labels, queue=queue.queue, state="unacked").set(
                        queue.unacked
                    )
            status["queueDepth"] = reading.total
            status["queues"] = [
                {"name": queue.queue, "ready": queue.ready, "unacked": queue.unacked}
                for queue in reading.queues
            ]
            if reading.management_error is not None:
                problems.append(
                    Condition(
                        "Degraded",
                        True,
                        "UnackedUnknown",
                        "Counting ready messages only; " + reading.management_error,
                    )
                )

        if unreadable is not None:
            kept = (
                f"fallback to {decision.desired} replicas"
                if decision.reason is ScaleReason.FALLBACK
                else f"keeping {decision.desired} replicas"
            )
            message = f"{unreadable.message}; {kept} (failure {self._failures})"
            condition = Condition(SCALING_ACTIVE, False, unreadable.reason, message)
            problems.insert(0, condition)
            if self._failures == 1:
                self._event("Warning", unreadable.reason, message)
        elif policy.paused:
            condition = Condition(
                SCALING_ACTIVE,
                False,
                "Paused",
                f"spec.workers.paused is true; replicas stay at {current}",
            )
        else:
            condition = Condition(
                SCALING_ACTIVE,
                True,
                decision.reason.value,
                f"{depth} message(s) in {', '.join(workers.queues)}; desired {decision.desired} "
                f"replica(s) within [{policy.min_replicas}, {policy.max_replicas}]",
            )
        return ScalingOutcome(condition, status, problems)

    def _announce_scale(
        self, before: int, after: int, reason: ScaleReason, depth: int | None
    ) -> None:
        direction = "up" if after > before else "down"
        if reason is ScaleReason.FALLBACK:
            direction = "fallback"
        metrics.SCALE_EVENTS.labels(**self._labels(), direction=direction).inc()
        self._last_scale_time = timestamp(self._deps.clock())
        seen = "queue unreadable" if depth is None else f"{depth} message(s) queued"
        message = f"Scaled workers from {before} to {after} ({seen})"
        event_reason = {"up": "ScaledUp", "down": "ScaledDown", "fallback": "ScaledToFallback"}
        event_type = "Warning" if direction == "fallback" else "Normal"
        self._event(event_type, event_reason[direction], message)
        log.info(
            message,
            extra={"namespace": self.namespace, "ordersystem": self.name, "replicas": after},
        )

    # --- status ---------------------------------------------------------------------------

    async def _publish(
        self, spec: OrderSystemSpec, keys: KeysOutcome, scaling: ScalingOutcome
    ) -> None:
        problems = [*([keys.problem] if keys.problem else []), *scaling.problems]
        conditions = summarize(keys.condition, scaling.condition, problems)
        status: dict[str, Any] = {**keys.status, **scaling.status}
        status["paused"] = spec.workers.paused
        generation = (self._body.get("metadata") or {}).get("generation")
        if generation is not None:
            status["observedGeneration"] = generation
        await self._patch_status(status, conditions)

    async def _report_invalid_spec(self, message: str) -> None:
        if self._invalid_spec_reported != message:
            self._event("Warning", "InvalidSpec", message[:1000])
            self._invalid_spec_reported = message
        metrics.RECONCILE_ERRORS.labels(**self._labels(), stage="spec").inc()
        keys = Condition(KEYS_READY, False, "InvalidSpec", message)
        scaling = Condition(SCALING_ACTIVE, False, "InvalidSpec", message)
        await self._patch_status({}, summarize(keys, scaling, [keys]))

    async def _patch_status(self, status: dict[str, Any], conditions: list[Condition]) -> None:
        merged = merge_conditions(self._conditions, conditions, self._deps.clock())
        document = {**status, "conditions": merged}
        if document == self._published:
            return
        try:
            await self._deps.kube.patch_status(self.namespace, self.name, document)
        except KubeApiError as error:
            metrics.RECONCILE_ERRORS.labels(**self._labels(), stage="status").inc()
            log.warning(
                "status update failed",
                extra={"namespace": self.namespace, "ordersystem": self.name, "error": str(error)},
            )
            return
        self._conditions = merged
        self._published = document
