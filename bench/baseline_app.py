"""The framework ceiling: a bare ASGI endpoint that answers every request with the same JSON an
order GET returns, served by `oms-api`'s own uvicorn options (same workers, loop, parser).

Run as `python -m bench.baseline_app` with the API's settings in the environment and the body
in BENCH_BASELINE_BODY; the API's code is not imported by the served app.
"""

from __future__ import annotations

import os
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

BODY = os.environ.get("BENCH_BASELINE_BODY", '{"status":"ok"}').encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    from oms.settings import get_api_settings
    from oms_api.server import server_options

    options: dict[str, Any] = server_options(get_api_settings())
    uvicorn.run("bench.baseline_app:app", **options)


if __name__ == "__main__":
    main()
