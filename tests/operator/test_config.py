"""The operator's settings, and what the start-up handler makes of them in Kopf's settings."""

from __future__ import annotations

import logging

import kopf
import pytest
from pydantic import ValidationError

from oms_operator.config import OperatorConfig
from oms_operator.handlers import configure_kopf


def test_startup_sets_watch_timeouts_so_a_silent_watch_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("SERVER", "CLIENT", "CONNECT"):
        monkeypatch.delenv(f"OPERATOR_WATCH_{name}_TIMEOUT_SECONDS", raising=False)
    # Kopf's default: a watch may last forever.
    assert kopf.OperatorSettings().watching.server_timeout is None
    settings = kopf.OperatorSettings()
    configure_kopf(settings, OperatorConfig())
    assert settings.watching.server_timeout == 120
    assert settings.watching.client_timeout == 150
    assert settings.watching.connect_timeout == 10
    assert settings.peering.standalone is True
    assert settings.scanning.disabled is True
    assert settings.posting.level == logging.WARNING

    monkeypatch.setenv("OPERATOR_WATCH_SERVER_TIMEOUT_SECONDS", "600")
    monkeypatch.setenv("OPERATOR_WATCH_CLIENT_TIMEOUT_SECONDS", "660")
    monkeypatch.setenv("OPERATOR_WATCH_CONNECT_TIMEOUT_SECONDS", "3")
    configure_kopf(settings, OperatorConfig())
    assert (
        settings.watching.server_timeout,
        settings.watching.client_timeout,
        settings.watching.connect_timeout,
    ) == (600, 660, 3)


@pytest.mark.parametrize(("server", "client"), [("150", "150"), ("200", "150")])
def test_a_client_timeout_not_beyond_the_server_timeout_is_refused(
    monkeypatch: pytest.MonkeyPatch, server: str, client: str
) -> None:
    monkeypatch.setenv("OPERATOR_WATCH_SERVER_TIMEOUT_SECONDS", server)
    monkeypatch.setenv("OPERATOR_WATCH_CLIENT_TIMEOUT_SECONDS", client)
    with pytest.raises(ValidationError, match="must exceed"):
        OperatorConfig()


def test_the_server_timeout_is_whole_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    # Kopf passes it on as `timeoutSeconds`, which the API server parses as an integer.
    monkeypatch.setenv("OPERATOR_WATCH_SERVER_TIMEOUT_SECONDS", "90.5")
    with pytest.raises(ValidationError):
        OperatorConfig()
