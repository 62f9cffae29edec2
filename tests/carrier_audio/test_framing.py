"""Frames <-> bytes <-> bits: round trips, checks, and the sync word's distance properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safescan.carrier.audio import framing
from safescan.carrier.audio.errors import AudioLinkError, FrameCrcError, FrameError
from safescan.carrier.audio.framing import (
    MAX_PAYLOAD,
    Frame,
    FrameKind,
    bits_to_bytes,
    bytes_to_bits,
    decode_frame,
    encode_frame,
    frame_bits,
    whiten,
)
from safescan.code.errors import SafescanError

frames = st.builds(
    Frame,
    kind=st.sampled_from(list(FrameKind)),
    seq=st.integers(0, 255),
    payload=st.binary(max_size=300),
    more=st.booleans(),
)


def test_frame_round_trip() -> None:
    frame = Frame(FrameKind.DATA, 7, b"\x00\xa4\x04\x00\x07safescan", more=True)
    body = encode_frame(frame)
    assert len(body) == 6 + len(frame.payload) + 4
    assert decode_frame(body) == frame


def test_bits_round_trip_msb_first() -> None:
    bits = bytes_to_bits(b"\x80\x01")
    assert bits.tolist() == [1, *[0] * 14, 1]
    assert bits_to_bytes(bits) == b"\x80\x01"
    with pytest.raises(FrameError):
        bits_to_bytes(bits[:7])


def test_whitening_is_an_involution_and_breaks_runs() -> None:
    zeros = bytes_to_bits(bytes(64))
    white = whiten(zeros)
    assert np.array_equal(whiten(white), zeros)
    # 512 zero bits come out with plenty of transitions for the bit clock
    assert np.count_nonzero(np.diff(white.astype(int))) > 200


def test_on_air_layout() -> None:
    frame = Frame(FrameKind.ACK, 3)
    bits = frame_bits(frame)
    pre = framing.PREAMBLE_BITS
    assert bits[:pre].tolist() == [1, 0] * (pre // 2)
    sync = int("".join(map(str, bits[pre : pre + 32].tolist())), 2)
    assert sync == framing.SYNC_WORD
    body = bits_to_bytes(whiten(bits[pre + 32 : -framing.TAIL_BITS]))
    assert decode_frame(body) == frame


def test_sync_word_is_far_from_every_preamble_window() -> None:
    """False sync inside the preamble needs more than twice the tolerance in bit errors."""
    seq = np.concatenate([framing.preamble_bits(), framing.sync_bits()])
    sync = framing.sync_bits()
    distances = [int(np.count_nonzero(seq[i : i + 32] != sync)) for i in range(seq.size - 32)]
    assert min(distances) > 2 * 3


def test_header_crc_catches_corrupted_length() -> None:
    body = bytearray(encode_frame(Frame(FrameKind.DATA, 1, b"abc")))
    body[3] ^= 0x40
    with pytest.raises(FrameCrcError, match="header"):
        decode_frame(bytes(body))


def test_payload_crc_catches_corruption() -> None:
    body = bytearray(encode_frame(Frame(FrameKind.DATA, 1, b"abcdef")))
    body[8] ^= 0x01
    with pytest.raises(FrameCrcError, match="corrupted"):
        decode_frame(bytes(body))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "at least"),
        (bytes(9), "at least"),
        (encode_frame(Frame(FrameKind.DATA, 0, b"xy"))[:-1], "announces"),
    ],
)
def test_malformed_bodies_are_typed_errors(body: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        decode_frame(body)


def test_unknown_kind_and_oversize_rejected() -> None:
    import binascii

    head = bytes([0x05, 0, 0, 0])
    with pytest.raises(FrameError, match="kind"):
        framing.decode_header(head + binascii.crc_hqx(head, 0xFFFF).to_bytes(2, "big"))
    head = bytes([0x01, 0]) + (MAX_PAYLOAD + 1).to_bytes(2, "big")
    with pytest.raises(FrameError, match="exceeds"):
        framing.decode_header(head + binascii.crc_hqx(head, 0xFFFF).to_bytes(2, "big"))
    with pytest.raises(FrameError):
        Frame(FrameKind.DATA, 0, bytes(MAX_PAYLOAD + 1))
    with pytest.raises(FrameError):
        Frame(FrameKind.DATA, 256)


def test_errors_are_safescan_errors() -> None:
    assert issubclass(FrameCrcError, FrameError)
    assert issubclass(FrameError, AudioLinkError)
    assert issubclass(AudioLinkError, SafescanError)
    assert FrameCrcError("x").to_dict()["code"] == "audio_frame_crc_error"


@settings(max_examples=150, deadline=None)
@given(frames)
def test_property_round_trip(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame
    bits = whiten(bytes_to_bits(encode_frame(frame)))
    assert decode_frame(bits_to_bytes(whiten(bits))) == frame


@settings(max_examples=150, deadline=None)
@given(frames, st.data())
def test_property_any_single_bit_flip_is_rejected(frame: Frame, data: st.DataObject) -> None:
    body = bytearray(encode_frame(frame))
    bit = data.draw(st.integers(0, 8 * len(body) - 1))
    body[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(FrameError):
        decode_frame(bytes(body))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=64))
def test_property_garbage_never_crashes(blob: bytes) -> None:
    """Arbitrary bytes are a typed error, or a frame that encodes back to exactly them."""
    try:
        frame = decode_frame(blob)
    except FrameError:
        return
    assert encode_frame(frame) == blob
