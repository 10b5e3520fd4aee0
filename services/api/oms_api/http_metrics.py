"""The API's Prometheus metrics, and the order cache as handlers see it (counted, never fatal).

HTTP traffic is recorded by `oms_api.middleware.HttpMetricsMiddleware`.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError

from oms.cache import OrderCache

HTTP_REQUESTS = Counter(
    "oms_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "oms_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
ORDERS_CREATED = Counter("oms_orders_created_total", "Orders created (idempotent replays excluded)")
STATUS_TRANSITIONS = Counter(
    "oms_order_status_transitions_total", "Order status changes", ["from_status", "to_status"]
)
CACHE_REQUESTS = Counter(
    "oms_order_cache_requests_total",
    "Order cache operations by result (hit, miss, error)",
    ["result"],
)
RATE_LIMITED = Counter(
    "oms_rate_limited_requests_total", "Requests refused by a rate limit", ["scope"]
)
RATE_LIMIT_ERRORS = Counter(
    "oms_rate_limit_errors_total", "Limit checks that failed (storage down) and let through"
)
OUTBOX_BACKLOG = Gauge(
    "oms_outbox_backlog_messages",
    "Outbox events not yet confirmed by the broker",
    # Read at scrape time by whichever worker serves /metrics: its reading is the latest.
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_AGE = Gauge(
    "oms_outbox_oldest_unsent_age_seconds",
    "Age of the oldest unsent outbox event",
    multiprocess_mode="mostrecent",
)

UNMATCHED_ROUTE = "<unmatched>"
CACHE_ERRORS = (RedisError, OSError)

logger = logging.getLogger("oms.api.cache")


class ObservedOrderCache:
    """The order cache as request handlers see it: counted, and never fatal.

    A cache outage must not fail requests the database can answer: errors count as misses
    (reads) or skipped writes, are logged and counted, and the request goes on.
    """

    def __init__(self, inner: OrderCache) -> None:
        self._inner = inner
        self._hits = CACHE_REQUESTS.labels("hit")
        self._misses = CACHE_REQUESTS.labels("miss")
        self._errors = CACHE_REQUESTS.labels("error")

    async def get(self, order_id: str) -> bytes | None:
        try:
            body = await self._inner.get(order_id)
        except CACHE_ERRORS:
            self._failed("get", order_id)
            return None
        self.count(hit=body is not None)
        return body

    def count(self, *, hit: bool) -> None:
        """Count a read made elsewhere (the request gate reads the cache with the limit)."""
        (self._hits if hit else self._misses).inc()

    async def put(self, order_id: str, version: int, body: bytes) -> bool:
        try:
            return await self._inner.put(order_id, version, body)
        except CACHE_ERRORS:
            self._failed("put", order_id)
            return False

    async def delete(self, order_id: str) -> None:
        try:
            await self._inner.delete(order_id)
        except CACHE_ERRORS:
            self._failed("delete", order_id)

    @property
    def shared(self) -> bool:
        return self._inner.shared

    @property
    def inner(self) -> OrderCache:
        """The cache itself, uncounted and with its errors."""
        return self._inner

    async def ping(self) -> bool:
        return await self._inner.ping()

    async def close(self) -> None:
        await self._inner.close()

    def _failed(self, operation: str, order_id: str) -> None:
        self._errors.inc()
        logger.warning(
            "order cache unavailable; serving from the database",
            extra={"operation": operation, "order_id": order_id},
            exc_info=True,
        )
