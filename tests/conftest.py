"""Shared fixtures: every test gets its own database (PostgreSQL or SQLite) and Redis prefix.

This module stays cheap to import: a run of tests/unit must not pay for the API app, SQLAlchemy or
the database drivers (tests/unit/test_test_tiers.py checks). What only some fixtures need is
imported inside them. The tiers (`fast` or not, tests/README.md) are tests/tiers.py's.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI

    from oms.settings import Settings

pytest_plugins = ["tests.tiers", "tests.ordering"]

BACKENDS = ["postgres", "sqlite"]


@pytest.fixture(scope="session")
def signing_key_pem() -> str:
    from oms.security.keys import generate_private_key, private_key_to_pem

    return private_key_to_pem(generate_private_key()).decode()


@pytest.fixture(scope="session")
async def pg_template() -> AsyncIterator[str]:
    """One migrated database per test session; each test clones it (much faster than migrating)."""
    import os

    from oms.migrations.runner import upgrade_async
    from tests import infra

    name = infra.unique_name(f"oms_tpl_{os.getpid()}")
    await infra.create_database(name)
    try:
        await upgrade_async(infra.postgres_settings(name, "tpl:", Path("/tmp")))
        yield name
    finally:
        await infra.drop_database(name)


@pytest.fixture(scope="session")
async def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oms.migrations.runner import upgrade_async
    from tests import infra

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    await upgrade_async(infra.sqlite_settings(path, path.parent))
    return path


SettingsFactory = Callable[..., Awaitable["Settings"]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_settings(
    backend: str,
    pg_template: str,
    sqlite_template: Path,
    tmp_path: Path,
    signing_key_pem: str,
) -> AsyncIterator[SettingsFactory]:
    """Build isolated settings for this test; may be called again with different overrides."""
    from tests import infra

    created_dbs: list[str] = []
    prefixes: list[str] = []

    async def factory(**overrides: Any) -> Settings:
        overrides.setdefault("JWT_PRIVATE_KEY", signing_key_pem)
        if backend == "postgres":
            name = infra.unique_name("oms_test")
            await infra.create_database(name, template=pg_template)
            created_dbs.append(name)
            prefix = f"test:{name}:"
            prefixes.append(prefix)
            return infra.postgres_settings(name, prefix, tmp_path, **overrides)
        db_file = tmp_path / f"{infra.unique_name('oms')}.db"
        infra.copy_file(sqlite_template, db_file)
        return infra.sqlite_settings(db_file, tmp_path, **overrides)

    yield factory
    for prefix in prefixes:
        await infra.delete_redis_prefix(prefix)
    for name in created_dbs:
        await infra.drop_database(name)


@pytest.fixture
async def settings(make_settings: SettingsFactory) -> Settings:
    return await make_settings()


# The API app is imported by the fixtures and helpers below only when a test calls them, so the
# suites that never start it (tests/unit, tests/operator, ...) do not pay for importing it.


def asgi_client(application: FastAPI, client_ip: str) -> httpx.AsyncClient:
    """A client of `application` in this process, coming from `client_ip` (limits key on it)."""
    import httpx

    transport = httpx.ASGITransport(app=application, client=(client_ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@contextlib.asynccontextmanager
async def api_client(
    settings: Settings, client_ip: str = "203.0.113.20"
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app of its own (a second API process, as far as shared state goes), started, and a
    client of it."""
    from oms_api.app import create_app

    application = create_app(settings)
    lifespan = application.router.lifespan_context(application)
    async with lifespan, asgi_client(application, client_ip) as http:
        yield application, http


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """`api_client` for a test that needs only the client."""
    async with api_client(settings) as (_application, http):
        yield http


ServeFactory = Callable[..., contextlib.AbstractAsyncContextManager["httpx.AsyncClient"]]


@pytest.fixture
def serve(make_settings: SettingsFactory) -> ServeFactory:
    """`serving` on settings of the test's own with these overrides."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        async with serving(await make_settings(**overrides)) as http:
            yield http

    return start


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    from oms_api.app import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app, "203.0.113.10") as http:
        yield http


@dataclass
class Account:
    id: int
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def account_key(self) -> uuid.UUID:
        """The account its token was issued to (claim `akey`)."""
        import jwt

        return uuid.UUID(jwt.decode(self.token, options={"verify_signature": False})["akey"])


AccountFactory = Callable[..., Awaitable[Account]]


async def register(client: httpx.AsyncClient, email: str, password: str = "secret123") -> Account:
    """A fresh account, registered and logged in over the API."""
    registered = await client.post("/register", json={"email": email, "password": password})
    assert registered.status_code == 201, registered.text
    token = await client.post("/token", data={"username": email, "password": password})
    assert token.status_code == 200, token.text
    return Account(registered.json()["id"], email, password, token.json()["access_token"])


@pytest.fixture
def make_account(client: httpx.AsyncClient) -> AccountFactory:
    counter = 0

    async def factory(email: str | None = None, password: str = "secret123") -> Account:
        nonlocal counter
        counter += 1
        return await register(client, email or f"user{counter}@example.com", password)

    return factory


@pytest.fixture
async def alice(make_account: AccountFactory) -> Account:
    return await make_account("alice@example.com")


@pytest.fixture
async def bob(make_account: AccountFactory) -> Account:
    return await make_account("bob@example.com")


@pytest.fixture
async def admin(settings: Settings, client: httpx.AsyncClient) -> Account:
    import jwt

    from oms.cli import create_admin

    email, password = "admin@example.com", "adminpass1"
    assert await create_admin(settings, email, password) == 0
    token = await client.post("/token", data={"username": email, "password": password})
    assert token.status_code == 200, token.text
    me = token.json()["access_token"]
    user_id = int(jwt.decode(me, options={"verify_signature": False})["sub"])
    return Account(user_id, email, password, me)


@pytest.fixture
async def rabbitmq_url() -> AsyncIterator[str]:
    """An AMQP URL on this test's own RabbitMQ vhost, deleted afterwards."""
    from tests import infra
    from tests.pipeline.support import amqp_url, create_vhost, delete_vhost

    vhost = infra.unique_name("oms_test")
    await create_vhost(vhost)
    try:
        yield amqp_url(vhost)
    finally:
        await delete_vhost(vhost)
