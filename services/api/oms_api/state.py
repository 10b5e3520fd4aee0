"""Process-wide resources of the API, created once in the lifespan and shared by requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from oms.cache import MemoryOrderCache, OrderCache, RedisOrderCache
from oms.db.session import create_engine, create_session_factory
from oms.security.keys import KeyStore
from oms.settings import Settings
from oms_api.ratelimit import RateLimiter


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    keys: KeyStore
    cache: OrderCache
    rate_limiter: RateLimiter
    # Set after each committed order: wakes the outbox relay without waiting for its poll.
    outbox_wakeup: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def open_app_state(settings: Settings) -> AsyncIterator[AppState]:
    engine = create_engine(settings)
    cache: OrderCache
    if settings.REDIS_URL:
        cache = RedisOrderCache(
            Redis.from_url(settings.REDIS_URL),
            settings.ORDER_CACHE_TTL_SECONDS,
            settings.REDIS_KEY_PREFIX,
        )
    else:
        cache = MemoryOrderCache(settings.ORDER_CACHE_TTL_SECONDS)
    state = AppState(
        settings=settings,
        engine=engine,
        session_factory=create_session_factory(engine),
        keys=KeyStore(settings),
        cache=cache,
        rate_limiter=RateLimiter(settings),
    )
    try:
        yield state
    finally:
        await cache.close()
        await engine.dispose()
