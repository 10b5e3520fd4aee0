"""Logging set-up shared by every process: JSON lines in production, readable on a terminal.

Each JSON line carries the service, the current `trace_id`/`span_id` (OpenTelemetry) and the
`request_id` of the HTTP request being served, so one order can be followed across services.
Fields that could hold secrets are redacted whatever logger emits them.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured duplicate of msg
    # Kopf's per-object records carry its whole OperatorSettings and a posting flag (its own
    # JSON formatter skips them too); `k8s_ref` stays: it names the object.
    "settings",
    "k8s_skip",
}
SECRET_FIELDS = frozenset(
    {"password", "token", "access_token", "authorization", "secret", "jwt", "private_key"}
)


def trace_fields() -> dict[str, str]:
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {
        "trace_id": format(span_context.trace_id, "032x"),
        "span_id": format(span_context.span_id, "016x"),
    }


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self.service,
            # Tells apart the processes of one service (uvicorn workers, Celery prefork children).
            "pid": record.process,
            "msg": record.getMessage(),
            **trace_fields(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key in _RESERVED or key.startswith("_"):
                continue
            entry[key] = "[redacted]" if key.lower() in SECRET_FIELDS else value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(
    service: str, level: str = "INFO", *, json_output: bool | None = None
) -> None:
    """JSON to stderr unless stderr is a terminal (or `json_output` says otherwise)."""
    handler = logging.StreamHandler(sys.stderr)
    as_json = (not sys.stderr.isatty()) if json_output is None else json_output
    if as_json:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
