"""A payment code's clear parts: the ``SS1:`` Base45 text and the 3-byte header.

This is all of a code that anyone can read without a key (``safescan code inspect`` without
keys, a wallet deciding whether a scan is a safescan code). It imports no cryptography, so that
reading a header stays cheap; :mod:`safescan.code.envelope` seals and opens the rest (see there,
and docs/protocol.md, for the byte layout). Envelope version 2 is written; 1 and 2 are read.
"""

from __future__ import annotations

from dataclasses import dataclass

import base45

from safescan.code.b45 import NotBase45, b45decode
from safescan.code.errors import MalformedCode, OversizeCode, UnsupportedVersion
from safescan.code.payment import CodeKind

VERSION = 2  # what seal() writes
VERSIONS = frozenset({1, 2})  # what open_code() reads
PREFIX = "SS1:"
HEADER_BYTES = 3
ENC_BYTES = 32
TAG_BYTES = 16
MAX_BINARY_BYTES = 1024
MAX_TEXT_CHARS = len(PREFIX) + (MAX_BINARY_BYTES // 2) * 3 + 2


@dataclass(frozen=True, slots=True)
class Header:
    """The clear header: readable by anyone, bound to the sealed contents."""

    version: int
    kind: CodeKind
    kid: int

    def to_bytes(self) -> bytes:
        """The 3 header bytes."""
        return bytes([self.version, int(self.kind), self.kid])

    @classmethod
    def parse(cls, binary: bytes) -> Header:
        """Read and check the header at the start of a binary code."""
        if len(binary) < HEADER_BYTES + ENC_BYTES + TAG_BYTES:
            raise MalformedCode("too short to be a safescan payment code")
        version, kind = binary[0], binary[1]
        if version not in VERSIONS:
            raise UnsupportedVersion(f"payment code version {version} is not supported")
        try:
            kind_ = CodeKind(kind)
        except ValueError:
            raise MalformedCode(f"unknown payment code kind {kind}") from None
        return cls(version, kind_, binary[2])


def encode_text(binary: bytes) -> str:
    """The QR text: ``SS1:`` + Base45 (alphanumeric mode)."""
    encoded: bytes = base45.b45encode(binary)
    return PREFIX + encoded.decode("ascii")


def looks_like_safescan(text: str) -> bool:
    """Cheap check: does this text claim to be a safescan code?"""
    return isinstance(text, str) and text.startswith(PREFIX)


def decode_text(text: str) -> bytes:
    """Base45-decode a code's text; the size is checked before any decoding work."""
    if not isinstance(text, str):
        raise MalformedCode("a payment code's text must be a string")
    if len(text) > MAX_TEXT_CHARS:
        raise OversizeCode(f"{len(text)} characters is larger than any valid payment code")
    if not text.startswith(PREFIX):
        raise MalformedCode(f"not a safescan payment code (it does not start with {PREFIX!r})")
    try:
        binary = b45decode(text[len(PREFIX) :])  # safescan.code.b45: no loop per character
    except NotBase45:
        raise MalformedCode("the payment code's text has characters outside Base45") from None
    except ValueError:
        raise MalformedCode("the payment code's Base45 text is corrupt") from None
    if len(binary) > MAX_BINARY_BYTES:
        raise OversizeCode("larger than any valid payment code")
    return bytes(binary)


def to_binary(data: str | bytes) -> bytes:
    """A code given as text or bytes, as bytes, its size checked (raises a typed error)."""
    if isinstance(data, str):
        return decode_text(data)
    if not isinstance(data, bytes):
        raise MalformedCode("a payment code is text or bytes")
    if len(data) > MAX_BINARY_BYTES:
        raise OversizeCode(f"{len(data)} bytes is larger than any valid payment code")
    return data


def read_header(data: str | bytes) -> Header:
    """The clear header, without any key: all a code reveals to a bystander."""
    return Header.parse(to_binary(data))
