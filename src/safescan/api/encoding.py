"""Base64 as the API writes and reads it (standard alphabet out; standard or URL-safe in)."""

from __future__ import annotations

import base64
import binascii

from safescan.api.errors import InvalidRequest


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
