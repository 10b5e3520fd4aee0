"""Errors as RFC 9457 `application/problem+json`, with stable machine-readable `type`s.

Clients branch on `type` (a URN that never changes), people read `title` and `detail`.
Validation errors list every field under `errors`, without echoing the submitted values.

Every `type` the API answers with is a member of `ProblemType` (the README's "Errors" table lists
exactly these; a test holds the two together). Domain errors of the library (`OrderNotFoundError`,
`TransitionRejectedError`, ...) become problems here, in `DOMAIN_PROBLEMS`, through registered
exception handlers: routes let them propagate instead of translating them by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum
from functools import partial
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from oms.orders.service import (
    AccessDeniedError,
    AccountDeletedError,
    IdempotencyKeyReusedError,
    InvalidCursorError,
    OrderNotFoundError,
    TransitionRejectedError,
    UserNotFoundError,
)
from oms.users.repository import EmailAlreadyRegisteredError

# Counts a refused request against its route's rate limit; raises the 429 ProblemError when over.
RefusedRequestCounter = Callable[[Request], Awaitable[None]]

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:oms:problem:"

logger = logging.getLogger("oms.api")


class ProblemType(StrEnum):
    """Every problem `type` of the API (without the URN prefix)."""

    VALIDATION_ERROR = "validation-error"
    UNAUTHORIZED = "unauthorized"
    INVALID_TOKEN = "invalid-token"
    INVALID_CREDENTIALS = "invalid-credentials"
    EMAIL_TAKEN = "email-taken"
    ORDER_NOT_FOUND = "order-not-found"
    FORBIDDEN = "forbidden"
    TRANSITION_FORBIDDEN = "transition-forbidden"
    ILLEGAL_TRANSITION = "illegal-transition"
    IDEMPOTENCY_KEY_REUSED = "idempotency-key-reused"
    RATE_LIMITED = "rate-limited"
    USER_NOT_FOUND = "user-not-found"
    ACCOUNT_DISABLED = "account-disabled"
    PAYLOAD_TOO_LARGE = "payload-too-large"
    HEADERS_TOO_LARGE = "headers-too-large"
    REQUEST_TIMEOUT = "request-timeout"
    TOO_MANY_CONNECTIONS = "too-many-connections"
    BAD_REQUEST = "bad-request"
    CORS_REFUSED = "cors-refused"
    NOT_FOUND = "not-found"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    INTERNAL_ERROR = "internal-error"

    @property
    def uri(self) -> str:
        return TYPE_PREFIX + self.value


# The type and title of a status when nothing more specific is said.
_BY_STATUS: dict[int, tuple[ProblemType, str]] = {
    400: (ProblemType.BAD_REQUEST, "Bad request"),
    401: (ProblemType.UNAUTHORIZED, "Authentication required"),
    403: (ProblemType.FORBIDDEN, "Forbidden"),
    404: (ProblemType.NOT_FOUND, "Not found"),
    405: (ProblemType.METHOD_NOT_ALLOWED, "Method not allowed"),
    413: (ProblemType.PAYLOAD_TOO_LARGE, "Payload too large"),
    422: (ProblemType.VALIDATION_ERROR, "Request validation failed"),
    429: (ProblemType.RATE_LIMITED, "Too many requests"),
    408: (ProblemType.REQUEST_TIMEOUT, "Request timeout"),
    431: (ProblemType.HEADERS_TOO_LARGE, "Request header fields too large"),
    500: (ProblemType.INTERNAL_ERROR, "Internal server error"),
}


def status_defaults(status: int) -> tuple[ProblemType, str]:
    """The type and title of a status; one the API has no type of its own for (none of its
    code paths raises one) is a client or a server error, titled with its HTTP phrase."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return (ProblemType.INTERNAL_ERROR if status >= 500 else ProblemType.BAD_REQUEST), phrase


