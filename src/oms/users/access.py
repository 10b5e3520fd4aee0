"""Revocation: whether a user's tokens are still good, checked on every authenticated request.

Every user has a token generation; each token carries the generation it was issued under (the
`gen` claim). Disabling, re-enabling or revoking a user bumps the generation in the database, so
every token issued before stops matching at once; a deleted user has no generation at all.

A generation alone only says "the n-th batch of tokens of whoever has this id": it starts at 0
for every account. So each token also carries its account's key (claim `akey`, a random UUID set
when the account is created and never changed), and a token is admitted only by the account it
was issued to: never by one that later holds the same id (ids are not reused either, see
oms.db.models.User), nor by a row put back in place of a deleted one.

The API asks an `AccessBook` on every request that carries a valid token, cached reads included.
With Redis the book keeps `user:{id}:access` ("generation:active:account key hex", the key empty
for a deleted user) for USER_STATE_CACHE_SECONDS and reads the database on a miss; an entry in
another format (written before account keys) counts as a miss and is replaced; the `oms user`
commands write the new state there as soon as they commit, so the change is seen by every API
process at once. A value is never replaced by one of a lower generation, so a reader that loaded
the row just before a change cannot put the old state back. In the embedded mode (no Redis) the
book reads the database every time: the commands run in another process and could not reach an
in-memory copy.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oms.cache import OrderCache
from oms.db.models import Order, User

# A deleted user: higher than any generation a row can reach, and never active.
DELETED_GENERATION = 2**62

# KEYS[1] = key; ARGV = generation, the encoded UserAccess, ttl seconds.
_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
  local generation = tonumber(string.match(current, '^(%d+):'))
  if generation and generation > tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class UserAccess:
    generation: int
    active: bool
    # The account that holds the id; None once it is deleted.
    account_key: uuid.UUID | None

    def admits(self, token_generation: int, token_account_key: uuid.UUID) -> bool:
        return (
            self.active
            and token_generation == self.generation
            and token_account_key == self.account_key
        )

    def encode(self) -> str:
        key = self.account_key.hex if self.account_key is not None else ""
        return f"{self.generation}:{int(self.active)}:{key}"

    @classmethod
    def decode(cls, raw: bytes | str) -> UserAccess | None:
        """None for anything `encode` does not write (the caller asks the database)."""
        text = raw.decode() if isinstance(raw, bytes) else raw
        match = _ENCODED.fullmatch(text)
        if match is None:
            return None
        generation, active, key = match.groups()
        return cls(int(generation), active == "1", uuid.UUID(hex=key) if key else None)


# What `UserAccess.encode` writes; the request gate's script (oms_api.request_gate) parses the same.
_ENCODED = re.compile(r"([0-9]+):([01]):([0-9a-f]{32})?")

GONE = UserAccess(DELETED_GENERATION, active=False, account_key=None)


async def load_access(
    session_factory: async_sessionmaker[AsyncSession], user_id: int
) -> UserAccess:
    async with session_factory() as session:
        row = (
            await session.execute(
                select(User.token_generation, User.disabled_at, User.account_key).where(
                    User.id == user_id
                )
            )
        ).one_or_none()
    if row is None:
        return GONE
    return UserAccess(row.token_generation, row.disabled_at is None, row.account_key)


class AccessBook(Protocol):
    async def access(self, user_id: int) -> UserAccess: ...

    async def publish(self, user_id: int, access: UserAccess) -> None: ...


class DatabaseAccessBook:
    """The embedded mode: the database answers every time."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory = session_factory

    async def access(self, user_id: int) -> UserAccess:
        return await load_access(self._session_factory, user_id)

    async def publish(self, user_id: int, access: UserAccess) -> None:
        return None  # the database already holds it


class RedisAccessBook:
    def __init__(
        self,
        redis: Redis,
        session_factory: async_sessionmaker[AsyncSession],
        ttl_seconds: int,
        prefix: str = "",
    ) -> None:
        self._redis = redis
        self._session_factory = session_factory
        self._ttl = ttl_seconds
        self._prefix = prefix
        self._set_if_newer = redis.register_script(_SET_IF_NEWER)

    def key(self, user_id: int) -> str:
        return f"{self._prefix}user:{user_id}:access"

    async def access(self, user_id: int) -> UserAccess:
        try:
            raw = await self._redis.get(self.key(user_id))
        except (RedisError, OSError):
            raw = None  # Redis down: the database still knows (the API degrades, not opens)
        known = UserAccess.decode(raw) if raw is not None else None
        if known is not None:
            return known
        loaded = await load_access(self._session_factory, user_id)
        with contextlib.suppress(RedisError, OSError):
            await self.publish(user_id, loaded)
        return loaded

    async def publish(self, user_id: int, access: UserAccess) -> None:
        await self._set_if_newer(
            keys=[self.key(user_id)], args=[access.generation, access.encode(), self._ttl]
        )


# --- changes (the `oms user` commands) -------------------------------------------------------


class UnknownUserError(LookupError):
    pass


async def _bump(session: AsyncSession, user_id: int, *, disabled: bool | None) -> UserAccess:
    values: dict[str, object] = {"token_generation": User.token_generation + 1}
    if disabled is not None:
        values["disabled_at"] = datetime.now(UTC) if disabled else None
    row = (
        await session.execute(
            update(User)
            .where(User.id == user_id)
            .values(**values)
            .returning(User.token_generation, User.disabled_at, User.account_key)
        )
    ).one_or_none()
    if row is None:
        raise UnknownUserError(user_id)
    return UserAccess(row.token_generation, row.disabled_at is None, row.account_key)


async def change_access(
    session_factory: async_sessionmaker[AsyncSession],
    book: AccessBook,
    user_id: int,
    *,
    disabled: bool | None = None,
) -> UserAccess:
    """Revoke every token of a user, optionally disabling or re-enabling the account."""
    async with session_factory() as session, session.begin():
        access = await _bump(session, user_id, disabled=disabled)
    await book.publish(user_id, access)
    return access


async def delete_user(
    session_factory: async_sessionmaker[AsyncSession],
    book: AccessBook,
    cache: OrderCache,
    user_id: int,
) -> int:
    """Delete a user with their orders (the database cascades); their tokens stop working at
    once and their orders leave the cache. Returns how many orders went with them."""
    async with session_factory() as session, session.begin():
        user = await session.get(User, user_id)
        if user is None:
            raise UnknownUserError(user_id)
        order_ids = list(
            (await session.execute(select(Order.id).where(Order.user_id == user_id))).scalars()
        )
        await session.delete(user)
    await book.publish(user_id, GONE)
    for order_id in order_ids:
        await cache.delete(str(order_id))
    return len(order_ids)
