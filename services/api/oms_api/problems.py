"""Errors as RFC 9457 `application/problem+json`, with stable machine-readable `type`s.

Clients branch on `type` (a URN that never changes), people read `title` and `detail`.
Validation errors list every field under `errors`, without echoing the submitted values.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:oms:problem:"

logger = logging.getLogger("oms.api")

_TITLES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    414: ("uri-too-long", "URI too long"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Request validation failed"),
    429: ("rate-limited", "Too many requests"),
    431: ("headers-too-large", "Request header fields too large"),
    500: ("internal-error", "Internal server error"),
    503: ("service-unavailable", "Service unavailable"),
}


class ProblemError(Exception):
    """Raise from anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        default_kind, default_title = _TITLES.get(status, ("error", "Error"))
        super().__init__(detail)
        self.status = status
        self.kind = kind or default_kind
        self.title = title or default_title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    request: Request | None,
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    default_kind, default_title = _TITLES.get(status, ("error", "Error"))
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + (kind or default_kind),
        "title": title or default_title,
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    body.update(extra)
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def _field_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    fields = []
    for item in error.errors():
        message = str(item.get("msg", ""))
        reason = (item.get("ctx") or {}).get("error")
        if item.get("type") == "json_invalid" and reason:
            message = f"{message}: {reason}"  # which rule the body broke, e.g. nesting depth
        fields.append(
            {
                "loc": [str(part) for part in item.get("loc", ())],
                "msg": message,
                "type": str(item.get("type", "")),
            }
        )
    return fields


async def _count_unchecked(request: Request) -> Response | None:
    """Rate-limit a request refused before the route's dependencies ran; the 429 when over."""
    from oms_api.deps import count_unchecked_request  # deps builds on this module

    try:
        await count_unchecked_request(request)
    except ProblemError as problem:
        return await _on_problem(request, problem)
    return None


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(
        request,
        exc.status,
        exc.detail,
        kind=exc.kind,
        title=exc.title,
        headers=exc.headers,
        **exc.extra,
    )


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    limited = await _count_unchecked(request)
    if limited is not None:
        return limited
    errors = _field_errors(exc)
    fields = ", ".join(".".join(e["loc"][1:] or e["loc"]) for e in errors) or "request"
    return problem_response(request, 422, f"Invalid input: {fields}", errors=errors)


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 413:
        limited = await _count_unchecked(request)
        if limited is not None:
            return limited
    detail = (
        exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, ("", ""))[1]
    )
    return problem_response(request, exc.status_code, detail, headers=dict(exc.headers or {}))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    logger.exception(
        "unhandled error",
        extra={"request_id": getattr(request.state, "request_id", None)},
        exc_info=exc,
    )
    return problem_response(
        request, 500, "An unexpected error occurred; quote the request_id when reporting it."
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)


def problem_openapi(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problem documents a route can return."""
    return {
        status: {
            "description": _TITLES.get(status, ("", "Error"))[1],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
