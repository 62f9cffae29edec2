"""Base64 as the API writes and reads it (standard alphabet out; standard or URL-safe in)."""

from __future__ import annotations

import base64
import binascii

from safescan.api.errors import InvalidRequest


def b64e(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def b64_exact(text: str, size: int | None = None) -> bytes | None:
    """The bytes of ``text`` if it is exactly their standard, padded, canonical base64 (what
    :func:`b64e` writes), of ``size`` bytes when given; else None. ``validate=True`` alone
    takes more than one spelling of the same bytes (non-zero padding bits: ``...1B==`` and
    ``...1A==`` decode alike) and a signature header must have exactly one."""
    if not text.isascii() or len(text) > 4096:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if b64e(raw) != text or (size is not None and len(raw) != size):
        return None
    return raw


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
