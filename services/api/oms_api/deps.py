"""Typed request dependencies: state, session, the caller's identity, the order service."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from limits import RateLimitItem
from sqlalchemy.ext.asyncio import AsyncSession

from oms.orders.service import OrderService
from oms.security.tokens import UNBOUND_TOKEN, InvalidTokenError, TokenClaims
from oms_api.http_metrics import CACHE_ERRORS
from oms_api.middleware import RATE_LIMIT_HEADERS_KEY
from oms_api.problems import ProblemError, ProblemType
from oms_api.ratelimit import RateLimiter
from oms_api.state import AppState

logger = logging.getLogger("oms.api.auth")

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)


# Dependencies are `async def` even when they never await: FastAPI runs a plain `def`
# dependency in its thread pool, and that hand-off per request cost more than the request.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.oms
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.session_factory() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


@dataclass(frozen=True, slots=True)
class BearerResult:
    claims: TokenClaims | None
    failure: str | None  # why a presented token was refused; None when absent or valid


@dataclass(frozen=True, slots=True)
class CacheLookup:
    """The order cache's answer, read by the gate together with the rate limit."""

    order_id: str
    body: bytes | None


# Where the route's limit dependency leaves what it learnt for the later dependencies.
BEARER_KEY = "bearer"
CACHE_LOOKUP_KEY = "cache_lookup"


def _verify(request: Request, state: AppState, token: str) -> TokenClaims | str:
    """The token's claims, or why it is refused (signature and expiry only)."""
    try:
        return state.tokens.verify(state.keys.current(), token)
    except InvalidTokenError as error:
        # Never log the token itself: the reason and where it came from are enough.
        logger.warning(
            "rejected bearer token",
            extra={
                "reason": error.reason,
                "path": request.url.path,
                "client": request.client.host if request.client else None,
            },
        )
        return error.reason


def _judged(request: Request, claims: TokenClaims, *, admitted: bool, active: bool) -> BearerResult:
    if not admitted:
        logger.info(
            "revoked bearer token",
            extra={"user_id": claims.user_id, "active": active, "path": request.url.path},
        )
        return BearerResult(None, "token revoked")
    request.state.claims = claims
    return BearerResult(claims, None)


async def authenticate(
    request: Request, state: AppState, token: str | None, limit: RouteLimit | None = None
) -> BearerResult:
    """Verify the bearer token, check that its user's tokens still count, and count the route's
    limit (per user when the token is admitted, else per IP) when `limit` is given.

    Signature and expiry are not enough: the user may since have been disabled or deleted, or
    had their tokens revoked (oms.users.access). With a gate (oms_api.request_gate) that check, the
    limit and the cache read of an order GET are one Redis round trip."""
    verified = _verify(request, state, token) if token else None
    if not isinstance(verified, TokenClaims):
        result = BearerResult(None, verified)
        if limit is not None:
            await limit.count(request)
        return result
    if limit is not None and state.gate is not None:
        through_gate = await limit.through_gate(request, state, verified)
        if through_gate is not None:
            return through_gate
    access = await state.access.access(verified.user_id)
    admitted = access.admits(verified.generation, verified.account_key)
    result = _judged(request, verified, admitted=admitted, active=access.active)
    if limit is not None:
        await limit.count(request)
    return result


