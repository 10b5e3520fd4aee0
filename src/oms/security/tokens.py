"""Issue and verify RS256 access tokens. Only RS256 is ever accepted."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from oms.db.models import UserRole
from oms.security.keys import KeySet
from oms.settings import Settings

ALGORITHM = "RS256"


class InvalidTokenError(Exception):
    """The token must not be trusted; `reason` is safe to log (it never holds the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    role: UserRole
    jti: str
    expires_at: datetime


def issue_access_token(
    settings: Settings, keys: KeySet, user_id: int, role: UserRole, now: datetime | None = None
) -> tuple[str, int]:
    issued = now or datetime.now(UTC)
    lifetime = timedelta(minutes=settings.JWT_ACCESS_TOKEN_EXPIRE_MINUTES)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "role": role.value,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "jti": uuid.uuid4().hex,
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
    }
    token = jwt.encode(
        claims, keys.signing_key, algorithm=ALGORITHM, headers={"kid": keys.signing_kid}
    )
    return token, int(lifetime.total_seconds())


def verify_access_token(settings: Settings, keys: KeySet, token: str) -> TokenClaims:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as error:
        raise InvalidTokenError("malformed token") from error
    if header.get("alg") != ALGORITHM:
        raise InvalidTokenError(f"algorithm {header.get('alg')!r} is not accepted")
    public_key = keys.verification_keys.get(str(header.get("kid")))
    if public_key is None:
        raise InvalidTokenError("unknown key id")
    try:
        claims = jwt.decode(
            token,
            public_key,
            algorithms=[ALGORITHM],
            audience=settings.JWT_AUDIENCE,
            issuer=settings.JWT_ISSUER,
            leeway=settings.JWT_LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as error:
        raise InvalidTokenError("token expired") from error
    except jwt.InvalidTokenError as error:
        raise InvalidTokenError(f"invalid token: {type(error).__name__}") from error
    try:
        return TokenClaims(
            user_id=int(claims["sub"]),
            role=UserRole(claims.get("role", UserRole.USER.value)),
            jti=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
    except (ValueError, TypeError) as error:
        raise InvalidTokenError("invalid claims") from error
