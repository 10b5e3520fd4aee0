"""`oms` says what happened and what to do, without tracebacks: an existing key is not replaced
by accident, create-admin without a terminal says how to give the password, migrate says what it
applied, an empty dead-letter list says it is empty. (SQLite in a temporary folder: no servers.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

OMS = [sys.executable, "-m", "oms.cli"]


def oms(
    *args: str, tmp_path: Path, stdin: str | None = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """The `oms` command as a user runs it, with only the given settings (no .env)."""
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env}
    return subprocess.run(
        [*OMS, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=environment,
        timeout=120,
    )


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'oms.db'}"


def test_generate_keys_never_replaces_a_key_unless_told(tmp_path: Path) -> None:
    first = oms("generate-keys", "--out", "keys/private.pem", tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "keys" / "private.pem").read_bytes()
    again = oms("generate-keys", "--out", "keys/private.pem", tmp_path=tmp_path)
    assert again.returncode == 2
    assert "--force" in again.stderr
    assert "Traceback" not in again.stderr
    assert (tmp_path / "keys" / "private.pem").read_bytes() == key
    forced = oms("generate-keys", "--out", "keys/private.pem", "--force", tmp_path=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "keys" / "private.pem").read_bytes() != key


def test_create_admin_without_a_terminal_says_how_to_give_the_password(
    tmp_path: Path, database: str
) -> None:
    result = oms("create-admin", "root@example.com", tmp_path=tmp_path, DATABASE_URL=database)
    assert result.returncode == 2
    assert "--password" in result.stderr
    assert "OMS_ADMIN_PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr


def test_create_admin_refuses_a_bad_password_with_the_rule(tmp_path: Path, database: str) -> None:
    result = oms(
        "create-admin",
        "root@example.com",
        "--password",
        "x",
        tmp_path=tmp_path,
        DATABASE_URL=database,
    )
    assert result.returncode == 2
    assert "password" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_says_what_it_applied_then_that_nothing_was_left(
    tmp_path: Path, database: str
) -> None:
    first = oms("migrate", tmp_path=tmp_path, DATABASE_URL=database)
    assert first.returncode == 0, first.stderr
    assert "applied 0001" in first.stdout
    again = oms("migrate", tmp_path=tmp_path, DATABASE_URL=database)
    assert again.returncode == 0, again.stderr
    assert "nothing to apply" in again.stdout
    head = first.stdout.strip().rsplit(" ", 1)[-1]
    assert f"already at {head}" in again.stdout
    # And create-admin works on it, with the password from the environment.
    created = oms(
        "create-admin", "root@example.com", tmp_path=tmp_path, DATABASE_URL=database,
        OMS_ADMIN_PASSWORD="secret123",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "created admin" in created.stdout


def test_an_empty_outbox_dead_letter_list_says_so(tmp_path: Path, database: str) -> None:
    assert oms("migrate", tmp_path=tmp_path, DATABASE_URL=database).returncode == 0
    listed = oms("dlq", "list", tmp_path=tmp_path, DATABASE_URL=database)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == ""
    assert "no parked orders" in listed.stderr
