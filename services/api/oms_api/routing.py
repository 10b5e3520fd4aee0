"""Route registration shared by the routers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends

from oms_api.deps import rate_limited
from oms_api.problems import problem_openapi

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def route(
    router: APIRouter,
    method: str,
    path: str,
    *,
    limit: str | None = None,
    per_user: bool = True,
    order_param: str | None = None,
    problems: tuple[int, ...] = (),
    **options: Any,
) -> Callable[[Endpoint], Endpoint]:
    """Register an endpoint under `path` and its trailing-slash twin.

    The specification writes routes both with and without the slash; clients get the same
    answer either way, never a redirect. Only `path` appears in the OpenAPI document. `limit`
    names the RateLimitPolicy entry guarding the route, counted per user or (`per_user=False`)
    always per client IP; `order_param` names the path parameter of an order the route reads
    from the cache (read in the same Redis round trip as the limit); `problems` are the
    documented errors.
    """
    dependencies = (
        [Depends(rate_limited(limit, per_user=per_user, order_param=order_param))] if limit else []
    )
    twin = path[:-1] if path.endswith("/") else f"{path}/"

    def register(endpoint: Endpoint) -> Endpoint:
        shared = {
            "methods": [method],
            "dependencies": dependencies,
            "responses": problem_openapi(*problems),
            **options,
        }
        router.add_api_route(path, endpoint, **shared)
        router.add_api_route(twin, endpoint, include_in_schema=False, **shared)
        return endpoint

    return register
