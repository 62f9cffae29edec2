"""Base45 decoding (RFC 9285) without a loop per character: the payment path reads every code.

The ``base45`` package (pinned; it still encodes) decodes in a Python loop per character and per
group, about 20 us for a typical code. This decoder does the same work with a few operations on
whole byte strings and one integer (every step runs in C): the characters become their values
with ``bytes.translate``; the values, read as one little-endian integer, are split into the
three digits of every group with masks, and each group's value ``c + 45 d + 2025 e`` lands in its
own 24-bit word (at most 91,124: no carry reaches the next word); a word of 65,536 or more is
refused; the words' two low bytes, high byte first, are the output. A final pair of characters
gives one byte (at most 255).

It accepts exactly what ``base45.b45decode`` accepts on text of Base45 characters, and gives the
same bytes (tests/code/test_b45.py compares them on every group of three characters, every
pair, and random texts).
"""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

# byte -> its Base45 value, 0xFF for a byte that is not a Base45 character
_VALUES = bytes(ALPHABET.index(chr(b)) if chr(b) in ALPHABET else 0xFF for b in range(256))


class NotBase45(ValueError):
    """A character outside the Base45 alphabet."""


def b45decode(text: str) -> bytes:
    """The bytes ``text`` encodes in Base45; :class:`NotBase45` for a character outside the
    alphabet, :class:`ValueError` for a length or group value no encoder produces."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise NotBase45("a character outside Base45") from None
    values = raw.translate(_VALUES)
    if b"\xff" in values:
        raise NotBase45("a character outside Base45")
    groups, rest = divmod(len(values), 3)
    if rest == 1:
        raise ValueError("a Base45 text's length is never 1 more than a multiple of 3")
    full = 3 * groups
    digits = int.from_bytes(values[:full], "little")
    low = int.from_bytes(b"\xff\x00\x00" * groups, "little")  # each group's first digit
    words = (
        (digits & low) + 45 * ((digits >> 8) & low) + 2025 * ((digits >> 16) & low)
    )  # one group's value per 24-bit word
    if words & (low << 16):
        raise ValueError("a Base45 group above 65535")
    packed = words.to_bytes(full, "little")  # per group: low byte, high byte, 0
    out = bytearray(2 * groups)
    out[0::2] = packed[1::3]
    out[1::2] = packed[0::3]
    if rest == 2:
        last = values[-2] + 45 * values[-1]
        if last > 0xFF:
            raise ValueError("a final Base45 pair above 255")
        out.append(last)
    return bytes(out)
