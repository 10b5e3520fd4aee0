"""argon2id password hashing. Hashing is CPU and memory work, so the async API runs it on a
small pool of threads of its own: at most PASSWORD_HASH_CONCURRENCY hashes at once per process,
each holding PASSWORD_HASH_MEMORY_KIB (64 MiB by default) while it runs. Without the bound a
burst of logins would hold that much memory per default-executor thread (six on two cores)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from oms.settings import AuthSettings

T = TypeVar("T")

_hasher = PasswordHasher()
_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="password-hash")
# Verified when the user does not exist, so a wrong email costs as long as a wrong password.
# Made on first use, not at import: a hash costs its full memory, and most processes that
# import this module never verify a password.
_dummy_hash: str | None = None


def configure_password_hashing(settings: AuthSettings) -> None:
    """Set the cost of new hashes and how many run at once in this process (existing hashes
    keep their own cost)."""
    global _hasher, _pool, _dummy_hash
    _hasher = PasswordHasher(
        time_cost=settings.PASSWORD_HASH_TIME_COST,
        memory_cost=settings.PASSWORD_HASH_MEMORY_KIB,
        parallelism=settings.PASSWORD_HASH_PARALLELISM,
    )
    _dummy_hash = None
    previous, _pool = (
        _pool,
        ThreadPoolExecutor(
            max_workers=settings.PASSWORD_HASH_CONCURRENCY, thread_name_prefix="password-hash"
        ),
    )
    previous.shutdown(wait=False)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _dummy() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash("not-a-real-password-0")
    return _dummy_hash


def verify_password(password: str, hashed: str | None) -> bool:
    try:
        return _hasher.verify(hashed or _dummy(), password) and hashed is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def _on_hash_pool(function: Callable[..., T], *args: object) -> T:
    # Like asyncio.to_thread (context carried into the thread), on the bounded pool.
    call = functools.partial(contextvars.copy_context().run, function, *args)
    return await asyncio.get_running_loop().run_in_executor(_pool, call)


async def hash_password_async(password: str) -> str:
    return await _on_hash_pool(hash_password, password)


async def verify_password_async(password: str, hashed: str | None) -> bool:
    return await _on_hash_pool(verify_password, password, hashed)
