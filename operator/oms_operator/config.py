"""Operator settings, from the environment (prefix `OPERATOR_`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class OperatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPERATOR_", extra="ignore")

    NAMESPACES: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch, comma-separated; empty means every namespace.",
    )
    METRICS_HOST: str = "0.0.0.0"  # noqa: S104  (scraped from outside the pod)
    METRICS_PORT: int = Field(default=9103, ge=0, le=65535)
    LIVENESS_HOST: str = "0.0.0.0"  # noqa: S104
    LIVENESS_PORT: int = Field(default=8080, ge=0, le=65535)
    LOG_LEVEL: str = "INFO"
    MAX_BACKOFF_SECONDS: float = Field(default=300.0, gt=0)
    KEY_RESYNC_SECONDS: float = Field(
        default=300.0, gt=0, description="Re-check key Secrets at least this often."
    )

    # A watch that goes silent (a proxy or load balancer dropping the stream without closing it)
    # would otherwise hide new OrderSystems until the operator restarts: the server ends every
    # watch after WATCH_SERVER_TIMEOUT_SECONDS, and the client gives up on one that outlives it
    # by more than the margin to WATCH_CLIENT_TIMEOUT_SECONDS. Kopf resumes from the last
    # resourceVersion, so a reconnect costs one request, not a re-listing.
    # Whole seconds: Kopf sends it as the `timeoutSeconds` query parameter, an integer.
    WATCH_SERVER_TIMEOUT_SECONDS: int = Field(default=120, ge=1)
    WATCH_CLIENT_TIMEOUT_SECONDS: float = Field(default=150.0, gt=0)
    WATCH_CONNECT_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _client_outlives_server(self) -> OperatorConfig:
        # A client timeout at or below the server's cuts every healthy stream short, as an error.
        if self.WATCH_CLIENT_TIMEOUT_SECONDS <= self.WATCH_SERVER_TIMEOUT_SECONDS:
            raise ValueError(
                "OPERATOR_WATCH_CLIENT_TIMEOUT_SECONDS must exceed "
                "OPERATOR_WATCH_SERVER_TIMEOUT_SECONDS"
            )
        return self

    @field_validator("NAMESPACES", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def liveness_endpoint(self) -> str:
        return f"http://{self.LIVENESS_HOST}:{self.LIVENESS_PORT}/healthz"
