"""What every sender raises when a provider does not take a message.

Each sender classifies its provider's answers once, into `ProviderError(permanent=...)`:
permanent when sending the same message again cannot succeed (an invalid number, a rejected
recipient, bad credentials), otherwise passing (throttling, 5xx, timeouts, connection errors).
`detail` is already scrubbed of destinations, so it may be logged and stored.
"""

from __future__ import annotations


class ProviderError(Exception):
    """A provider refused or failed a send; `permanent` when a retry cannot help."""

    def __init__(self, detail: str, *, permanent: bool, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent
        self.status = status
