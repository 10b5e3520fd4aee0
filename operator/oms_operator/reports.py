"""What a reconcile pass tells the world, as pure functions of what it read and decided: the
status fields, the conditions and the text of the Kubernetes Events. The reconciler does the I/O
around them (read, apply, then post what these functions rendered)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from oms_operator.conditions import (
    DEGRADED,
    KEYS_READY,
    SCALING_ACTIVE,
    Condition,
    summarize,
    timestamp,
)
from oms_operator.keys import KeyAction, KeyRing
from oms_operator.queue_depth import DepthReading, QueueUnreadableError
from oms_operator.scaling import ScaleDecision, ScaleReason, ScalingPolicy

ERROR_TEXT_LIMIT = 300  # an API error body can be long; a condition message should not be


@dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes Event to post on the OrderSystem."""

    type: str
    reason: str
    message: str


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


@dataclass(frozen=True, slots=True)
class ScalingInputs:
    """One poll's reading: the worker replicas, and the queue depth or why it is unknown."""

    replicas: int
    at: float  # monotonic time of the replica read: the decision's "now"
    reading: DepthReading | None = None
    unreadable: QueueUnreadableError | None = None

    @property
    def depth(self) -> int | None:
        return None if self.reading is None else self.reading.total


@dataclass(frozen=True, slots=True)
class ScalingReport:
    outcome: ScalingOutcome
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class ScaleChange:
    before: int
    after: int
    reason: ScaleReason
    depth: int | None

    @property
    def direction(self) -> str:
        """The `direction` label of `oms_operator_scale_events_total`."""
        if self.reason is ScaleReason.FALLBACK:
            return "fallback"
        return "up" if self.after > self.before else "down"


SCALE_EVENT_REASONS = {"up": "ScaledUp", "down": "ScaledDown", "fallback": "ScaledToFallback"}
KEY_EVENT_REASONS = {
    KeyAction.CREATE: "KeyCreated",
    KeyAction.REPAIR: "KeyRepaired",
    KeyAction.STAGE: "KeyStaged",
    KeyAction.PROMOTE: "KeyRotated",
    KeyAction.PRUNE: "RetiredKeysPruned",
}


def error_text(error: Exception) -> str:
    return str(error)[:ERROR_TEXT_LIMIT]


def scaling_inactive(reason: str, message: str) -> ScalingOutcome:
    """Scaling could not act this pass (no Deployment to read or scale): a problem too."""
    condition = Condition(SCALING_ACTIVE, False, reason, message)
    return ScalingOutcome(condition, problems=[condition])


def scale_event(change: ScaleChange) -> Event:
    seen = "queue unreadable" if change.depth is None else f"{change.depth} message(s) queued"
    message = f"Scaled workers from {change.before} to {change.after} ({seen})"
    event_type = "Warning" if change.direction == "fallback" else "Normal"
    return Event(event_type, SCALE_EVENT_REASONS[change.direction], message)


def render_scaling(
    policy: ScalingPolicy,
    queues: Sequence[str],
    inputs: ScalingInputs,
    decision: ScaleDecision,
    current: int,
    last_scale_time: str | None,
    failures: int,
) -> ScalingReport:
    """Status, ScalingActive and problems of one poll, after any scale was applied (`current`).
    An unreadable queue is announced by an Event only on its first failure, not on every poll."""
    status: dict[str, Any] = {
        "desiredReplicas": decision.desired,
        "currentReplicas": current,
        "lastScaleTime": last_scale_time,
    }
    problems: list[Condition] = []
    events: list[Event] = []
    reading = inputs.reading
    if reading is not None:
        status["queueDepth"] = reading.total
        status["queues"] = [
            {"name": queue.queue, "ready": queue.ready, "unacked": queue.unacked}
            for queue in reading.queues
        ]
        if reading.management_error is not None:
            message = "Counting ready messages only; " + reading.management_error
            problems.append(Condition(DEGRADED, True, "UnackedUnknown", message))

    unreadable = inputs.unreadable
    if unreadable is not None:
        kept = (
            f"fallback to {decision.desired} replicas"
            if decision.reason is ScaleReason.FALLBACK
            else f"keeping {decision.desired} replicas"
        )
        message = f"{unreadable.message}; {kept} (failure {failures})"
        condition = Condition(SCALING_ACTIVE, False, unreadable.reason, message)
        problems.insert(0, condition)
        if failures == 1:
            events.append(Event("Warning", unreadable.reason, message))
    elif policy.paused:
        message = f"spec.workers.paused is true; replicas stay at {current}"
        condition = Condition(SCALING_ACTIVE, False, "Paused", message)
    else:
        message = (
            f"{inputs.depth} message(s) in {', '.join(queues)}; desired {decision.desired} "
            f"replica(s) within [{policy.min_replicas}, {policy.max_replicas}]"
        )
        condition = Condition(SCALING_ACTIVE, True, decision.reason.value, message)
    return ScalingReport(ScalingOutcome(condition, status, problems), tuple(events))


def key_event(action: KeyAction, reason: str, ring: KeyRing, secret_name: str) -> Event:
    kid = ring.current.kid
    messages = {
        KeyAction.CREATE: f"Created signing key {kid} in Secret {secret_name}",
        KeyAction.REPAIR: f"Secret {secret_name} was unusable; new signing key {kid}",
        KeyAction.STAGE: f"Published the next key ahead of rotation ({reason})",
        KeyAction.PROMOTE: f"Rotated: key {kid} signs now; the previous key stays published "
        "until its tokens expire",
        KeyAction.PRUNE: "Removed expired retired keys from the JWKS",
    }
    event_type = "Warning" if action is KeyAction.REPAIR else "Normal"
    return Event(event_type, KEY_EVENT_REASONS[action], messages[action])


def keys_ready(ring: KeyRing, secret_name: str, due: datetime, next_check_in: float) -> KeysOutcome:
    """KeysReady and the key fields of the status, for a usable key ring."""
    message = (
        f"Signing with key {ring.current.kid}; {len(ring.published_kids())} key(s) published; "
        f"next key signs from {timestamp(due)}"
    )
    status = {
        "keySecret": secret_name,
        "keyId": ring.current.kid,
        "lastRotation": timestamp(ring.current.active_since),
        "nextRotation": timestamp(due),
        "publishedKeyIds": ring.published_kids(),
    }
    return KeysOutcome(
        Condition(KEYS_READY, True, "KeysProvisioned", message), status, next_check_in
    )


def keys_failed(reason: str, message: str, next_check_in: float = 300.0) -> KeysOutcome:
    condition = Condition(KEYS_READY, False, reason, message)
    return KeysOutcome(condition, next_check_in=next_check_in, problem=condition)


def render_status(
    keys: KeysOutcome, scaling: ScalingOutcome, paused: bool, generation: object
) -> tuple[dict[str, Any], list[Condition]]:
    """The status document (without conditions) and every condition, Ready and Degraded
    derived from the parts."""
    problems = [*([keys.problem] if keys.problem else []), *scaling.problems]
    conditions = summarize(keys.condition, scaling.condition, problems)
    status: dict[str, Any] = {**keys.status, **scaling.status, "paused": paused}
    if generation is not None:
        status["observedGeneration"] = generation
    return status, conditions


def invalid_spec_conditions(message: str) -> list[Condition]:
    keys = Condition(KEYS_READY, False, "InvalidSpec", message)
    scaling = Condition(SCALING_ACTIVE, False, "InvalidSpec", message)
    return summarize(keys, scaling, [keys])
