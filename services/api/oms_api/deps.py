"""Typed request dependencies: state, session, the caller's identity, the order service."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from limits import RateLimitItem
from sqlalchemy.ext.asyncio import AsyncSession

from oms.orders.service import OrderService
from oms.security.tokens import InvalidTokenError, TokenClaims
from oms_api.middleware import RATE_LIMIT_HEADERS_KEY
from oms_api.problems import ProblemError, ProblemType
from oms_api.ratelimit import RateLimiter, client_ip
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


async def resolve_optional_claims(
    request: Request, state: StateDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> BearerResult:
    """Verify the bearer token once per request; rate limiting and auth both read the result."""
    if not token:
        return BearerResult(None, None)
    try:
        claims = state.tokens.verify(state.keys.current(), token)
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
        return BearerResult(None, error.reason)
    # Signature and expiry are not enough: the user may since have been disabled or deleted,
    # or had their tokens revoked (oms.users.access).
    access = await state.access.access(claims.user_id)
    if not access.admits(claims.generation):
        logger.info(
            "revoked bearer token",
            extra={"user_id": claims.user_id, "active": access.active, "path": request.url.path},
        )
        return BearerResult(None, "token revoked")
    request.state.claims = claims
    return BearerResult(claims, None)


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
        "The bearer token is invalid or expired; request a new one at /token.",
        kind=ProblemType.INVALID_TOKEN,
        title="Invalid token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


CurrentUser = Annotated[TokenClaims, Depends(require_claims)]


def ip_key(request: Request, limiter: RateLimiter) -> str:
    peer = request.client.host if request.client else None
    return "ip:" + client_ip(peer, request.headers.get("x-forwarded-for"), limiter.trusted_proxies)


def user_or_ip_key(request: Request, limiter: RateLimiter) -> str:
    claims = getattr(request.state, "claims", None)
    if claims is not None:
        return f"user:{claims.user_id}"
    return ip_key(request, limiter)


@dataclass(frozen=True, slots=True)
class RouteLimit:
    scope: str  # the RateLimitPolicy entry
    per_user: bool

    async def count(self, request: Request) -> None:
        limiter: RateLimiter = request.app.state.oms.rate_limiter
        if not limiter.enabled:
            return
        item: RateLimitItem = getattr(limiter.policy, self.scope)
        key = user_or_ip_key(request, limiter) if self.per_user else ip_key(request, limiter)
        await limiter.check(item, self.scope, key, request)


def rate_limited(scope: str, *, per_user: bool) -> Callable[..., Awaitable[None]]:
    """A route dependency enforcing the RateLimitPolicy entry named `scope`: per user (when the
    bearer token is valid; per IP otherwise) on routes that require a user, else per IP."""
    limit = RouteLimit(scope, per_user)

    async def per_ip(request: Request) -> None:
        await limit.count(request)

    async def per_user_or_ip(
        request: Request, _bearer: Annotated[BearerResult, Depends(resolve_optional_claims)]
    ) -> None:
        await limit.count(request)

    dependency = per_user_or_ip if per_user else per_ip
    dependency.route_limit = limit  # type: ignore[union-attr]
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
            if limit.per_user:
                state: AppState = request.app.state.oms
                token = await oauth2_scheme(request)
                await resolve_optional_claims(request, state, token)
            await limit.count(request)
            return


async def get_order_service(session: SessionDep, state: StateDep) -> OrderService:
    return OrderService(
        session,
        state.cache,
        idempotency_ttl=timedelta(hours=state.settings.IDEMPOTENCY_KEY_TTL_HOURS),
        on_outbox_write=state.outbox_wakeup.set,
    )


OrderServiceDep = Annotated[OrderService, Depends(get_order_service)]
