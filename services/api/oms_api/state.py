"""Process-wide resources of the API, created once in the lifespan and shared by requests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from oms.db.session import create_engine, create_session_factory
from oms.outbox.relay import OutboxRelay
from oms.resources import build_access_book, build_order_cache, redis_client
from oms.security.keys import KeyStore
from oms.security.passwords import configure_password_hashing
from oms.security.tokens import TokenVerifier
from oms.settings import ApiSettings
from oms.users.access import AccessBook
from oms_api.http_metrics import ObservedOrderCache
from oms_api.ratelimit import RateLimiter
from oms_api.request_gate import RequestGate
from oms_api.tracing import instrument_engine

logger = logging.getLogger("oms.api")


@dataclass
class AppState:
    settings: ApiSettings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    keys: KeyStore
    tokens: TokenVerifier
    # The order cache as request handlers use it: counted, and tolerant of cache outages
    # (`cache.inner` is the store itself, as the pipeline writes it).
    cache: ObservedOrderCache
    rate_limiter: RateLimiter
    # Whether a user's tokens still count (revocation; oms.users.access).
    access: AccessBook
    # Revocation, rate limit and order cache in one Redis round trip, when they share a server.
    gate: RequestGate | None = None
    # Set after each committed order: wakes the outbox relay without waiting for its poll.
    outbox_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # Publishes the outbox (RabbitMQ, or in-process when none is configured); None when
    # RUN_OUTBOX_RELAY is off, e.g. because a separate relay process does it.
    outbox_relay: OutboxRelay | None = None


def log_where_orders_go(settings: ApiSettings) -> None:
    """Say once, at start, where accepted orders are processed: with RABBITMQ_URL they wait in
    the broker for processes this one does not start (a copied .env.example sets it)."""
    if settings.RABBITMQ_URL:
        logger.info(
            "orders go to RabbitMQ (queue new_order): they are processed once oms-consumer and "
            "oms-worker run against the same broker (`make stack` starts all three); without "
            "RABBITMQ_URL the API processes them itself"
        )
    else:
        logger.info("orders are processed inside this process (no RABBITMQ_URL)")


@asynccontextmanager
async def open_app_state(settings: ApiSettings) -> AsyncIterator[AppState]:
    configure_password_hashing(settings)
    engine = create_engine(settings)
    instrument_engine(engine)
    session_factory = create_session_factory(engine)
    redis = redis_client(settings)
    cache = build_order_cache(settings, redis)
    access = build_access_book(settings, session_factory, redis)
    state = AppState(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        keys=KeyStore(settings),
        tokens=TokenVerifier(settings),
        cache=ObservedOrderCache(cache),
        rate_limiter=RateLimiter(settings),
        access=access,
        gate=RequestGate.build(
            redis, settings.REDIS_URL, settings.REDIS_URL_RATE_LIMIT, settings.REDIS_KEY_PREFIX
        ),
    )
    if settings.RUN_OUTBOX_RELAY:
        state.outbox_relay = OutboxRelay.from_settings(
            settings, state.session_factory, cache, state.outbox_wakeup
        )
        state.outbox_relay.start()
        log_where_orders_go(settings)
    try:
        yield state
    finally:
        if state.outbox_relay is not None:
            await state.outbox_relay.stop()
        await cache.close()
        await engine.dispose()
