"""Domain events: the one definition shared by the API (producer) and every consumer.

An event is immutable once written to the outbox. `version` is bumped when a type's `data`
changes incompatibly; consumers accept the versions they know. The wire form is compact UTF-8
JSON (`to_bytes`); routing key = `type`. Delivery is at-least-once: consumers dedupe by `id`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EVENT_VERSION = 1


class EventType(StrEnum):
    """Every event the service emits; the first six are the integration guide's."""

    TWOFA_ENABLED = "2fa.enabled"
    TWOFA_DISABLED = "2fa.disabled"
    TWOFA_VERIFIED = "2fa.verified"
    TWOFA_FAILED = "2fa.failed"
    USER_LOGIN = "user.login"
    USER_LOGOUT = "user.logout"
    WEBHOOK_TEST = "webhook.test"
    USER_REGISTERED = "user.registered"
    API_KEY_CREATED = "apikey.created"
    API_KEY_ROTATED = "apikey.rotated"
    API_KEY_REVOKED = "apikey.revoked"
    ACCESS_DENIED = "security.access_denied"
    # A user's 2FA is locked after TWOFA_MAX_FAILURES wrong codes in a row.
    LOCKOUT = "security.lockout"
    # A code refused to be sent (daily cap, country not allowed): SMS pumping guard.
    SEND_REFUSED = "security.send_refused"
    # Commands for the notifier (routing keys notification.#): not domain events, not audited.
    NOTIFICATION_SMS = "notification.sms"
    NOTIFICATION_EMAIL = "notification.email"
    WEBHOOK_CREATED = "webhook.created"
    WEBHOOK_UPDATED = "webhook.updated"
    WEBHOOK_DELETED = "webhook.deleted"
    WEBHOOK_SECRET_ROTATED = "webhook.secret_rotated"
    # The dispatcher turned a webhook off after WEBHOOK_DISABLE_AFTER failed events in a row.
    WEBHOOK_DEACTIVATED = "webhook.deactivated"
    # Someone asked for a delivery to be sent again; the dispatcher acts on it.
    WEBHOOK_REDELIVERY_REQUESTED = "webhook.redelivery_requested"


# Types an integrator can subscribe a webhook to (contract: "Event types").
WEBHOOK_EVENT_TYPES = frozenset(
    {
        EventType.TWOFA_ENABLED,
        EventType.TWOFA_DISABLED,
        EventType.TWOFA_VERIFIED,
        EventType.TWOFA_FAILED,
        EventType.USER_LOGIN,
        EventType.USER_LOGOUT,
        EventType.WEBHOOK_TEST,
    }
)


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UserData(_Data):
    userId: str


class LoginData(_Data):
    userId: str
    method: Literal["password", "2fa", "device"] = "password"
    twoFactorMethod: str | None = None


class RegisteredData(_Data):
    userId: str
    username: str


class ApiKeyData(_Data):
    apiKeyId: str
    name: str
    prefix: str
    scopes: list[str] = Field(default_factory=list)


TwoFactorMethod = Literal["totp", "backup_code", "sms", "email"]


class TwoFactorData(_Data):
    userId: str
    method: TwoFactorMethod


class TwoFactorFailedData(_Data):
    userId: str
    method: TwoFactorMethod | None
    reason: Literal["invalid_code", "replayed", "clock_skew", "expired", "locked"]
    attemptsRemaining: int | None = None


class AccessDeniedData(_Data):
    resource: str
    reason: str
    # The owner whose key or account tried it (the event itself is in the resource owner's log).
    callerOwnerId: str | None = None


class NotificationData(_Data):
    """Send a one-time code. The code is sealed (shared.notifications) to this command's id."""

    to: str
    purpose: Literal["setup", "login"]
    sealedCode: str
    expiresInMinutes: int


class SendRefusedData(_Data):
    userId: str
    channel: Literal["sms", "email"]
    reason: str
    to: str  # masked


class LockoutData(_Data):
    userId: str
    scope: Literal["2fa"]
    lockedSeconds: int


class WebhookData(_Data):
    webhookId: str
    url: str
    events: list[str]
    active: bool


class WebhookTestData(_Data):
    userId: str
    webhookId: str
    message: str = "This is a test event from the 2FA service"


class WebhookDeactivatedData(_Data):
    webhookId: str
    url: str
    reason: str
    consecutiveFailures: int


class RedeliveryData(_Data):
    webhookId: str
    deliveryId: str


DATA_MODELS: dict[EventType, type[_Data]] = {
    EventType.TWOFA_ENABLED: TwoFactorData,
    EventType.TWOFA_DISABLED: TwoFactorData,
    EventType.TWOFA_VERIFIED: TwoFactorData,
    EventType.TWOFA_FAILED: TwoFactorFailedData,
    EventType.USER_LOGIN: LoginData,
    EventType.USER_LOGOUT: UserData,
    EventType.USER_REGISTERED: RegisteredData,
    EventType.API_KEY_CREATED: ApiKeyData,
    EventType.API_KEY_ROTATED: ApiKeyData,
    EventType.API_KEY_REVOKED: ApiKeyData,
    EventType.ACCESS_DENIED: AccessDeniedData,
    EventType.LOCKOUT: LockoutData,
    EventType.SEND_REFUSED: SendRefusedData,
    EventType.NOTIFICATION_SMS: NotificationData,
    EventType.NOTIFICATION_EMAIL: NotificationData,
    EventType.WEBHOOK_TEST: WebhookTestData,
    EventType.WEBHOOK_CREATED: WebhookData,
    EventType.WEBHOOK_UPDATED: WebhookData,
    EventType.WEBHOOK_DELETED: WebhookData,
    EventType.WEBHOOK_SECRET_ROTATED: WebhookData,
    EventType.WEBHOOK_DEACTIVATED: WebhookDeactivatedData,
    EventType.WEBHOOK_REDELIVERY_REQUESTED: RedeliveryData,
}


class Actor(BaseModel):
    """Who caused the event: an account acting itself, or an API key acting for its owner."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["user", "apiKey", "system"]
    id: str


class Event(BaseModel):
    """The event envelope of the contract; `data` is validated against the type's model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: EventType
    version: int = EVENT_VERSION
    occurredAt: datetime = Field(default_factory=lambda: datetime.now(UTC))
    ownerId: uuid.UUID
    userId: str | None = None
    actor: Actor
    ip: str | None = None
    userAgent: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def build(cls, type: EventType, data: _Data | dict[str, Any], **envelope: Any) -> Event:
        """Create an event whose `data` has been checked against its type's model."""
        model = DATA_MODELS.get(type)
        if isinstance(data, _Data):
            payload = data.model_dump(exclude_none=True)
        elif model is not None:
            payload = model.model_validate(data).model_dump(exclude_none=True)
        else:
            payload = dict(data)
        return cls(type=type, data=payload, **envelope)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> Event:
        return cls.model_validate_json(body)
