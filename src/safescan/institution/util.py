"""Small helpers: identifiers, canonical JSON, token hashes (base64 lives in safescan.api)."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

import orjson

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


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds only what orjson renders exactly as ``json.dumps`` does: text,
    ``int`` and ``bool`` (subclasses too: ``StrEnum``, ``IntEnum``; both write the bare data), None,
    lists and dicts with exact ``str`` keys (sorted alike), nothing else (no floats: orjson
    writes their exponents differently; no tuples, dict or list subclasses)."""
    kind = type(value)
    if kind is dict:
        if depth >= 32:
            return False
        for key, item in value.items():
            if type(key) is not str:
                return False
            kind = type(item)
            if kind is str or kind is int or item is None:  # the common case, inline
                continue
            if not _plain(item, depth + 1):
                return False
        return True
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is list:
        return depth < 32 and all(_plain(item, depth + 1) for item in value)
    return isinstance(value, (str, int))  # StrEnum, IntEnum: both render the bare data


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, ASCII): what is hashed and signed.

    Byte for byte ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=True)``; rendered by orjson (about 15x cheaper) when the value is
    :func:`_plain` and the result is printable ASCII (orjson writes other characters
    unescaped), else by ``json`` itself (tests/institution/test_fast_json.py)."""
    if _plain(value):
        try:
            out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # an integer beyond 64 bits, a lone surrogate
            pass
        else:
            # Not redundant: DEL (0x7f) is ASCII, so isascii() lets it through, but
            # orjson writes it raw where json writes \u007f (ensure_ascii escapes all
            # but space..~); dropping the check changes signed bytes (test_fast_json's
            # test_the_odd_values_go_to_json_or_agree[value0] fails).
            if out.isascii() and b"\x7f" not in out:
                return out.decode("ascii")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def framework_json(value: Any) -> bytes:
    """JSON as the framework renders a route's answer (Starlette's ``JSONResponse``: UTF-8,
    no spaces, keys in their order, NaN refused), byte for byte; by orjson when the value is
    :func:`_plain`, else by ``json`` itself (tests/institution/test_fast_json.py)."""
    if _plain(value):
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError:  # an integer beyond 64 bits, a lone surrogate
            pass
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


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
