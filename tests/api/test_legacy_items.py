"""Orders stored before items were strict still read back after migration 0003, on both backends;
the original items are kept and the downgrade restores them."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from alembic import command

from oms.db.models import Order
from oms.db.session import create_engine
from oms.migrations.runner import alembic_config
from oms.security.passwords import configure_password_hashing, hash_password
from oms.settings import Settings
from tests.conftest import serving

LEGACY_ITEMS: list[Any] = [
    {"name": "pen", "quantity": 2, "colour": "blue", "blob": {"deep": [1, 2, {"x": None}]}},
    {"name": "ink", "quantity": 1, "sku": "has space", "unit_price": "abc", "note": 7},
    {"name": "paper", "quantity": 3, "sku": "PAP-1", "unit_price": 4.5, "note": "A4"},
]
STRICT_ITEMS = [
    {"name": "pen", "quantity": 2},
    {"name": "ink", "quantity": 1},
    {"name": "paper", "quantity": 3, "sku": "PAP-1", "unit_price": "4.50", "note": "A4"},
]
USERS = sa.table(
    "users",
    sa.column("id", sa.Integer),
    sa.column("email", sa.String),
    sa.column("hashed_password", sa.String),
    sa.column("role", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


async def _run(settings: Settings, verb: str, revision: str) -> None:
    await asyncio.to_thread(getattr(command, verb), alembic_config(settings), revision)


async def _store_legacy_order(settings: Settings, extra_items: list[Any]) -> uuid.UUID:
    configure_password_hashing(settings)
    order_id = uuid.uuid4()
    now = datetime.now(UTC)
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                USERS.insert().values(
                    id=1,
                    email="legacy@example.com",
                    hashed_password=hash_password("secret123"),
                    role="user",
                    created_at=now,
                )
            )
            columns = Order.__table__.c
            legacy_order = sa.table(
                "orders",
                *(
                    sa.column(name, columns[name].type)
                    for name in (
                        "id",
                        "user_id",
                        "items",
                        "total_price",
                        "status",
                        "created_at",
                        "updated_at",
                        "version",
                    )
                ),
            )
            await connection.execute(
                legacy_order.insert().values(
                    id=order_id,
                    user_id=1,
                    items=LEGACY_ITEMS + extra_items,
                    total_price=Decimal("12.00"),
                    status="PENDING",
                    created_at=now,
                    updated_at=now,
                    version=1,
                )
            )
    finally:
        await engine.dispose()
    return order_id


async def test_legacy_items_read_back_after_the_migration_and_come_back_on_downgrade(
    settings: Settings,
) -> None:
    await _run(settings, "downgrade", "0002")
    # Only SQLite could ever store an unpaired surrogate (PostgreSQL's JSONB refuses it).
    odd = (
        [{"name": "x", "quantity": 1, "bad": "\udfff"}]
        if settings.database_backend == "sqlite"
        else []
    )
    order_id = await _store_legacy_order(settings, odd)
    await _run(settings, "upgrade", "head")

    async with serving(settings) as client:
        token = await client.post(
            "/token", data={"username": "legacy@example.com", "password": "secret123"}
        )
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        read = await client.get(f"/orders/{order_id}/", headers=headers)
        assert read.status_code == 200, read.text
        expected = STRICT_ITEMS + ([{"name": "x", "quantity": 1}] if odd else [])
        assert read.json()["items"] == expected
        listed = await client.get("/orders/user/1", headers=headers)
        assert listed.status_code == 200
        assert listed.json()["items"][0]["items"] == expected

    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            kept = (
                await connection.execute(sa.select(Order.legacy_items).where(Order.id == order_id))
            ).scalar_one()
        assert kept == LEGACY_ITEMS + odd
    finally:
        await engine.dispose()

    await _run(settings, "downgrade", "0002")
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            restored = (
                await connection.execute(
                    sa.text("SELECT items FROM orders WHERE id = :id"),
                    {"id": order_id.hex if settings.database_backend == "sqlite" else order_id},
                )
            ).scalar_one()
        if isinstance(restored, str):  # SQLite hands back the JSON text
            restored = json.loads(restored)
        assert restored == LEGACY_ITEMS + odd
    finally:
        await engine.dispose()
