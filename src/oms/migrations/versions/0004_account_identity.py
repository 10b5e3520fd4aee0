"""user ids never reused; a per-account key that binds tokens to the account

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

Two changes to `users`, so that a token, an access entry or a cached order of a deleted account
can never be taken for another account's:

- `account_key`: a random UUID per account, never changed, carried in every token. Existing
  accounts get one here.
- On SQLite the table is rebuilt with AUTOINCREMENT: without it SQLite hands the highest id out
  again once that row is deleted. The copy keeps the ids, so `sqlite_sequence` starts at the
  highest id present (an id deleted before this migration may come back once, but every token
  issued before it lacks the account key and is refused). PostgreSQL's SERIAL sequence never
  goes back, so the id column is left as it is there (an identity column would promise nothing
  more).

SQLite cannot alter a table in place: the rebuild creates a copy, drops `users` and renames the
copy. With foreign keys enforced, that DROP would cascade into `orders` and `idempotency_keys`,
so the rebuild runs with enforcement off (a setting SQLite only changes outside a transaction),
in a transaction of its own, and checks every foreign key before it commits.
"""

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000
# "always" on SQLite (the only way to add AUTOINCREMENT); "auto" (plain ALTERs) elsewhere.
Recreate = Literal["always", "auto"]
ACCOUNT_KEY_UNIQUE = "uq_users_account_key"

users = sa.table("users", sa.column("id", sa.Integer()), sa.column("account_key", sa.Uuid()))


class ForeignKeyViolationError(RuntimeError):
    """The rebuilt table would leave rows pointing at nothing; nothing was committed."""


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


@contextmanager
def _sqlite_rebuild_transaction() -> Iterator[None]:
    """Foreign key enforcement off, one transaction, foreign keys checked before the commit,
    enforcement back as it was (on, as oms.db.session sets it) whatever happens."""
    with op.get_context().autocommit_block():
        connection = op.get_bind()
        enforced = connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one()
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield
                dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if dangling:
                    raise ForeignKeyViolationError(f"rows without their parent: {dangling[:5]}")
            except BaseException:
                connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")
        finally:
            connection.exec_driver_sql(f"PRAGMA foreign_keys={int(enforced)}")


def _fill_account_keys() -> None:
    connection = op.get_bind()
    ids = list(connection.execute(sa.select(users.c.id).order_by(users.c.id)).scalars())
    assign = (
        users.update()
        .where(users.c.id == sa.bindparam("user_id"))
        .values(account_key=sa.bindparam("key"))
    )
    for start in range(0, len(ids), BATCH):
        connection.execute(
            assign,
            [{"user_id": user_id, "key": uuid.uuid4()} for user_id in ids[start : start + BATCH]],
        )


def _upgrade_users(recreate: Recreate) -> None:
    op.add_column("users", sa.Column("account_key", sa.Uuid(), nullable=True))
    _fill_account_keys()
    with op.batch_alter_table(
        "users", recreate=recreate, table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.alter_column("account_key", existing_type=sa.Uuid(), nullable=False)
        batch.create_unique_constraint(ACCOUNT_KEY_UNIQUE, ["account_key"])


def _downgrade_users(recreate: Recreate) -> None:
    with op.batch_alter_table(
        "users", recreate=recreate, table_kwargs={"sqlite_autoincrement": False}
    ) as batch:
        batch.drop_constraint(ACCOUNT_KEY_UNIQUE, type_="unique")
        batch.drop_column("account_key")


def _change_users(change: Callable[[Recreate], None]) -> None:
    if _sqlite():
        with _sqlite_rebuild_transaction():
            change("always")
    else:
        change("auto")


def upgrade() -> None:
    _change_users(_upgrade_users)


def downgrade() -> None:
    _change_users(_downgrade_users)
