"""Settings in sections, one per concern, composed into one class per process.

Each section is a `BaseSettings` of its own, read from the environment and `.env`; variable
names follow the specification (POSTGRES_*, REDIS_URL*, RABBITMQ_URL), ours are prefixed by
their concern (JWT_*, CORS_*, RATE_LIMIT_*, ...); no section adds a prefix. A process reads only
the sections it uses, composed by inheritance so that attributes stay flat
(`settings.DATABASE_URL`): `ApiSettings` (`oms-api`), `RelaySettings` (`oms-relay`),
`ConsumerSettings` (`oms-consumer`), `WorkerSettings` (`oms-worker`) and the narrower ones of the
`oms` commands. Library code takes the narrowest section, or pair of sections, it needs.

Unset backends fall back to the embedded default so that `make run` works with nothing
installed: SQLite instead of PostgreSQL, in-process memory instead of Redis, an in-process
dispatcher instead of RabbitMQ + Celery.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# Comma-separated in the environment (not JSON).
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]


class _Section(BaseSettings):
    # Validators of different sections meet in one composed class: their names must differ.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)


# --- Sections ---------------------------------------------------------------------------------


class ProcessSettings(_Section):
    """What every process has: its log level and the address its ports listen on."""

    HOST: str = Field(
        default="127.0.0.1", description="Address of the API port and of probe/metrics ports."
    )
    LOG_LEVEL: str = "INFO"


class HttpServerSettings(_Section):
    """How the API serves HTTP."""

    PORT: int = 8000
    API_WORKERS: int = Field(default=1, ge=1)
    MAX_REQUEST_BODY_BYTES: int = Field(
        default=65536, ge=1024, description="Larger request bodies are refused with 413."
    )
    MAX_REQUEST_HEADER_BYTES: int = Field(
        default=16384,
        ge=1024,
        description="Request line plus headers; larger heads are refused with 431.",
    )
    API_DOCS_ENABLED: bool = Field(default=True, description="Serve /docs and /openapi.json.")
    API_METRICS_PORT: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Serve /metrics on this port instead of the API port (0: on the API port).",
    )
    HTTP_HEAD_TIMEOUT_SECONDS: float = Field(
        default=10.0,
        gt=0,
        description=(
            "From a connection's opening, or the end of its previous answer, to a complete "
            "request head; a partial head is then answered 408, an idle connection closed."
        ),
    )
    HTTP_BODY_TIMEOUT_SECONDS: float = Field(
        default=30.0,
        gt=0,
        description="From a complete request head to the end of its body; then 408 and close.",
    )
    HTTP_KEEP_ALIVE_TIMEOUT_SECONDS: float = Field(
        default=5.0, gt=0, description="An idle keep-alive connection is closed after this."
    )
    HTTP_MAX_CONNECTIONS: int = Field(
        default=1000,
        ge=1,
        description=(
            "Open connections (and requests in progress) per API process; a request beyond "
            "them is answered 503 and its connection closed."
        ),
    )


class DatabaseSettings(_Section):
    """PostgreSQL (or the embedded SQLite file under DATA_DIR) and the connection pool."""

    DATABASE_URL: str | None = Field(
        default=None, description="Full SQLAlchemy URL; overrides POSTGRES_* when set."
    )
    POSTGRES_HOST: str | None = None
    POSTGRES_PORT: int = 5432
    POSTGRES_DB: str = "order_db"
    POSTGRES_USER: str = "postgres"
    POSTGRES_PASSWORD: SecretStr = SecretStr("")
    DB_POOL_SIZE: int = Field(default=10, ge=1)
    DB_MAX_OVERFLOW: int = Field(default=10, ge=0)
    DB_ECHO: bool = False
    DATA_DIR: Path = Field(
        default=Path("data"), description="The SQLite file and development JWT keys."
    )

    @property
    def database_url(self) -> URL:
        # Imported here: the consumer reads its settings from this module and has no SQLAlchemy.
        from sqlalchemy.engine import URL, make_url

        if self.DATABASE_URL:
            return make_url(self.DATABASE_URL)
        if self.POSTGRES_HOST:
            return URL.create(
                "postgresql+asyncpg",
                username=self.POSTGRES_USER,
                password=self.POSTGRES_PASSWORD.get_secret_value() or None,
                host=self.POSTGRES_HOST,
                port=self.POSTGRES_PORT,
                database=self.POSTGRES_DB,
            )
        return URL.create("sqlite+aiosqlite", database=str(self.DATA_DIR / "oms.db"))

    @property
    def database_backend(self) -> Literal["postgresql", "sqlite"]:
        return "sqlite" if self.database_url.get_backend_name() == "sqlite" else "postgresql"

    @property
    def embedded(self) -> bool:
        """The zero-configuration mode: SQLite, no Redis, no RabbitMQ."""
        return self.database_backend == "sqlite"


class RedisSettings(_Section):
    """Redis servers (order cache, rate limits, Celery results) and our key prefix."""

    REDIS_URL: str | None = None
    REDIS_URL_RATE_LIMIT: str | None = None
    REDIS_URL_CELERY: str | None = None
    REDIS_KEY_PREFIX: str = Field(
        default="", description="Prefix for every key we write (isolates tenants and tests)."
    )


class CacheSettings(_Section):
    """How long the shared stores (`oms.resources`) keep what they hold."""

    ORDER_CACHE_TTL_SECONDS: int = Field(default=300, ge=1)
    USER_STATE_CACHE_SECONDS: int = Field(
        default=300,
        ge=1,
        description=(
            "How long Redis remembers a user's token generation; `oms user` commands update "
            "it at once, this only bounds changes made behind the API's back."
        ),
    )


class BrokerSettings(_Section):
    """RabbitMQ: the `new_order` exchange and Celery's broker."""

    RABBITMQ_URL: str | None = None
    CELERY_BROKER_URL: str | None = Field(
        default=None, description="Celery's broker; defaults to RABBITMQ_URL."
    )


