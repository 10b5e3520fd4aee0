"""Run Alembic programmatically (`oms migrate`, test setup, `make migrate`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from oms.settings import DatabaseSettings

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(settings: DatabaseSettings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["settings"] = settings
    return config


def upgrade(settings: DatabaseSettings, revision: str = "head") -> list[str]:
    """Blocking; call from sync code (CLI) or via `upgrade_async` inside an event loop. Returns
    the revisions applied, in order (none when the database was already there)."""
    config = alembic_config(settings)
    applied: list[str] = []
    config.attributes["applied"] = applied  # env.py records each step here
    command.upgrade(config, revision)
    return applied


def head_revision(settings: DatabaseSettings) -> str | None:
    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head()


async def upgrade_async(settings: DatabaseSettings, revision: str = "head") -> list[str]:
    return await asyncio.to_thread(upgrade, settings, revision)
