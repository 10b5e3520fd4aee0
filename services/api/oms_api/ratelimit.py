"""Per-user or per-IP rate limits in Redis (`REDIS_URL_RATE_LIMIT`) or in memory.

Built on `limits`, the engine under slowapi, through its asyncio API: slowapi itself checks
limits with a synchronous Redis client, which would block the event loop on every request.
Routes that require a user are limited per user when a valid bearer token is present, else per
client IP; the routes that guard credentials (`/token`, `/register`) always per client IP, so a
token of an account the client owns cannot buy it more password guesses. `X-Forwarded-For` is
believed only when the direct peer is a trusted proxy.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass

from fastapi import Request
from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from redis.exceptions import RedisError

from oms.settings import ApiSettings, RateLimitSettings
from oms_api.metrics import RATE_LIMIT_ERRORS, RATE_LIMITED
from oms_api.middleware import RATE_LIMIT_HEADERS_KEY
from oms_api.problems import ProblemError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

logger = logging.getLogger("oms.api.ratelimit")


def parse_networks(cidrs: list[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def client_ip(peer: str | None, forwarded_for: str | None, trusted: list[IPNetwork]) -> str:
    """The address of whoever sent the request, looking through trusted proxies only."""
    if peer is None:
        return "unknown"
    if not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    # Walk from the nearest hop back: the first address we do not trust is the client.
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _is_trusted(address: str, trusted: list[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


@dataclass(frozen=True)
class RateLimitPolicy:
    create_order: RateLimitItem
    get_order: RateLimitItem
    update_order: RateLimitItem
    list_orders: RateLimitItem
    token: RateLimitItem
    register: RateLimitItem

    @classmethod
    def from_settings(cls, settings: RateLimitSettings) -> RateLimitPolicy:
        return cls(
            create_order=parse(settings.RATE_LIMIT_CREATE_ORDER),
            get_order=parse(settings.RATE_LIMIT_GET_ORDER),
            update_order=parse(settings.RATE_LIMIT_UPDATE_ORDER),
            list_orders=parse(settings.RATE_LIMIT_LIST_ORDERS),
            token=parse(settings.RATE_LIMIT_TOKEN),
            register=parse(settings.RATE_LIMIT_REGISTER),
        )


class RateLimiter:
    def __init__(self, settings: ApiSettings) -> None:
        self.enabled = settings.RATE_LIMIT_ENABLED
        self.policy = RateLimitPolicy.from_settings(settings)
        self.trusted_proxies = parse_networks(settings.TRUSTED_PROXIES)
        prefix = f"{settings.REDIS_KEY_PREFIX}ratelimit"
        if settings.REDIS_URL_RATE_LIMIT:
            uri = "async+" + settings.REDIS_URL_RATE_LIMIT
            self._storage = storage_from_string(uri, implementation="redispy", key_prefix=prefix)
        else:
            self._storage = storage_from_string("async+memory://")
        self._strategy = MovingWindowRateLimiter(self._storage)

    async def check(self, item: RateLimitItem, scope: str, key: str, request: Request) -> None:
        """Count one hit; raise 429 when over the limit (see `apply`)."""
        try:
            allowed = await self._strategy.hit(item, scope, key)
            stats = await self._strategy.get_window_stats(item, scope, key)
        except (RedisError, OSError, StorageError):
            self.failed_open()
            return
        self.apply(item, scope, request, allowed, stats.reset_time, stats.remaining)

    @staticmethod
    def failed_open() -> None:
        # Fail open: an outage of the limit store must not take the API down with it.
        RATE_LIMIT_ERRORS.inc()
        logger.warning("rate limit storage unavailable; request let through", exc_info=True)

    @staticmethod
    def apply(
        item: RateLimitItem,
        scope: str,
        request: Request,
        allowed: bool,
        reset_time: float,
        remaining: int,
    ) -> None:
        """Raise 429 when the hit was not allowed. The X-RateLimit-* headers are left in the
        request state, where the envelope middleware puts them on the answer, whatever it
        turns out to be (also 401, 404, 422 and 500)."""
        reset = str(int(reset_time))
        setattr(
            request.state,
            RATE_LIMIT_HEADERS_KEY,
            [
                (b"x-ratelimit-limit", str(item.amount).encode()),
                (b"x-ratelimit-remaining", str(remaining).encode()),
                (b"x-ratelimit-reset", reset.encode()),
            ],
        )
        if not allowed:
            RATE_LIMITED.labels(scope).inc()
            reset_in = max(0, math.ceil(reset_time - time.time()))
            raise ProblemError(
                429,
                f"Rate limit of {item} exceeded for {scope}; retry in {reset_in} s.",
                headers={
                    "X-RateLimit-Limit": str(item.amount),
                    "X-RateLimit-Remaining": str(remaining),
                    "X-RateLimit-Reset": reset,
                    "Retry-After": str(max(1, reset_in)),
                },
                limit=str(item),
            )

    async def reset(self) -> None:
        await self._strategy.storage.reset()
