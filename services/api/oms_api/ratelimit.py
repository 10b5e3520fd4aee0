"""Per-user or per-IP rate limits in Redis (`REDIS_URL_RATE_LIMIT`) or in memory.

Built on `limits`, the engine under slowapi, through its asyncio API: slowapi itself checks
limits with a synchronous Redis client, which would block the event loop on every request.
Routes that require a user are limited per user when a valid bearer token is present, else per
client IP; the routes that guard credentials (`/token`, `/register`) always per client IP, so a
token of an account the client owns cannot buy it more password guesses; `/token` also counts
attempts per (account, client), so a guesser runs out of tries on an account without locking its
owner out. `X-Forwarded-For` is believed only when the direct peer is a trusted proxy. A client
is one IPv4 address or IPv6 network (`client_key`), however its address is written.
"""

from __future__ import annotations

import hashlib
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
from oms_api.http_metrics import RATE_LIMIT_ERRORS, RATE_LIMITED
from oms_api.middleware import RATE_LIMIT_HEADERS_KEY
from oms_api.problems import ProblemError

STORAGE_ERRORS = (RedisError, OSError, StorageError)
# The scope (and metric label) of the per-account, per-client count of password attempts.
LOGIN_FAILURES = "login_failures"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The one key of every forwarded hop that is not an address: a fresh bucket per garbage string
# would give whoever writes the header as many tries as they like.
INVALID_CLIENT = "invalid"

logger = logging.getLogger("oms.api.ratelimit")


def parse_networks(cidrs: list[str]) -> list[IPNetwork]:
    return [_unmapped(ipaddress.ip_network(cidr, strict=False)) for cidr in cidrs]


def _unmapped(network: IPNetwork) -> IPNetwork:
    """`::ffff:a.b.c.d/n` as the IPv4 network it names: `parse_hop` unmaps addresses likewise."""
    mapped = isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped
    if mapped and network.prefixlen >= 96:
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def parse_hop(text: str) -> IPAddress | None:
    """The address in a peer or `X-Forwarded-For` hop: `a.b.c.d`, `a.b.c.d:port`, an IPv6
    address bare or as `[address]` / `[address]:port`; None when there is none. IPv4-mapped
    (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`) addresses are the IPv4 address they
    carry: a dual-stack socket reports IPv4 clients in the mapped form."""
    host = text.strip()
    if host.startswith("["):
        host, bracket, port = host[1:].partition("]")
        if not bracket or (port and not (port.startswith(":") and port[1:].isdigit())):
            return None
    elif host.count(":") == 1:  # IPv4 and a port; an IPv6 address has at least two colons
        host, _, port = host.partition(":")
        if not port.isdigit():
            return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d, but neither :: nor ::1
        return ipaddress.IPv4Address(int(address))
    return address


def address_key(address: IPAddress, ipv6_prefix: int) -> str:
    """One key per client: an IPv4 address, or the IPv6 network of `ipv6_prefix` bits around
    it, since one subscriber holds a whole /64 (usually more) and picks addresses in it at will."""
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))


def client_key(
    peer: str | None, forwarded_for: str | None, trusted: list[IPNetwork], ipv6_prefix: int
) -> str:
    """The rate-limit key of whoever sent the request, looking through trusted proxies only."""
    if peer is None:
        return "unknown"
    peer_address = parse_hop(peer)
    if peer_address is None:
        # Not an IP socket (a Unix socket, a test client): the server named it, not the client.
        return peer
    if not forwarded_for or not _is_trusted(peer_address, trusted):
        return address_key(peer_address, ipv6_prefix)
    nearest_first = [parse_hop(hop) for hop in reversed(forwarded_for.split(",")) if hop.strip()]
    # Walk from the nearest hop back: the first address we do not trust is the client (all
    # trusted: the farthest). Garbage ends the walk too, as one key shared by all garbage:
    # keying it as the peer instead would let it spend the budget of the proxy's own requests.
    client = peer_address
    for hop in nearest_first:
        if hop is None:
            return INVALID_CLIENT
        client = hop
        if not _is_trusted(hop, trusted):
            break
    return address_key(client, ipv6_prefix)


