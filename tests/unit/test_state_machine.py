from __future__ import annotations

import itertools

import pytest

from oms.db.models import OrderStatus, UserRole
from oms.orders.state_machine import allowed_targets, decide_transition

LEGAL = {
    (OrderStatus.PENDING, OrderStatus.PAID),
    (OrderStatus.PENDING, OrderStatus.CANCELED),
    (OrderStatus.PAID, OrderStatus.SHIPPED),
    (OrderStatus.PAID, OrderStatus.CANCELED),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(OrderStatus, repeat=2)))
def test_admin_may_make_exactly_the_legal_transitions(
    current: OrderStatus, target: OrderStatus
) -> None:
    decision = decide_transition(current, target, UserRole.ADMIN)
    assert decision.allowed == ((current, target) in LEGAL)
    assert decision.is_illegal == ((current, target) not in LEGAL)


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_owner_may_only_cancel(current: OrderStatus, target: OrderStatus) -> None:
    decision = decide_transition(current, target, UserRole.USER)
    assert decision.allowed == (target is OrderStatus.CANCELED)
    if not decision.allowed:
        assert decision.reason == "forbidden"


def test_terminal_states_allow_nothing() -> None:
    assert allowed_targets(OrderStatus.SHIPPED) == []
    assert allowed_targets(OrderStatus.CANCELED) == []
    assert allowed_targets(OrderStatus.PENDING) == [OrderStatus.PAID, OrderStatus.CANCELED]
