"""`make stack` (scripts/stack.sh) runs with the settings every process would read: the
environment first, then .env, and its own defaults only for what neither sets. (The regression:
it exported its defaults, which beat .env, so a .env made from .env.example was ignored.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def print_env(
    checkout: Path, env_file: str | None, **environment: str
) -> dict[str, tuple[str, str]]:
    """A copy of the script run in `checkout` (it reads that .env): name -> (value, source)."""
    (checkout / "scripts").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "scripts" / "stack.sh", checkout / "scripts" / "stack.sh")
    if env_file is not None:
        (checkout / ".env").write_text(env_file)
    result = subprocess.run(
        ["bash", str(checkout / "scripts" / "stack.sh"), "--print-env"],
        capture_output=True,
        text=True,
        check=True,
        # The script reads .env with python-dotenv, as the processes do: this test's Python has it.
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, **environment},
    )
    settings = {}
    for line in result.stdout.splitlines():
        assignment, source = line.split("\t")
        name, _, value = assignment.partition("=")
        settings[name] = (value, source.strip("()"))
    return settings


def test_env_file_beats_the_scripts_defaults(tmp_path: Path) -> None:
    env_file = (
        "POSTGRES_DB=shop  # an inline comment, as .env.example has them\n"
        "export REDIS_URL=redis://127.0.0.1:6379/5\n"
        'RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/shop"\n'
        "JWT_PRIVATE_KEY_PATH=data/jwt/private.pem\n"
        "PORT=8100\n"
    )
    settings = print_env(tmp_path, env_file)
    assert settings["POSTGRES_DB"] == ("shop", ".env")
    assert settings["REDIS_URL"] == ("redis://127.0.0.1:6379/5", ".env")
    assert settings["RABBITMQ_URL"] == ("amqp://guest:guest@127.0.0.1:5672/shop", ".env")
    assert settings["JWT_PRIVATE_KEY_PATH"] == ("data/jwt/private.pem", ".env")
    assert settings["PORT"] == ("8100", ".env")
    # What .env leaves out still gets the stack's default.
    assert settings["POSTGRES_HOST"] == ("127.0.0.1", "default")


def test_the_environment_beats_env_file(tmp_path: Path) -> None:
    settings = print_env(tmp_path, "PORT=8100\nPOSTGRES_DB=shop\n", PORT="8200")
    assert settings["PORT"] == ("8200", "environment")
    assert settings["POSTGRES_DB"] == ("shop", ".env")


def test_without_env_file_the_stack_has_its_own_defaults_and_key(tmp_path: Path) -> None:
    settings = print_env(tmp_path, None)
    assert settings["POSTGRES_DB"] == ("order_db", "default")
    assert settings["RABBITMQ_URL"] == ("amqp://guest:guest@127.0.0.1:5672/", "default")
    assert settings["JWT_PRIVATE_KEY_PATH"] == ("data/stack/jwt/private.pem", "default")
