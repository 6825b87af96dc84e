"""Password hashing (scrypt, from the standard library) and the password policy.

scrypt is memory-hard like argon2id and needs no extra dependency. Hashes carry their
parameters, so they can be raised later without invalidating stored passwords.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from difflib import SequenceMatcher

_N, _R, _P = 2**14, 8, 1
MIN_LENGTH = 8
MAX_SIMILARITY = 0.7

# The most used passwords of public leak statistics, and the obvious patterns around them.
_COMMON_TEXT = """
123456 123456789 12345678 12345 1234567 1234567890 111111 000000 123123 654321 666666
121212 112233 password password1 password123 passw0rd qwerty qwerty123 qwertyuiop asdfgh
asdfghjkl zxcvbnm 1q2w3e4r 1q2w3e4r5t 1qaz2wsx qazwsx abc123 abcd1234 iloveyou admin
admin123 administrator welcome welcome1 letmein monkey dragon football baseball sunshine
princess master shadow superman trustno1 starwars michael jennifer hello123 whatever
freedom secret secret123 changeme default login guest test test123 testtest root toor
telescope astronomy observatory galaxy universe stargazer
"""
COMMON = frozenset(_COMMON_TEXT.split())


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    salt_text = base64.b64encode(salt).decode()
    return f"scrypt${_N}${_R}${_P}${salt_text}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def password_problems(password: str, *, username: str = "", email: str = "") -> list[str]:
    """Every reason to refuse this password; empty when it is acceptable."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"it must have at least {MIN_LENGTH} characters")
    if password.isdigit():
        problems.append("it must not consist of digits only")
    lowered = password.lower()
    if (
        lowered in COMMON
        or re.fullmatch(r"(.)\1+", lowered)
        or lowered.rstrip("0123456789!") in COMMON
    ):
        problems.append("it is too common")
    for label, value in (("username", username), ("email address", email)):
        # Parts shorter than three characters say nothing about the password.
        for part in {p for p in {value.lower(), value.lower().split("@")[0]} if len(p) >= 3}:
            if part in lowered or SequenceMatcher(None, lowered, part).ratio() >= MAX_SIMILARITY:
                problems.append(f"it is too similar to the {label}")
                break
    return problems
