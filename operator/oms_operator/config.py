"""Operator settings, from the environment (prefix `OPERATOR_`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
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

    @field_validator("NAMESPACES", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def liveness_endpoint(self) -> str:
        return f"http://{self.LIVENESS_HOST}:{self.LIVENESS_PORT}/healthz"
