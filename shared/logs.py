"""structlog, configured once per process: JSON or console lines, context vars, and redaction.

Redaction is a processor, so it holds for every log call: values of secret-looking keys are
replaced, and API keys or JWTs embedded in any string value are masked. It cannot know about a
secret logged under an innocent key inside free text that matches neither pattern, so callers
still never log request bodies.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from shared.config import Settings

REDACTED = "[redacted]"
SECRET_KEYS = re.compile(
    r"pass(word)?|secret|token|authorization|api[_-]?key|apikey|code|otp|cookie|signature",
    re.IGNORECASE,
)
SECRET_VALUES = re.compile(
    r"tfa_[A-Za-z0-9_\-]{8,}|eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"
)
# Keys that look secret by name but only ever hold harmless values.
SAFE_KEYS = frozenset({"status_code", "error_code", "code_name", "token_type"})


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return SECRET_VALUES.sub(REDACTED, value)
    if isinstance(value, dict):
        return {k: _redact_pair(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def _redact_pair(key: Any, value: Any) -> Any:
    # Nested dicts may be keyed by ids or numbers; a log call must never raise over that.
    name = str(key)
    if name not in SAFE_KEYS and SECRET_KEYS.search(name) and value not in (None, ""):
        return REDACTED
    return _scrub(value)


def redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: never let a secret, code or token reach a log line."""
    return {
        k: (_scrub(v) if k == "event" else _redact_pair(k, v)) for k, v in event_dict.items()
    }


def processors(settings: Settings) -> list[Any]:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    if settings.LOG_FORMAT == "json":
        return [*shared, structlog.processors.JSONRenderer()]
    return [*shared, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]


def configure_logging(settings: Settings, service: str) -> None:
    """Configure structlog (and the stdlib root logger) for this process."""
    level = getattr(logging, settings.LOG_LEVEL)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(name)s: %(message)s")
    # aiohttp's own access log duplicates our canonical request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    structlog.configure(
        processors=processors(settings),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
