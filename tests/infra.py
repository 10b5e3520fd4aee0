"""Real infrastructure for tests: isolated PostgreSQL databases, Redis prefixes, settings."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from oms.settings import Settings

PG_HOST = os.environ.get("TEST_POSTGRES_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_POSTGRES_PORT", "5432"))
# `make services` sets up the role `postgres` with password-less loopback logins.
PG_USER = os.environ.get("TEST_POSTGRES_USER", "postgres")
PG_ADMIN_DB = os.environ.get("TEST_POSTGRES_ADMIN_DB", "postgres")
REDIS_BASE = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
RABBITMQ_MANAGEMENT_URL = os.environ.get(
    "TEST_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/"
)

# Every backend setting is spelled out so a developer's environment never leaks into a test.
# Cheap argon2 for tests: the cost is a setting, the code path is the same.
_FAST_HASHING: dict[str, Any] = {
    "PASSWORD_HASH_TIME_COST": 1,
    "PASSWORD_HASH_MEMORY_KIB": 1024,
    "PASSWORD_HASH_PARALLELISM": 1,
}

_BLANK_BACKENDS: dict[str, Any] = {
    "DATABASE_URL": None,
    "POSTGRES_HOST": None,
    "REDIS_URL": None,
    "REDIS_URL_RATE_LIMIT": None,
    "REDIS_URL_CELERY": None,
    "RABBITMQ_URL": None,
    # Off unless a test asks: an in-process relay would process orders behind API tests' backs.
    "RUN_OUTBOX_RELAY": False,
}


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def _admin_connection() -> asyncpg.Connection:
    return await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB)


async def create_database(name: str, template: str | None = None) -> None:
    connection = await _admin_connection()
    try:
        clause = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        await connection.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await connection.close()


async def drop_database(name: str) -> None:
    connection = await _admin_connection()
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def delete_redis_prefix(prefix: str) -> None:
    for db in (0, 1, 2):
        client = Redis.from_url(f"{REDIS_BASE}/{db}")
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


def postgres_settings(database: str, prefix: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        **_BLANK_BACKENDS,
        **_FAST_HASHING,
        "POSTGRES_HOST": PG_HOST,
        "POSTGRES_PORT": PG_PORT,
        "POSTGRES_USER": PG_USER,
        "POSTGRES_DB": database,
        "REDIS_URL": f"{REDIS_BASE}/0",
        "REDIS_URL_RATE_LIMIT": f"{REDIS_BASE}/1",
        "REDIS_URL_CELERY": f"{REDIS_BASE}/2",
        "REDIS_KEY_PREFIX": prefix,
        "DATA_DIR": data_dir,
        "JWT_AUTO_GENERATE_KEYS": False,
        **overrides,
    }
    return Settings(_env_file=None, **values)


def sqlite_settings(db_file: Path, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        **_BLANK_BACKENDS,
        **_FAST_HASHING,
        "DATABASE_URL": f"sqlite+aiosqlite:///{db_file}",
        "DATA_DIR": data_dir,
        "JWT_AUTO_GENERATE_KEYS": False,
        **overrides,
    }
    return Settings(_env_file=None, **values)


def copy_file(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
