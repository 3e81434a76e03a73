"""Secrets at rest and keyed hashes, from `cryptography` (nothing hand-rolled).

- `SecretBox`: AES-256-GCM with a key derived from `ENCRYPTION_KEY` by HKDF. Each value is bound
  to where it belongs by associated data (e.g. owner and user ids), so a ciphertext copied into
  another row fails authentication instead of decrypting. Format: version byte, 12-byte random
  nonce, ciphertext+tag.
- `keyed_hash`: HMAC-SHA256 under a second derived key, for values that are only ever compared
  (backup codes): without the server's key a stolen table cannot be brute-forced offline.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = b"\x01"
NONCE_BYTES = 12


class DecryptionFailed(Exception):
    """The ciphertext was altered, belongs to another row, or was made with another key."""


def derive_key(master: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master.encode())


class SecretBox:
    def __init__(self, master_key: str) -> None:
        self._aead = AESGCM(derive_key(master_key, b"tfa/secret-box/v1"))
        self._hash_key = derive_key(master_key, b"tfa/keyed-hash/v1")

    def encrypt(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, associated)

    def decrypt(self, blob: bytes, associated: bytes) -> bytes:
        if blob[:1] != VERSION or len(blob) < 1 + NONCE_BYTES + 16:
            raise DecryptionFailed("unknown ciphertext format")
        nonce, sealed = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, associated)
        except InvalidTag:
            raise DecryptionFailed("ciphertext does not authenticate") from None

    def keyed_hash(self, value: str) -> bytes:
        return hmac.new(self._hash_key, value.encode(), hashlib.sha256).digest()
