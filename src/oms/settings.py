"""One Settings object for every process, read from the environment and `.env`.

Variable names follow the specification (POSTGRES_*, REDIS_URL*, RABBITMQ_URL); ours are
prefixed by their concern (JWT_*, CORS_*, RATE_LIMIT_*, ...). Unset backends fall back to the
embedded default so that `make run` works with nothing installed: SQLite instead of PostgreSQL,
in-process memory instead of Redis, an in-process dispatcher instead of RabbitMQ + Celery.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- Database -------------------------------------------------------------------------
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

    # --- Redis (cache, rate limits, Celery results) ----------------------------------------
    REDIS_URL: str | None = None
    REDIS_URL_RATE_LIMIT: str | None = None
    REDIS_URL_CELERY: str | None = None
    REDIS_KEY_PREFIX: str = Field(
        default="", description="Prefix for every key we write (isolates tenants and tests)."
    )
    ORDER_CACHE_TTL_SECONDS: int = Field(default=300, ge=1)

    # --- RabbitMQ ---------------------------------------------------------------------------
    RABBITMQ_URL: str | None = None

    # --- HTTP server ------------------------------------------------------------------------
    HOST: str = "127.0.0.1"
    PORT: int = 8000
    API_WORKERS: int = Field(default=1, ge=1)
    LOG_LEVEL: str = "INFO"
    DATA_DIR: Path = Path("data")
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

    # --- Auth -------------------------------------------------------------------------------
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

    # --- CORS -------------------------------------------------------------------------------
    CORS_ORIGINS: CommaList = Field(default_factory=list)
    CORS_ALLOW_CREDENTIALS: bool = False

    # --- Rate limits (slowapi / limits syntax) -----------------------------------------------
    RATE_LIMIT_ENABLED: bool = True
    RATE_LIMIT_CREATE_ORDER: str = "5/minute"
    RATE_LIMIT_GET_ORDER: str = "10/minute"
    RATE_LIMIT_UPDATE_ORDER: str = "5/minute"
    RATE_LIMIT_LIST_ORDERS: str = "10/minute"
    RATE_LIMIT_TOKEN: str = "10/minute"
    RATE_LIMIT_REGISTER: str = "5/minute"
    TRUSTED_PROXIES: CommaList = Field(
        default_factory=list, description="CIDRs whose X-Forwarded-For is believed."
    )

    # --- Orders -----------------------------------------------------------------------------
    IDEMPOTENCY_KEY_TTL_HOURS: int = Field(default=24, ge=1)
    ORDERS_PAGE_MAX: int = Field(default=100, ge=1)

    # --- Pipeline ---------------------------------------------------------------------------
    ORDER_TASK_MAX_RETRIES: int = Field(default=3, ge=0)
    ORDER_TASK_RETRY_DELAY_SECONDS: float = Field(default=60.0, ge=0)
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
    CELERY_BROKER_URL: str | None = Field(
        default=None, description="Celery's broker; defaults to RABBITMQ_URL."
    )
    CONSUMER_PREFETCH: int = Field(default=32, ge=1, le=65535)
    CONSUMER_METRICS_PORT: int = Field(default=9101, ge=0, le=65535)
    CONSUMER_DISPATCH_ATTEMPTS: int = Field(
        default=3, ge=1, description="Tries to hand one message to Celery before requeueing it."
    )
    CONSUMER_RECONNECT_SECONDS: float = Field(default=2.0, gt=0)
    CONSUMER_SHUTDOWN_TIMEOUT_SECONDS: float = Field(default=30.0, gt=0)
    WORKER_METRICS_PORT: int = Field(default=9102, ge=0, le=65535)
    WORKER_CONCURRENCY: int = Field(default=2, ge=1)
    ORDER_PROCESSING_DELAY_SECONDS: float = Field(
        default=0.0, ge=0, description="Artificial work per order (demos and fault tests only)."
    )

    # --- Users ------------------------------------------------------------------------------
    USER_STATE_CACHE_SECONDS: int = Field(
        default=300,
        ge=1,
        description=(
            "How long Redis remembers a user's token generation; `oms user` commands update "
            "it at once, this only bounds changes made behind the API's back."
        ),
    )

    @field_validator("CORS_ORIGINS", "TRUSTED_PROXIES", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_combinations(self) -> Settings:
        if self.CORS_ALLOW_CREDENTIALS and ({"*", "null"} & set(self.CORS_ORIGINS)):
            raise ValueError(
                "CORS_ALLOW_CREDENTIALS=true cannot be combined with the origin '*' or 'null': "
                "any site could then read authenticated answers; list the trusted origins"
            )
        return self

    @property
    def embedded(self) -> bool:
        """The zero-configuration mode: SQLite, no Redis, no RabbitMQ."""
        return self.database_backend == "sqlite"

    @property
    def generates_signing_key(self) -> bool:
        if self.JWT_PRIVATE_KEY is not None or self.JWT_PRIVATE_KEY_PATH is not None:
            return False
        if self.JWT_AUTO_GENERATE_KEYS is None:
            return self.embedded
        return self.JWT_AUTO_GENERATE_KEYS

    @property
    def database_url(self) -> URL:
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


@lru_cache
def get_settings() -> Settings:
    return Settings()
