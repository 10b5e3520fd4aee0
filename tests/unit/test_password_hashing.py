"""Password hashing is bounded per process and costs nothing at import."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher

from oms.security import passwords
from oms.settings import AuthSettings


class CountingHasher(PasswordHasher):
    """A real argon2 hasher that records how many of its hashes ran at the same time."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            # Long enough that unbounded calls would overlap.
            threading.Event().wait(0.05)
            return super().hash(password, salt=salt)
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def hashing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield
    # Back to the process default for the other tests.
    passwords.configure_password_hashing(AuthSettings())


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_at_most_the_configured_hashes_run_at_once(
    hashing: None, monkeypatch: pytest.MonkeyPatch, concurrency: int
) -> None:
    passwords.configure_password_hashing(
        AuthSettings(
            PASSWORD_HASH_CONCURRENCY=concurrency,
            PASSWORD_HASH_TIME_COST=1,
            PASSWORD_HASH_MEMORY_KIB=1024,
            PASSWORD_HASH_PARALLELISM=1,
        )
    )
    counting = CountingHasher()
    monkeypatch.setattr(passwords, "_hasher", counting)
    hashes = await asyncio.gather(*(passwords.hash_password_async(f"pw{i}") for i in range(8)))
    assert counting.most == concurrency
    assert all(
        await asyncio.gather(
            *(passwords.verify_password_async(f"pw{i}", hashed) for i, hashed in enumerate(hashes))
        )
    )


async def test_unknown_user_verification_uses_a_hash_of_the_configured_cost(hashing: None) -> None:
    passwords.configure_password_hashing(
        AuthSettings(
            PASSWORD_HASH_TIME_COST=2, PASSWORD_HASH_MEMORY_KIB=2048, PASSWORD_HASH_PARALLELISM=1
        )
    )
    assert await passwords.verify_password_async("anything", None) is False
    assert passwords._dummy_hash is not None
    assert "m=2048,t=2,p=1" in passwords._dummy_hash


def test_importing_the_module_computes_no_hash() -> None:
    # With the default cost a hash touches 64 MiB; before, the import computed one (peak memory
    # 64 MiB above what the process kept afterwards).
    probe = (
        "import oms.security.passwords\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "kib = lambda key: int(status[key].split()[0])\n"
        "print(kib('VmHWM') - kib('VmRSS'))\n"
    )
    transient_kib = int(
        subprocess.run(
            [sys.executable, "-c", probe], check=True, capture_output=True, text=True
        ).stdout
    )
    assert transient_kib < 16 * 1024
