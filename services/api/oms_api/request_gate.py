"""The request gate: revocation, rate limit and (on order reads) the cache in ONE Redis round trip.

A request with a valid bearer token needs three things from Redis before it can be answered:
whether the token's account still holds the id and its tokens still count (`user:{id}:access`,
oms.users.access), a hit on the route's moving-window limit (limits' storage format, so the
`limits` library and this script count the same window), and on `GET /orders/{id}/` the cached
order (`order:{id}`). Profiled, three round trips cost more CPU in redis-py than the rest of
a cached read together (bench/README.md), so one Lua script does all three: it reads the access
entry and decides, as `resolve_optional_claims` does, whether the limit is counted per user
(token admitted) or per client IP (revoked); it reads the cached body only for an admitted token.

The cache and the limit counters live in different Redis databases of one server (REDIS_URL
/0, REDIS_URL_RATE_LIMIT /1): a script may SELECT another database for its own duration without
changing the caller's. The gate is only built when both URLs name the same server; otherwise, in
the embedded mode, or when the access entry is not in Redis (expired: the database must be asked)
the caller takes the ordinary path, one store at a time, with the same outcome.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from limits import RateLimitItem
from redis.asyncio import Redis

from oms.cache import order_key

# KEYS: access entry, limit key per user, limit key per IP, cache key ("" = no cache read).
# ARGV: token generation, limit database ("" = same), limit on ("1"/"0"), now, amount, expiry,
# token account key (hex). The access entry is oms.users.access.UserAccess.encode()'s
# "generation:active:account key"; the token is admitted only when all three agree.
# Returns {0} when the access entry is missing or unreadable (caller asks the database), else
# {1, admitted, active, acquired, oldest window entry or false, entries in window, body or false}.
# The limit part is limits' acquire_moving_window.lua (amount 1) then moving_window.lua.
_GATE = """
local access = redis.call('GET', KEYS[1])
if not access then return {0} end
local generation, active, account = string.match(access, '^(%d+):([01]):(%x*)$')
if not generation then return {0} end
local admitted = active == '1' and generation == ARGV[1] and account == ARGV[7]
local on = active == '1' and 1 or 0
local body = false
if admitted and KEYS[4] ~= '' then
  body = redis.call('HGET', KEYS[4], 'body')
end
if ARGV[3] ~= '1' then
  return {1, admitted and 1 or 0, on, 1, false, 0, body}
end
if ARGV[2] ~= '' then redis.call('SELECT', ARGV[2]) end
local key = admitted and KEYS[2] or KEYS[3]
local now = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local expiry = tonumber(ARGV[6])
local acquired = 1
local entry = redis.call('LINDEX', key, limit - 1)
if entry and tonumber(entry) >= now - expiry then
  acquired = 0
else
  redis.call('LPUSH', key, now)
  redis.call('LTRIM', key, 0, limit - 1)
  redis.call('EXPIRE', key, expiry)
end
local target = now - expiry
local low, high, found = 0, limit - 1, nil
while low <= high do
  local mid = math.floor((low + high) / 2)
  local value = tonumber(redis.call('LINDEX', key, mid))
  if value and value >= target then
    found = mid
    low = mid + 1
  else
    high = mid - 1
  end
end
if found then
  local oldest = redis.call('LINDEX', key, found)
  return {1, admitted and 1 or 0, on, acquired, oldest, found + 1, body}
end
return {1, admitted and 1 or 0, on, acquired, false, 0, body}
"""


@dataclass(frozen=True, slots=True)
class LimitOutcome:
    allowed: bool
    reset_time: float
    remaining: int


@dataclass(frozen=True, slots=True)
class GateOutcome:
    admitted: bool
    active: bool
    # None when the limit was not counted (limits disabled).
    limit: LimitOutcome | None
    # The cached order's JSON; None on a miss or when no order was asked for.
    cached: bytes | None


def _server_and_db(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    return urlunsplit(parts._replace(path="", fragment="")), db


class RequestGate:
    def __init__(self, redis: Redis, limit_db: str, prefix: str) -> None:
        self._prefix = prefix
        # limits' RedisStorage key: "<key_prefix>:<item key>" (see oms_api.ratelimit).
        self._limit_prefix = f"{prefix}ratelimit:"
        self._limit_db = limit_db
        self._script = redis.register_script(_GATE)

    @classmethod
    def build(
        cls, redis: Redis | None, cache_url: str | None, limit_url: str | None, prefix: str
    ) -> RequestGate | None:
        """A gate when the cache (`cache_url`, read through `redis`) and the limit counters
        (`limit_url`) share a Redis server, else None. `prefix`: REDIS_KEY_PREFIX."""
        if redis is None or not cache_url or not limit_url:
            return None
        cache_server, cache_db = _server_and_db(cache_url)
        limit_server, limit_db = _server_and_db(limit_url)
        if cache_server != limit_server or not cache_db.isdigit() or not limit_db.isdigit():
            return None
        return cls(redis, "" if limit_db == cache_db else limit_db, prefix)

    def access_key(self, user_id: int) -> str:
        return f"{self._prefix}user:{user_id}:access"

    def cache_key(self, order_id: str) -> str:
        return order_key(self._prefix, order_id)

    def limit_key(self, item: RateLimitItem, scope: str, key: str) -> str:
        return self._limit_prefix + item.key_for(scope, key)

    async def admit(
        self,
        user_id: int,
        generation: int,
        account_key: uuid.UUID,
        limit: tuple[RateLimitItem, str, str, str] | None,
        cache_key: str | None = None,
    ) -> GateOutcome | None:
        """One round trip. `limit` is (item, scope, user key, IP key) or None when limits are
        off. None when the access entry is not in Redis: the caller must take the long way."""
        if limit is None:
            keys = [self.access_key(user_id), "", "", cache_key or ""]
            args: list[str | int | float] = [generation, self._limit_db, "0", 0, 0, 0]
        else:
            item, scope, user_key, ip_key = limit
            keys = [
                self.access_key(user_id),
                self.limit_key(item, scope, user_key),
                self.limit_key(item, scope, ip_key),
                cache_key or "",
            ]
            now = time.time()
            args = [generation, self._limit_db, "1", now, item.amount, item.get_expiry()]
        args.append(account_key.hex)
        answer = await self._script(keys=keys, args=args)
        if not answer[0]:
            return None
        _, admitted, active, acquired, oldest, count, body = answer
        outcome: LimitOutcome | None = None
        if limit is not None:
            item = limit[0]
            if oldest:
                reset, remaining = float(oldest) + item.get_expiry(), item.amount - int(count)
            else:
                reset, remaining = now + item.get_expiry(), item.amount
            outcome = LimitOutcome(bool(acquired), reset, remaining)
        return GateOutcome(bool(admitted), bool(active), outcome, body or None)