class AuthSettings(_Section):
    """Access tokens (RS256 JWT) and password hashing."""

    JWT_PRIVATE_KEY: SecretStr | None = Field(default=None, description="Signing key PEM.")
    JWT_PRIVATE_KEY_PATH: Path | None = None
    JWT_JWKS_PATH: Path | None = Field(
        default=None, description="JWKS of every accepted public key (rotation)."
    )
    JWT_AUTO_GENERATE_KEYS: bool | None = Field(
        default=None,
        description=(
            "Create a signing key under DATA_DIR when none is set. Unset: only in the embedded "
            "mode (SQLite); true: anywhere (development only, logged as a warning)."
        ),
    )
    JWT_KEY_RELOAD_SECONDS: float = Field(default=10.0, ge=0)
    JWT_ISSUER: str = "order-management-system"
    JWT_AUDIENCE: str = "orders-api"
    JWT_ACCESS_TOKEN_EXPIRE_MINUTES: int = Field(default=60, ge=1)
    JWT_LEEWAY_SECONDS: int = Field(default=30, ge=0)
    # argon2id cost of new hashes (verification reads the cost stored in each hash).
    PASSWORD_HASH_TIME_COST: int = Field(default=3, ge=1)
    PASSWORD_HASH_MEMORY_KIB: int = Field(default=65536, ge=8)
    PASSWORD_HASH_PARALLELISM: int = Field(default=4, ge=1)
    PASSWORD_HASH_CONCURRENCY: int = Field(
        default=2,
        ge=1,
        description=(
            "Hashes one process computes at once; the rest wait. Each holds "
            "PASSWORD_HASH_MEMORY_KIB while it runs, so this bounds a login burst's memory."
        ),
    )


