"""The API says at start where accepted orders are processed: with RABBITMQ_URL (which a copied
.env.example sets) they wait in the broker until a consumer and a worker run, which a user of
`make run` would otherwise only find out by orders staying unprocessed."""

from __future__ import annotations

import logging

import pytest

from oms.settings import ApiSettings
from oms_api.state import log_where_orders_go


def test_with_rabbitmq_it_says_the_consumer_and_worker_are_needed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = ApiSettings(_env_file=None, RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/")
    with caplog.at_level(logging.INFO, logger="oms.api"):
        log_where_orders_go(settings)
    (record,) = caplog.records
    assert "oms-consumer" in record.getMessage()
    assert "oms-worker" in record.getMessage()
    assert "make stack" in record.getMessage()


def test_without_rabbitmq_it_says_it_processes_them_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = ApiSettings(_env_file=None, RABBITMQ_URL=None)
    with caplog.at_level(logging.INFO, logger="oms.api"):
        log_where_orders_go(settings)
    (record,) = caplog.records
    assert "inside this process" in record.getMessage()
