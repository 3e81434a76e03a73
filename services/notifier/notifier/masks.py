"""Masked phone numbers and addresses: what logs and the `notifications` table may hold.

A full destination never leaves the send itself. Provider error texts quote the destination
("The 'To' number +15551234567 is not a valid phone number."), so they are scrubbed too; the
scrub recognises phone-like digit runs and addresses, not every way a provider might spell them.
"""

from __future__ import annotations

import re

# A number as providers quote it (+15551234567, +1 555-123-4567), or a bare run of 10+ digits;
# not dotted runs, which are more often addresses and versions (127.0.0.1, 4.3.0) than phones.
PHONE_LIKE = re.compile(r"\+\d[\d\s()-]{5,}\d|\b\d{10,15}\b")
EMAIL_LIKE = re.compile(r"[^\s<>\"'@]+@[^\s<>\"'@]+\.[^\s<>\"'@]+")


def mask_phone(number: str) -> str:
    """+15551234567 -> +*******4567: enough to tell two numbers apart, not to dial one."""
    digits = re.sub(r"\D", "", number)
    plus = "+" if number.strip().startswith("+") else ""
    return plus + "*" * max(len(digits) - 4, 0) + digits[-4:]


def mask_email(address: str) -> str:
    """jane@example.com -> j***@example.com."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask(channel: str, to: str) -> str:
    """The masked form of a destination on `channel` ('sms' or 'email')."""
    return mask_phone(to) if channel == "sms" else mask_email(to)


def scrub(text: str) -> str:
    """`text` with every phone-number-like run and address masked."""
    text = EMAIL_LIKE.sub(lambda m: mask_email(m.group()), text)
    return PHONE_LIKE.sub(lambda m: _mask_digits(m.group()), text)


def _mask_digits(run: str) -> str:
    # Short runs (error codes like 21211, years) carry no destination.
    return mask_phone(run) if len(re.sub(r"\D", "", run)) >= 7 else run
