"""How many workers a queue needs: a pure function of the depth, the policy and recent history.

The rules follow the Kubernetes HPA and KEDA so that an operator team can predict them:

- required = ceil(depth / messagesPerReplica); the recommendation is that, clamped to
  [minReplicas, maxReplicas]. At or below `activationThreshold` messages the queue counts as idle
  and the recommendation is `minReplicas` (which may be 0): this is the 0 <-> min switch.
- Scale up at once: when the recommendation exceeds the current replicas, it is applied.
- Scale down only when every recommendation made during the stabilization window is lower than
  the current replicas, and then only to the highest of them (HPA's scale-down stabilization).
  A burst therefore keeps its workers for a whole window: no flapping on a noisy queue.
- When the queue cannot be read, keep the current replicas; after `fallbackAfterFailures`
  consecutive failures go to `fallbackReplicas` if one is configured (KEDA's fallback).
- Paused: never change anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    min_replicas: int
    max_replicas: int
    messages_per_replica: int
    activation_threshold: int = 0
    scale_down_window: float = 300.0
    fallback_replicas: int | None = None
    fallback_after_failures: int = 3
    paused: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 0 <= min_replicas <= max_replicas")
        if self.messages_per_replica < 1:
            raise ValueError("messages_per_replica must be at least 1")

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    desired: int
    reason: ScaleReason
    required: int | None  # ceil(depth / per replica) before clamping; None when unknown
    history: tuple[Recommendation, ...] = field(default_factory=tuple)

    def changes(self, current: int) -> bool:
        return self.desired != current


class ScaleReason(StrEnum):
    SCALE_UP = "ScaleUp"
    SCALE_DOWN = "ScaleDown"
    STABILIZED = "Stabilized"  # a lower recommendation waits for the window to pass
    STEADY = "Steady"
    FALLBACK = "Fallback"
    KEPT_ON_ERROR = "KeptOnError"
    PAUSED = "Paused"


def required_replicas(depth: int, policy: ScalingPolicy) -> int:
    """Workers the backlog asks for, ignoring bounds; 0 while the queue is idle."""
    if depth <= policy.activation_threshold:
        return 0
    return max(1, math.ceil(depth / policy.messages_per_replica))


def plan_scale(
    policy: ScalingPolicy,
    current: int,
    depth: int | None,
    history: tuple[Recommendation, ...],
    now: float,
    consecutive_failures: int = 0,
) -> ScaleDecision:
    """Decide the replicas for this poll. `depth` None means the queue could not be read;
    `consecutive_failures` counts that failure too. `history` comes from the previous decision."""
    # "Younger than the window" computed as an age, the same way everywhere (float-safe edges).
    recent = tuple(item for item in history if now - item.at < policy.scale_down_window)
    if policy.paused:
        return ScaleDecision(current, ScaleReason.PAUSED, None, recent)
    if depth is None:
        if (
            policy.fallback_replicas is not None
            and consecutive_failures >= policy.fallback_after_failures
        ):
            return ScaleDecision(
                policy.clamp(policy.fallback_replicas), ScaleReason.FALLBACK, None, recent
            )
        return ScaleDecision(policy.clamp(current), ScaleReason.KEPT_ON_ERROR, None, recent)

    required = required_replicas(depth, policy)
    recommendation = policy.clamp(required)
    history_now = (*recent, Recommendation(now, recommendation))
    if recommendation > current:
        return ScaleDecision(recommendation, ScaleReason.SCALE_UP, required, history_now)
    # The highest recommendation of the window: a scale-down never undercuts any demand seen
    # within it, and waits until the last burst has left the window. Clamped again because the
    # history may predate a change of the bounds.
    ceiling = policy.clamp(max(item.replicas for item in history_now))
    if ceiling < current:
        return ScaleDecision(ceiling, ScaleReason.SCALE_DOWN, required, history_now)
    if recommendation < current:
        return ScaleDecision(current, ScaleReason.STABILIZED, required, history_now)
    return ScaleDecision(current, ScaleReason.STEADY, required, history_now)


def seed_history(policy: ScalingPolicy, current: int, now: float) -> tuple[Recommendation, ...]:
    """History for a fresh start (operator restart): act as if the current replicas had just
    been recommended, so a restart never causes an immediate scale-down."""
    return (Recommendation(now, policy.clamp(current)),)


@dataclass(frozen=True, slots=True)
class SimulatedPoll:
    at: float
    depth: int | None
    before: int
    decision: ScaleDecision


def simulate(
    policy: ScalingPolicy, series: list[tuple[float, int | None]], initial: int
) -> list[SimulatedPoll]:
    """Run the plan over a (time, depth) series as the operator would, poll after poll."""
    current = initial
    history = seed_history(policy, current, series[0][0] if series else 0.0)
    failures = 0
    polls = []
    for at, depth in series:
        failures = failures + 1 if depth is None else 0
        decision = plan_scale(policy, current, depth, history, at, failures)
        polls.append(SimulatedPoll(at, depth, current, decision))
        history = decision.history
        current = decision.desired
    return polls


def render_table(polls: list[SimulatedPoll]) -> str:
    """A Markdown table of a simulation (used in docs/operator.md, checked by the tests)."""
    lines = [
        "| t (s) | depth | required | replicas before | desired | reason |",
        "|------:|------:|---------:|----------------:|--------:|--------|",
    ]
    for poll in polls:
        depth = "unreadable" if poll.depth is None else str(poll.depth)
        required = "-" if poll.decision.required is None else str(poll.decision.required)
        lines.append(
            f"| {poll.at:g} | {depth} | {required} | {poll.before} | {poll.decision.desired} "
            f"| {poll.decision.reason.value} |"
        )
    return "\n".join(lines)
