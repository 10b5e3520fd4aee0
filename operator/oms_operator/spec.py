"""The OrderSystem spec as typed models, with the same defaults and bounds as the CRD schema.

The API server applies the CRD defaults and rejects out-of-bounds values before we ever see an
object; parsing again here keeps the operator correct where that did not happen (an older CRD,
a test server without schema validation) and gives the cross-field rules one Python home.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from oms_operator.durations import DURATION_PATTERN, parse_duration
from oms_operator.keys import KeyPolicy
from oms_operator.scaling import ScalingPolicy

GROUP = "oms.dev"
VERSION = "v1alpha1"
PLURAL = "ordersystems"
KIND = "OrderSystem"
API_VERSION = f"{GROUP}/{VERSION}"


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class JwtSpec(_Model):
    secret_name: str = Field(
        default="oms-jwt-keys", alias="secretName", min_length=1, max_length=253
    )
    key_size: Literal[2048, 3072, 4096] = Field(default=2048, alias="keySize")
    rotation_interval: str = Field(
        default="720h", alias="rotationInterval", pattern=DURATION_PATTERN
    )
    propagation_delay: str = Field(default="2m", alias="propagationDelay", pattern=DURATION_PATTERN)
    retired_key_retention: str = Field(
        default="2h", alias="retiredKeyRetention", pattern=DURATION_PATTERN
    )
    token_lifetime: str = Field(default="1h", alias="tokenLifetime", pattern=DURATION_PATTERN)
    clock_skew: str = Field(default="30s", alias="clockSkew", pattern=DURATION_PATTERN)

    def policy(self) -> KeyPolicy:
        return KeyPolicy(
            key_size=self.key_size,
            rotation_interval=timedelta(seconds=parse_duration(self.rotation_interval)),
            propagation_delay=timedelta(seconds=parse_duration(self.propagation_delay)),
            retention=timedelta(seconds=parse_duration(self.retired_key_retention)),
        )

    @model_validator(mode="after")
    def _retention_outlives_tokens(self) -> JwtSpec:
        needed = parse_duration(self.token_lifetime) + parse_duration(self.clock_skew)
        rotation_interval = parse_duration(self.rotation_interval)
        if parse_duration(self.retired_key_retention) < needed:
            raise ValueError(
                f"retiredKeyRetention ({self.retired_key_retention}) must be at least "
                f"tokenLifetime + clockSkew ({self.token_lifetime} + {self.clock_skew}), "
                "or tokens signed by a retired key stop verifying before they expire"
            )
        if rotation_interval <= 0:
            raise ValueError("rotationInterval must be positive")
        if parse_duration(self.propagation_delay) >= rotation_interval:
            raise ValueError("propagationDelay must be shorter than rotationInterval")
        return self


class WorkersSpec(_Model):
    deployment_name: str = Field(alias="deploymentName", min_length=1, max_length=253)
    queues: tuple[str, ...] = Field(default=("order_tasks",), min_length=1, max_length=16)
    min_replicas: int = Field(default=1, alias="minReplicas", ge=0, le=1000)
    max_replicas: int = Field(default=10, alias="maxReplicas", ge=1, le=1000)
    messages_per_replica: int = Field(default=20, alias="messagesPerReplica", ge=1)
    activation_threshold: int = Field(default=0, alias="activationThreshold", ge=0)
    polling_interval: str = Field(default="15s", alias="pollingInterval", pattern=DURATION_PATTERN)
    scale_down_stabilization: str = Field(
        default="5m", alias="scaleDownStabilization", pattern=DURATION_PATTERN
    )
    paused: bool = False
    fallback_replicas: int | None = Field(default=None, alias="fallbackReplicas", ge=0, le=1000)
    fallback_after_failures: int = Field(default=3, alias="fallbackAfterFailures", ge=1, le=100)

    @property
    def polling_interval_seconds(self) -> float:
        return parse_duration(self.polling_interval)

    def policy(self) -> ScalingPolicy:
        # The policy's fields are named as the spec's, bar the window (a duration string here).
        same = self.model_dump(include={item.name for item in fields(ScalingPolicy)})
        window = parse_duration(self.scale_down_stabilization)
        return ScalingPolicy(scale_down_window=window, **same)

    @model_validator(mode="after")
    def _bounds(self) -> WorkersSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError("maxReplicas must be greater than or equal to minReplicas")
        if self.polling_interval_seconds < 1:
            raise ValueError("pollingInterval must be at least 1s")
        return self


class SecretKeyRef(_Model):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field(default="RABBITMQ_URL", min_length=1)


class ManagementSecretKeyRef(SecretKeyRef):
    key: str = Field(default="RABBITMQ_MANAGEMENT_URL", min_length=1)


class RabbitMQSpec(_Model):
    url_secret_ref: SecretKeyRef = Field(alias="urlSecretRef")
    management_url_secret_ref: ManagementSecretKeyRef | None = Field(
        default=None, alias="managementUrlSecretRef"
    )


class OrderSystemSpec(_Model):
    jwt: JwtSpec = Field(default_factory=JwtSpec)
    workers: WorkersSpec
    rabbitmq: RabbitMQSpec


class InvalidSpecError(ValueError):
    """The spec cannot be acted on; the message is fit for a status condition."""


def parse_spec(raw: dict[str, Any]) -> OrderSystemSpec:
    try:
        return OrderSystemSpec.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or 'spec'}: {issue['msg']}"
            for issue in error.errors()
        )
        raise InvalidSpecError(problems) from error
