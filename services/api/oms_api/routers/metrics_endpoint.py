"""Prometheus exposition for the API process (`/metrics`)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oms.db.models import OutboxEvent
from oms.observability.metrics_registry import scrape_registry
from oms_api.deps import StateDep
from oms_api.http_metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE

router = APIRouter(tags=["health"])
logger = logging.getLogger("oms.api.metrics")


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    # The backlog is read at scrape time (one indexed query), so it is right even when the
    # relay that would otherwise report it is stuck.
    await read_outbox_backlog(state.session_factory)
    return Response(generate_latest(scrape_registry()), media_type=CONTENT_TYPE_LATEST)


async def read_outbox_backlog(session_factory: async_sessionmaker[AsyncSession]) -> None:
    async with session_factory() as session:
        count, oldest = (
            await session.execute(
                # Parked events are counted apart (oms_outbox_parked_events); the same filter
                # as the relay's partial index keeps this an index scan.
                select(func.count(), func.min(OutboxEvent.created_at)).where(
                    OutboxEvent.sent_at.is_(None), OutboxEvent.dead_lettered_at.is_(None)
                )
            )
        ).one()
    OUTBOX_BACKLOG.set(count)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)  # aggregates bypass the column's UTC type on SQLite
    OUTBOX_OLDEST_AGE.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)


async def refresh_outbox_backlog(
    session_factory: async_sessionmaker[AsyncSession], every_seconds: float = 15.0
) -> None:
    """With /metrics on its own port (API_METRICS_PORT) nothing of ours runs at scrape time:
    read the backlog on a timer instead, at most one query per interval."""
    while True:
        try:
            await read_outbox_backlog(session_factory)
        except (SQLAlchemyError, OSError):
            logger.warning("could not read the outbox backlog", exc_info=True)
        await asyncio.sleep(every_seconds)
