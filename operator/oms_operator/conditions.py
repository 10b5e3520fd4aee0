"""Status conditions in the Kubernetes convention (metav1.Condition): lastTransitionTime moves only
when the status of a condition flips, so `kubectl wait` and alerting see real transitions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

READY = "Ready"
KEYS_READY = "KeysReady"
SCALING_ACTIVE = "ScalingActive"
DEGRADED = "Degraded"
CONDITION_TYPES = (READY, KEYS_READY, SCALING_ACTIVE, DEGRADED)


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def merge_conditions(
    previous: list[dict[str, Any]], updates: list[Condition], now: datetime
) -> list[dict[str, Any]]:
    """The condition list after `updates`, in the canonical order; untouched types are kept."""
    by_type = {str(item.get("type")): dict(item) for item in previous if item.get("type")}
    for update in updates:
        status = "True" if update.status else "False"
        old = by_type.get(update.type)
        changed = old is None or old.get("status") != status
        by_type[update.type] = {
            "type": update.type,
            "status": status,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": timestamp(now)
            if changed or old is None
            else old.get("lastTransitionTime", timestamp(now)),
        }
    ordered = [by_type.pop(name) for name in CONDITION_TYPES if name in by_type]
    return ordered + [by_type[name] for name in sorted(by_type)]


def summarize(keys: Condition, scaling: Condition, problems: list[Condition]) -> list[Condition]:
    """Ready and Degraded derived from the parts: Ready needs usable keys and no problem;
    paused scaling is a choice, not a problem."""
    if problems:
        degraded = Condition(
            DEGRADED,
            True,
            problems[0].reason,
            "; ".join(problem.message for problem in problems),
        )
    else:
        degraded = Condition(DEGRADED, False, "AsExpected", "All checks pass")
    ready_ok = keys.status and not problems
    if ready_ok:
        ready = Condition(READY, True, "Reconciled", "Keys provisioned and workers reconciled")
    elif not keys.status:
        ready = Condition(READY, False, keys.reason, keys.message)
    else:
        ready = Condition(READY, False, degraded.reason, degraded.message)
    return [ready, keys, scaling, degraded]
