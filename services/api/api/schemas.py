"""Request (and documented response) models. Unknown fields are rejected everywhere."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
)

from shared.events import WEBHOOK_EVENT_TYPES, EventType

from api.principal import ALL_SCOPES

ALL_EVENT_TYPES = frozenset(t.value for t in EventType)


def _bcrypt_length(value: str) -> str:
    # bcrypt only reads the first 72 bytes: a longer password would be silently truncated.
    if not 8 <= len(value.encode()) <= 72:
        raise ValueError("must be 8 to 72 bytes long (bcrypt's limit)")
    return value


def _known_scopes(value: list[str]) -> list[str]:
    unknown = sorted(set(value) - ALL_SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(sorted(ALL_SCOPES))}")
    return value


# The contract's times are ISO-8601 strings; pydantic alone would also read a number, or a
# numeric string such as "0.0", as Unix time.
ISO_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]")


def _iso_text(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and ISO_DATE_TIME.match(value)):
        return value
    raise ValueError("must be an ISO-8601 date-time with a time zone, e.g. 2026-01-01T00:00:00Z")


IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_text)]
Password = Annotated[str, Field(max_length=1024), AfterValidator(_bcrypt_length)]
Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{3,32}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Scopes = Annotated[list[str], Field(min_length=1, max_length=len(ALL_SCOPES)), AfterValidator(_known_scopes)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=4096)


class RegisterBody(Body):
    email: Annotated[EmailStr, Field(max_length=254)]
    username: Username
    password: Password


class LoginBody(Body):
    emailOrUsername: Annotated[str, StringConstraints(min_length=1, max_length=254)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    deviceToken: Annotated[str, Field(max_length=2048)] | None = None


class RefreshBody(Body):
    refreshToken: Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class LogoutBody(Body):
    refreshToken: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None


class CreateApiKeyBody(Body):
    name: Name
    scopes: Scopes
    rateLimit: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    expiresAt: IsoDateTime | None = None


class RotateApiKeyBody(Body):
    gracePeriodSeconds: Annotated[int, Field(ge=0, le=7 * 24 * 3600)] = 3600


UserId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class UserBody(Body):
    userId: UserId | None = None


class CodeBody(UserBody):
    code: Code


class SmsSetupBody(UserBody):
    phoneNumber: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


class EmailSetupBody(UserBody):
    email: Annotated[EmailStr, Field(max_length=254)]


class ChallengeBody(Body):
    tempToken: Token | None = None
    userId: UserId | None = None
    method: Literal["sms", "email"]


class VerifyBody(Body):
    tempToken: Token | None = None
    userId: UserId | None = None
    code: Code
    rememberDevice: bool = False


class DisableMethodBody(Body):
    userId: UserId | None = None
    password: Annotated[str, Field(max_length=1024)] | None = None
    code: Code | None = None


def _known_events(value: list[str]) -> list[str]:
    unknown = sorted(set(value) - WEBHOOK_EVENT_TYPES)
    if unknown:
        raise ValueError(
            f"unknown event(s): {', '.join(unknown)}; known: {', '.join(sorted(WEBHOOK_EVENT_TYPES))}"
        )
    return list(dict.fromkeys(value))  # duplicates dropped, order kept


# The URL's own rules (scheme, length, address) are checked by shared.url_guard, so that each
# refusal has its own code; this only bounds what is read.
WebhookUrl = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=65536)]
WebhookEvents = Annotated[
    list[Annotated[str, StringConstraints(max_length=64)]],
    Field(min_length=1, max_length=32),
    AfterValidator(_known_events),
]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]


class CreateWebhookBody(Body):
    model_config = ConfigDict(extra="forbid", str_max_length=65536)
    url: WebhookUrl
    events: WebhookEvents
    description: Description | None = None


class UpdateWebhookBody(Body):
    model_config = ConfigDict(extra="forbid", str_max_length=65536)
    url: WebhookUrl | None = None
    events: WebhookEvents | None = None
    description: Description | None = None
    active: bool | None = None


class RotateWebhookSecretBody(Body):
    gracePeriodSeconds: Annotated[int, Field(ge=0, le=7 * 24 * 3600)] = 24 * 3600


class DeliveriesQuery(Body):
    status: Literal["succeeded", "failed", "pending"] | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, Field(max_length=512)] | None = None


def _known_event_type(value: str) -> str:
    if value not in ALL_EVENT_TYPES:
        raise ValueError(f"unknown event type; known: {', '.join(sorted(ALL_EVENT_TYPES))}")
    return value


class AuditFilterQuery(Body):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    userId: UserId | None = None
    event: Annotated[str, StringConstraints(max_length=64), AfterValidator(_known_event_type)] | None = None
    from_: IsoDateTime | None = Field(default=None, alias="from")
    to: IsoDateTime | None = None


class AuditQuery(AuditFilterQuery):
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, Field(max_length=512)] | None = None


class AuditExportQuery(AuditFilterQuery):
    format: Literal["ndjson", "csv"] = "ndjson"


class UserQuery(Body):
    userId: UserId | None = None


class ListQuery(Body):
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, Field(max_length=512)] | None = None


# Documented responses (the OpenAPI file describes them; handlers build plain dicts).


class Resp(BaseModel):
    model_config = ConfigDict(extra="allow")


class User(Resp):
    id: str
    email: str
    username: str
    createdAt: datetime


class TwoFactorSummary(Resp):
    enabled: bool
    methods: list[str]


class Me(User):
    twoFactor: TwoFactorSummary


class RegisterResult(Resp):
    user: User


class Tokens(Resp):
    accessToken: str
    refreshToken: str
    expiresIn: int
    tokenType: Literal["Bearer"] = "Bearer"


class LoginResult(Resp):
    accessToken: str | None = None
    refreshToken: str | None = None
    expiresIn: int | None = None
    user: User | None = None
    requiresTwoFactor: bool | None = None
    tempToken: str | None = None
    methods: list[str] | None = None


class ApiKey(Resp):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    rateLimit: int
    expiresAt: datetime | None
    revokedAt: datetime | None
    lastUsedAt: datetime | None
    createdAt: datetime
    rotatedAt: datetime | None
    active: bool


class NewApiKey(ApiKey):
    apiKey: str


class UsageHour(Resp):
    hour: datetime
    requests: int
    rejected: int


class Usage(Resp):
    total: int
    rejected: int
    hours: list[UsageHour]


class TotpSetup(Resp):
    secret: str
    otpauthUrl: str
    qrCode: str


class CodeSent(Resp):
    method: Literal["sms", "email"]
    to: str
    expiresAt: datetime
    pending: bool | None = None
    sent: bool | None = None


class MethodEnabled(Resp):
    enabled: bool
    method: str
    backupCodes: list[str] | None = None


class BackupCodes(Resp):
    backupCodes: list[str]


class Verified(Resp):
    verified: bool | None = None
    method: str | None = None
    accessToken: str | None = None
    refreshToken: str | None = None
    expiresIn: int | None = None
    deviceToken: str | None = None


class Method(Resp):
    type: Literal["totp", "sms", "email"]
    createdAt: datetime
    enabledAt: datetime | None
    lastUsedAt: datetime | None
    phoneNumber: str | None = Field(default=None, description="sms: the number, masked")
    email: str | None = Field(default=None, description="email: the address, masked")


class TwoFactorStatus(Resp):
    enabled: bool
    methods: list[str]
    backupCodesRemaining: int


class Webhook(Resp):
    id: str
    url: str
    events: list[str]
    description: str | None
    active: bool
    consecutiveFailures: int
    disabledAt: datetime | None
    disabledReason: str | None
    createdAt: datetime
    updatedAt: datetime


class NewWebhook(Webhook):
    secret: str


class RotatedWebhookSecret(Resp):
    id: str
    secret: str
    previousSecretExpiresAt: datetime


class Queued(Resp):
    queued: bool
    eventId: str | None = None
    deliveryId: str | None = None


class Delivery(Resp):
    id: str
    deliveryId: str
    eventId: str
    event: str
    attempt: int
    status: Literal["succeeded", "failed", "pending"]
    statusCode: int | None
    latencyMs: int
    error: str | None
    nextRetryAt: datetime | None
    createdAt: datetime


class AuditActor(Resp):
    kind: Literal["user", "apiKey", "system"]
    id: str


class AuditEntry(Resp):
    id: str
    eventId: str
    type: str
    userId: str | None
    actor: AuditActor
    ip: str | None
    userAgent: str | None
    occurredAt: datetime
    recordedAt: datetime
    data: dict[str, Any]


class BadAuditEntry(Resp):
    chainSeq: int
    id: str
    reason: str


class AuditVerdict(Resp):
    valid: bool
    checked: int
    firstBadEntry: BadAuditEntry | None


class Check(Resp):
    status: Literal["up", "down", "degraded"]


class HealthReport(Resp):
    status: str
    timestamp: str
    checks: dict[str, Any] | None = None
