"""Registration, login, token verification and the JWKS endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, hmac

from oms.security.keys import (
    build_key_set,
    generate_private_key,
    load_private_key,
    private_key_to_pem,
    public_jwk,
)
from oms.security.tokens import issue_access_token
from oms.settings import Settings
from tests.conftest import Account, AccountFactory, SettingsFactory, serving

PROBLEM = "application/problem+json"


@pytest.mark.parametrize("path", ["/register", "/register/"])
async def test_register_returns_id_and_email_never_the_hash(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post(path, json={"email": "New@Example.com", "password": "abc12"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body == {"id": body["id"], "email": "new@example.com", "role": "user"}
    assert "password" not in response.text
    assert "argon2" not in response.text


async def test_duplicate_email_is_409_whatever_its_case(client: httpx.AsyncClient) -> None:
    first = await client.post("/register", json={"email": "dup@example.com", "password": "abc12"})
    assert first.status_code == 201
    again = await client.post("/register", json={"email": "DUP@example.COM", "password": "xyz99"})
    assert again.status_code == 409
    assert again.headers["content-type"] == PROBLEM
    assert again.json()["type"] == "urn:oms:problem:email-taken"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "a@example.com", "password": "abcd"}, "password"),  # 4 characters
        ({"email": "a@example.com", "password": "a" * 21}, "password"),  # 21 characters
        ({"email": "a@example.com", "password": "abc12!"}, "password"),  # symbol
        ({"email": "a@example.com", "password": "abc 12"}, "password"),  # space
        ({"email": "a@example.com", "password": "pässwort1"}, "password"),  # non-ASCII letter
        ({"email": "not-an-email", "password": "abc12"}, "email"),
        ({"password": "abc12"}, "email"),
        ({"email": "a@example.com"}, "password"),
    ],
)
async def test_register_rejects_invalid_input_with_422(
    client: httpx.AsyncClient, payload: dict[str, str], field: str
) -> None:
    response = await client.post("/register", json=payload)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "urn:oms:problem:validation-error"
    assert any(error["loc"][-1] == field for error in problem["errors"])
    if "password" in payload:
        assert payload["password"] not in response.text  # never echo a password back


@pytest.mark.parametrize("password", ["abcde", "A" * 20, "Abc123"])
async def test_register_accepts_password_length_edges(
    client: httpx.AsyncClient, password: str
) -> None:
    response = await client.post("/register", json={"email": "e@example.com", "password": password})
    assert response.status_code == 201


async def test_token_has_the_promised_shape_and_claims(
    client: httpx.AsyncClient, alice: Account, settings: Settings
) -> None:
    response = await client.post(
        "/token", data={"username": "ALICE@example.com", "password": alice.password}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256"
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert header["kid"] in {key["kid"] for key in jwks["keys"]}
    public = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    claims = jwt.decode(
        body["access_token"],
        public.key,
        algorithms=["RS256"],
        audience=settings.JWT_AUDIENCE,
        issuer=settings.JWT_ISSUER,
    )
    assert claims["sub"] == str(alice.id)
    assert claims["role"] == "user"
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["jti"]


async def test_wrong_password_and_unknown_email_look_the_same(
    client: httpx.AsyncClient, alice: Account
) -> None:
    wrong_password = await client.post(
        "/token", data={"username": alice.email, "password": "wrong1"}
    )
    unknown_user = await client.post(
        "/token", data={"username": "nobody@example.com", "password": "wrong1"}
    )
    for response in (wrong_password, unknown_user):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == PROBLEM
    assert wrong_password.json()["detail"] == unknown_user.json()["detail"]


async def test_token_without_form_fields_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/token", data={"username": "x@example.com"})
    assert response.status_code == 422


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge_unsigned(claims: dict[str, object]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _forge_hs256_with_public_key(claims: dict[str, object], public_pem: bytes, kid: str) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(claims).encode())
    mac = hmac.HMAC(public_pem, hashes.SHA256())
    mac.update(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(mac.finalize())}"


def _valid_claims(settings: Settings, user_id: int) -> dict[str, object]:
    now = int(datetime.now(UTC).timestamp())
    return {
        "sub": str(user_id),
        "role": "admin",
        "iat": now,
        "exp": now + 600,
        "jti": "x",
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
    }


@pytest.mark.parametrize(
    "kind", ["none", "hs256", "tampered", "expired", "audience", "issuer", "unknown-key", "garbage"]
)
async def test_bad_tokens_get_401_with_www_authenticate(
    client: httpx.AsyncClient, alice: Account, settings: Settings, kind: str
) -> None:
    assert settings.JWT_PRIVATE_KEY is not None
    keys = build_key_set(load_private_key(settings.JWT_PRIVATE_KEY.get_secret_value().encode()))
    claims = _valid_claims(settings, alice.id)
    if kind == "none":
        token = _forge_unsigned(claims)
    elif kind == "hs256":
        from oms.security.keys import public_key_to_pem

        pem = public_key_to_pem(keys.signing_key.public_key())
        token = _forge_hs256_with_public_key(claims, pem, keys.signing_kid)
    elif kind == "tampered":
        header, payload, signature = alice.token.split(".")
        decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        decoded["role"] = "admin"
        token = f"{header}.{_b64(json.dumps(decoded).encode())}.{signature}"
    elif kind == "expired":
        past = datetime.now(UTC) - timedelta(hours=2)
        token, _ = issue_access_token(
            settings, keys, alice.id, _role("user"), now=past, account_key=alice.account_key
        )
    elif kind in {"audience", "issuer"}:
        other = settings.model_copy(
            update={"JWT_AUDIENCE": "someone-else"}
            if kind == "audience"
            else {"JWT_ISSUER": "someone-else"}
        )
        token, _ = issue_access_token(
            other, keys, alice.id, _role("user"), account_key=alice.account_key
        )
    elif kind == "unknown-key":
        stranger = build_key_set(generate_private_key())
        token, _ = issue_access_token(
            settings, stranger, alice.id, _role("user"), account_key=alice.account_key
        )
    else:
        token = "not.a.jwt"
    response = await client.get(
        f"/orders/user/{alice.id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["type"] == "urn:oms:problem:invalid-token"


def _role(value: str):  # type: ignore[no-untyped-def]
    from oms.db.models import UserRole

    return UserRole(value)


async def test_missing_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/orders/", json={"items": [], "total_price": "1"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["type"] == "urn:oms:problem:unauthorized"


async def test_rotated_out_key_stays_valid_while_published_in_jwks(
    make_settings: SettingsFactory, tmp_path: object, signing_key_pem: str
) -> None:
    """Tokens signed by the previous key verify as long as the JWKS file still lists it."""
    from pathlib import Path

    old = generate_private_key()
    new = generate_private_key()
    jwks_file = Path(str(tmp_path)) / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [public_jwk(old.public_key())]}))
    settings = await make_settings(
        JWT_PRIVATE_KEY=private_key_to_pem(new).decode(),
        JWT_JWKS_PATH=jwks_file,
        JWT_KEY_RELOAD_SECONDS=0.01,
    )
    async with serving(settings) as client:
        registered = await client.post(
            "/register", json={"email": "r@example.com", "password": "abc12"}
        )
        user_id = registered.json()["id"]
        login = await client.post("/token", data={"username": "r@example.com", "password": "abc12"})
        account_key = Account(user_id, "", "", login.json()["access_token"]).account_key
        old_token, _ = issue_access_token(
            settings, build_key_set(old), user_id, _role("user"), account_key=account_key
        )
        jwks = (await client.get("/.well-known/jwks.json")).json()
        assert len(jwks["keys"]) == 2
        ok = await client.get(
            f"/orders/user/{user_id}", headers={"Authorization": f"Bearer {old_token}"}
        )
        assert ok.status_code == 200
        # Retire the old key for good: its tokens stop working.
        jwks_file.write_text(json.dumps({"keys": []}))
        os.utime(jwks_file, (1, 1))  # a new mtime, as a Secret update gives
        deadline = time.monotonic() + 5
        status = 200
        while status == 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the reload interval, not a guess at timing
            refused = await client.get(
                f"/orders/user/{user_id}", headers={"Authorization": f"Bearer {old_token}"}
            )
            status = refused.status_code
        assert status == 401


async def test_make_account_fixture_logs_in(make_account: AccountFactory) -> None:
    account = await make_account()
    assert account.token.count(".") == 2


@pytest.mark.parametrize("username", ["a\x00@example.com", "a\n@example.com"])
async def test_control_characters_in_login_are_422(
    client: httpx.AsyncClient, username: str
) -> None:
    response = await client.post("/token", data={"username": username, "password": "abc12"})
    assert response.status_code == 422


async def test_nul_in_registration_email_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/register", json={"email": "a\x00b@example.com", "password": "abc12"}
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("registered_as", "logs_in_as"),
    [
        ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),  # IDNA domain
        ("user@xn--bcher-kva.example", "user@BÜCHER.example"),
        ("Bu\u0308cher@example.com", "Bu\u0308cher@example.com"),  # NFD local part
        ("Bu\u0308cher@example.com", "B\u00fccher@example.com"),  # and its NFC form
        ("B\u00fccher@example.com", "bu\u0308cher@example.com"),
    ],
)
async def test_the_address_registered_is_the_address_that_logs_in(
    client: httpx.AsyncClient, registered_as: str, logs_in_as: str
) -> None:
    registered = await client.post("/register", json={"email": registered_as, "password": "abc12"})
    assert registered.status_code == 201, registered.text
    response = await client.post("/token", data={"username": logs_in_as, "password": "abc12"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "username", ["not-an-email", "@", "a@b@c", "a@[127.0.0.1]", "a@xn--zz.example", "x" * 320]
)
async def test_login_with_what_is_no_email_address_is_401(
    client: httpx.AsyncClient, username: str
) -> None:
    response = await client.post("/token", data={"username": username, "password": "abc12"})
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:oms:problem:invalid-credentials"
