"""Run Alembic programmatically (`oms migrate`, test setup, `make migrate`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from oms.settings import DatabaseSettings

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(settings: DatabaseSettings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["settings"] = settings
    return config


def upgrade(settings: DatabaseSettings, revision: str = "head") -> None:
    """Blocking; call from sync code (CLI) or via `upgrade_async` inside an event loop."""
    command.upgrade(alembic_config(settings), revision)


async def upgrade_async(settings: DatabaseSettings, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, settings, revision)
