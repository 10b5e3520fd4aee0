"""Pipeline fixtures: PostgreSQL by default (SQLite where a test asks), a private RabbitMQ vhost
per test on the shared broker, settings wired to both."""

from __future__ import annotations

import pytest

from oms.settings import Settings
from tests.conftest import SettingsFactory


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """PostgreSQL unless parametrized (indirect) otherwise: SKIP LOCKED needs it."""
    return str(getattr(request, "param", "postgres"))


@pytest.fixture
async def pipeline_settings_factory(
    make_settings: SettingsFactory, rabbitmq_url: str
) -> SettingsFactory:
    """Settings on this test's database, Redis prefix and RabbitMQ vhost."""

    async def factory(**overrides: object) -> Settings:
        overrides.setdefault("RABBITMQ_URL", rabbitmq_url)
        overrides.setdefault("ORDER_TASK_RETRY_DELAY_SECONDS", 0.5)
        overrides.setdefault("OUTBOX_MAX_BACKOFF_SECONDS", 1.0)
        overrides.setdefault("OUTBOX_POLL_SECONDS", 0.2)
        overrides.setdefault("CONSUMER_RECONNECT_SECONDS", 0.5)
        overrides.setdefault("RATE_LIMIT_ENABLED", False)
        return await make_settings(**overrides)

    return factory
