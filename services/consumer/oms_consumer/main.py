"""`oms-consumer`: run the new_order consumer with its probe/metrics port until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from oms.broker.celery_app import create_celery_app
from oms.observability.logs import configure_logging
from oms.observability.metrics_registry import scrape_registry
from oms.observability.probe_server import ProbeServer
from oms.observability.tracing import configure_tracing, instrument_aio_pika, shutdown_tracing
from oms.settings import ConsumerSettings, get_consumer_settings
from oms_consumer.dispatch import CeleryDispatcher
from oms_consumer.queue_depth_poller import QueueDepthMonitor
from oms_consumer.service import OrderEventConsumer

logger = logging.getLogger("oms.consumer")


async def serve(settings: ConsumerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    dispatcher = CeleryDispatcher(
        create_celery_app(settings, main="oms_consumer", results=False),
        attempts=settings.CONSUMER_DISPATCH_ATTEMPTS,
        threads=min(settings.CONSUMER_PREFETCH, 16),
    )
    consumer = OrderEventConsumer(settings, dispatcher)
    probes = ProbeServer(
        settings.HOST, settings.CONSUMER_METRICS_PORT, consumer.checks, scrape_registry()
    ).start()
    queue_monitor = QueueDepthMonitor(lambda: consumer.connection)
    queue_monitor.start()
    starting = asyncio.create_task(consumer.start())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done() and starting.exception() is not None:
            stopping.cancel()
            await starting  # a failed start ends the process (the orchestrator restarts it)
        await stopping
        logger.info("stop requested: draining in-flight messages")
        await consumer.stop()
        await starting
    finally:
        await queue_monitor.stop()
        probes.stop()


def main() -> None:
    settings = get_consumer_settings()
    configure_logging("consumer", settings.LOG_LEVEL)
    if configure_tracing("oms-consumer"):
        instrument_aio_pika()
    try:
        asyncio.run(serve(settings))
    finally:
        shutdown_tracing()


if __name__ == "__main__":
    main()
