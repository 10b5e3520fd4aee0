"""Issue and verify RS256 access tokens. Only RS256 is ever accepted."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from oms.db.models import UserRole
from oms.security.keys import KeySet
from oms.settings import AuthSettings

ALGORITHM = "RS256"

# The claim binding a token to its account (oms.db.models.User.account_key).
ACCOUNT_KEY_CLAIM = "akey"
# Why a token without that claim is refused: it was issued before tokens were bound to the
# account, and its `sub` and `gen` alone could describe another account.
UNBOUND_TOKEN = "token predates account binding"


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
    account_key: uuid.UUID  # the account it was issued to (see oms.users.access)
    generation: int = 0  # the user's token generation at issue (see oms.users.access)


def issue_access_token(
    settings: AuthSettings,
    keys: KeySet,
    user_id: int,
    role: UserRole,
    now: datetime | None = None,
    *,
    account_key: uuid.UUID,
    generation: int = 0,
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
        "gen": generation,
        ACCOUNT_KEY_CLAIM: account_key.hex,
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
    }
    token = jwt.encode(
        claims, keys.signing_key, algorithm=ALGORITHM, headers={"kid": keys.signing_kid}
    )
    return token, int(lifetime.total_seconds())


def verify_access_token(settings: AuthSettings, keys: KeySet, token: str) -> TokenClaims:
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
    if ACCOUNT_KEY_CLAIM not in claims:
        raise InvalidTokenError(UNBOUND_TOKEN)
    try:
        return TokenClaims(
            user_id=int(claims["sub"]),
            role=UserRole(claims.get("role", UserRole.USER.value)),
            jti=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            account_key=uuid.UUID(hex=str(claims[ACCOUNT_KEY_CLAIM])),
            generation=_generation(claims.get("gen", 0)),
        )
    except (ValueError, TypeError) as error:
        raise InvalidTokenError("invalid claims") from error


def _generation(value: object) -> int:
    # Tokens issued before revocation existed carry no `gen`: they belong to generation 0.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("invalid generation")
    return value


class TokenVerifier:
    """`verify_access_token` that remembers what it verified.

    A token string that passed every check against a given key set passes them again until it
    expires: signature, algorithm, issuer and audience cannot change, and time only moves
    towards expiry, which is checked on every use (with the same leeway). The entry is tied to
    the KeySet object, so a key rotation (KeyStore loads a new KeySet) verifies afresh.
    Refused tokens are never remembered. Bounded: the oldest entries make room.
    """

    def __init__(self, settings: AuthSettings, max_entries: int = 10_000) -> None:
        self._settings = settings
        self._leeway = timedelta(seconds=settings.JWT_LEEWAY_SECONDS)
        self._max_entries = max_entries
        self._verified: dict[str, tuple[KeySet, TokenClaims]] = {}

    def verify(self, keys: KeySet, token: str, now: datetime | None = None) -> TokenClaims:
        remembered = self._verified.get(token)
        if remembered is not None and remembered[0] is keys:
            claims = remembered[1]
            if (now or datetime.now(UTC)) < claims.expires_at + self._leeway:
                return claims
            del self._verified[token]
            raise InvalidTokenError("token expired")
        claims = verify_access_token(self._settings, keys, token)
        if len(self._verified) >= self._max_entries:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (keys, claims)
        return claims
