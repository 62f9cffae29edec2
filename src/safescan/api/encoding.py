"""Base64 as the API writes and reads it: one spelling, standard alphabet and padded, both ways."""

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
    """Decode base64 in its one canonical spelling, what :func:`b64e` writes (standard
    alphabet, padded, zero padding bits); anything else is the typed ``InvalidRequest`` naming
    ``param``. Before (review, eleventh sitting) the URL-safe alphabet, missing padding and
    non-zero padding bits were accepted too, so one value had several spellings (``...1B==``
    and ``...1A==`` decoded alike): an idempotent retry, a log or a signed body could hold
    another text of the same bytes."""
    if not isinstance(text, str) or len(text) > (max_bytes * 4) // 3 + 4:
        raise InvalidRequest(f"{param} is too long", param=param)
    if not text.isascii():
        raise InvalidRequest(f"{param} is not valid base64", param=param)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{param} is not valid base64", param=param) from None
    if b64e(raw) != text:
        raise InvalidRequest(
            f"{param} is not canonical base64 (standard alphabet, padded, as the API writes it)",
            param=param,
        )
    return raw
