"""An account's identity cannot be inherited: ids are never handed out twice, and every token is
bound to its account's key, so a deleted (or replaced) account's tokens, access entry and cached
orders mean nothing to whoever comes next.

Each API test runs on both databases and in three modes: Redis with the request gate (revocation,
limit and cache in one script), Redis without it (REDIS_URL_RATE_LIMIT unset: one store at a
time), and embedded (no Redis: the access book reads the database, orders are cached in process
memory, and the `oms user` command cannot reach that memory)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis

from oms.cli import create_admin, manage_user
from oms.db.models import User, UserRole
from oms.db.session import create_engine
from oms.security.keys import KeySet, build_key_set, load_private_key
from oms.security.tokens import ALGORITHM, issue_access_token
from oms.settings import Settings
from oms.users.access import GONE, UserAccess
from oms_api.deps import UNBOUND_TOKEN_DETAIL
from tests import infra
from tests.api.test_hostile_input import assert_problem
from tests.conftest import Account, SettingsFactory, api_client, register

ORDER = {"items": [{"name": "pen", "quantity": 1}], "total_price": "3.10"}
MODES = ["gate", "redis", "embedded"]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def settings(
    mode: str, make_settings: SettingsFactory, backend: str
) -> AsyncIterator[Settings]:
    """This module's settings: the backend's own, in the mode the parameter names."""
    if mode == "embedded":
        yield await make_settings(REDIS_URL=None, REDIS_URL_RATE_LIMIT=None, REDIS_URL_CELERY=None)
        return
    limits: dict[str, Any] = {"REDIS_URL_RATE_LIMIT": f"{infra.REDIS_BASE}/1"}
    if mode == "redis":
        limits["REDIS_URL_RATE_LIMIT"] = None  # no gate: limits kept in process memory
    if backend == "postgres":
        yield await make_settings(**limits)
        return
    # make_settings leaves SQLite in the embedded mode; give it Redis under a prefix of its own.
    prefix = f"test:{infra.unique_name('oms_sqlite')}:"
    try:
        yield await make_settings(
            REDIS_URL=f"{infra.REDIS_BASE}/0", REDIS_KEY_PREFIX=prefix, **limits
        )
    finally:
        await infra.delete_redis_prefix(prefix)


@pytest.fixture
async def client(settings: Settings, mode: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings) as (application, http):
        assert (application.state.oms.gate is not None) == (mode == "gate")
        yield http


def signing_keys(settings: Settings) -> KeySet:
    assert settings.JWT_PRIVATE_KEY is not None
    return build_key_set(load_private_key(settings.JWT_PRIVATE_KEY.get_secret_value().encode()))


async def login_admin(settings: Settings, client: httpx.AsyncClient, email: str) -> Account:
    password = "adminpass1"
    assert await create_admin(settings, email, password) == 0
    token = await client.post("/token", data={"username": email, "password": password})
    assert token.status_code == 200, token.text
    me = token.json()["access_token"]
    return Account(int(jwt.decode(me, options={"verify_signature": False})["sub"]), email, "", me)


async def place_order(client: httpx.AsyncClient, account: Account) -> str:
    """An order of `account`, read once so that it is in the cache."""
    created = await client.post("/orders/", json=ORDER, headers=account.headers)
    assert created.status_code == 201, created.text
    order_id: str = created.json()["id"]
    assert (await client.get(f"/orders/{order_id}/", headers=account.headers)).status_code == 200
    return order_id


async def forget_access_entry(settings: Settings, user_id: int) -> None:
    """What USER_STATE_CACHE_SECONDS passing does to `user:{id}:access` (no-op when embedded)."""
    if settings.REDIS_URL:
        redis = Redis.from_url(settings.REDIS_URL)
        try:
            await redis.delete(f"{settings.REDIS_KEY_PREFIX}user:{user_id}:access")
        finally:
            await redis.aclose()


async def refused_everywhere(
    client: httpx.AsyncClient, token: Account, order_ids: list[str], user_ids: list[int]
) -> None:
    """`token` reads, changes and creates nothing: 401 invalid-token on every order route."""
    responses = [
        await client.get(f"/orders/{order_id}/", headers=token.headers) for order_id in order_ids
    ]
    responses += [
        await client.patch(
            f"/orders/{order_id}/", json={"status": "CANCELED"}, headers=token.headers
        )
        for order_id in order_ids
    ]
    responses += [
        await client.get(f"/orders/user/{user_id}", headers=token.headers) for user_id in user_ids
    ]
    responses.append(await client.post("/orders/", json=ORDER, headers=token.headers))
    for response in responses:
        assert_problem(response, 401, "invalid-token")


# --- ids ---------------------------------------------------------------------------------------


async def test_the_highest_id_is_not_handed_out_again_after_a_delete(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    first = await register(client, "first@example.com")
    highest = await register(client, "highest@example.com")
    admin = await login_admin(settings, client, "boss@example.com")
    for deleted in (admin, highest):
        assert await manage_user(settings, "delete", deleted.email) == 0
        newcomer = await register(client, f"after-{deleted.id}@example.com")
        assert newcomer.id > deleted.id > first.id


# --- a deleted account's token, after someone else registered -----------------------------------


async def test_a_deleted_users_token_gets_nothing_once_someone_else_registers(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    alice = await register(client, "alice@example.com")
    alices_order = await place_order(client, alice)  # in the cache (Redis, or this process)
    assert await manage_user(settings, "delete", alice.email) == 0
    await forget_access_entry(settings, alice.id)  # the tombstone expired
    bob = await register(client, "bob@example.com")
    bobs_order = await place_order(client, bob)

    # Neither the old order (cached in process memory when embedded) nor the newcomer's.
    await refused_everywhere(client, alice, [alices_order, bobs_order], [alice.id, bob.id])
    # The newcomer does not inherit the deleted account's orders from any cache.
    assert_problem(await client.get(f"/orders/{alices_order}/", headers=bob.headers), 404)
    mine = await client.get(f"/orders/user/{bob.id}", headers=bob.headers)
    assert [order["id"] for order in mine.json()["items"]] == [bobs_order]


async def test_a_deleted_admins_token_gets_nothing(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    alice = await register(client, "alice@example.com")
    alices_order = await place_order(client, alice)
    admin = await login_admin(settings, client, "boss@example.com")
    assert (await client.get(f"/orders/{alices_order}/", headers=admin.headers)).status_code == 200
    assert await manage_user(settings, "delete", admin.email) == 0
    await forget_access_entry(settings, admin.id)
    await register(client, "newcomer@example.com")

    await refused_everywhere(client, admin, [alices_order], [alice.id, admin.id])
    paid = await client.patch(
        f"/orders/{alices_order}/", json={"status": "PAID"}, headers=admin.headers
    )
    assert_problem(paid, 401, "invalid-token")
    still = await client.get(f"/orders/{alices_order}/", headers=alice.headers)
    assert still.json()["status"] == "PENDING"


async def test_no_one_reads_a_deleted_accounts_order_from_any_cache(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    """Not even an admin: embedded, the order stays in this process's memory after the
    command in another process deleted it, and an admin may read anyone's order."""
    admin = await login_admin(settings, client, "boss@example.com")
    alice = await register(client, "alice@example.com")
    alices_order = await place_order(client, alice)
    assert (await client.get(f"/orders/{alices_order}/", headers=admin.headers)).status_code == 200
    assert await manage_user(settings, "delete", alice.email) == 0

    assert_problem(await client.get(f"/orders/{alices_order}/", headers=admin.headers), 404)


