"""The consumer only sends tasks: its Celery app has no result backend, so it no longer
subscribes to (and never forgets) one Redis result channel per task. The worker keeps it."""

from __future__ import annotations

from celery.backends.base import DisabledBackend
from celery.backends.redis import RedisBackend

from oms.pipeline.celery_config import create_celery_app
from oms.settings import Settings
from tests.conftest import SettingsFactory


async def test_only_the_sending_side_goes_without_results(make_settings: SettingsFactory) -> None:
    settings: Settings = await make_settings(RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/")
    assert settings.REDIS_URL_CELERY
    sender = create_celery_app(settings, main="oms_consumer", results=False)
    assert isinstance(sender.backend, DisabledBackend)
    worker = create_celery_app(settings, main="oms_worker")
    assert isinstance(worker.backend, RedisBackend)
