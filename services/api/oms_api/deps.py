"""Typed request dependencies: state, session, the caller's identity, the order service."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import OAuth2PasswordBearer
from limits import RateLimitItem
from sqlalchemy.ext.asyncio import AsyncSession

from oms.orders.service import OrderService
from oms.security.tokens import InvalidTokenError, TokenClaims
from oms_api.problems import ProblemError
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
        kind="invalid-token",
        title="Invalid token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


CurrentUser = Annotated[TokenClaims, Depends(require_claims)]


def rate_limit_key(request: Request) -> str:
    claims = getattr(request.state, "claims", None)
    if claims is not None:
        return f"user:{claims.user_id}"
    limiter: RateLimiter = request.app.state.oms.rate_limiter
    peer = request.client.host if request.client else None
    return "ip:" + client_ip(peer, request.headers.get("x-forwarded-for"), limiter.trusted_proxies)


def rate_limited(scope: str) -> Callable[..., Awaitable[None]]:
    """A route dependency enforcing the RateLimitPolicy entry named `scope`."""

    async def dependency(
        request: Request,
        response: Response,
        _bearer: Annotated[BearerResult, Depends(resolve_optional_claims)],
    ) -> None:
        limiter: RateLimiter = request.app.state.oms.rate_limiter
        if limiter.enabled:
            item: RateLimitItem = getattr(limiter.policy, scope)
            await limiter.check(item, scope, rate_limit_key(request), response)

    return dependency


async def get_order_service(session: SessionDep, state: StateDep) -> OrderService:
    return OrderService(
        session,
        state.counted_cache,
        idempotency_ttl=timedelta(hours=state.settings.IDEMPOTENCY_KEY_TTL_HOURS),
        on_outbox_write=state.outbox_wakeup.set,
    )


OrderServiceDep = Annotated[OrderService, Depends(get_order_service)]
