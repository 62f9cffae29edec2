"""Base64 as the API writes it (standard, padded) and reads it (RFC 4648 forms, canonical only)."""

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


def b64_spellings(data: bytes) -> tuple[str, ...]:
    """The texts :func:`b64d` reads as ``data``: RFC 4648 base64 (section 4) or base64url
    (section 5), padded or not, each written canonically (zero padding bits)."""
    standard = b64e(data)
    url_safe = base64.urlsafe_b64encode(data).decode("ascii")
    return (standard, standard.rstrip("="), url_safe, url_safe.rstrip("="))


def b64d(text: str, *, param: str, max_bytes: int = 8192) -> bytes:
    """Decode base64 strictly; anything else is the typed ``InvalidRequest`` naming ``param``.

    Read: what :func:`b64e` writes (standard alphabet, padded) and, as the API has always
    documented for clients, the URL-safe alphabet and unpadded text: each only in its
    canonical form (:func:`b64_spellings`). Refused: set padding bits (``...AR==`` decodes
    like ``...AQ==``), a mixed alphabet, partial or extra padding, whitespace, non-ASCII. So a
    value has one text per RFC 4648 form, never an arbitrary re-spelling; everything the
    institution checks or signs is the decoded bytes."""
    if not isinstance(text, str) or len(text) > (max_bytes * 4) // 3 + 4:
        raise InvalidRequest(f"{param} is too long", param=param)
    if not text.isascii():
        raise InvalidRequest(f"{param} is not valid base64", param=param)
    cleaned = text.replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        raw = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{param} is not valid base64", param=param) from None
    if text not in b64_spellings(raw):
        raise InvalidRequest(
            f"{param} is not canonical base64 (one alphabet, zero padding bits, padded fully"
            " or not at all)",
            param=param,
        )
    return raw
