"""Secure channel: handshake authentication, sequence numbers, tamper detection."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from safescan.carrier.apdu import CommandApdu, Ins, Reason, ResponseApdu, StatusWord
from safescan.carrier.channel import HostHandshake, KeyKind, Session, card_handshake
from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.errors import CarrierAuthenticationError, ChannelError
from safescan.carrier.pin import pad_pin

from .conftest import PIN

H = bytes.fromhex("84200000")


def pair() -> tuple[Session, Session, bytes]:
    card_key = Ed25519PrivateKey.generate()
    pub = card_key.public_key().public_bytes_raw()
    host = HostHandshake.start()
    answer, card = card_handshake(host.public, card_key, KeyKind.ATTESTATION, pub)
    return host.finish(answer, pub, KeyKind.ATTESTATION, pub), card, pub


def test_round_trip() -> None:
    host, card, _ = pair()
    for i in range(3):
        frame = host.seal_command(H, b"hello %d" % i)
        assert card.open_command(H, frame) == b"hello %d" % i
        assert host.open_response(H, card.seal_response(H, b"ok")) == b"ok"


def test_handshake_rejects_wrong_key_and_kind() -> None:
    card_key = Ed25519PrivateKey.generate()
    pub = card_key.public_key().public_bytes_raw()
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    host = HostHandshake.start()
    answer, _ = card_handshake(host.public, card_key, KeyKind.ATTESTATION, pub)
    with pytest.raises(CarrierAuthenticationError):
        host.finish(answer, other, KeyKind.ATTESTATION, pub)
    with pytest.raises(CarrierAuthenticationError):
        host.finish(answer, pub, KeyKind.CERTIFIED, pub)
    with pytest.raises(CarrierAuthenticationError):
        host.finish(answer, pub, KeyKind.ATTESTATION, other)  # identity is in the transcript
    tampered = bytearray(answer)
    tampered[3] ^= 1  # the card's ephemeral key
    with pytest.raises(CarrierAuthenticationError):
        host.finish(bytes(tampered), pub, KeyKind.ATTESTATION, pub)
    with pytest.raises(CarrierAuthenticationError):
        host.finish(answer[:-1], pub, KeyKind.ATTESTATION, pub)


def test_low_order_host_key_is_refused() -> None:
    with pytest.raises(ChannelError):
        card_handshake(bytes(32), Ed25519PrivateKey.generate(), KeyKind.ATTESTATION, b"x")


def test_ciphertext_hides_body() -> None:
    host, _, _ = pair()
    frame = host.seal_command(H, pad_pin(PIN))
    assert PIN.encode() not in frame


@pytest.mark.parametrize("attack", ["flip", "replay", "reorder", "drop", "header", "truncate"])
def test_any_tampering_closes_the_session(attack: str) -> None:
    host, card, _ = pair()
    f0 = host.seal_command(H, b"zero")
    assert card.open_command(H, f0) == b"zero"
    f1 = host.seal_command(H, b"one")
    f2 = host.seal_command(H, b"two")
    with pytest.raises(ChannelError):
        if attack == "flip":
            card.open_command(H, f1[:-1] + bytes([f1[-1] ^ 0x80]))
        elif attack == "replay":
            card.open_command(H, f0)
        elif attack == "reorder" or attack == "drop":
            card.open_command(H, f2)  # f1 never arrives (dropped) / arrives later (reordered)
        elif attack == "header":
            card.open_command(bytes.fromhex("84320000"), f1)
        else:
            card.open_command(H, f1[:10])
    assert card.closed
    with pytest.raises(ChannelError):  # nothing, not even the genuine frame, is accepted now
        card.open_command(H, f1)


def test_response_tampering_detected_by_host() -> None:
    host, card, _ = pair()
    card.open_command(H, host.seal_command(H, b"a"))
    r0 = card.seal_response(H, b"ok")
    assert host.open_response(H, r0) == b"ok"
    card.open_command(H, host.seal_command(H, b"b"))
    card.seal_response(H, b"fresh")
    with pytest.raises(ChannelError):
        host.open_response(H, r0)  # stale response replayed to the host
    assert host.closed


def test_response_is_bound_to_command_header() -> None:
    host, card, _ = pair()
    card.open_command(H, host.seal_command(H, b"a"))
    r = card.seal_response(H, b"ok")
    with pytest.raises(ChannelError):
        host.open_response(bytes.fromhex("84300000"), r)


def _raw_secure(client: CarrierClient, ins: int, body: bytes) -> tuple[bytes, bytes]:
    session = client._session
    assert session is not None
    header = bytes((0x84, ins, 0, 0))
    frame = session.seal_command(header, body)
    return header, frame


def test_card_closes_session_and_wipes_ram_on_bad_frame(carrier: CarrierClient, card: Card) -> None:
    carrier.verify_pin(PIN)
    assert card.ram.pin_verified and card.ram.session is not None
    header, frame = _raw_secure(carrier, Ins.VERIFY_PIN, b"")
    bad = frame[:-1] + bytes([frame[-1] ^ 1])
    resp = ResponseApdu.from_bytes(
        card.transmit(CommandApdu.from_bytes(header + bytes([len(bad)]) + bad).to_bytes())
    )
    assert resp.sw == StatusWord.SM_DATA_INCORRECT and resp.data == b""  # ISO: no data
    last = carrier.last_error(secure=False)  # the session is gone: the reason is in clear
    assert last is not None and last.reason == Reason.CHANNEL_FAILURE
    assert card.ram.session is None and not card.ram.pin_verified
    # the genuine frame is refused too: the session is gone
    resp = ResponseApdu.from_bytes(card.transmit(header + bytes([len(frame)]) + frame))
    assert resp.sw == StatusWord.SM_DATA_MISSING


def test_replayed_command_frame_at_card(carrier: CarrierClient, card: Card) -> None:
    header, frame = _raw_secure(carrier, Ins.VERIFY_PIN, pad_pin(PIN))
    apdu = header + bytes([len(frame)]) + frame
    assert ResponseApdu.from_bytes(card.transmit(apdu)).sw == StatusWord.SUCCESS
    assert ResponseApdu.from_bytes(card.transmit(apdu)).sw == StatusWord.SM_DATA_INCORRECT
    assert card.ram.session is None
