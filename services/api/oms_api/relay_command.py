"""`oms-relay`: the outbox relay as a process of its own, for deployments that run the API with
RUN_OUTBOX_RELAY=false. It wakes up on the poll interval only (no API in-process to wake it)."""

from __future__ import annotations

import asyncio
import signal

from oms.db.session import create_engine, create_session_factory
from oms.observability.logs import configure_logging
from oms.observability.tracing import configure_tracing
from oms.outbox.relay import OutboxRelay
from oms.resources import build_order_cache
from oms.settings import RelaySettings, get_relay_settings


async def run_relay(settings: RelaySettings, stop: asyncio.Event) -> None:
    """Relay until `stop` is set, then finish the batch in hand and release everything."""
    engine = create_engine(settings)
    cache = build_order_cache(settings)
    relay = OutboxRelay.from_settings(
        settings, create_session_factory(engine), cache, asyncio.Event()
    )
    relay.start()
    try:
        await stop.wait()
    finally:
        await relay.stop()
        await cache.close()
        await engine.dispose()


def main() -> None:
    settings = get_relay_settings()
    configure_logging("relay", settings.LOG_LEVEL)
    configure_tracing("oms-relay")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_relay(settings, stop)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
