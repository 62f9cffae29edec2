"""Frames of the audio-port link, and their conversion to and from bits.

On-air layout (bits are sent most significant bit of each byte first)::

    preamble   48 bits   1010...10        clock / AGC settling, timing acquisition
    sync       32 bits   0x1ACFFC1D        CCSDS attached sync marker
    header      6 bytes  kind|flags, seq, length (2, big-endian), CRC-16 of the first 4
    payload     length bytes (0..MAX_PAYLOAD)
    crc        4 bytes   CRC-32 (zlib) of header + payload, big-endian
    tail        8 bits   10101010          lets the last bit's detector window settle

Header, payload and CRC are whitened (XOR with the PN9 sequence x^9 + x^5 + 1, seed 0x1FF) so
that long runs of equal bytes still give the receiver bit transitions to track the clock with.
The header has its own CRC-16 so that a corrupted length is caught before the receiver waits
for bits that will never come.
"""

from __future__ import annotations

import binascii
import zlib
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from safescan.carrier.audio.errors import FrameCrcError, FrameError

Bits = NDArray[np.uint8]
"""A bit sequence: one 0/1 value per element."""

PREAMBLE_BITS = 48
SYNC_WORD = 0x1ACFFC1D
SYNC_BITS = 32
HEADER_BYTES = 6
CRC_BYTES = 4
TAIL_BITS = 8
MAX_PAYLOAD = 1024
"""Largest payload of one frame; longer messages are split by the link layer."""

_MORE_FLAG = 0x80
_KIND_MASK = 0x0F


class FrameKind(IntEnum):
    """What a frame carries."""

    DATA = 1
    ACK = 2
    NAK = 3


@dataclass(frozen=True)
class Frame:
    """One link-layer frame: a kind, an 8-bit sequence number, a payload, a more-fragments flag."""

    kind: FrameKind
    seq: int
    payload: bytes = b""
    more: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= 0xFF:
            raise FrameError(f"sequence number {self.seq} is outside 0..255")
        if len(self.payload) > MAX_PAYLOAD:
            raise FrameError(
                f"frame payload of {len(self.payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit"
            )


@dataclass(frozen=True)
class Header:
    """A decoded and checked frame header."""

    kind: FrameKind
    seq: int
    length: int
    more: bool


def bytes_to_bits(data: bytes) -> Bits:
    """Bytes to bits, most significant bit first."""
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8))


def bits_to_bytes(bits: Bits) -> bytes:
    """Bits (most significant first) to bytes; the bit count must be a multiple of 8."""
    if bits.size % 8:
        raise FrameError(f"{bits.size} bits do not make whole bytes")
    return np.packbits(bits.astype(np.uint8)).tobytes()


@lru_cache(maxsize=1)
def _pn9_period() -> Bits:
    state = 0x1FF
    out = np.empty(511, dtype=np.uint8)
    for i in range(511):
        out[i] = state & 1
        feedback = (state ^ (state >> 5)) & 1
        state = (state >> 1) | (feedback << 8)
    out.setflags(write=False)
    return out


def pn9(count: int, offset: int = 0) -> Bits:
    """``count`` bits of the PN9 whitening sequence, starting ``offset`` bits in."""
    period = _pn9_period()
    idx = (np.arange(count) + offset) % period.size
    return period[idx]


def whiten(bits: Bits, offset: int = 0) -> Bits:
    """XOR bits with PN9 starting at ``offset``; applying it twice gives the input back."""
    return np.bitwise_xor(bits.astype(np.uint8), pn9(bits.size, offset))


def _header_bytes(kind: FrameKind, seq: int, length: int, more: bool) -> bytes:
    first = int(kind) | (_MORE_FLAG if more else 0)
    head = bytes([first, seq]) + length.to_bytes(2, "big")
    return head + binascii.crc_hqx(head, 0xFFFF).to_bytes(2, "big")


def encode_frame(frame: Frame) -> bytes:
    """The frame body: header, payload and CRC-32 (no preamble, sync or whitening)."""
    body = _header_bytes(frame.kind, frame.seq, len(frame.payload), frame.more) + frame.payload
    return body + zlib.crc32(body).to_bytes(4, "big")


def decode_header(header: bytes) -> Header:
    """Check and decode the 6 header bytes; raises :class:`FrameCrcError` or :class:`FrameError`."""
    if len(header) != HEADER_BYTES:
        raise FrameError(f"a frame header is {HEADER_BYTES} bytes, got {len(header)}")
    if binascii.crc_hqx(header[:4], 0xFFFF) != int.from_bytes(header[4:6], "big"):
        raise FrameCrcError("frame header checksum mismatch: the header was corrupted")
    kind_value = header[0] & _KIND_MASK
    if header[0] & ~(_KIND_MASK | _MORE_FLAG) or kind_value not in FrameKind._value2member_map_:
        raise FrameError(f"unknown frame kind byte 0x{header[0]:02x}")
    length = int.from_bytes(header[2:4], "big")
    if length > MAX_PAYLOAD:
        raise FrameError(f"frame length {length} exceeds the {MAX_PAYLOAD}-byte limit")
    return Header(FrameKind(kind_value), header[1], length, bool(header[0] & _MORE_FLAG))


def decode_frame(body: bytes) -> Frame:
    """Parse and check a frame body made by :func:`encode_frame`."""
    if len(body) < HEADER_BYTES + CRC_BYTES:
        raise FrameError(f"a frame body is at least 10 bytes, got {len(body)}")
    header = decode_header(body[:HEADER_BYTES])
    expected = HEADER_BYTES + header.length + CRC_BYTES
    if len(body) != expected:
        raise FrameError(f"frame body is {len(body)} bytes, its header announces {expected}")
    if zlib.crc32(body[:-CRC_BYTES]) != int.from_bytes(body[-CRC_BYTES:], "big"):
        raise FrameCrcError("frame checksum mismatch: the frame was corrupted")
    payload = body[HEADER_BYTES:-CRC_BYTES]
    return Frame(header.kind, header.seq, payload, header.more)


def preamble_bits() -> Bits:
    """The 48-bit alternating preamble, starting with a 1."""
    return np.resize(np.array([1, 0], dtype=np.uint8), PREAMBLE_BITS)


def sync_bits() -> Bits:
    """The 32 bits of the sync word."""
    return bytes_to_bits(SYNC_WORD.to_bytes(4, "big"))


def frame_bits(frame: Frame) -> Bits:
    """Everything sent on the air for one frame: preamble, sync, whitened body, tail."""
    body = whiten(bytes_to_bits(encode_frame(frame)))
    tail = np.resize(np.array([1, 0], dtype=np.uint8), TAIL_BITS)
    return np.concatenate([preamble_bits(), sync_bits(), body, tail])


def body_bits_count(payload_length: int) -> int:
    """Number of on-air body bits (header + payload + CRC) for a given payload length."""
    return 8 * (HEADER_BYTES + payload_length + CRC_BYTES)