class CorsSettings(_Section):
    """Which browser origins may call the API."""

    CORS_ORIGINS: CommaList = Field(default_factory=list)
    CORS_ALLOW_CREDENTIALS: bool = False

    @model_validator(mode="after")
    def _refuse_credentials_for_any_origin(self) -> CorsSettings:
        if self.CORS_ALLOW_CREDENTIALS and ({"*", "null"} & set(self.CORS_ORIGINS)):
            raise ValueError(
                "CORS_ALLOW_CREDENTIALS=true cannot be combined with the origin '*' or 'null': "
                "any site could then read authenticated answers; list the trusted origins"
            )
        return self


class RateLimitSettings(_Section):
    """Per-route limits (slowapi / limits syntax) and whose X-Forwarded-For counts."""

    RATE_LIMIT_ENABLED: bool = True
    RATE_LIMIT_CREATE_ORDER: str = "5/minute"
    RATE_LIMIT_GET_ORDER: str = "10/minute"
    RATE_LIMIT_UPDATE_ORDER: str = "5/minute"
    RATE_LIMIT_LIST_ORDERS: str = "10/minute"
    RATE_LIMIT_TOKEN: str = "10/minute"
    RATE_LIMIT_REGISTER: str = "5/minute"
    RATE_LIMIT_LOGIN_FAILURES: str = Field(
        default="5/15minutes",
        description=(
            "Password attempts on one account from one client (IPv4 address or IPv6 network) "
            "before that client gets 429 for it; a successful login clears them."
        ),
    )
    RATE_LIMIT_IPV6_PREFIX: int = Field(
        default=64,
        ge=0,
        le=128,
        description=(
            "IPv6 clients are counted per network of this many bits: one subscriber holds a "
            "whole /64 (often a /56 or /48) and picks addresses in it at will."
        ),
    )
    TRUSTED_PROXIES: CommaList = Field(
        default_factory=list, description="CIDRs whose X-Forwarded-For is believed."
    )


class OrderSettings(_Section):
    """The orders API."""

    IDEMPOTENCY_KEY_TTL_HOURS: int = Field(default=24, ge=1)
    ORDERS_PAGE_MAX: int = Field(default=100, ge=1)


class OutboxSettings(_Section):
    """The outbox relay, in the API or as `oms-relay`."""

    OUTBOX_BATCH_SIZE: int = Field(default=100, ge=1)
    OUTBOX_POLL_SECONDS: float = Field(default=1.0, gt=0)
    RUN_OUTBOX_RELAY: bool = Field(default=True, description="Run the relay inside the API.")
    OUTBOX_RETENTION_HOURS: float = Field(
        default=24.0, gt=0, description="Sent outbox rows older than this are purged."
    )
    OUTBOX_PUBLISH_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    OUTBOX_MAX_BACKOFF_SECONDS: float = Field(
        default=30.0, gt=0, description="Cap of the relay's exponential back-off while down."
    )


class ProcessingSettings(_Section):
    """Processing one order, by the worker or in process (embedded mode)."""

    ORDER_TASK_MAX_RETRIES: int = Field(default=3, ge=0)
    ORDER_TASK_RETRY_DELAY_SECONDS: float = Field(default=60.0, ge=0)
    ORDER_PROCESSING_DELAY_SECONDS: float = Field(
        default=0.0, ge=0, description="Artificial work per order (demos and fault tests only)."
    )


class ConsumerServiceSettings(_Section):
    """The `new_order` consumer's own."""

    CONSUMER_PREFETCH: int = Field(default=32, ge=1, le=65535)
    CONSUMER_METRICS_PORT: int = Field(default=9101, ge=0, le=65535)
    CONSUMER_DISPATCH_ATTEMPTS: int = Field(
        default=3, ge=1, description="Tries to hand one message to Celery before requeueing it."
    )
    CONSUMER_RECONNECT_SECONDS: float = Field(default=2.0, gt=0)
    CONSUMER_SHUTDOWN_TIMEOUT_SECONDS: float = Field(default=30.0, gt=0)


