"""Turn on TOTP for one of your users with the client in tfa_client.py (the guide's "Usage" lines).

Usage: TFA_API_KEY=tfa_... [TFA_BASE_URL=http://localhost:3001/api] python enroll.py <userId>
"""

from __future__ import annotations

import os  # the guide's usage lines call os.getenv without importing os
import sys

from tfa_client import TwoFactorAuthClient, TwoFactorError


def main(user_id: str) -> None:
    client = TwoFactorAuthClient(
        os.environ["TFA_API_KEY"], os.getenv("TFA_BASE_URL", "http://localhost:3001/api")
    )
    result = client.setup_totp(user_id)
    print(f"QR code (open it in a browser, scan it with an authenticator app): {result['qrCode']}")
    print(f"Secret (to type in instead): {result['secret']}", flush=True)
    code = input("Code shown by the app: ").strip()
    backup_codes = client.verify_totp_setup(user_id, code)["backupCodes"]
    print("TOTP is on. Backup codes (each works once; keep them safe):")
    for backup_code in backup_codes:
        print(f"  {backup_code}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python enroll.py <userId>")
    try:
        main(sys.argv[1])
    except TwoFactorError as error:
        sys.exit(f"Enrollment failed: {error}")
