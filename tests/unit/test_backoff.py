"""The one back-off function the relay, the consumer and (later) the operator share."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from oms.backoff import exponential_delay


def test_no_wait_before_the_first_failure() -> None:
    assert exponential_delay(0, base=1.0, cap=10.0) == 0.0
    assert exponential_delay(-3, base=1.0, cap=10.0) == 0.0


def test_doubles_from_the_base_up_to_the_cap() -> None:
    assert [exponential_delay(n, base=0.5, cap=3.0) for n in range(1, 6)] == [
        0.5,
        1.0,
        2.0,
        3.0,
        3.0,
    ]


@pytest.mark.parametrize("failures", [31, 1_000, 10**9])
def test_huge_failure_counts_stay_finite(failures: int) -> None:
    assert exponential_delay(failures, base=0.2, cap=30.0) == 30.0


def test_a_base_above_the_cap_is_the_first_wait() -> None:
    assert exponential_delay(1, base=5.0, cap=1.0) == 5.0


def test_the_relay_process_is_a_service_entry_point() -> None:
    (relay,) = entry_points(group="console_scripts", name="oms-relay")
    assert relay.value == "oms_api.relay_command:main"
    assert callable(relay.load())
