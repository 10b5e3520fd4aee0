"""Registration, tokens and the public keys that verify them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response, status

from oms.schemas import TokenOut, UserOut, UserRegister, login_email
from oms.security.passwords import hash_password_async, verify_password_async
from oms.security.tokens import issue_access_token
from oms.users.repository import UserRepository
from oms_api.deps import SessionDep, StateDep
from oms_api.jsonbody import StrictJSONRoute
from oms_api.problems import ProblemError, ProblemType
from oms_api.routing import route

router = APIRouter(tags=["auth"], route_class=StrictJSONRoute)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# PostgreSQL rejects NUL in text parameters; refuse control characters as invalid input.
NO_CONTROL_CHARS = r"^[^\x00-\x1f\x7f]*$"


@route(
    router,
    "POST",
    "/register",
    limit="register",
    per_user=False,
    problems=(409, 422, 429),
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    summary="Create an account",
)
async def register(body: UserRegister, session: SessionDep) -> UserOut:
    hashed = await hash_password_async(body.password)
    async with session.begin():
        user = await UserRepository(session).add(body.email, hashed)
    return UserOut.model_validate(user)


@route(
    router,
    "POST",
    "/token",
    limit="token",
    per_user=False,
    problems=(401, 403, 422, 429),
    response_model=TokenOut,
    summary="Exchange email and password for an access token (OAuth2 password flow)",
)
async def token(
    username: Annotated[
        str, Form(description="The account's email.", max_length=320, pattern=NO_CONTROL_CHARS)
    ],
    password: Annotated[str, Form(max_length=128, pattern=NO_CONTROL_CHARS)],
    session: SessionDep,
    state: StateDep,
    request: Request,
    response: Response,
) -> TokenOut:
    # Normalised as at registration, so the address registered is the address that logs in.
    email = login_email(username)
    # Per account and client, whether the account exists or not: a 429 proves nothing, and
    # the hash below is not computed for a client out of tries.
    await state.rate_limiter.count_login_attempt(email, request)
    async with session.begin():
        user = await UserRepository(session).get_by_email(email)
    # verify_password checks a dummy hash when the user is unknown: same cost either way.
    valid = await verify_password_async(password, user.hashed_password if user else None)
    if valid:
        await state.rate_limiter.forget_login_failures(email, request)
    if user is None or not valid:
        raise ProblemError(
            401,
            "Incorrect email or password.",
            kind=ProblemType.INVALID_CREDENTIALS,
            title="Invalid credentials",
            headers={"WWW-Authenticate": "Bearer", **NO_STORE},
        )
    if user.disabled_at is not None:
        raise ProblemError(
            403,
            "This account is disabled.",
            kind=ProblemType.ACCOUNT_DISABLED,
            title="Account disabled",
            headers=NO_STORE,
        )
    access_token, expires_in = issue_access_token(
        state.settings,
        state.keys.current(),
        user.id,
        user.role,
        account_key=user.account_key,
        generation=user.token_generation,
    )
    # RFC 6749 §5.1: a token answer must not be kept by any cache.
    response.headers.update(NO_STORE)
    return TokenOut(access_token=access_token, expires_in=expires_in)


@router.get("/.well-known/jwks.json", summary="Public keys that verify our access tokens")
async def jwks(state: StateDep) -> dict[str, Any]:
    return state.keys.current().jwks()
