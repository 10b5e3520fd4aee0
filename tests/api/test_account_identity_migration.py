"""Migration 0004 on a database with users, orders and idempotency keys: everything is kept,
every account gets its own key, and on SQLite the rebuilt `users` table never reuses an id while
its foreign keys still cascade."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from contextlib import closing
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic import command

from oms.cli import manage_user
from oms.db.models import IdempotencyKey, Order, User
from oms.db.session import create_engine
from oms.migrations.runner import alembic_config
from oms.security.passwords import configure_password_hashing, hash_password
from oms.settings import Settings
from tests.api.test_legacy_items import USERS  # `users` as migration 0003 left it
from tests.conftest import register, serving

PASSWORD = "secret123"


def _table(model: type[Order] | type[IdempotencyKey]) -> sa.TableClause:
    columns = model.__table__.c
    return sa.table(model.__tablename__, *(sa.column(c.name, c.type) for c in columns))


async def _migrate(settings: Settings, verb: str, revision: str) -> None:
    await asyncio.to_thread(getattr(command, verb), alembic_config(settings), revision)


async def _fill_at_0003(settings: Settings) -> dict[int, uuid.UUID]:
    """Users 1-3 (3 has no orders), an order each for 1 and 2, an idempotency key for 2's.
    Returns the order id of each user that has one."""
    configure_password_hashing(settings)
    now = datetime.now(UTC)
    orders = {1: uuid.uuid4(), 2: uuid.uuid4()}
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            for user_id in (1, 2, 3):
                # Numbered by the database, as the API does (PostgreSQL's sequence moves on).
                created = await connection.execute(
                    USERS.insert()
                    .values(
                        email=f"u{user_id}@example.com",
                        hashed_password=hash_password(PASSWORD),
                        role="user",
                        created_at=now,
                    )
                    .returning(USERS.c.id)
                )
                assert created.scalar_one() == user_id
            for user_id, order_id in orders.items():
                await connection.execute(
                    _table(Order)
                    .insert()
                    .values(
                        id=order_id,
                        user_id=user_id,
                        items=[{"name": "pen", "quantity": 1}],
                        total_price=Decimal("3.10"),
                        status="PENDING",
                        created_at=now,
                        updated_at=now,
                        version=1,
                    )
                )
            await connection.execute(
                _table(IdempotencyKey)
                .insert()
                .values(
                    user_id=2,
                    key="retry-1",
                    request_fingerprint="f" * 64,
                    order_id=orders[2],
                    created_at=now,
                )
            )
    finally:
        await engine.dispose()
    return orders


async def _rows(settings: Settings) -> tuple[list[tuple[int, str]], list[int], list[int]]:
    """(users' ids and emails, orders' user ids, idempotency keys' user ids), sorted."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            users = await connection.execute(
                sa.select(USERS.c.id, USERS.c.email).order_by(USERS.c.id)
            )
            orders = await connection.execute(sa.text("SELECT user_id FROM orders ORDER BY 1"))
            keys = await connection.execute(
                sa.text("SELECT user_id FROM idempotency_keys ORDER BY 1")
            )
            return (
                [(row.id, row.email) for row in users],
                list(orders.scalars()),
                list(keys.scalars()),
            )
    finally:
        await engine.dispose()


async def _account_keys(settings: Settings) -> list[uuid.UUID]:
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(sa.select(User.account_key))).scalars())
    finally:
        await engine.dispose()


def _sqlite_file(settings: Settings) -> str:
    database = settings.database_url.database
    assert database is not None
    return database


async def test_the_migration_keeps_the_data_binds_every_account_and_still_cascades(
    settings: Settings,
) -> None:
    await _migrate(settings, "downgrade", "0003")
    orders = await _fill_at_0003(settings)
    before = await _rows(settings)
    assert before == (
        [(1, "u1@example.com"), (2, "u2@example.com"), (3, "u3@example.com")],
        [1, 2],
        [2],
    )

    await _migrate(settings, "upgrade", "head")
    assert await _rows(settings) == before
    account_keys = await _account_keys(settings)
    assert len(set(account_keys)) == 3
    if settings.database_backend == "sqlite":
        with closing(sqlite3.connect(_sqlite_file(settings))) as db:
            users_sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'users'").fetchone()
            assert "AUTOINCREMENT" in users_sql[0]
            sequence = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'users'").fetchone()
            assert sequence == (3,)
            references = {
                (row[2], row[3], row[6])  # parent table, from column, on delete
                for table in ("orders", "idempotency_keys")
                for row in db.execute(f"PRAGMA foreign_key_list({table})")
            }
            assert ("users", "user_id", "CASCADE") in references
            assert db.execute("PRAGMA foreign_key_check").fetchall() == []

    async with serving(settings) as client:
        # A migrated account logs in and reads its order: its token carries its new key.
        login = await client.post(
            "/token", data={"username": "u2@example.com", "password": PASSWORD}
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        read = await client.get(f"/orders/{orders[2]}/", headers=headers)
        assert read.status_code == 200, read.text
        # The highest id, deleted, is not handed out again.
        assert await manage_user(settings, "delete", "u3@example.com") == 0
        assert (await register(client, "newcomer@example.com")).id == 4
        # Deleting a user still takes their orders and idempotency keys with them.
        assert await manage_user(settings, "delete", "u2@example.com") == 0
    users, order_owners, key_owners = await _rows(settings)
    assert [user_id for user_id, _ in users] == [1, 4]
    assert (order_owners, key_owners) == ([1], [])

    # And back: the downgrade keeps the data too.
    await _migrate(settings, "downgrade", "0003")
    users_after_downgrade, order_owners, _ = await _rows(settings)
    assert users_after_downgrade == users
    assert order_owners == [1]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_sqlite_rebuild_commits_nothing_when_a_foreign_key_would_dangle(
    settings: Settings, backend: str
) -> None:
    await _migrate(settings, "downgrade", "0003")
    await _fill_at_0003(settings)
    with closing(sqlite3.connect(_sqlite_file(settings))) as db:
        # Only possible with enforcement off, as here: an order whose user is gone.
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("DELETE FROM users WHERE id = 1")
        db.commit()
    with pytest.raises(RuntimeError, match="without their parent"):
        await _migrate(settings, "upgrade", "head")
    with closing(sqlite3.connect(_sqlite_file(settings))) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("0003",)]
        columns = [row[1] for row in db.execute("PRAGMA table_info(users)")]
        assert "account_key" not in columns
        assert db.execute("SELECT count(*) FROM orders").fetchone() == (2,)
        assert (
            db.execute("SELECT name FROM sqlite_master WHERE name LIKE '_alembic%'").fetchall()
            == []
        )
