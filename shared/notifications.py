"""Notification commands: how the API hands a one-time code to the notifier.

The code travels inside a `notification.sms` / `notification.email` command (through the outbox
and the broker), sealed with `SecretBox` to that command's id, so neither the outbox table nor
a queue holds it readable, and a sealed code copied into another command does not open.
"""

from __future__ import annotations

import base64
import uuid

from shared.crypto import SecretBox


def _aad(command_id: uuid.UUID) -> bytes:
    return b"notification-code:" + command_id.bytes


def seal_code(box: SecretBox, command_id: uuid.UUID, code: str) -> str:
    return base64.b64encode(box.encrypt(code.encode(), _aad(command_id))).decode()


def open_code(box: SecretBox, command_id: uuid.UUID, sealed: str) -> str:
    return box.decrypt(base64.b64decode(sealed), _aad(command_id)).decode()
