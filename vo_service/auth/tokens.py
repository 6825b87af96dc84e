"""Opaque secrets (API tokens, sessions, invitations): shown once, stored as SHA-256."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "vos_"


def new_secret(prefix: str = TOKEN_PREFIX) -> tuple[str, str]:
    """A fresh secret and the hash to store; the secret itself is never stored."""
    secret = prefix + secrets.token_urlsafe(32)
    return secret, digest(secret)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
