"""`oms-api`: serve the API with uvicorn (settings from the environment / `.env`)."""

from __future__ import annotations

import uvicorn

from oms.logging import configure_logging
from oms.settings import get_settings


def main() -> None:
    settings = get_settings()
    configure_logging("api", settings.LOG_LEVEL)
    uvicorn.run(
        "oms_api.app:create_app",
        factory=True,
        host=settings.HOST,
        port=settings.PORT,
        workers=settings.API_WORKERS,
        proxy_headers=False,  # client IPs come from our trusted-proxy logic, not uvicorn's
        server_header=False,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