class WorkerServiceSettings(_Section):
    """The Celery worker's own."""

    WORKER_METRICS_PORT: int = Field(default=9102, ge=0, le=65535)
    WORKER_CONCURRENCY: int = Field(default=2, ge=1)


SECTIONS: tuple[type[BaseSettings], ...] = (
    ProcessSettings,
    HttpServerSettings,
    DatabaseSettings,
    RedisSettings,
    CacheSettings,
    BrokerSettings,
    AuthSettings,
    CorsSettings,
    RateLimitSettings,
    OrderSettings,
    OutboxSettings,
    ProcessingSettings,
    ConsumerServiceSettings,
    WorkerServiceSettings,
)

# --- What library code needs from two sections or more ----------------------------------------
# Bases are always listed in the order of SECTIONS, which keeps every composition's MRO valid.


class StoreSettings(RedisSettings, CacheSettings):
    """The order cache and the access book (`oms.resources`): Redis or process memory."""


class CelerySettings(RedisSettings, BrokerSettings):
    """The Celery app of the consumer and the worker (`oms.broker.celery_app`)."""


class SigningKeySettings(DatabaseSettings, AuthSettings):
    """Loading the signing key (`oms.security.keys`): only the embedded mode makes one itself."""

    @property
    def generates_signing_key(self) -> bool:
        if self.JWT_PRIVATE_KEY is not None or self.JWT_PRIVATE_KEY_PATH is not None:
            return False
        if self.JWT_AUTO_GENERATE_KEYS is None:
            return self.embedded
        return self.JWT_AUTO_GENERATE_KEYS


class OutboxRelaySettings(BrokerSettings, OutboxSettings, ProcessingSettings):
    """The outbox relay: it publishes to RabbitMQ, or processes in process without it."""


# --- One class per process ----------------------------------------------------------------------


class ApiSettings(
    ProcessSettings,
    HttpServerSettings,
    SigningKeySettings,
    StoreSettings,
    CorsSettings,
    RateLimitSettings,
    OrderSettings,
    OutboxRelaySettings,
):
    """`oms-api` (with the outbox relay inside unless RUN_OUTBOX_RELAY=false)."""


class RelaySettings(ProcessSettings, DatabaseSettings, StoreSettings, OutboxRelaySettings):
    """`oms-relay` (and `oms relay`)."""


class ConsumerSettings(ProcessSettings, CelerySettings, ConsumerServiceSettings):
    """`oms-consumer`: RabbitMQ in, Celery out; no database."""


class WorkerSettings(
    ProcessSettings,
    DatabaseSettings,
    StoreSettings,
    CelerySettings,
    ProcessingSettings,
    WorkerServiceSettings,
):
    """`oms-worker`."""


class UserAdminSettings(SigningKeySettings, StoreSettings):
    """`oms create-admin` and `oms user`: accounts in the database, revocation via Redis."""


class DeadLetterSettings(DatabaseSettings, BrokerSettings):
    """`oms dlq`: dead letters in RabbitMQ, or parked events in the outbox."""


# The pydantic mypy plugin gives each composition its own `model_construct` signature and then
# finds two of them "incompatible" here; the fields themselves agree (one definition each).
class Settings(  # type: ignore[misc]
    ApiSettings, RelaySettings, ConsumerSettings, WorkerSettings, UserAdminSettings
):
    """Every section at once. No process reads it: tests build one object that every process's
    code accepts, and the deployment checks list every variable with it."""


@lru_cache
def get_api_settings() -> ApiSettings:
    return ApiSettings()


@lru_cache
def get_relay_settings() -> RelaySettings:
    return RelaySettings()


@lru_cache
def get_consumer_settings() -> ConsumerSettings:
    return ConsumerSettings()


@lru_cache
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
