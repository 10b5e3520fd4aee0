"""Which status changes are legal, and who may make them. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from oms.db.models import OrderStatus, UserRole

ALLOWED_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.CANCELED}),
    OrderStatus.PAID: frozenset({OrderStatus.SHIPPED, OrderStatus.CANCELED}),
    OrderStatus.SHIPPED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
}

# What an order's owner may do by themself; every other legal transition needs an admin.
OWNER_TRANSITIONS: frozenset[OrderStatus] = frozenset({OrderStatus.CANCELED})


@dataclass(frozen=True, slots=True)
class TransitionDecision:
    allowed: bool
    # "illegal": the state machine forbids it; "forbidden": legal, but not for this role.
    reason: str | None = None

    @property
    def is_illegal(self) -> bool:
        return self.reason == "illegal"


def allowed_targets(current: OrderStatus) -> list[OrderStatus]:
    return sorted(ALLOWED_TRANSITIONS[current], key=list(OrderStatus).index)


def decide_transition(
    current: OrderStatus, target: OrderStatus, role: UserRole
) -> TransitionDecision:
    if target not in ALLOWED_TRANSITIONS[current]:
        return TransitionDecision(False, "illegal")
    if role is not UserRole.ADMIN and target not in OWNER_TRANSITIONS:
        return TransitionDecision(False, "forbidden")
    return TransitionDecision(True)
