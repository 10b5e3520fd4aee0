"""Strict JSON request bodies: parsed by orjson, then held to limits the models cannot express.

orjson already refuses what Python's `json` lets through: unpaired surrogates (`"\\udfff"`),
`NaN`/`Infinity`, invalid UTF-8, and nesting beyond 1,024 levels without recursing in Python.
On top of that every string, keys included, may not hold NUL, and documents may not nest deeper
than MAX_DEPTH: nothing we accept needs more, and deep documents are how validators and loggers
are made to recurse. A refusal is a `json.JSONDecodeError`, which FastAPI turns into a 422.

Plugged in the way FastAPI documents custom request classes: a route class whose handler sees a
`Request` with this `json()`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

MAX_DEPTH = 8


class JSONRejectedError(json.JSONDecodeError):
    """Well-formed JSON that we still refuse (NUL characters, too deep)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, "", 0)


def parse_strict(body: bytes, max_depth: int = MAX_DEPTH) -> Any:
    document = orjson.loads(body)
    check_document(document, max_depth)
    return document


def check_document(document: Any, max_depth: int = MAX_DEPTH) -> None:
    """Walk without recursion: the document's shape must not decide our stack depth."""
    pending: list[tuple[Any, int]] = [(document, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise JSONRejectedError("strings must not contain NUL (\\u0000)")
        elif isinstance(value, dict | list):
            if depth >= max_depth:
                raise JSONRejectedError(f"nested deeper than {max_depth} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    if "\x00" in key:
                        raise JSONRejectedError("keys must not contain NUL (\\u0000)")
                    pending.append((item, depth + 1))
            else:
                pending.extend((item, depth + 1) for item in value)


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_strict(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
