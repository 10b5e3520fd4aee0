"""strict order items; per-user token generation and disabling

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Orders stored before the strict item schema may carry fields of any shape in their items. This
migration reshapes every such order into the strict form (name, quantity and the optional sku,
unit_price and note, each valid) and keeps the original items in `legacy_items`, so nothing is
lost and the downgrade can put them back. The rules are copied here on purpose: a migration must
keep doing what it did when it was written, whatever the application's schema becomes.
"""

import re
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BATCH = 500

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_NOTE_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")


def _name(value: Any) -> str:
    text = _UNPRINTABLE.sub("", value if isinstance(value, str) else str(value)).strip()
    return text[:200] or "item"


def _quantity(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 1
    return min(max(value, 1), 1_000_000)


def _unit_price(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        return None
    if not price.is_finite() or price < 0 or price != price.quantize(Decimal("0.01")):
        return None
    if price >= Decimal("100000000"):
        return None
    return f"{price:.2f}"


def strict_item(raw: Any) -> dict[str, Any]:
    item = raw if isinstance(raw, dict) else {}
    reshaped: dict[str, Any] = {
        "name": _name(item.get("name", "item")),
        "quantity": _quantity(item.get("quantity")),
    }
    sku = item.get("sku")
    if isinstance(sku, str) and _SKU.match(sku):
        reshaped["sku"] = sku
    price = _unit_price(item.get("unit_price"))
    if price is not None:
        reshaped["unit_price"] = price
    note = item.get("note")
    if isinstance(note, str) and len(note) <= 500 and not _NOTE_UNPRINTABLE.search(note):
        reshaped["note"] = note
    return reshaped


def strict_items(items: Any) -> list[dict[str, Any]]:
    listed = items if isinstance(items, list) else [items]
    return [strict_item(raw) for raw in listed[:500]] or [{"name": "item", "quantity": 1}]


orders = sa.table(
    "orders",
    sa.column("id", sa.Uuid()),
    sa.column("items", JSON_DOCUMENT),
    sa.column("legacy_items", JSON_DOCUMENT),
)


def _batches(connection: sa.Connection) -> Iterator[list[tuple[Any, Any]]]:
    last = None
    while True:
        query = sa.select(orders.c.id, orders.c["items"]).order_by(orders.c.id).limit(BATCH)
        if last is not None:
            query = query.where(orders.c.id > last)
        rows = [(row[0], row[1]) for row in connection.execute(query)]
        if not rows:
            return
        yield rows
        last = rows[-1][0]


# Plain ALTER TABLE ADD/DROP COLUMN on every backend (SQLite has both since 3.35), never a batch
# copy: on SQLite that drops and recreates `users`, and the foreign keys' ON DELETE CASCADE would
# take every order with it.


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("token_generation", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("users", sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("orders", sa.Column("legacy_items", JSON_DOCUMENT, nullable=True))

    connection = op.get_bind()
    for rows in _batches(connection):
        for order_id, items in rows:
            reshaped = strict_items(items)
            if reshaped != items:
                connection.execute(
                    orders.update()
                    .where(orders.c.id == order_id)
                    .values(items=reshaped, legacy_items=items)
                )


def downgrade() -> None:
    connection = op.get_bind()
    connection.execute(
        orders.update()
        .where(orders.c.legacy_items.is_not(None))
        .values(items=orders.c.legacy_items)
    )
    op.drop_column("orders", "legacy_items")
    op.drop_column("users", "disabled_at")
    op.drop_column("users", "token_generation")
