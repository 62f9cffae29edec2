"""PIN format, wire padding and the salted verifier the card stores (never the PIN).

A PIN is 4-16 ASCII digits. On the wire it is a 16-byte block padded with 0xFF (as PIV
does), so the ciphertext length does not reveal the PIN length. The card stores
``HMAC-SHA256(pin_key, salt || pin)`` where ``pin_key`` is derived from the device key: even a
copied image is useless for guessing offline without the chip's fused key.
"""

from __future__ import annotations

import hashlib
import hmac

from safescan.carrier import rom


class PinFormatError(ValueError):
    """The PIN block is not 4-16 digits padded with 0xFF."""


def check_pin(pin: str) -> str:
    """Validate a PIN string; raises :class:`PinFormatError`."""
    if not isinstance(pin, str) or not rom.PIN_MIN <= len(pin) <= rom.PIN_MAX:
        raise PinFormatError(f"a PIN is {rom.PIN_MIN}-{rom.PIN_MAX} digits")
    if not (pin.isascii() and pin.isdigit()):
        raise PinFormatError("a PIN is digits only")
    return pin


def pad_pin(pin: str) -> bytes:
    """The 16-byte wire block for ``pin``."""
    raw = check_pin(pin).encode("ascii")
    return raw + b"\xff" * (rom.PIN_BLOCK - len(raw))


def unpad_pin(block: bytes) -> bytes:
    """The PIN digits from a wire block; raises :class:`PinFormatError`."""
    if len(block) != rom.PIN_BLOCK:
        raise PinFormatError(f"a PIN block is {rom.PIN_BLOCK} bytes")
    raw = block.rstrip(b"\xff")
    if b"\xff" in raw or not rom.PIN_MIN <= len(raw) <= rom.PIN_MAX:
        raise PinFormatError(f"a PIN is {rom.PIN_MIN}-{rom.PIN_MAX} digits")
    if not raw.isdigit():
        raise PinFormatError("a PIN is digits only")
    return raw


def verifier(pin_key: bytes, salt: bytes, pin: bytes) -> bytes:
    """The stored verifier for ``pin``."""
    return hmac.new(pin_key, salt + pin, hashlib.sha256).digest()


def matches(pin_key: bytes, salt: bytes, pin: bytes, stored: bytes | bytearray) -> bool:
    """Constant-time comparison of ``pin`` against the stored verifier."""
    return hmac.compare_digest(verifier(pin_key, salt, pin), bytes(stored))