async def test_the_user_command_finds_an_account_by_the_address_it_registered_with(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    """`oms user` normalises the address as registration and /token do (IDNA domain, NFD)."""
    for address in ("carol@xn--bcher-kva.example", "Bu\u0308cher@example.com"):
        account = await register(client, address)
        assert await manage_user(settings, "disable", address) == 0
        assert_problem(await client.get(f"/orders/user/{account.id}", headers=account.headers), 401)


# --- tokens are bound to the account, not to the id ---------------------------------------------


async def test_a_token_does_not_survive_its_row_being_replaced_under_the_same_id(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    """A row put back in place of the account (same id, generation 0 again), e.g. from an old
    backup or by hand, is another account: the first account's tokens do not open it."""
    alice = await register(client, "alice@example.com")
    assert (await client.get(f"/orders/user/{alice.id}", headers=alice.headers)).status_code == 200
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            row = (await connection.execute(sa.select(User).where(User.id == alice.id))).one()
            await connection.execute(sa.delete(User).where(User.id == alice.id))
            await connection.execute(
                sa.insert(User).values(
                    id=alice.id,
                    email="successor@example.com",
                    hashed_password=row.hashed_password,
                    role=UserRole.USER,
                    created_at=datetime.now(UTC),
                    account_key=uuid.uuid4(),
                )
            )
    finally:
        await engine.dispose()
    await forget_access_entry(settings, alice.id)  # changed behind the API's back

    await refused_everywhere(client, alice, [], [alice.id])
    successor = await client.post(
        "/token", data={"username": "successor@example.com", "password": alice.password}
    )
    headers = {"Authorization": f"Bearer {successor.json()['access_token']}"}
    assert (await client.get(f"/orders/user/{alice.id}", headers=headers)).status_code == 200


async def test_a_token_naming_another_accounts_key_is_refused(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    alice = await register(client, "alice@example.com")
    bob = await register(client, "bob@example.com")
    bobs_order = await place_order(client, bob)
    keys = signing_keys(settings)
    # Signed by us, so only a bug could ever issue it: bob's id with alice's account key.
    crossed, _ = issue_access_token(
        settings, keys, bob.id, UserRole.USER, account_key=alice.account_key
    )
    await refused_everywhere(client, Account(bob.id, "", "", crossed), [bobs_order], [bob.id])
    assert (await client.get(f"/orders/{bobs_order}/", headers=bob.headers)).status_code == 200


async def test_a_token_issued_before_account_binding_is_refused_with_a_clear_detail(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    alice = await register(client, "alice@example.com")
    order_id = await place_order(client, alice)
    keys = signing_keys(settings)
    now = datetime.now(UTC)
    # Exactly what the API issued before this change: no `akey`.
    legacy_claims = {
        "sub": str(alice.id),
        "role": "user",
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=60),
        "jti": uuid.uuid4().hex,
        "gen": 0,
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
    }
    legacy = jwt.encode(
        legacy_claims, keys.signing_key, algorithm=ALGORITHM, headers={"kid": keys.signing_kid}
    )
    old = Account(alice.id, alice.email, alice.password, legacy)
    await refused_everywhere(client, old, [order_id], [alice.id])
    problem = (await client.get(f"/orders/{order_id}/", headers=old.headers)).json()
    assert problem["detail"] == UNBOUND_TOKEN_DETAIL
    assert "/token" in problem["detail"]
    assert (await client.get(f"/orders/{order_id}/", headers=alice.headers)).status_code == 200


@pytest.mark.parametrize("mode", ["gate", "redis"], indirect=True)  # the entry lives in Redis
async def test_an_access_entry_written_before_account_keys_is_read_again(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    """During a rolling upgrade an older process may still write "generation:active"; that
    entry is a miss (the database decides), never a reason to refuse or admit."""
    assert settings.REDIS_URL
    alice = await register(client, "alice@example.com")
    order_id = await place_order(client, alice)
    key = f"{settings.REDIS_KEY_PREFIX}user:{alice.id}:access"
    redis = Redis.from_url(settings.REDIS_URL)
    try:
        await redis.set(key, "0:1")
        assert (await client.get(f"/orders/{order_id}/", headers=alice.headers)).status_code == 200
        assert UserAccess.decode(await redis.get(key) or b"") == UserAccess(
            0, True, alice.account_key
        )
    finally:
        await redis.aclose()


def test_access_entries_round_trip_and_foreign_formats_are_misses() -> None:
    account = uuid.uuid4()
    for access in (UserAccess(3, True, account), UserAccess(4, False, account), GONE):
        assert UserAccess.decode(access.encode()) == access
        assert UserAccess.decode(access.encode().encode()) == access
    assert GONE.encode().endswith(":0:")
    for foreign in ("0:1", "1:1:xyz", f"1:2:{account.hex}", f"x:1:{account.hex}", ""):
        assert UserAccess.decode(foreign) is None
    assert UserAccess(3, True, account).admits(3, account)
    assert not UserAccess(3, True, account).admits(3, uuid.uuid4())
    assert not UserAccess(3, True, account).admits(2, account)
    assert not UserAccess(3, False, account).admits(3, account)
    assert not GONE.admits(GONE.generation, account)
