"""The one error family. Raise these anywhere; one middleware turns them into the error envelope.

Each subclass fixes its HTTP status and machine-readable code; a raise site may give a more
specific code (`Unauthorized(code="TOKEN_EXPIRED")`). Consumers use `Transient` / `Permanent`
to choose between a delayed retry and the dead-letter queue.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """An error with an HTTP status, an UPPER_SNAKE code and a human sentence."""

    status: int = 500
    code: str = "INTERNAL_ERROR"
    message: str = "Something went wrong on our side"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.details = details
        self.headers = dict(headers or {})
        super().__init__(self.message)


class ValidationFailed(AppError):
    """The request is malformed or a field is invalid; `details.fields` names each bad field."""

    status, code, message = 400, "VALIDATION_ERROR", "The request is invalid"


class Unauthorized(AppError):
    """Missing or bad credentials."""

    status, code, message = 401, "UNAUTHORIZED", "Authentication is required"


class Forbidden(AppError):
    """Authenticated, but not allowed to do this."""

    status, code, message = 403, "FORBIDDEN", "You are not allowed to do this"


class InsufficientScope(Forbidden):
    """The API key lacks the scope the route needs."""

    code = "INSUFFICIENT_SCOPE"

    def __init__(self, scope: str) -> None:
        super().__init__(
            f"This API key lacks the '{scope}' scope", details={"requiredScope": scope}
        )


class NotFound(AppError):
    """No such resource (or not yours: the two are indistinguishable on purpose)."""

    status, code, message = 404, "NOT_FOUND", "Not found"


class MethodNotAllowed(AppError):
    status, code, message = 405, "METHOD_NOT_ALLOWED", "Method not allowed"


class Conflict(AppError):
    """The request conflicts with existing state (duplicate, already enabled)."""

    status, code, message = 409, "CONFLICT", "Conflict with the current state"


class RequestTimeout(AppError):
    """The request body arrived too slowly (a slow-client attack, or a stalled upload)."""

    status, code, message = 408, "REQUEST_TIMEOUT", "The request body did not arrive in time"


class PayloadTooLarge(AppError):
    status, code, message = 413, "PAYLOAD_TOO_LARGE", "The request body is too large"


class UnsupportedMediaType(AppError):
    status, code, message = 415, "UNSUPPORTED_MEDIA_TYPE", "Send the body as application/json"


class RateLimited(AppError):
    """Too many requests; always carries `Retry-After`."""

    status, code, message = 429, "RATE_LIMITED", "Too many requests"

    def __init__(self, retry_after: int, message: str | None = None, **kwargs: Any) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(message, **kwargs)
        self.headers["Retry-After"] = str(self.retry_after)
        self.details = {**(self.details or {}), "retryAfter": self.retry_after}


class ServiceUnavailable(AppError):
    status, code, message = 503, "SERVICE_UNAVAILABLE", "A dependency is unavailable"


class Transient(Exception):
    """A consumer failure worth retrying later (provider 5xx, timeout, connection refused)."""


class Permanent(Exception):
    """A consumer failure that retrying cannot fix; the message goes to the dead-letter queue."""