async def resolve_optional_claims(
    request: Request, state: StateDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> BearerResult:
    """The bearer token, judged once per request: by the route's limit dependency when the
    route has one (it runs first), else here."""
    known: BearerResult | None = getattr(request.state, BEARER_KEY, None)
    if known is not None:
        return known
    return await authenticate(request, state, token)


# Tokens issued before they named their account are refused once after that upgrade.
UNBOUND_TOKEN_DETAIL = (
    "The bearer token was issued before an upgrade and is no longer accepted; request a new "
    "one at /token."
)


async def require_claims(
    result: Annotated[BearerResult, Depends(resolve_optional_claims)],
) -> TokenClaims:
    if result.claims is not None:
        return result.claims
    if result.failure is None:
        raise ProblemError(
            401, "A bearer token is required.", headers={"WWW-Authenticate": "Bearer"}
        )
    raise ProblemError(
        401,
        UNBOUND_TOKEN_DETAIL
        if result.failure == UNBOUND_TOKEN
        else "The bearer token is invalid or expired; request a new one at /token.",
        kind=ProblemType.INVALID_TOKEN,
        title="Invalid token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


CurrentUser = Annotated[TokenClaims, Depends(require_claims)]


def ip_key(request: Request, limiter: RateLimiter) -> str:
    return "ip:" + limiter.client_key(request)


def user_or_ip_key(request: Request, limiter: RateLimiter) -> str:
    claims = getattr(request.state, "claims", None)
    if claims is not None:
        return f"user:{claims.user_id}"
    return ip_key(request, limiter)


@dataclass(frozen=True, slots=True)
class RouteLimit:
    scope: str  # the RateLimitPolicy entry
    per_user: bool
    # The path parameter naming an order the route reads: the gate reads its cache entry too.
    order_param: str | None = None

    async def count(self, request: Request) -> None:
        limiter: RateLimiter = request.app.state.oms.rate_limiter
        if not limiter.enabled:
            return
        item: RateLimitItem = getattr(limiter.policy, self.scope)
        key = user_or_ip_key(request, limiter) if self.per_user else ip_key(request, limiter)
        await limiter.check(item, self.scope, key, request)

    async def through_gate(
        self, request: Request, state: AppState, claims: TokenClaims
    ) -> BearerResult | None:
        """Revocation, limit and cache in one round trip; None when the gate cannot answer
        (access entry not in Redis, Redis failing): the caller then takes the long way."""
        assert state.gate is not None
        limiter = state.rate_limiter
        limit = None
        if limiter.enabled:
            item: RateLimitItem = getattr(limiter.policy, self.scope)
            limit = (item, self.scope, f"user:{claims.user_id}", ip_key(request, limiter))
        order_id = self._order_id(request)
        try:
            outcome = await state.gate.admit(
                claims.user_id,
                claims.generation,
                claims.account_key,
                limit,
                state.gate.cache_key(order_id) if order_id else None,
            )
        except CACHE_ERRORS:
            logger.warning("request gate unavailable; checking one store at a time", exc_info=True)
            return None
        if outcome is None:
            return None
        result = _judged(request, claims, admitted=outcome.admitted, active=outcome.active)
        setattr(request.state, BEARER_KEY, result)
        if order_id and outcome.admitted:
            state.cache.count(hit=outcome.cached is not None)
            setattr(request.state, CACHE_LOOKUP_KEY, CacheLookup(order_id, outcome.cached))
        if limit is not None and outcome.limit is not None:
            hit = outcome.limit
            limiter.apply(limit[0], self.scope, request, hit.allowed, hit.reset_time, hit.remaining)
        return result

    def _order_id(self, request: Request) -> str | None:
        if self.order_param is None:
            return None
        try:
            return str(uuid.UUID(request.path_params[self.order_param]))
        except (KeyError, ValueError):
            return None  # not an order id: the route answers 422 without reading anything

    async def authenticate_and_count(self, request: Request) -> None:
        state: AppState = request.app.state.oms
        if not self.per_user:
            await self.count(request)
            return
        token = await oauth2_scheme(request)
        setattr(request.state, BEARER_KEY, await authenticate(request, state, token, self))


def rate_limited(
    scope: str, *, per_user: bool, order_param: str | None = None
) -> Callable[..., Awaitable[None]]:
    """A route dependency enforcing the RateLimitPolicy entry named `scope`: per user (when the
    bearer token is valid; per IP otherwise) on routes that require a user, else per IP. On
    per-user routes it also judges the bearer token (see `authenticate`)."""
    limit = RouteLimit(scope, per_user, order_param)

    async def per_ip(request: Request) -> None:
        await limit.count(request)

    async def per_user_or_ip(request: Request) -> None:
        await limit.authenticate_and_count(request)

    dependency = per_user_or_ip if per_user else per_ip
    dependency.route_limit = limit  # type: ignore[attr-defined]
    return dependency


async def count_unchecked_request(request: Request) -> None:
    """Count a request that a limited route refused before its dependencies ran (a body that
    is not JSON, or too large), so that it too is limited and answers with the limit headers."""
    if hasattr(request.state, RATE_LIMIT_HEADERS_KEY):
        return
    route = request.scope.get("route")
    for depends in getattr(route, "dependencies", ()):
        limit = getattr(depends.dependency, "route_limit", None)
        if isinstance(limit, RouteLimit):
            await limit.authenticate_and_count(request)
            return


def cache_lookup(request: Request, order_id: uuid.UUID) -> CacheLookup | None:
    """What the gate read from the cache for this order, if it did."""
    lookup: CacheLookup | None = getattr(request.state, CACHE_LOOKUP_KEY, None)
    if lookup is None or lookup.order_id != str(order_id):
        return None
    return lookup


async def get_order_service(state: StateDep) -> OrderService:
    return OrderService(
        state.session_factory,
        state.cache,
        idempotency_ttl=timedelta(hours=state.settings.IDEMPOTENCY_KEY_TTL_HOURS),
        on_outbox_write=state.outbox_wakeup.set,
    )


OrderServiceDep = Annotated[OrderService, Depends(get_order_service)]
