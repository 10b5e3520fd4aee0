"""Observability tests reuse the end-to-end stack of real processes (tests/e2e)."""

from __future__ import annotations

from tests.e2e.conftest import backend, make_stack, rabbitmq_vhost_url

__all__ = ["backend", "make_stack", "rabbitmq_vhost_url"]
