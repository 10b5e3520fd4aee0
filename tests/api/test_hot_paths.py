"""Structural facts of the hot paths: what a cached GET and a create cost in round trips,
counted on the real servers, so that an extra round trip fails here before `make bench` shows
it. Throughput on a shared machine is noise; these are not.

PostgreSQL + Redis only: the embedded mode has no Redis round trips to save."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio.connection import AbstractConnection
from sqlalchemy import event, text

from oms.cli import manage_user
from oms.settings import Settings
from oms_api.state import AppState
from tests.conftest import Account

ORDER = {"items": [{"name": "book", "quantity": 2}], "total_price": "21.40"}


@pytest.fixture
def backend() -> str:
    return "postgres"


class RedisRequests:
    """Every request written to any Redis connection of this process (a pipeline or a script
    is one): redis-py's send, wrapped to count, nothing else changed."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    @contextmanager
    def counting(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
        original = AbstractConnection.send_packed_command
        self.commands.clear()

        async def send(
            connection: AbstractConnection, command: Any, *args: Any, **kwargs: Any
        ) -> None:
            packed = command if isinstance(command, bytes) else b"".join(command)
            self.commands.append(packed[:80].decode("latin-1"))
            await original(connection, command, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(AbstractConnection, "send_packed_command", send)
            yield self.commands


class Database:
    """Statements, sessions and connection checkouts of the API's engine, counted through
    SQLAlchemy events; asyncpg's query logger sees the simple queries (BEGIN, COMMIT, pings)
    that SQLAlchemy's events do not."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.statements: list[str] = []
        self.driver_queries: list[str] = []
        self.checkouts = 0
        self.sessions = 0
        engine = state.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "checkout", self._checkout)
        original_factory = state.session_factory

        def counted_factory(**kwargs: Any) -> Any:
            self.sessions += 1
            return original_factory(**kwargs)

        state.session_factory = counted_factory  # type: ignore[assignment]

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)

    def _checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        self.checkouts += 1
        driver = dbapi_connection.driver_connection
        if self._log_query not in getattr(driver, "_query_loggers", ()):
            driver.add_query_logger(self._log_query)

    def _log_query(self, record: Any) -> None:
        self.driver_queries.append(record.query)

    def reset(self) -> None:
        self.statements.clear()
        self.driver_queries.clear()
        self.checkouts = self.sessions = 0


def state_of(app: FastAPI) -> AppState:
    state: AppState = app.state.oms
    return state


async def test_a_cached_get_is_one_redis_round_trip_and_no_database(
    app: FastAPI, client: httpx.AsyncClient, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert state_of(app).gate is not None
    created = (await client.post("/orders/", json=ORDER, headers=alice.headers)).json()
    url = f"/orders/{created['id']}/"
    first = await client.get(url, headers=alice.headers)  # a miss: fills the cache
    assert first.status_code == 200
    database = Database(state_of(app))
    with RedisRequests().counting(monkeypatch) as sent:
        cached = await client.get(url, headers=alice.headers)
    assert cached.status_code == 200
    assert cached.json() == created
    assert cached.headers["x-ratelimit-remaining"] == "8"
    assert len(sent) == 1, sent
    assert "EVALSHA" in sent[0]
    assert (database.sessions, database.checkouts, database.statements) == (0, 0, [])


async def test_a_cache_miss_reads_the_database_once_and_fills_the_cache(
    app: FastAPI, client: httpx.AsyncClient, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = (await client.post("/orders/", json=ORDER, headers=alice.headers)).json()
    await state_of(app).cache.delete(created["id"])
    database = Database(state_of(app))
    with RedisRequests().counting(monkeypatch) as sent:
        read = await client.get(f"/orders/{created['id']}/", headers=alice.headers)
    assert read.json() == created
    # The gate (access, limit, cache read) and the cache fill.
    assert len(sent) == 2, sent
    assert database.sessions == 1
    assert len(database.statements) == 1


async def test_revocation_and_limits_still_hold_on_the_one_round_trip(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oms_api.app import create_app

    settings: Settings = await make_settings(RATE_LIMIT_GET_ORDER="3/minute")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            await http.post("/register", json={"email": "c@example.com", "password": "secret1"})
            login = {"username": "c@example.com", "password": "secret1"}
            token = await http.post("/token", data=login)
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            created = (await http.post("/orders/", json=ORDER, headers=headers)).json()
            url = f"/orders/{created['id']}/"
            answers = [await http.get(url, headers=headers) for _ in range(4)]
            assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
            assert [answer.headers["x-ratelimit-remaining"] for answer in answers] == [
                "2",
                "1",
                "0",
                "0",
            ]
            # The gate and the `limits` library count the same window.
            limiter = state_of(app).rate_limiter
            stats = await limiter._strategy.get_window_stats(
                limiter.policy.get_order, "get_order", f"user:{created['user_id']}"
            )
            assert stats.remaining == 0
            assert await manage_user(settings, "revoke", "c@example.com") == 0
            with RedisRequests().counting(monkeypatch) as sent:
                revoked = await http.get(url, headers=headers)
            # Refused, counted per IP (the revoked token buys no budget of the user's).
            assert revoked.status_code == 401
            assert revoked.headers["x-ratelimit-remaining"] == "2"
            assert len(sent) == 1


async def test_a_create_is_one_sql_statement_without_begin_or_commit(
    app: FastAPI, client: httpx.AsyncClient, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first request of a token loads its user's access state from the database.
    assert (await client.post("/orders/", json=ORDER, headers=alice.headers)).status_code == 201
    database = Database(state_of(app))
    with RedisRequests().counting(monkeypatch) as sent:
        created = await client.post("/orders/", json=ORDER, headers=alice.headers)
    assert created.status_code == 201
    assert len(database.statements) == 1, database.statements
    statement = " ".join(database.statements[0].split()).upper()
    assert statement.startswith("WITH NEW_ORDER AS (INSERT INTO ORDERS"), statement
    assert database.driver_queries == [], database.driver_queries  # no BEGIN, no COMMIT
    assert len(sent) == 1, sent  # access and rate limit
    order_id = created.json()["id"]
    async with state_of(app).session_factory() as session:
        query = text("SELECT count(*) FROM outbox_events WHERE aggregate_id = :id")
        rows = (await session.execute(query, {"id": order_id})).scalar_one()
    assert rows == 1
