"""API keys: generation, hashing, display hints. Keys are never stored, only their hash."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk-ve-"
ADMIN_KEY_META = "admin_key_hash"  # where the generated admin key's hash is kept


def generate_key() -> str:
    """A new key with 192 bits from the OS's CSPRNG."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_key(key: str) -> str:
    """SHA-256 hex of the key. Keys carry ≥128 bits of entropy, so a fast hash is safe."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_hint(key: str) -> str:
    """What may be shown of a key after creation: its prefix and last four characters."""
    head = key[: key.find("-", 3) + 1] if key.startswith("sk-") else key[:3]
    return f"{head}…{key[-4:]}"