class ProblemError(Exception):
    """Raise from anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: ProblemType | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        default_kind, default_title = status_defaults(status)
        super().__init__(detail)
        self.status = status
        self.kind = kind or default_kind
        self.title = title or default_title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def response(self, request: Request | None) -> Response:
        """The problem document, with the request's path and id when there is a request."""
        body: dict[str, Any] = {
            "type": self.kind.uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if request is not None:
            body["instance"] = request.url.path
            request_id = getattr(request.state, "request_id", None)
            if request_id:
                body["request_id"] = request_id
        body.update(self.extra)
        return Response(
            orjson.dumps(body),
            status_code=self.status,
            media_type=PROBLEM_MEDIA_TYPE,
            headers=self.headers or None,
        )


def problem_response(request: Request | None, status: int, detail: str, **fields: Any) -> Response:
    """Answer with a problem document without raising: `fields` as `ProblemError` takes them."""
    return ProblemError(status, detail, **fields).response(request)


# --- domain errors ----------------------------------------------------------------------------
def _order_not_found(error: Exception) -> ProblemError:
    return ProblemError(
        404, f"Order {error.args[0]} does not exist.", kind=ProblemType.ORDER_NOT_FOUND
    )


def _user_not_found(error: Exception) -> ProblemError:
    return ProblemError(
        404, f"User {error.args[0]} does not exist.", kind=ProblemType.USER_NOT_FOUND
    )


def _always(
    status: int,
    detail: str,
    kind: ProblemType | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
) -> Callable[[Exception], ProblemError]:
    """The same problem whatever the error carries."""

    def to_problem(_error: Exception) -> ProblemError:
        return ProblemError(status, detail, kind=kind, title=title, headers=dict(headers or {}))

    return to_problem


def _invalid_cursor(error: Exception) -> ProblemError:
    return ProblemError(
        422,
        str(error),
        kind=ProblemType.VALIDATION_ERROR,
        errors=[{"loc": ["query", "cursor"], "msg": str(error), "type": "value_error"}],
    )


def _transition_rejected(error: Exception) -> ProblemError:
    assert isinstance(error, TransitionRejectedError)
    current, target = error.current.value, error.target.value
    if error.illegal:
        status, kind, title = 409, ProblemType.ILLEGAL_TRANSITION, "Illegal status transition"
        detail = f"An order in status {current} cannot become {target}."
    else:
        status, kind, title = 403, ProblemType.TRANSITION_FORBIDDEN, "Transition not permitted"
        detail = (
            f"Only an admin may change an order from {current} to {target}; an owner may only "
            "cancel."
        )
    return ProblemError(
        status,
        detail,
        kind=kind,
        title=title,
        current_status=current,
        allowed_transitions=[allowed.value for allowed in error.allowed],
    )


# Each domain error of the library and the problem it answers with.
DOMAIN_PROBLEMS: dict[type[Exception], Callable[[Exception], ProblemError]] = {
    OrderNotFoundError: _order_not_found,
    UserNotFoundError: _user_not_found,
    AccountDeletedError: _always(
        401,
        "The account behind this token no longer exists.",
        ProblemType.INVALID_TOKEN,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    ),
    AccessDeniedError: _always(403, "You may only list your own orders."),
    IdempotencyKeyReusedError: _always(
        422,
        "This Idempotency-Key was already used with a different request body.",
        ProblemType.IDEMPOTENCY_KEY_REUSED,
        "Idempotency key reused",
    ),
    InvalidCursorError: _invalid_cursor,
    TransitionRejectedError: _transition_rejected,
    EmailAlreadyRegisteredError: _always(
        409,
        "An account with this email already exists.",
        ProblemType.EMAIL_TAKEN,
        "Email already registered",
    ),
}


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


async def _count_unchecked(
    count_refused: RefusedRequestCounter, request: Request
) -> Response | None:
    """Rate-limit a request refused before the route's dependencies ran; the 429 when over."""
    try:
        await count_refused(request)
    except ProblemError as problem:
        return await _on_problem(request, problem)
    return None


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return exc.response(request)


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    to_problem = next(
        DOMAIN_PROBLEMS[kind] for kind in type(exc).__mro__ if kind in DOMAIN_PROBLEMS
    )
    return await _on_problem(request, to_problem(exc))


async def _on_validation(
    count_refused: RefusedRequestCounter, request: Request, exc: Exception
) -> Response:
    assert isinstance(exc, RequestValidationError)
    limited = await _count_unchecked(count_refused, request)
    if limited is not None:
        return limited
    errors = _field_errors(exc)
    fields = ", ".join(".".join(e["loc"][1:] or e["loc"]) for e in errors) or "request"
    return problem_response(request, 422, f"Invalid input: {fields}", errors=errors)


async def _on_http(
    count_refused: RefusedRequestCounter, request: Request, exc: Exception
) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 413:
        limited = await _count_unchecked(count_refused, request)
        if limited is not None:
            return limited
    detail = exc.detail if isinstance(exc.detail, str) else status_defaults(exc.status_code)[1]
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


def install_problem_handlers(app: FastAPI, count_refused: RefusedRequestCounter) -> None:
    """`count_refused` counts a request that a limited route refused before its dependencies
    ran (a body that is not JSON, or too large) against the route's rate limit. The limits are
    dependencies (oms_api.deps), which build on this module: the app hands the counter in
    rather than this module importing its own dependents."""
    app.add_exception_handler(ProblemError, _on_problem)
    for domain_error in DOMAIN_PROBLEMS:
        app.add_exception_handler(domain_error, _on_domain_error)
    app.add_exception_handler(RequestValidationError, partial(_on_validation, count_refused))
    app.add_exception_handler(StarletteHTTPException, partial(_on_http, count_refused))
    app.add_exception_handler(Exception, _on_unexpected)


def problem_openapi(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problem documents a route can return."""
    return {
        status: {
            "description": status_defaults(status)[1],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
