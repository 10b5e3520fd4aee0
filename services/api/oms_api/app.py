"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.datastructures import Headers
from starlette.responses import Response

from oms.observability.tracing import configure_tracing
from oms.settings import ApiSettings, get_api_settings
from oms_api.deps import count_unchecked_request
from oms_api.middleware import (
    ErrorBoundaryMiddleware,
    HttpMetricsMiddleware,
    RequestEnvelopeMiddleware,
)
from oms_api.problems import ProblemType, install_problem_handlers, problem_response
from oms_api.routers import auth, health, metrics_endpoint, orders
from oms_api.state import open_app_state
from oms_api.tracing import instrument_app

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "example": "urn:oms:problem:validation-error"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as problem+json."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = problem_response(
            None,
            400,
            bytes(response.body).decode(),
            kind=ProblemType.CORS_REFUSED,
            title="CORS refused",
        )
        for name, value in response.headers.items():
            if name.lower() not in ("content-type", "content-length"):
                refused.headers[name] = value
        return refused


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or get_api_settings()

    metrics_on_own_port = settings.API_METRICS_PORT > 0

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_app_state(settings) as state:
            app.state.oms = state
            refresher = (
                asyncio.create_task(metrics_endpoint.refresh_outbox_backlog(state.session_factory))
                if metrics_on_own_port
                else None
            )
            try:
                yield
            finally:
                if refresher is not None:
                    refresher.cancel()

    docs = settings.API_DOCS_ENABLED
    app = FastAPI(
        title="Order Management System",
        version="0.1.0",
        description="Orders with JWT auth, caching, rate limits and an asynchronous pipeline.",
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    install_problem_handlers(app, count_unchecked_request)
    app.include_router(health.router)
    if not metrics_on_own_port:
        app.include_router(metrics_endpoint.router)
    app.include_router(auth.router)
    app.include_router(orders.router)
    # Added innermost first: the envelope wraps everything, the error boundary sits right
    # outside the routes so that its 500 still passes CORS, metrics and the envelope.
    app.add_middleware(ErrorBoundaryMiddleware)
    if settings.CORS_ORIGINS:
        app.add_middleware(
            ProblemCORSMiddleware,
            allow_origins=settings.CORS_ORIGINS,
            allow_credentials=settings.CORS_ALLOW_CREDENTIALS,
            allow_methods=["GET", "POST", "PATCH", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=[
                "Retry-After",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
                "Idempotent-Replayed",
                "X-Request-ID",
                "Location",
            ],
        )
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(RequestEnvelopeMiddleware, max_body_bytes=settings.MAX_REQUEST_BODY_BYTES)
    if configure_tracing("oms-api"):
        instrument_app(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                PROBLEM_SCHEMA
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
