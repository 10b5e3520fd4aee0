"""Migrations describe exactly the models, and go down and up cleanly on both backends."""

from __future__ import annotations

import asyncio

from alembic import command

from oms.migrations.runner import alembic_config
from oms.settings import Settings


async def test_models_and_migrations_agree(settings: Settings) -> None:
    # `alembic check` raises when autogenerate would produce any operation.
    await asyncio.to_thread(command.check, alembic_config(settings))


async def test_downgrade_to_base_and_upgrade_again(settings: Settings) -> None:
    config = alembic_config(settings)
    await asyncio.to_thread(command.downgrade, config, "base")
    await asyncio.to_thread(command.upgrade, config, "head")
    await asyncio.to_thread(command.check, config)
