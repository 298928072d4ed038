"""Secrets at rest: upstream credentials are encrypted with Fernet (AES-128-CBC + HMAC-SHA256).

Keys come from GATEWAY_ENCRYPTION_KEYS (first one encrypts, all decrypt: MultiFernet), or, when
that is empty, one key derived from SECRET_KEY. Rotation: put the new key first, keep the old
ones after it, run `manage.py rotate_secrets`, then drop the old keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from django.conf import settings

from registry.exceptions import SecretError


def derive_key_from_secret(secret: str) -> bytes:
    """A Fernet key derived from SECRET_KEY, for the embedded default."""
    digest = hashlib.sha256(b"mcp-gateway/secrets-at-rest/" + secret.encode()).digest()
    return base64.urlsafe_b64encode(digest)


@cache
def _fernet(keys: tuple[str, ...], secret: str) -> MultiFernet:
    raw = [k.encode() for k in keys] or [derive_key_from_secret(secret)]
    return MultiFernet([Fernet(k) for k in raw])


def fernet() -> MultiFernet:
    """The MultiFernet for the configured keys (cached per key set)."""
    return _fernet(tuple(settings.GATEWAY_ENCRYPTION_KEYS), settings.SECRET_KEY)


def encrypt_json(value: dict[str, Any], box: MultiFernet | Fernet | None = None) -> str:
    """Encrypt a JSON object into a Fernet token (text)."""
    return (box or fernet()).encrypt(json.dumps(value, sort_keys=True).encode()).decode()


def decrypt_json(token: str, box: MultiFernet | Fernet | None = None) -> dict[str, Any]:
    """Decrypt a token from encrypt_json; SecretError when no configured key opens it."""
    try:
        return dict(json.loads((box or fernet()).decrypt(token.encode())))
    except InvalidToken:
        raise SecretError(
            "Stored credentials cannot be decrypted with the configured GATEWAY_ENCRYPTION_KEYS "
            "(was a key removed before `manage.py rotate_secrets` ran?)."
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt a token with the first (newest) key."""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretError("A stored secret cannot be decrypted with any configured key.") from None


def passphrase_box(passphrase: str, salt: bytes | None = None) -> tuple[Fernet, bytes]:
    """A Fernet keyed by a passphrase (scrypt), for exports moved between installations."""
    if salt is None:
        salt = os.urandom(16)
    elif len(salt) < 16:
        raise SecretError("The export's passphrase salt is shorter than 16 bytes; the document is damaged.")
    key = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())
    return Fernet(base64.urlsafe_b64encode(key)), salt
