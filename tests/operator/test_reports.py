"""What a pass reports, rendered without I/O: scaling status and conditions, Event text, status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from oms_operator.conditions import Condition
from oms_operator.keys import KeyAction, KeyPolicy, new_ring
from oms_operator.queue_depth import DepthReading, QueueDepth, QueueUnreadableError
from oms_operator.reports import (
    Event,
    KeysOutcome,
    ScaleChange,
    ScalingInputs,
    ScalingOutcome,
    invalid_spec_conditions,
    key_event,
    keys_failed,
    keys_ready,
    render_scaling,
    render_status,
    scale_event,
    scaling_inactive,
)
from oms_operator.scaling import ScaleReason, ScalingPolicy, plan_scale
from tests.operator.test_keys import pem

POLICY = ScalingPolicy(min_replicas=1, max_replicas=10, messages_per_replica=20)
QUEUES = ("order_tasks", "bulk")
READING = DepthReading((QueueDepth("order_tasks", 30, 5), QueueDepth("bulk", 10)))


def test_a_readable_queue_renders_depths_and_an_active_condition() -> None:
    inputs = ScalingInputs(replicas=1, at=0.0, reading=READING)
    decision = plan_scale(POLICY, 1, inputs.depth, (), 0.0)
    report = render_scaling(POLICY, QUEUES, inputs, decision, 3, "2026-01-01T00:00:00Z", 0)
    assert report.events == ()
    assert report.outcome.status == {
        "desiredReplicas": 3,
        "currentReplicas": 3,
        "lastScaleTime": "2026-01-01T00:00:00Z",
        "queueDepth": 45,
        "queues": [
            {"name": "order_tasks", "ready": 30, "unacked": 5},
            {"name": "bulk", "ready": 10, "unacked": None},
        ],
    }
    assert report.outcome.condition == Condition(
        "ScalingActive",
        True,
        "ScaleUp",
        "45 message(s) in order_tasks, bulk; desired 3 replica(s) within [1, 10]",
    )
    assert report.outcome.problems == []


def test_a_failing_management_api_is_a_problem_but_scaling_stays_active() -> None:
    reading = DepthReading((QueueDepth("order_tasks", 4),), management_error="HTTP 401")
    inputs = ScalingInputs(replicas=1, at=0.0, reading=reading)
    decision = plan_scale(POLICY, 1, inputs.depth, (), 0.0)
    outcome = render_scaling(POLICY, QUEUES[:1], inputs, decision, 1, None, 0).outcome
    assert outcome.condition.status is True
    assert outcome.problems == [
        Condition("Degraded", True, "UnackedUnknown", "Counting ready messages only; HTTP 401")
    ]


@pytest.mark.parametrize(("failures", "events"), [(1, 1), (2, 0)])
def test_an_unreadable_queue_is_announced_once_and_says_what_was_kept(
    failures: int, events: int
) -> None:
    unreadable = QueueUnreadableError("RabbitMQUnreachable", "connection refused")
    inputs = ScalingInputs(replicas=4, at=0.0, unreadable=unreadable)
    decision = plan_scale(POLICY, 4, None, (), 0.0, failures)
    report = render_scaling(POLICY, QUEUES, inputs, decision, 4, None, failures)
    message = f"connection refused; keeping 4 replicas (failure {failures})"
    assert report.outcome.condition == Condition(
        "ScalingActive", False, "RabbitMQUnreachable", message
    )
    assert report.outcome.problems == [report.outcome.condition]
    assert "queueDepth" not in report.outcome.status
    assert report.events == (Event("Warning", "RabbitMQUnreachable", message),) * events


def test_fallback_is_named_in_the_condition() -> None:
    policy = ScalingPolicy(1, 10, 20, fallback_replicas=2, fallback_after_failures=1)
    unreadable = QueueUnreadableError("QueueNotFound", "no queue order_tasks")
    inputs = ScalingInputs(replicas=6, at=0.0, unreadable=unreadable)
    decision = plan_scale(policy, 6, None, (), 0.0, 1)
    report = render_scaling(policy, QUEUES, inputs, decision, 2, None, 1)
    assert report.outcome.condition.message == (
        "no queue order_tasks; fallback to 2 replicas (failure 1)"
    )


def test_paused_scaling_is_inactive_but_no_problem() -> None:
    policy = ScalingPolicy(1, 10, 20, paused=True)
    inputs = ScalingInputs(replicas=5, at=0.0, reading=READING)
    decision = plan_scale(policy, 5, inputs.depth, (), 0.0)
    outcome = render_scaling(policy, QUEUES, inputs, decision, 5, None, 0).outcome
    assert outcome.condition == Condition(
        "ScalingActive", False, "Paused", "spec.workers.paused is true; replicas stay at 5"
    )
    assert outcome.problems == []
    assert outcome.status["queueDepth"] == 45  # still read and reported


def test_an_inactive_scaling_is_its_own_problem() -> None:
    outcome = scaling_inactive("DeploymentNotFound", "Deployment oms-worker not found")
    assert outcome.condition.status is False
    assert outcome.problems == [outcome.condition]
    assert outcome.status == {}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ScaleChange(1, 4, ScaleReason.SCALE_UP, 70),
            Event("Normal", "ScaledUp", "Scaled workers from 1 to 4 (70 message(s) queued)"),
        ),
        (
            ScaleChange(4, 2, ScaleReason.SCALE_DOWN, 0),
            Event("Normal", "ScaledDown", "Scaled workers from 4 to 2 (0 message(s) queued)"),
        ),
        (
            ScaleChange(1, 3, ScaleReason.FALLBACK, None),
            Event("Warning", "ScaledToFallback", "Scaled workers from 1 to 3 (queue unreadable)"),
        ),
    ],
)
def test_scale_events(change: ScaleChange, expected: Event) -> None:
    assert scale_event(change) == expected


def test_a_fallback_counts_as_its_own_direction_even_when_it_lowers_the_replicas() -> None:
    assert ScaleChange(6, 3, ScaleReason.FALLBACK, None).direction == "fallback"
    assert ScaleChange(6, 3, ScaleReason.SCALE_DOWN, 0).direction == "down"


KEY_POLICY = KeyPolicy(2048, timedelta(days=30), timedelta(minutes=2), timedelta(hours=2))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_key_events_and_the_keys_ready_status() -> None:
    ring = new_ring(pem(1), 2048, T0, KEY_POLICY)
    kid = ring.current.kid
    assert key_event(KeyAction.CREATE, "", ring, "jwt") == Event(
        "Normal", "KeyCreated", f"Created signing key {kid} in Secret jwt"
    )
    assert key_event(KeyAction.REPAIR, "", ring, "jwt") == Event(
        "Warning", "KeyRepaired", f"Secret jwt was unusable; new signing key {kid}"
    )
    assert key_event(KeyAction.STAGE, "keySize changed", ring, "jwt").message == (
        "Published the next key ahead of rotation (keySize changed)"
    )
    due = T0 + timedelta(days=30)
    outcome = keys_ready(ring, "jwt", due, 42.0)
    assert outcome.condition == Condition(
        "KeysReady",
        True,
        "KeysProvisioned",
        f"Signing with key {kid}; 1 key(s) published; next key signs from 2026-01-31T00:00:00Z",
    )
    assert outcome.status == {
        "keySecret": "jwt",
        "keyId": kid,
        "lastRotation": "2026-01-01T00:00:00Z",
        "nextRotation": "2026-01-31T00:00:00Z",
        "publishedKeyIds": [kid],
    }
    assert (outcome.next_check_in, outcome.problem) == (42.0, None)


def test_status_joins_the_parts_and_derives_ready_and_degraded() -> None:
    keys = KeysOutcome(Condition("KeysReady", True, "KeysProvisioned", "ok"), {"keyId": "k"})
    scaling = scaling_inactive("ScaleFailed", "forbidden")
    status, conditions = render_status(keys, scaling, paused=False, generation=7)
    assert status == {"keyId": "k", "paused": False, "observedGeneration": 7}
    by_type = {condition.type: condition for condition in conditions}
    assert by_type["Ready"] == Condition("Ready", False, "ScaleFailed", "forbidden")
    assert by_type["Degraded"] == Condition("Degraded", True, "ScaleFailed", "forbidden")

    healthy = ScalingOutcome(Condition("ScalingActive", True, "Steady", "fine"), {"x": 1})
    status, conditions = render_status(keys, healthy, paused=True, generation=None)
    assert status == {"keyId": "k", "x": 1, "paused": True}
    assert [condition.status for condition in conditions] == [True, True, True, False]


def test_failed_keys_and_an_invalid_spec_make_the_resource_unready() -> None:
    failed = keys_failed("KubernetesApiError", "timeout", next_check_in=10.0)
    assert failed.problem == failed.condition
    assert failed.next_check_in == 10.0
    conditions = invalid_spec_conditions("workers.maxReplicas: too small")
    assert [(c.type, c.status, c.reason) for c in conditions] == [
        ("Ready", False, "InvalidSpec"),
        ("KeysReady", False, "InvalidSpec"),
        ("ScalingActive", False, "InvalidSpec"),
        ("Degraded", True, "InvalidSpec"),
    ]
