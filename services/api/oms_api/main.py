"""`oms-api`: serve the API with uvicorn (settings from the environment / `.env`)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import uvicorn

from oms.observability.logs import configure_logging
from oms.observability.metrics_registry import (
    MULTIPROC_ENV,
    prepare_multiprocess_dir,
    scrape_registry,
)
from oms.security.keys import KeyConfigurationError, load_key_set
from oms.settings import get_api_settings
from oms_api.server import server_options, unsafe_configuration

if TYPE_CHECKING:
    from fastapi import FastAPI


def serve_app() -> FastAPI:
    """The factory uvicorn calls in every worker process: each logs JSON with request ids."""
    # Imported here: the app imports prometheus_client, which must not happen in the
    # supervising process before prepare_multiprocess_dir.
    from oms_api.app import create_app

    settings = get_api_settings()
    configure_logging("api", settings.LOG_LEVEL)
    return create_app(settings)


def main() -> None:
    settings = get_api_settings()
    configure_logging("api", settings.LOG_LEVEL)
    problems = unsafe_configuration(settings)
    try:
        load_key_set(settings)
    except KeyConfigurationError as error:
        problems.append(str(error))
    if problems:
        for problem in problems:
            print(f"oms-api: refusing to start: {problem}", file=sys.stderr)
        raise SystemExit(2)
    if settings.API_WORKERS > 1 or os.environ.get(MULTIPROC_ENV):
        # Several uvicorn workers: each counts in its own file, /metrics adds them up. Must
        # happen before the workers import prometheus_client (they inherit the variable).
        prepare_multiprocess_dir("oms-api-")
    if settings.API_METRICS_PORT:
        from oms.observability.probe_server import MetricsServer

        # In this (the supervising) process: one port whatever the number of workers. Bounded
        # like the probe ports (prometheus_client's own server keeps idle connections forever).
        MetricsServer(settings.HOST, settings.API_METRICS_PORT, scrape_registry()).start()
    uvicorn.run("oms_api.main:serve_app", factory=True, **server_options(settings))


if __name__ == "__main__":
    main()