def _is_trusted(address: IPAddress, trusted: list[IPNetwork]) -> bool:
    return any(address in network for network in trusted)


@dataclass(frozen=True)
class RateLimitPolicy:
    create_order: RateLimitItem
    get_order: RateLimitItem
    update_order: RateLimitItem
    list_orders: RateLimitItem
    token: RateLimitItem
    register: RateLimitItem
    login_failures: RateLimitItem

    @classmethod
    def from_settings(cls, settings: RateLimitSettings) -> RateLimitPolicy:
        return cls(
            create_order=parse(settings.RATE_LIMIT_CREATE_ORDER),
            get_order=parse(settings.RATE_LIMIT_GET_ORDER),
            update_order=parse(settings.RATE_LIMIT_UPDATE_ORDER),
            list_orders=parse(settings.RATE_LIMIT_LIST_ORDERS),
            token=parse(settings.RATE_LIMIT_TOKEN),
            register=parse(settings.RATE_LIMIT_REGISTER),
            login_failures=parse(settings.RATE_LIMIT_LOGIN_FAILURES),
        )


class RateLimiter:
    def __init__(self, settings: ApiSettings) -> None:
        self.enabled = settings.RATE_LIMIT_ENABLED
        self.policy = RateLimitPolicy.from_settings(settings)
        self.trusted_proxies = parse_networks(settings.TRUSTED_PROXIES)
        self.ipv6_prefix = settings.RATE_LIMIT_IPV6_PREFIX
        prefix = f"{settings.REDIS_KEY_PREFIX}ratelimit"
        if settings.REDIS_URL_RATE_LIMIT:
            uri = "async+" + settings.REDIS_URL_RATE_LIMIT
            self._storage = storage_from_string(uri, implementation="redispy", key_prefix=prefix)
        else:
            self._storage = storage_from_string("async+memory://")
        self._strategy = MovingWindowRateLimiter(self._storage)

    def client_key(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        # Several X-Forwarded-For lines are one list (RFC 9110 §5.3): a proxy that adds a line
        # of its own must not leave us reading only the client's.
        forwarded_for = ",".join(request.headers.getlist("x-forwarded-for"))
        return client_key(peer, forwarded_for, self.trusted_proxies, self.ipv6_prefix)

    async def check(
        self, item: RateLimitItem, scope: str, key: str, request: Request, *, report: bool = True
    ) -> None:
        """Count one hit; raise 429 when over the limit (see `apply`). `report=False` leaves the
        X-RateLimit-* headers to the route's own limit unless this one is exceeded."""
        try:
            allowed = await self._strategy.hit(item, scope, key)
            stats = await self._strategy.get_window_stats(item, scope, key)
        except STORAGE_ERRORS:
            self.failed_open()
            return
        if report or not allowed:
            self.apply(item, scope, request, allowed, stats.reset_time, stats.remaining)

    async def count_login_attempt(self, account: str, request: Request) -> None:
        """Count a password attempt on `account` (normalised email) from this client; 429 once
        the client has used up RATE_LIMIT_LOGIN_FAILURES on it. Every attempt is counted before
        the password is checked and the count dropped on success (`forget_login_failures`):
        counting failures after the check would let parallel guesses all pass before the first
        is counted."""
        if self.enabled:
            key = self._login_key(account, request)
            await self.check(self.policy.login_failures, LOGIN_FAILURES, key, request, report=False)

    async def forget_login_failures(self, account: str, request: Request) -> None:
        if not self.enabled:
            return
        try:
            key = self._login_key(account, request)
            await self._strategy.clear(self.policy.login_failures, LOGIN_FAILURES, key)
        except STORAGE_ERRORS:
            self.failed_open()

    def _login_key(self, account: str, request: Request) -> str:
        # Hashed: fixed length, no "/" to blur where the account ends, no address in the store.
        digest = hashlib.sha256(account.encode()).hexdigest()
        return f"{digest}/{self.client_key(request)}"

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
