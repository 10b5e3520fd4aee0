"""The performance pass remembers verified tokens; these prove it verifies exactly as much."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from oms.db.models import UserRole
from oms.security.keys import build_key_set, generate_private_key
from oms.security.tokens import InvalidTokenError, TokenVerifier, issue_access_token
from oms.settings import Settings

SETTINGS = Settings(_env_file=None, JWT_LEEWAY_SECONDS=30, JWT_ACCESS_TOKEN_EXPIRE_MINUTES=60)
KEYS = build_key_set(generate_private_key())
# Every token names an account (claim `akey`); these tests only look at verification.
ACCOUNT_KEY = uuid.uuid4()


def test_a_remembered_token_gives_the_same_claims() -> None:
    verifier = TokenVerifier(SETTINGS)
    token, _ = issue_access_token(SETTINGS, KEYS, 7, UserRole.ADMIN, account_key=ACCOUNT_KEY)
    first = verifier.verify(KEYS, token)
    assert verifier.verify(KEYS, token) == first
    assert (first.user_id, first.role) == (7, UserRole.ADMIN)


def test_a_remembered_token_still_expires_with_the_same_leeway() -> None:
    verifier = TokenVerifier(SETTINGS)
    issued = datetime.now(UTC)
    token, lifetime = issue_access_token(
        SETTINGS, KEYS, 7, UserRole.USER, now=issued, account_key=ACCOUNT_KEY
    )
    claims = verifier.verify(KEYS, token)
    expiry = claims.expires_at
    assert verifier.verify(KEYS, token, now=expiry + timedelta(seconds=29)) == claims
    with pytest.raises(InvalidTokenError, match="expired"):
        verifier.verify(KEYS, token, now=expiry + timedelta(seconds=31))
    assert lifetime == 3600


def test_a_new_key_set_verifies_again_and_drops_rotated_out_keys() -> None:
    verifier = TokenVerifier(SETTINGS)
    token, _ = issue_access_token(SETTINGS, KEYS, 7, UserRole.USER, account_key=ACCOUNT_KEY)
    verifier.verify(KEYS, token)
    rotated = build_key_set(generate_private_key())  # the old public key is not published
    with pytest.raises(InvalidTokenError, match="unknown key id"):
        verifier.verify(rotated, token)
    still_published = build_key_set(generate_private_key(), [KEYS.signing_key.public_key()])
    assert verifier.verify(still_published, token).user_id == 7


def test_refused_tokens_are_refused_every_time() -> None:
    verifier = TokenVerifier(SETTINGS)
    token, _ = issue_access_token(SETTINGS, KEYS, 7, UserRole.USER, account_key=ACCOUNT_KEY)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(InvalidTokenError):
            verifier.verify(KEYS, forged)
    other_audience = Settings(_env_file=None, JWT_AUDIENCE="someone-else")
    foreign, _ = issue_access_token(other_audience, KEYS, 7, UserRole.USER, account_key=ACCOUNT_KEY)
    for _ in range(2):
        with pytest.raises(InvalidTokenError):
            verifier.verify(KEYS, foreign)


def test_memory_is_bounded_and_evicted_tokens_verify_again() -> None:
    verifier = TokenVerifier(SETTINGS, max_entries=2)
    tokens = [
        issue_access_token(SETTINGS, KEYS, user, UserRole.USER, account_key=ACCOUNT_KEY)[0]
        for user in (1, 2, 3)
    ]
    claims = [verifier.verify(KEYS, token) for token in tokens]
    assert len(verifier._verified) == 2
    assert [verifier.verify(KEYS, token).user_id for token in tokens] == [1, 2, 3]
    assert [claim.user_id for claim in claims] == [1, 2, 3]
