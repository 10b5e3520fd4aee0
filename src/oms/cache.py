"""The order read cache: `order:{id}` in Redis (300 s), or process memory in the embedded mode.

Every entry carries the order's row version and a write only lands when its version is at least
the cached one. Readers filling a miss and writers publishing a change can then interleave in any
order and the newest state still wins: a reader that fetched a row just before a PATCH or the
worker committed can never park a stale copy in the cache for the whole TTL.
"""

from __future__ import annotations

import time
from typing import Protocol

from redis.asyncio import Redis

# KEYS[1] = cache key; ARGV = version, body, ttl seconds.
_SET_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'body', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class OrderCache(Protocol):
    @property
    def shared(self) -> bool:
        """Whether every process sees the same entries (and so every deletion): a
        process-local cache cannot hear that `oms user delete`, run in another process,
        removed an order."""
        ...

    async def get(self, order_id: str) -> bytes | None: ...

    async def put(self, order_id: str, version: int, body: bytes) -> bool: ...

    async def delete(self, order_id: str) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


def order_key(prefix: str, order_id: str) -> str:
    return f"{prefix}order:{order_id}"


class RedisOrderCache:
    shared = True

    def __init__(self, redis: Redis, ttl_seconds: int, prefix: str = "") -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._prefix = prefix
        self._set_if_newer = redis.register_script(_SET_IF_NEWER)

    def key(self, order_id: str) -> str:
        return order_key(self._prefix, order_id)

    async def get(self, order_id: str) -> bytes | None:
        body: bytes | str | None = await self._redis.hget(  # type: ignore[misc]
            self.key(order_id), "body"
        )
        return body.encode() if isinstance(body, str) else body

    async def put(self, order_id: str, version: int, body: bytes) -> bool:
        stored = await self._set_if_newer(
            keys=[self.key(order_id)], args=[version, body, self._ttl]
        )
        return bool(stored)

    async def delete(self, order_id: str) -> None:
        await self._redis.delete(self.key(order_id))

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()


class MemoryOrderCache:
    """Same contract in process memory, for the single-process embedded default."""

    shared = False

    def __init__(self, ttl_seconds: int, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[str, tuple[float, int, bytes]] = {}

    async def get(self, order_id: str) -> bytes | None:
        entry = self._entries.get(order_id)
        if entry is None:
            return None
        expires, _version, body = entry
        if expires < time.monotonic():
            self._entries.pop(order_id, None)
            return None
        return body

    async def put(self, order_id: str, version: int, body: bytes) -> bool:
        current = self._entries.get(order_id)
        now = time.monotonic()
        if current is not None and current[0] >= now and current[1] > version:
            return False
        if len(self._entries) >= self._max and order_id not in self._entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[order_id] = (now + self._ttl, version, body)
        return True

    async def delete(self, order_id: str) -> None:
        self._entries.pop(order_id, None)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()
