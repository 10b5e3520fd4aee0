"""Status conditions follow the Kubernetes convention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from oms_operator.conditions import (
    DEGRADED,
    KEYS_READY,
    READY,
    SCALING_ACTIVE,
    Condition,
    merge_conditions,
    summarize,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def condition_status(conditions: list[dict[str, Any]], condition_type: str) -> str | None:
    for item in conditions:
        if item.get("type") == condition_type:
            return str(item.get("status"))
    return None


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = merge_conditions([], [Condition(READY, True, "Reconciled", "ok")], T0)
    later = T0 + timedelta(minutes=5)
    same = merge_conditions(first, [Condition(READY, True, "Reconciled", "still ok")], later)
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same[0]["message"] == "still ok"
    flipped = merge_conditions(same, [Condition(READY, False, "Broken", "no")], later)
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T00:05:00Z"
    assert flipped[0]["status"] == "False"


def test_conditions_come_in_canonical_order_and_keep_unknown_types() -> None:
    foreign = {
        "type": "Custom",
        "status": "True",
        "reason": "X",
        "message": "",
        "lastTransitionTime": "t",
    }
    merged = merge_conditions(
        [foreign],
        [Condition(DEGRADED, False, "AsExpected", ""), Condition(READY, True, "Reconciled", "")],
        T0,
    )
    assert [item["type"] for item in merged] == [READY, DEGRADED, "Custom"]
    assert condition_status(merged, DEGRADED) == "False"
    assert condition_status(merged, SCALING_ACTIVE) is None


def test_summary_ready_needs_keys_and_no_problem_paused_is_fine() -> None:
    keys = Condition(KEYS_READY, True, "KeysProvisioned", "")
    paused = Condition(SCALING_ACTIVE, False, "Paused", "paused")
    ready, _, _, degraded = summarize(keys, paused, [])
    assert (ready.status, degraded.status) == (True, False)

    unreachable = Condition(SCALING_ACTIVE, False, "RabbitMQUnreachable", "down")
    ready, _, _, degraded = summarize(keys, unreachable, [unreachable])
    assert (ready.status, ready.reason) == (False, "RabbitMQUnreachable")
    assert (degraded.status, degraded.reason) == (True, "RabbitMQUnreachable")

    no_keys = Condition(KEYS_READY, False, "KubernetesApiError", "403")
    ready, *_ = summarize(no_keys, unreachable, [no_keys, unreachable])
    assert (ready.status, ready.reason) == (False, "KubernetesApiError")
