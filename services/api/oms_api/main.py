"""`oms-api`: serve the API with uvicorn (settings from the environment / `.env`)."""

from __future__ import annotations

import os
from typing import Any

import uvicorn

from oms.logging import configure_logging
from oms.prometheus import MULTIPROC_ENV, prepare_multiprocess_dir
from oms.settings import Settings, get_settings


def server_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn serves the API; the benchmark serves its bare baseline with the same."""
    return {
        "host": settings.HOST,
        "port": settings.PORT,
        "workers": settings.API_WORKERS,
        "proxy_headers": False,  # client IPs come from our trusted-proxy logic, not uvicorn's
        "server_header": False,
        "log_config": None,
        "access_log": False,
    }


def main() -> None:
    settings = get_settings()
    configure_logging("api", settings.LOG_LEVEL)
    if settings.API_WORKERS > 1 or os.environ.get(MULTIPROC_ENV):
        # Several uvicorn workers: each counts in its own file, /metrics adds them up. Must
        # happen before the workers import prometheus_client (they inherit the variable).
        prepare_multiprocess_dir("oms-api-")
    uvicorn.run("oms_api.app:create_app", factory=True, **server_options(settings))


if __name__ == "__main__":
    main()
