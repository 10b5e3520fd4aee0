"""`oms`: administrative verbs (migrate, create-admin, generate-keys, dlq, relay)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from oms.db.models import UserRole
from oms.db.session import create_engine, create_session_factory
from oms.schemas import UserRegister, login_email
from oms.security.keys import generate_private_key, key_id, private_key_to_pem
from oms.security.passwords import configure_password_hashing, hash_password_async
from oms.settings import DatabaseSettings, UserAdminSettings
from oms.users.repository import EmailAlreadyRegisteredError, UserRepository


def _migrate(args: argparse.Namespace) -> int:
    from oms.migrations.runner import head_revision, upgrade

    settings = DatabaseSettings()
    where = settings.database_url.render_as_string()
    applied = upgrade(settings, args.revision)
    target = head_revision(settings) if args.revision == "head" else args.revision
    if applied:
        print(f"database {where}: applied {', '.join(applied)}; now at {target}")
    else:
        print(f"database {where}: already at {target}, nothing to apply")
    return 0


async def create_admin(settings: UserAdminSettings, email: str, password: str) -> int:
    """Create an admin account, or promote an existing user; returns the process exit code."""
    body = UserRegister(email=email, password=password)
    configure_password_hashing(settings)
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            repository = UserRepository(session)
            existing = await repository.get_by_email(body.email)
            if existing is not None:
                existing.role = UserRole.ADMIN
                print(f"user {existing.id} <{existing.email}> is now an admin")
                return 0
            hashed = await hash_password_async(body.password)
            user = await repository.add(body.email, hashed, role=UserRole.ADMIN)
            print(f"created admin {user.id} <{user.email}>")
            return 0
    except EmailAlreadyRegisteredError:
        print("that email was registered concurrently; run the command again", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()


NO_PASSWORD = (
    "oms create-admin: no password given and no terminal to ask on: pass --password PASSWORD "
    "or set OMS_ADMIN_PASSWORD (5-20 letters and digits)"
)


def _admin_password(args: argparse.Namespace) -> str | None:
    """--password, else $OMS_ADMIN_PASSWORD, else a prompt when there is a terminal to ask on."""
    given: str | None = args.password or os.environ.get("OMS_ADMIN_PASSWORD")
    if given:
        return given
    if not sys.stdin.isatty():
        return None
    try:
        return getpass.getpass()
    except EOFError:
        return None


def _create_admin_cmd(args: argparse.Namespace) -> int:
    password = _admin_password(args)
    if password is None:
        print(NO_PASSWORD, file=sys.stderr)
        return 2
    try:
        UserRegister(email=args.email, password=password)
    except ValidationError as error:
        problems = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in error.errors())
        print(f"oms create-admin: {problems}", file=sys.stderr)
        return 2
    return asyncio.run(create_admin(UserAdminSettings(), args.email, password))


async def manage_user(settings: UserAdminSettings, action: str, email: str) -> int:
    """`oms user ACTION EMAIL`: revoke tokens, disable, enable or delete an account."""
    from redis.exceptions import RedisError

    from oms.resources import build_access_book, build_order_cache, redis_client
    from oms.users.access import change_access, delete_user

    engine = create_engine(settings)
    sessions = create_session_factory(engine)
    redis = redis_client(settings)
    cache = build_order_cache(settings, redis)  # closes the shared client
    book = build_access_book(settings, sessions, redis)
    try:
        async with sessions() as session:
            # The address as registration stored it (IDNA domain, NFC, case), as /token does.
            user = await UserRepository(session).get_by_email(login_email(email))
        if user is None:
            print(f"no user with email {email}", file=sys.stderr)
            return 1
        if action == "delete":
            orders = await delete_user(sessions, book, cache, user.id)
            print(f"deleted user {user.id} <{user.email}> and {orders} orders; tokens revoked")
            return 0
        disabled = {"disable": True, "enable": False, "revoke": None}[action]
        access = await change_access(sessions, book, user.id, disabled=disabled)
        state = "active" if access.active else "disabled"
        print(f"user {user.id} <{user.email}>: {state}, earlier tokens revoked")
        return 0
    except (RedisError, OSError) as error:
        # The database change committed; only telling the API processes through Redis failed.
        print(
            f"the change to {email} is saved, but Redis could not be told ({error}); API "
            f"processes apply it within USER_STATE_CACHE_SECONDS "
            f"({settings.USER_STATE_CACHE_SECONDS} s); to apply it at once, delete the key "
            f"{settings.REDIS_KEY_PREFIX}user:<id>:access when Redis is back",
            file=sys.stderr,
        )
        return 1
    finally:
        await cache.close()
        await engine.dispose()


def _user_cmd(args: argparse.Namespace) -> int:
    return asyncio.run(manage_user(UserAdminSettings(), args.action, args.email))


def _generate_keys(args: argparse.Namespace) -> int:
    target = Path(args.out)
    if target.exists() and not args.force:
        print(
            f"oms generate-keys: {target} exists; replacing it rotates the signing key without "
            f"notice and every token it signed stops verifying. Pass --force to replace it "
            f"(or --out to write elsewhere).",
            file=sys.stderr,
        )
        return 2
    key = generate_private_key(args.bits)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(private_key_to_pem(key))
    target.chmod(0o600)
    print(f"wrote {target} (kid {key_id(key.public_key())})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oms", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    migrate = verbs.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(handler=_migrate)

    admin = verbs.add_parser("create-admin", help="create an admin (or promote a user)")
    admin.add_argument("email")
    admin.add_argument(
        "--password", help="default: $OMS_ADMIN_PASSWORD, else a prompt (needs a terminal)"
    )
    admin.set_defaults(handler=_create_admin_cmd)

    user = verbs.add_parser(
        "user", help="revoke a user's tokens, disable, enable or delete the account"
    )
    user.add_argument("action", choices=["revoke", "disable", "enable", "delete"])
    user.add_argument("email")
    user.set_defaults(handler=_user_cmd)

    keys = verbs.add_parser("generate-keys", help="write a new RSA signing key (PEM)")
    keys.add_argument("--out", default="data/jwt/private.pem")
    keys.add_argument("--bits", type=int, default=2048, choices=[2048, 3072, 4096])
    keys.add_argument("--force", action="store_true", help="replace an existing key file")
    keys.set_defaults(handler=_generate_keys)

    dlq = verbs.add_parser(
        "dlq", help="list or replay dead letters (new_order.dlq, or parked outbox events)"
    )
    _dlq_parser(dlq).set_defaults(handler=_dlq)

    relay = verbs.add_parser("relay", help="run the outbox relay alone (RUN_OUTBOX_RELAY=false)")
    relay.set_defaults(handler=_relay)
    return parser


def _dlq_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from oms.outbox.dead_letters import build_parser

    return build_parser(parser)


def _dlq(args: argparse.Namespace) -> int:
    from oms.outbox.dead_letters import run

    return run(args)


def _relay(_args: argparse.Namespace) -> int:
    """`oms relay` runs the `oms-relay` service entry point; the library does not import the
    service (it is found through the installed console scripts)."""
    from importlib.metadata import entry_points

    (relay,) = entry_points(group="console_scripts", name="oms-relay")
    relay.load()()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
