"""The key lifecycle as pure functions: reading a Secret, planning, staging, promoting, pruning."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from oms.security.jwk import generate_private_key, key_id, load_private_key, private_key_to_pem
from oms_operator.keys import (
    LIFECYCLE_ANNOTATION,
    KeyAction,
    KeyPolicy,
    KeyRing,
    SecretReading,
    jwks_document,
    new_ring,
    plan_keys,
    promote,
    prune,
    read_secret,
    render_lifecycle,
    render_secret_data,
    stage,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = KeyPolicy(
    key_size=2048,
    rotation_interval=timedelta(days=30),
    propagation_delay=timedelta(minutes=2),
    retention=timedelta(hours=2),
)


@cache
def pem(number: int) -> bytes:
    """A few real keys, generated once per session (RSA generation is the slow part)."""
    del number
    return private_key_to_pem(generate_private_key(2048))


def kid_of(key_pem: bytes) -> str:
    return key_id(load_private_key(key_pem).public_key())


def round_trip(ring: KeyRing, now: datetime) -> SecretReading:
    data = render_secret_data(ring)
    return read_secret(data, {LIFECYCLE_ANNOTATION: render_lifecycle(ring)}, POLICY, now)


def test_missing_secret_is_created_and_a_fresh_ring_reads_back() -> None:
    assert plan_keys(None, POLICY, T0).action is KeyAction.CREATE
    ring = new_ring(pem(1), 2048, T0, POLICY)
    reading = round_trip(ring, T0 + timedelta(days=1))
    assert reading.ring == ring  # the annotation keeps the activation time across reads
    plan = plan_keys(reading, POLICY, T0 + timedelta(days=1))
    assert plan.action is KeyAction.NONE
    assert plan.next_check_at == T0 + POLICY.rotation_interval


def test_invalid_secrets_are_detected_and_readable_public_keys_salvaged() -> None:
    ring = new_ring(pem(1), 2048, T0, POLICY)
    data = render_secret_data(ring)
    broken_variants = {
        "garbage key": {**data, "private.pem": b"not a key"},
        "wrong kid": {**data, "kid": b"something-else"},
        "foreign public key": {
            **data,
            "public.pem": render_secret_data(new_ring(pem(2), 2048, T0, POLICY))["public.pem"],
        },
        "jwks without signer": {**data, "jwks.json": b'{"keys": []}'},
        "missing jwks": {k: v for k, v in data.items() if k != "jwks.json"},
    }
    for label, broken in broken_variants.items():
        reading = read_secret(broken, {}, POLICY, T0)
        assert reading.ring is None, label
        assert plan_keys(reading, POLICY, T0).action is KeyAction.REPAIR, label
    salvaged = read_secret(broken_variants["garbage key"], {}, POLICY, T0).salvaged
    assert [jwk["kid"] for jwk in salvaged] == [ring.current.kid]
    repaired = new_ring(pem(2), 2048, T0, POLICY, salvaged)
    assert [key.kid for key in repaired.retired] == [ring.current.kid]
    assert repaired.retired[0].published_until == T0 + POLICY.retention


def test_an_adopted_secret_starts_its_rotation_clock_when_adopted() -> None:
    ring = new_ring(pem(1), 2048, T0 - timedelta(days=400), POLICY)
    adopted_at = T0
    reading = read_secret(render_secret_data(ring), {}, POLICY, adopted_at)
    assert reading.ring is not None
    assert reading.ring.current.active_since == adopted_at
    assert plan_keys(reading, POLICY, adopted_at).action is KeyAction.NONE


def test_rotation_stages_then_promotes_then_prunes() -> None:
    ring = new_ring(pem(1), 2048, T0, POLICY)
    due = T0 + POLICY.rotation_interval
    assert (
        plan_keys(SecretReading(ring), POLICY, due - timedelta(seconds=1)).action is KeyAction.NONE
    )
    assert plan_keys(SecretReading(ring), POLICY, due).action is KeyAction.STAGE

    staged = stage(ring, pem(2), 2048, due)
    staged_data = render_secret_data(staged)
    # Staged: the old key still signs, the new one is already published.
    assert staged_data["kid"].decode() == ring.current.kid
    assert [k["kid"] for k in json.loads(staged_data["jwks.json"])["keys"]] == [
        ring.current.kid,
        kid_of(pem(2)),
    ]
    assert round_trip(staged, due).ring == staged
    waiting = plan_keys(SecretReading(staged), POLICY, due + timedelta(minutes=1))
    assert waiting.action is KeyAction.NONE
    assert waiting.next_check_at == due + POLICY.propagation_delay

    promote_at = due + POLICY.propagation_delay
    assert plan_keys(SecretReading(staged), POLICY, promote_at).action is KeyAction.PROMOTE
    promoted = promote(staged, promote_at, POLICY)
    assert promoted.current.kid == kid_of(pem(2))
    assert promoted.staged is None
    assert [key.kid for key in promoted.retired] == [ring.current.kid]
    assert "next.pem" not in render_secret_data(promoted)
    published = [k["kid"] for k in jwks_document(promoted)["keys"]]
    assert published == [kid_of(pem(2)), ring.current.kid]

    expiry = promote_at + POLICY.retention
    still = plan_keys(SecretReading(promoted), POLICY, expiry - timedelta(seconds=1))
    assert still.action is KeyAction.NONE
    assert still.next_check_at == expiry
    assert plan_keys(SecretReading(promoted), POLICY, expiry).action is KeyAction.PRUNE
    assert prune(promoted, expiry).retired == ()


def test_a_key_size_change_rotates_gracefully() -> None:
    ring = new_ring(pem(1), 2048, T0, POLICY)
    bigger = KeyPolicy(3072, POLICY.rotation_interval, POLICY.propagation_delay, POLICY.retention)
    plan = plan_keys(SecretReading(ring), bigger, T0 + timedelta(minutes=1))
    assert (plan.action, plan.reason) == (KeyAction.STAGE, "KeySizeChanged")


@settings(max_examples=60, deadline=None)
@given(
    rotation_hours=st.integers(1, 24 * 60),
    delay_minutes=st.integers(0, 30),
    retention_minutes=st.integers(1, 24 * 60),
    checks=st.lists(st.integers(1, 48 * 60 * 60), min_size=1, max_size=40),
)
def test_every_retired_key_stays_published_for_its_retention(
    rotation_hours: int, delay_minutes: int, retention_minutes: int, checks: list[int]
) -> None:
    """Drive the lifecycle through random check times: the signer is always published, a retired
    key is never dropped before retention has passed, and never kept long after."""
    policy = KeyPolicy(
        2048,
        timedelta(hours=rotation_hours),
        timedelta(minutes=delay_minutes),
        timedelta(minutes=retention_minutes),
    )
    pool = [pem(number) for number in range(1, 7)]  # distinct keys: kids never repeat
    ring = new_ring(pool.pop(), 2048, T0, policy)
    retired_at: dict[str, datetime] = {}
    now = T0
    for step in checks:
        now += timedelta(seconds=step)
        for _ in range(4):
            plan = plan_keys(SecretReading(ring), policy, now)
            if plan.action is KeyAction.STAGE:
                if not pool:
                    return  # enough rotations for one example
                ring = stage(ring, pool.pop(), 2048, now)
            elif plan.action is KeyAction.PROMOTE:
                retired_at[ring.current.kid] = now
                ring = promote(ring, now, policy)
            elif plan.action is KeyAction.PRUNE:
                ring = prune(ring, now)
            else:
                break
        published = ring.published_kids()
        assert published[0] == ring.current.kid
        for key in ring.retired:
            assert key.published_until > now
        for kid, when in retired_at.items():
            if now < when + policy.retention and kid != ring.current.kid:
                assert kid in published
