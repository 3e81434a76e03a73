"""Every setting of every service, read once from the environment (and `.env`) and validated.

The process environment wins over `.env`. A missing or short secret stops start-up with one line
naming the variable (`load_settings`). No other module reads `os.environ`: settings are passed down.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_LENGTH = 32

Secret = Annotated[str, Field(min_length=MIN_SECRET_LENGTH)]


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Configuration of the API and the consumers; names are the contract's variable names."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    # Infrastructure
    DATABASE_URL: str = "postgresql://postgres@127.0.0.1:5432/tfa"
    REDIS_HOST: str = "127.0.0.1"
    REDIS_PORT: int = 6379
    REDIS_DB: int = 0
    REDIS_PASSWORD: str | None = None
    REDIS_KEY_PREFIX: str = "tfa:"
    RABBITMQ_URL: str = "amqp://guest:guest@127.0.0.1:5672/"
    BROKER_PREFIX: str = ""
    DB_POOL_MIN: int = Field(default=2, ge=1)
    DB_POOL_MAX: int = Field(default=20, ge=1)

    # Secrets (no defaults: a missing one stops start-up)
    JWT_ACCESS_SECRET: Secret
    JWT_REFRESH_SECRET: Secret
    DEVICE_TOKEN_SECRET: Secret
    ENCRYPTION_KEY: Secret

    # HTTP
    PORT: int = Field(default=3001, ge=0, le=65535)
    # Worker processes sharing the API's listening socket (one per core is a good start).
    API_WORKERS: int = Field(default=1, ge=1, le=64)
    HOST: str = "0.0.0.0"
    CORS_ORIGINS: Annotated[list[str], NoDecode] = Field(default_factory=list)
    MAX_BODY_BYTES: int = Field(default=64 * 1024, ge=1024)
    # Slow clients (slowloris): a connection whose request headers are not all in this long after
    # it opened (or after its previous response) is closed, as is an idle keep-alive connection.
    # Keep it above the idle timeout of a load balancer in front (AWS ALB: 60 s).
    HTTP_KEEPALIVE_SECONDS: float = Field(default=75.0, gt=0)
    # A request body not fully received this long after its headers: 408, then the connection ends.
    HTTP_BODY_TIMEOUT_SECONDS: float = Field(default=30.0, gt=0)
    # A request not answered this long after it arrived (a stalled Redis or database, bcrypt
    # queued behind a login storm): 503 with Retry-After. A streamed export is bounded only
    # until its first byte.
    REQUEST_TIMEOUT_SECONDS: float = Field(default=30.0, gt=0, le=600)
    TRUST_PROXY_HEADERS: bool = False

    # Accounts
    BCRYPT_ROUNDS: int = Field(default=12, ge=4, le=31)
    ACCESS_TOKEN_TTL_SECONDS: int = Field(default=15 * 60, ge=1)
    REFRESH_TOKEN_TTL_SECONDS: int = Field(default=30 * 24 * 3600, ge=1)
    LOGIN_MAX_FAILURES_PER_ACCOUNT: int = Field(default=10, ge=1)
    LOGIN_MAX_FAILURES_PER_IP: int = Field(default=100, ge=1)
    LOGIN_FAILURE_WINDOW_SECONDS: int = Field(default=15 * 60, ge=1)

    # 2FA
    TOTP_ISSUER: str = "2FA Service"
    TWOFA_MAX_FAILURES: int = Field(default=5, ge=1)
    TWOFA_LOCKOUT_SECONDS: int = Field(default=900, ge=1)

    # API keys
    API_KEY_DEFAULT_RATE_LIMIT: int = Field(default=1000, ge=1)
    API_KEY_MAX_RATE_LIMIT: int = Field(default=1_000_000, ge=1)
    API_KEY_LAST_USED_FLUSH_SECONDS: float = Field(default=30.0, gt=0)
    # Seconds an API process keeps a key it has authenticated before reading it from the
    # database again (0: every request reads it). A revoke or rotate reaches every process at
    # once through Redis; this bounds how long a change could go unseen if Redis lost that news.
    API_KEY_CACHE_SECONDS: float = Field(default=10.0, ge=0, le=300)

    # Providers (optional)
    TWILIO_ACCOUNT_SID: str = ""
    TWILIO_AUTH_TOKEN: str = ""
    TWILIO_PHONE_NUMBER: str = ""
    TWILIO_API_BASE_URL: str = "https://api.twilio.com"
    EMAIL_HOST: str = ""
    EMAIL_PORT: int = 587
    EMAIL_USER: str = ""
    EMAIL_PASSWORD: str = ""
    EMAIL_FROM: str = "noreply@localhost"
    EMAIL_STARTTLS: bool = True
    # Per message: a provider slower than this counts as a passing failure (retried later).
    NOTIFIER_SEND_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=60)

    # SMS and email codes (the contract: 10 minutes, 5 attempts, 30 s between sends)
    CONTACT_CODE_TTL_SECONDS: int = Field(default=600, ge=30)
    CONTACT_CODE_MAX_ATTEMPTS: int = Field(default=5, ge=1)
    CONTACT_CODE_RESEND_SECONDS: int = Field(default=30, ge=0)
    # SMS pumping guard: daily sends per end user, per phone number (across owners), per owner;
    # and the calling codes numbers may have ("1,44,49"; empty allows every country).
    SMS_DAILY_LIMIT_PER_USER: int = Field(default=10, ge=1)
    SMS_DAILY_LIMIT_PER_PHONE: int = Field(default=10, ge=1)
    SMS_DAILY_LIMIT_PER_OWNER: int = Field(default=10_000, ge=1)
    SMS_ALLOWED_COUNTRIES: Annotated[list[int], NoDecode] = Field(default_factory=list)
    EMAIL_DAILY_LIMIT_PER_USER: int = Field(default=20, ge=1)
    EMAIL_DAILY_LIMIT_PER_ADDRESS: int = Field(default=20, ge=1)

    # Webhooks
    WEBHOOK_ALLOW_PRIVATE_URLS: bool = False
    WEBHOOK_RETRY_DELAYS: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [10, 60, 300, 1800, 7200, 21600, 43200]
    )
    WEBHOOK_MAX_ATTEMPTS: int = Field(default=8, ge=1)
    WEBHOOK_DISABLE_AFTER: int = Field(default=20, ge=1)
    WEBHOOK_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=60)
    # At most this many requests in flight to one endpoint (scheme, host, port) per dispatcher;
    # deliveries beyond it wait in a short delay queue instead of holding up other endpoints.
    WEBHOOK_ENDPOINT_CONCURRENCY: int = Field(default=16, ge=1)
    WEBHOOK_DEFER_SECONDS: int = Field(default=1, ge=1)
    # Messages a dispatcher replica works on at once (its prefetch): many endpoints in flight.
    WEBHOOK_MAX_IN_FLIGHT: int = Field(default=256, ge=1)
    # Seconds the dispatcher gathers concurrent deliveries into one database statement.
    WEBHOOK_BATCH_WAIT_SECONDS: float = Field(default=0.002, ge=0, le=1)

    # Audit
    # Days of audit entries kept; older daily partitions are dropped whole. 0 keeps everything.
    AUDIT_RETENTION_DAYS: int = Field(default=365, ge=0)
    AUDIT_BATCH_SIZE: int = Field(default=500, ge=1, le=10_000)
    # Seconds a batch waits for more events after its first: fewer, larger transactions.
    AUDIT_BATCH_WAIT_SECONDS: float = Field(default=0.1, gt=0, le=5)
    # Messages one audit replica holds at once: enough to fill a few batches.
    AUDIT_PREFETCH: int = Field(default=2000, ge=1)
    AUDIT_MAINTENANCE_SECONDS: float = Field(default=3600.0, gt=0)

    # Consumers: each serves /health on its own port
    NOTIFIER_HEALTH_PORT: int = Field(default=3002, ge=0, le=65535)
    WEBHOOK_DISPATCHER_HEALTH_PORT: int = Field(default=3003, ge=0, le=65535)
    AUDIT_HEALTH_PORT: int = Field(default=3004, ge=0, le=65535)
    CONSUMER_PREFETCH: int = Field(default=64, ge=1)
    # Seconds before a message whose handling failed for a passing reason (database down) is
    # tried again, then again...; after the last, it goes to the dead-letter queue.
    CONSUMER_RETRY_DELAYS: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [1, 5, 30, 120])

    # Operations
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    LOG_FORMAT: Literal["json", "console"] = "console"
    HEALTH_MEMORY_LIMIT_MB: int = Field(default=1024, ge=16)
    OUTBOX_POLL_SECONDS: float = Field(default=1.0, gt=0)
    # Seconds the relay waits after a commit wakes it, so that one transaction publishes the
    # events of many requests (0: relay each wake-up at once).
    OUTBOX_GATHER_SECONDS: float = Field(default=0.005, ge=0, le=1)

    @field_validator("CORS_ORIGINS", mode="before")
    @classmethod
    def _cors(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("WEBHOOK_RETRY_DELAYS", "CONSUMER_RETRY_DELAYS", "SMS_ALLOWED_COUNTRIES", mode="before")
    @classmethod
    def _delays(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("WEBHOOK_RETRY_DELAYS", "CONSUMER_RETRY_DELAYS")
    @classmethod
    def _positive_delays(cls, value: list[int]) -> list[int]:
        if not value or any(d <= 0 for d in value):
            raise ValueError("must be a comma-separated list of positive seconds")
        return value

    @property
    def twilio_configured(self) -> bool:
        return bool(self.TWILIO_ACCOUNT_SID and self.TWILIO_AUTH_TOKEN and self.TWILIO_PHONE_NUMBER)

    @property
    def email_configured(self) -> bool:
        return bool(self.EMAIL_HOST)


class ConfigError(SystemExit):
    """Start-up stopped by bad configuration; the message is one line per bad variable."""


def describe(error: ValidationError) -> str:
    """One line per bad variable, naming it, without echoing its value (it may be a secret)."""
    lines = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]) or "settings"
        if item["type"] == "missing":
            lines.append(f"configuration error: {name} is not set")
        elif item["type"] == "string_too_short":
            lines.append(
                f"configuration error: {name} is too short "
                f"(at least {item['ctx']['min_length']} characters)"
            )
        else:
            lines.append(f"configuration error: {name}: {item['msg']}")
    return "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read the settings once, or stop the process with one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None
