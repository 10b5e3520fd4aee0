"""Shared stores every process builds the same way: the order cache and the access book.

The API, the relay, the worker and the `oms user` commands all use these builders, so the
Redis-or-memory choice (and the key prefix, TTLs) is made in one place.
"""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oms.cache import MemoryOrderCache, OrderCache, RedisOrderCache
from oms.settings import RedisSettings, StoreSettings
from oms.users.access import AccessBook, DatabaseAccessBook, RedisAccessBook


def redis_client(settings: RedisSettings) -> Redis | None:
    """A client for REDIS_URL, or None in the embedded mode (no Redis configured)."""
    return Redis.from_url(settings.REDIS_URL) if settings.REDIS_URL else None


def build_order_cache(settings: StoreSettings, redis: Redis | None = None) -> OrderCache:
    """The order cache the API reads: Redis when configured, else this process's memory.

    `redis` shares a client (the cache closes it); without one a new client is made."""
    if settings.REDIS_URL:
        return RedisOrderCache(
            redis if redis is not None else Redis.from_url(settings.REDIS_URL),
            settings.ORDER_CACHE_TTL_SECONDS,
            settings.REDIS_KEY_PREFIX,
        )
    return MemoryOrderCache(settings.ORDER_CACHE_TTL_SECONDS)


def build_access_book(
    settings: StoreSettings, sessions: async_sessionmaker[AsyncSession], redis: Redis | None
) -> AccessBook:
    """Revocation state: kept in Redis when there is a client, else read from the database."""
    if redis is not None:
        return RedisAccessBook(
            redis, sessions, settings.USER_STATE_CACHE_SECONDS, settings.REDIS_KEY_PREFIX
        )
    return DatabaseAccessBook(sessions)
