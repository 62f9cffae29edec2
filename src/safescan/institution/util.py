"""Small helpers: identifiers, canonical JSON, base64."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from typing import Any

from safescan.institution.errors import InvalidRequest

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: readable when spoken or typed


def new_id(prefix: str, length: int) -> str:
    """A random identifier: ``prefix`` + ``length`` characters (5 bits each)."""
    # 32 symbols: each random byte's low 5 bits pick one without bias
    return prefix + "".join([_ALPHABET[b & 31] for b in secrets.token_bytes(length)])


def token_hash(token: str) -> str:
    """What is stored of a bearer or enrollment token: SHA-256 hex (tokens are 256-bit random,
    so a plain hash suffices)."""
    return hashlib.sha256(token.encode()).hexdigest()


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, ASCII): what is hashed and signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def b64e(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def b64d(text: str, *, param: str, max_bytes: int = 8192) -> bytes:
    """Decode standard or URL-safe base64 strictly; a typed error names ``param``."""
    if not isinstance(text, str) or len(text) > (max_bytes * 4) // 3 + 4:
        raise InvalidRequest(f"{param} is too long", param=param)
    try:
        cleaned = text.replace("-", "+").replace("_", "/")
        cleaned += "=" * (-len(cleaned) % 4)
        return base64.b64decode(cleaned.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeError):
        raise InvalidRequest(f"{param} is not valid base64", param=param) from None


def key32(text: str, *, param: str) -> bytes:
    """A 32-byte public key given as base64 or 64 hex characters."""
    if isinstance(text, str) and len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    raw = b64d(text, param=param, max_bytes=64)
    if len(raw) != 32:
        raise InvalidRequest(f"{param} must be a 32-byte key (base64 or hex)", param=param)
    return raw
