"""outbox retry and parking: next_attempt_at, last_error, dead_lettered_at

A processing failure in the embedded mode is retried with back-off and then parked on the row
itself (see `oms.db.models.OutboxEvent`). The relay's partial index now leaves parked rows out;
a second partial index serves `oms dlq list|replay` and the parked-events gauge.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNSENT = "sent_at IS NULL"
UNSENT_AND_NOT_PARKED = "sent_at IS NULL AND dead_lettered_at IS NULL"
PARKED = "dead_lettered_at IS NOT NULL"


def create_partial_index(batch_op: BatchOperations, name: str, column: str, where: str) -> None:
    """A one-column index over only the rows `where` selects, on PostgreSQL and SQLite."""
    batch_op.create_index(
        name, [column], unique=False, postgresql_where=sa.text(where), sqlite_where=sa.text(where)
    )


def upgrade() -> None:
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_error", sa.String(length=500), nullable=True))
        batch_op.add_column(
            sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.drop_index("ix_outbox_events_unsent")
        create_partial_index(
            batch_op, "ix_outbox_events_unsent", "created_at", UNSENT_AND_NOT_PARKED
        )
        create_partial_index(batch_op, "ix_outbox_events_parked", "dead_lettered_at", PARKED)


def downgrade() -> None:
    # Parked rows become plain unsent rows again: the old relay retries them (nothing is lost).
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_events_parked")
        batch_op.drop_index("ix_outbox_events_unsent")
        create_partial_index(batch_op, "ix_outbox_events_unsent", "created_at", UNSENT)
        batch_op.drop_column("dead_lettered_at")
        batch_op.drop_column("last_error")
        batch_op.drop_column("next_attempt_at")
