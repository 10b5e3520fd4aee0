from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from oms.orders.service import InvalidCursorError, decode_cursor
from oms.settings import Settings


def blank(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_embedded_default_is_sqlite_under_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POSTGRES_HOST", "DATABASE_URL", "REDIS_URL", "RABBITMQ_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = blank(DATA_DIR=Path("/srv/oms"))
    assert settings.database_backend == "sqlite"
    assert settings.database_url.database == "/srv/oms/oms.db"
    assert settings.REDIS_URL is None


def test_postgres_url_is_built_from_the_seed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_HOST", "db")
    monkeypatch.setenv("POSTGRES_PASSWORD", "p@ss:word")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = blank()
    url = settings.database_url
    assert settings.database_backend == "postgresql"
    assert (url.drivername, url.host, url.port, url.database) == (
        "postgresql+asyncpg",
        "db",
        5432,
        "order_db",
    )
    assert url.password == "p@ss:word"
    assert "p@ss:word" not in repr(settings)


def test_lists_accept_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8")
    settings = blank()
    assert settings.CORS_ORIGINS == ["https://a.example", "https://b.example"]
    assert settings.TRUSTED_PROXIES == ["10.0.0.0/8"]


def test_cursor_round_trip_and_rejects_garbage() -> None:
    from oms.orders.service import encode_cursor

    class Row:
        created_at = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
        id = uuid.uuid4()

    assert decode_cursor(encode_cursor(Row())) == (Row.created_at, Row.id)  # type: ignore[arg-type]
    for garbage in ("", "!!!", "YWJj", "MjAyNi0wMS0wMnx4"):
        with pytest.raises(InvalidCursorError):
            decode_cursor(garbage)
