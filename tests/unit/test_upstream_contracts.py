"""What we rely on inside other libraries, pinned: a failure here means upstream changed code we
copy or override, and that code must be read again before the pin in services/api/pyproject.toml
moves.

- `oms_api.server.GuardedHttpToolsProtocol` subclasses uvicorn's private httptools protocol: it
  overrides parser callbacks and `_start_asgi_task`, and reads `cycle`, `pipeline` and
  `flow_control.service_unavailable`.
- `oms_api.request_gate` runs a copy of `limits`' moving-window Lua scripts on `limits`' Redis key
  format, so that the library and the one-round-trip gate count the same window.

The recorded digests are those of the versions the pins allow; after reviewing a new upstream
release, record its digests here and move the pin in the same commit.
"""

from __future__ import annotations

import hashlib
import inspect
from importlib import metadata, resources
from pathlib import Path

import pytest
import uvicorn.protocols.http.flow_control as flow_control
import uvicorn.protocols.http.httptools_impl as httptools_impl
from limits import parse
from limits.aio.storage import RedisStorage
from limits.storage import storage_from_string
from packaging.requirements import Requirement
from packaging.version import Version
from redis.asyncio import Redis

from oms_api.request_gate import RequestGate
from oms_api.server import GuardedHttpToolsProtocol

API_PYPROJECT = Path(__file__).parents[2] / "services" / "api" / "pyproject.toml"

UVICORN_SOURCES = {
    httptools_impl: "1d4e1c579df4168433a61a01f10c628b31c1790e72dd9769d2b8633b22214033",
    flow_control: "d39d16560df512f3ce907c329c2a0c3f5cd7165fef3b753876eae5739bf2a785",
}
LIMITS_SCRIPTS = {
    "acquire_moving_window.lua": "573d07908fdb4852d6ebaf25115c3ca5a2a54cb12e5388d99357e9752bb3df38",
    "moving_window.lua": "ce589e4307c44f4042eecc697e23aeccf6b5c309abc162f2ec817c2f135afcbc",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def declared(name: str) -> Requirement:
    import tomllib

    dependencies = tomllib.loads(API_PYPROJECT.read_text())["project"]["dependencies"]
    (requirement,) = [Requirement(d) for d in dependencies if Requirement(d).name == name]
    return requirement


@pytest.mark.parametrize("name", ["uvicorn", "limits"])
def test_the_libraries_whose_internals_we_use_have_an_upper_bound(name: str) -> None:
    requirement = declared(name)
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier), (
        f"{requirement}: an upgrade must be a reviewed change, not a lock refresh"
    )
    assert Version(metadata.version(name)) in requirement.specifier


@pytest.mark.parametrize("module", list(UVICORN_SOURCES), ids=lambda m: m.__name__)
def test_uvicorns_protocol_is_the_one_our_override_was_written_against(module: object) -> None:
    source = inspect.getsource(module)  # type: ignore[arg-type]
    assert sha256(source.encode()) == UVICORN_SOURCES[module], (  # type: ignore[index]
        f"{module.__name__} changed upstream: review oms_api.server.GuardedHttpToolsProtocol "  # type: ignore[attr-defined]
        "against it, then record the new digest"
    )


# Everything of uvicorn's protocol that GuardedHttpToolsProtocol overrides.
OVERRIDDEN = {
    "__init__",
    "connection_made",
    "connection_lost",
    "data_received",
    "handle_websocket_upgrade",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "send_400_response",
    "_start_asgi_task",
}


def test_every_method_we_override_exists_upstream() -> None:
    upstream = httptools_impl.HttpToolsProtocol
    ours = {name for name, value in vars(GuardedHttpToolsProtocol).items() if callable(value)}
    assert {name for name in ours if name in vars(upstream)} == OVERRIDDEN
    # httptools calls on_chunk_header only on a protocol that has it; uvicorn's has none.
    assert not hasattr(upstream, "on_chunk_header")


@pytest.mark.parametrize("script", list(LIMITS_SCRIPTS))
def test_limits_moving_window_scripts_are_the_ones_the_gate_copies(script: str) -> None:
    lua = resources.files("limits") / "resources" / "redis" / "lua_scripts" / script
    assert sha256(lua.read_bytes()) == LIMITS_SCRIPTS[script], (
        f"limits' {script} changed upstream: review the copy in oms_api.request_gate, then record "
        "the new digest"
    )


def test_the_gate_names_limit_keys_as_limits_storage_does() -> None:
    prefix = "test:contract:"
    nowhere = "redis://127.0.0.1:1/1"  # neither builds a connection before it is used
    storage = storage_from_string(
        f"async+{nowhere}", implementation="redispy", key_prefix=f"{prefix}ratelimit"
    )
    gate = RequestGate(Redis.from_url(nowhere), "", prefix)
    item = parse("5/minute")
    assert isinstance(storage, RedisStorage)
    expected = storage.bridge.prefixed_key(item.key_for("create_order", "user:7"))
    assert gate.limit_key(item, "create_order", "user:7") == expected
