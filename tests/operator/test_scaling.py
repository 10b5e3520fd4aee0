"""The scaling plan as a pure function: examples, then properties over generated series."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oms.backoff import exponential_delay
from oms_operator.scaling import (
    Recommendation,
    ScaleReason,
    ScalingPolicy,
    plan_scale,
    required_replicas,
    seed_history,
    simulate,
)

POLICY = ScalingPolicy(min_replicas=1, max_replicas=10, messages_per_replica=20)


def recommend(depth: int, policy: ScalingPolicy) -> int:
    """What a scaler without memory would do: the clamped requirement of this one reading."""
    return policy.clamp(required_replicas(depth, policy))


@pytest.mark.parametrize(
    ("depth", "expected"),
    [(0, 1), (1, 1), (20, 1), (21, 2), (199, 10), (200, 10), (10_000, 10)],
)
def test_recommendation_is_ceil_of_depth_per_replica_within_bounds(
    depth: int, expected: int
) -> None:
    assert recommend(depth, POLICY) == expected


def test_activation_threshold_switches_between_zero_and_min() -> None:
    policy = ScalingPolicy(0, 5, 10, activation_threshold=5)
    assert recommend(5, policy) == 0  # at the threshold: idle
    assert recommend(6, policy) == 1  # above it: at least one worker
    assert required_replicas(3, policy) == 0
    with_min = ScalingPolicy(2, 5, 10, activation_threshold=5)
    assert recommend(4, with_min) == 2


def test_scale_down_waits_for_the_window_then_goes_to_the_window_maximum() -> None:
    policy = ScalingPolicy(1, 10, 10, scale_down_window=60)
    history = (Recommendation(0, 8), Recommendation(30, 4))
    inside = plan_scale(policy, 8, 0, history, now=50)
    assert (inside.desired, inside.reason) == (8, ScaleReason.STABILIZED)
    after_first = plan_scale(policy, 8, 0, history, now=70)  # the 8 left the window, the 4 not
    assert (after_first.desired, after_first.reason) == (4, ScaleReason.SCALE_DOWN)
    later = plan_scale(policy, 4, 0, after_first.history, now=95)
    assert later.desired == 1


def test_unreadable_queue_keeps_replicas_then_falls_back() -> None:
    policy = ScalingPolicy(1, 10, 10, fallback_replicas=3, fallback_after_failures=2)
    kept = plan_scale(policy, 7, None, (), now=0, consecutive_failures=1)
    assert (kept.desired, kept.reason) == (7, ScaleReason.KEPT_ON_ERROR)
    fallback = plan_scale(policy, 7, None, (), now=1, consecutive_failures=2)
    assert (fallback.desired, fallback.reason) == (3, ScaleReason.FALLBACK)
    no_fallback = ScalingPolicy(1, 10, 10)
    assert plan_scale(no_fallback, 7, None, (), now=1, consecutive_failures=50).desired == 7


def test_paused_never_changes_anything() -> None:
    policy = ScalingPolicy(1, 10, 10, paused=True)
    decision = plan_scale(policy, 3, 10_000, (), now=0)
    assert (decision.desired, decision.reason) == (3, ScaleReason.PAUSED)


def test_restart_seed_prevents_an_immediate_scale_down() -> None:
    policy = ScalingPolicy(1, 10, 10, scale_down_window=60)
    history = seed_history(policy, 6, now=100)
    assert plan_scale(policy, 6, 0, history, now=101).desired == 6
    assert plan_scale(policy, 6, 0, history, now=161).desired == 1


def test_lowered_max_applies_at_once() -> None:
    policy = ScalingPolicy(1, 4, 10, scale_down_window=600)
    history = (Recommendation(0, 9),)  # recorded under an older, higher maxReplicas
    assert plan_scale(policy, 9, 500, history, now=1).desired == 4


def test_poll_delay_backs_off_and_is_capped() -> None:
    # The operator waits exponential_delay(failures + 1, interval, max_backoff) between polls.
    def poll_delay(interval: float, failures: int, max_backoff: float = 300.0) -> float:
        return exponential_delay(failures + 1, interval, max_backoff)

    assert poll_delay(15, 0) == 15
    assert poll_delay(15, 1) == 30
    assert poll_delay(15, 3) == 120
    assert poll_delay(15, 30, max_backoff=300) == 300
    assert poll_delay(600, 5, max_backoff=300) == 600  # never faster than the interval


def test_a_noisy_queue_that_flaps_a_naive_scaler_moves_ours_once() -> None:
    policy = ScalingPolicy(1, 10, 20, scale_down_window=120)
    depths = [130, 70, 150, 60, 140, 90, 155, 65, 120, 75, 145, 80]  # 3..8 replicas naively
    series: list[tuple[float, int | None]] = [(15.0 * i, d) for i, d in enumerate(depths)]
    naive = [recommend(depth, policy) for depth in depths]
    naive_changes = sum(1 for a, b in itertools.pairwise(naive) if a != b)
    ours = [poll.decision.desired for poll in simulate(policy, series, initial=1)]
    our_changes = sum(1 for a, b in itertools.pairwise([1, *ours]) if a != b)
    assert naive_changes >= 10
    assert ours == [7, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]
    assert our_changes == 2


# --- properties ---------------------------------------------------------------------------

policies = st.builds(
    lambda low, span, per, activation, window: ScalingPolicy(
        min_replicas=low,
        max_replicas=max(1, low + span),
        messages_per_replica=per,
        activation_threshold=activation,
        scale_down_window=window,
    ),
    low=st.integers(0, 5),
    span=st.integers(0, 20),
    per=st.integers(1, 50),
    activation=st.integers(0, 30),
    window=st.floats(0, 600),
)
steps = st.lists(st.tuples(st.floats(0.5, 90), st.integers(0, 2_000)), min_size=1, max_size=60)


def timeline(raw_steps: list[tuple[float, int]]) -> list[tuple[float, int | None]]:
    now = 0.0
    series: list[tuple[float, int | None]] = []
    for delta, depth in raw_steps:
        now += delta
        series.append((now, depth))
    return series


@settings(max_examples=300, deadline=None)
@given(policy=policies, raw_steps=steps, initial=st.integers(0, 40))
def test_plan_properties_hold_on_any_series(
    policy: ScalingPolicy, raw_steps: list[tuple[float, int]], initial: int
) -> None:
    polls = simulate(policy, timeline(raw_steps), initial)
    recommendations: list[tuple[float, int]] = []
    last_scale_up: float | None = None
    for poll in polls:
        depth = poll.depth
        assert depth is not None
        decision = poll.decision
        recommended = recommend(depth, policy)
        recommendations.append((poll.at, recommended))
        # Always within bounds, whatever the replicas were before.
        assert policy.min_replicas <= decision.desired <= policy.max_replicas
        # Scale up at once, exactly to the recommendation.
        if recommended > poll.before:
            assert decision.desired == recommended
        # Never below the demand seen inside the window.
        if decision.desired < poll.before:
            window = policy.scale_down_window
            assert all(r <= decision.desired for at, r in recommendations if poll.at - at < window)
            # ... hence never within a window after a scale-up.
            if last_scale_up is not None:
                assert poll.at - last_scale_up >= policy.scale_down_window
        # The decision follows the recommendation's direction: no move against the demand.
        if decision.desired > poll.before:
            assert recommended > poll.before
            last_scale_up = poll.at
        # Activation: an idle queue never wakes a worker from zero.
        if depth <= policy.activation_threshold and poll.before == 0 == policy.min_replicas:
            assert decision.desired == 0
        if depth > policy.activation_threshold:
            assert decision.desired >= 1


@settings(max_examples=200, deadline=None)
@given(
    base=st.integers(50, 500),
    noise=st.lists(st.integers(-40, 40), min_size=30, max_size=120),
    interval=st.floats(1, 30),
    window=st.floats(60, 600),
)
def test_no_flapping_under_a_noisy_depth(
    base: int, noise: list[int], interval: float, window: float
) -> None:
    """A noisy but level queue: after the first reaction the workers only ever go up, and an
    up-then-down reversal needs at least a whole window between them."""
    policy = ScalingPolicy(1, 30, 20, scale_down_window=window)
    series: list[tuple[float, int | None]] = [
        (i * interval, max(0, base + delta)) for i, delta in enumerate(noise)
    ]
    polls = simulate(policy, series, initial=policy.min_replicas)
    changes = [
        (p.at, p.decision.desired - p.before) for p in polls if p.decision.desired != p.before
    ]
    reversals = sum(
        1 for (_, first), (_, second) in itertools.pairwise(changes) if first > 0 > second
    )
    duration = series[-1][0] - series[0][0]
    assert reversals <= math.floor(duration / window)
    highest_noise = max(0, base + max(noise))
    assert max(p.decision.desired for p in polls) <= recommend(highest_noise, policy)


@settings(max_examples=200, deadline=None)
@given(
    policy=policies,
    failures=st.lists(st.booleans(), min_size=1, max_size=30),
    fallback=st.none() | st.integers(0, 40),
    threshold=st.integers(1, 5),
    initial=st.integers(0, 40),
)
def test_unreadable_polls_keep_or_fall_back(
    policy: ScalingPolicy,
    failures: list[bool],
    fallback: int | None,
    threshold: int,
    initial: int,
) -> None:
    policy = ScalingPolicy(
        policy.min_replicas,
        policy.max_replicas,
        policy.messages_per_replica,
        policy.activation_threshold,
        policy.scale_down_window,
        fallback_replicas=fallback,
        fallback_after_failures=threshold,
    )
    series: list[tuple[float, int | None]] = [
        (float(i), None if failed else 100) for i, failed in enumerate(failures)
    ]
    run = 0
    for poll in simulate(policy, series, initial):
        run = run + 1 if poll.depth is None else 0
        if poll.depth is None:
            if fallback is not None and run >= threshold:
                assert poll.decision.desired == policy.clamp(fallback)
            else:
                assert poll.decision.desired == policy.clamp(poll.before)
