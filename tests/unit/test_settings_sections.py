"""Each process reads the settings sections it uses, and no other."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from oms.settings import (
    SECTIONS,
    ApiSettings,
    AuthSettings,
    BrokerSettings,
    CacheSettings,
    ConsumerServiceSettings,
    ConsumerSettings,
    DatabaseSettings,
    DeadLetterSettings,
    OutboxSettings,
    ProcessingSettings,
    ProcessSettings,
    RedisSettings,
    RelaySettings,
    Settings,
    UserAdminSettings,
    WorkerServiceSettings,
    WorkerSettings,
)

EXPECTED: dict[type[BaseSettings], set[type[BaseSettings]]] = {
    ApiSettings: set(SECTIONS) - {ConsumerServiceSettings, WorkerServiceSettings},
    RelaySettings: {
        ProcessSettings,
        DatabaseSettings,
        RedisSettings,
        CacheSettings,
        BrokerSettings,
        OutboxSettings,
        ProcessingSettings,
    },
    ConsumerSettings: {ProcessSettings, RedisSettings, BrokerSettings, ConsumerServiceSettings},
    WorkerSettings: {
        ProcessSettings,
        DatabaseSettings,
        RedisSettings,
        CacheSettings,
        BrokerSettings,
        ProcessingSettings,
        WorkerServiceSettings,
    },
    UserAdminSettings: {DatabaseSettings, AuthSettings, RedisSettings, CacheSettings},
    DeadLetterSettings: {DatabaseSettings, BrokerSettings},
    Settings: set(SECTIONS),
}


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("composed", EXPECTED, ids=lambda composed: composed.__name__)
def test_a_process_reads_exactly_its_sections(composed: type[BaseSettings]) -> None:
    sections = {section for section in SECTIONS if issubclass(composed, section)}
    assert sections == EXPECTED[composed]
    # Nothing is declared outside a section.
    assert set(composed.model_fields) == {
        name for section in sections for name in section.model_fields
    }


def test_processes_do_not_see_what_they_do_not_use() -> None:
    worker, consumer = set(WorkerSettings.model_fields), set(ConsumerSettings.model_fields)
    assert not {name for name in worker if name.startswith(("JWT_", "CORS_", "RATE_LIMIT_"))}
    assert not {name for name in consumer if name.startswith(("POSTGRES_", "DB_", "JWT_"))}
    assert "DATABASE_URL" not in consumer
    assert "ORDERS_PAGE_MAX" not in set(RelaySettings.model_fields)


def test_the_consumer_ignores_the_other_processes_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One environment (a shared ConfigMap, a `.env`) serves every process: a variable another
    process reads, even one this process would refuse, does not stop it."""
    monkeypatch.setenv("CORS_ORIGINS", "*")
    monkeypatch.setenv("CORS_ALLOW_CREDENTIALS", "true")
    monkeypatch.setenv("DB_POOL_SIZE", "0")
    monkeypatch.setenv("CONSUMER_PREFETCH", "7")
    settings = ConsumerSettings(_env_file=None)
    assert settings.CONSUMER_PREFETCH == 7
    with pytest.raises(ValidationError, match="DB_POOL_SIZE"):
        ApiSettings(_env_file=None)
    monkeypatch.delenv("DB_POOL_SIZE")
    with pytest.raises(ValidationError, match="CORS_ALLOW_CREDENTIALS"):
        ApiSettings(_env_file=None)


def test_the_signing_key_is_generated_only_in_the_embedded_mode() -> None:
    """A cross-section rule (auth and database) lives where both sections meet."""
    embedded = UserAdminSettings(_env_file=None, DATABASE_URL="sqlite+aiosqlite:///x.db")
    postgres = UserAdminSettings(_env_file=None, POSTGRES_HOST="db")
    assert embedded.generates_signing_key
    assert not postgres.generates_signing_key
    assert not hasattr(AuthSettings(_env_file=None), "generates_signing_key")
