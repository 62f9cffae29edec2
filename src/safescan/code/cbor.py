"""Deterministic CBOR (RFC 8949 section 4.2) and a strict decoder.

The strict decoder accepts an input only if it is exactly the deterministic encoding of the
value it decodes to: shortest-form integers and lengths, definite lengths, map keys in bytewise
order, no duplicate keys, no tags, no floats, no trailing bytes, bounded nesting depth. Any
deviation raises :class:`MalformedCode` (or the error class the caller passes).
"""

from __future__ import annotations

from typing import Any

import cbor2

from safescan.code.errors import MalformedCode, SafescanError

MAX_DEPTH = 8

_INT_MIN, _INT_END = -(2**63), 2**64


def dumps(value: Any) -> bytes:
    """Encode ``value`` as deterministic CBOR."""
    return cbor2.dumps(value, canonical=True)


def _reject_tag(_decoder: Any, tag: Any) -> Any:
    raise MalformedCode(f"CBOR tag {tag.tag} is not allowed")


def _reject_semantic(_value: Any, _immutable: bool = False) -> Any:
    raise MalformedCode("CBOR tags are not allowed")


# cbor2 interprets some tags itself (epoch times, bignums, regular expressions, MIME messages,
# sets, IP addresses...), before ``tag_hook`` is asked. Overriding every tag number it could know
# refuses them without running those constructors on attacker-controlled content.
_NO_SEMANTIC_TAGS = dict.fromkeys(range(0x10000), _reject_semantic)


def _check_types(value: Any, depth: int, error: type[SafescanError]) -> None:
    """Only integers (64-bit), byte and text strings, arrays and maps with integer keys.

    ``type(x) is`` rather than ``isinstance``: the C decoder builds exact built-in types, and a
    bool (a subclass of int) must not pass as an integer.
    """
    if depth > MAX_DEPTH:
        raise error("data is nested too deeply")
    kind = type(value)
    if kind is list:
        shallow = depth < MAX_DEPTH  # an item's own depth is checked only past the limit
        for item in value:
            kind = type(item)
            if shallow and (kind is str or kind is bytes):
                continue
            if shallow and kind is int and _INT_MIN <= item < _INT_END:
                continue
            _check_types(item, depth + 1, error)
        return
    if kind is str or kind is bytes:
        return
    if kind is int:
        if not _INT_MIN <= value < _INT_END:
            raise error("integer out of range")
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not int:
                raise error("map keys must be integers")
            _check_types(item, depth + 1, error)
        return
    if value is None or kind is bool:
        raise error("unexpected boolean or null value")
    raise error(f"unexpected CBOR value of type {kind.__name__}")


def strict_loads(
    data: bytes, *, error: type[SafescanError] = MalformedCode, max_depth: int = MAX_DEPTH
) -> Any:
    """Decode ``data`` strictly; see the module docstring for what is refused."""
    try:
        value = cbor2.loads(
            data,
            tag_hook=_reject_tag,
            semantic_decoders=_NO_SEMANTIC_TAGS,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            max_depth=max_depth,
            str_errors="strict",
        )
    except SafescanError as exc:
        raise error(exc.message) from None
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        if "semantic tag" in str(exc):
            raise error("CBOR tags are not allowed") from None
        raise error(f"not valid CBOR: {type(exc).__name__}") from None
    _check_types(value, 0, error)
    if dumps(value) != bytes(data):
        raise error("not deterministic CBOR (non-canonical encoding or trailing bytes)")
    return value
