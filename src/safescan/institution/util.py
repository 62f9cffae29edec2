"""Small helpers: identifiers, canonical JSON, token hashes (base64 lives in safescan.api)."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from safescan.api.encoding import b64d
from safescan.api.errors import InvalidRequest

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


def currency_numeric(code: str | int) -> int:
    """The ISO 4217 numeric code of ``code`` (alpha or numeric); :class:`InvalidRequest`
    (``param="currency"``) for a currency this institution does not know."""
    from safescan.code.currency import currency
    from safescan.code.errors import SafescanError

    try:
        return currency(code).numeric
    except SafescanError as exc:
        raise InvalidRequest(exc.message, param="currency") from None
