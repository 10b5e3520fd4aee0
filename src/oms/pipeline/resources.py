"""Shared resource builders for the pipeline's processes (relay, worker)."""

from __future__ import annotations

from redis.asyncio import Redis

from oms.cache import MemoryOrderCache, OrderCache, RedisOrderCache
from oms.settings import Settings


def build_order_cache(settings: Settings) -> OrderCache:
    """The order cache the API reads: Redis when configured, else this process's memory."""
    if settings.REDIS_URL:
        return RedisOrderCache(
            Redis.from_url(settings.REDIS_URL),
            settings.ORDER_CACHE_TTL_SECONDS,
            settings.REDIS_KEY_PREFIX,
        )
    return MemoryOrderCache(settings.ORDER_CACHE_TTL_SECONDS)
