"""The texts of code messages: one SMS line, and an email with a plain-text and an HTML part.

The product name is `TOTP_ISSUER`, so the SMS, the email and the authenticator app agree.
Nothing here logs or stores a text: every one of them holds a live code.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Literal

Purpose = Literal["setup", "login"]


@dataclass(frozen=True)
class EmailContent:
    subject: str
    text: str
    html: str


def sms_text(product: str, code: str, minutes: int) -> str:
    """The SMS body; the same for setup and login, short enough for one segment."""
    return f"Your {product} code is {code}. It expires in {_minutes(minutes)}."


def email_content(product: str, code: str, minutes: int, purpose: Purpose) -> EmailContent:
    """Subject, plain text and HTML of a code email; the wording follows the purpose."""
    if purpose == "setup":
        subject = f"Confirm your email address for {product}"
        lead = f"Use this code to confirm your email address for {product}:"
        tail = "If you did not ask to add this address, ignore this email."
    else:
        subject = f"Your {product} sign-in code"
        lead = f"Use this code to finish signing in to {product}:"
        tail = "If you did not try to sign in, someone may know your password: change it."
    expiry = f"The code expires in {_minutes(minutes)}."
    text = f"{lead}\n\n    {code}\n\n{expiry}\n{tail}\n"
    e = html.escape
    big = "font-size: 28px; font-weight: bold; letter-spacing: 4px; font-family: monospace;"
    body = (
        "<!DOCTYPE html>\n"
        '<html><body style="font-family: sans-serif; color: #222;">\n'
        f"<p>{e(lead)}</p>\n"
        f'<p style="{big}">{e(code)}</p>\n'
        f"<p>{e(expiry)}</p>\n"
        f'<p style="color: #666;">{e(tail)}</p>\n'
        "</body></html>\n"
    )
    return EmailContent(subject=subject, text=text, html=body)


def _minutes(minutes: int) -> str:
    return "1 minute" if minutes == 1 else f"{minutes} minutes"
