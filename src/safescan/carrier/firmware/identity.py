"""SELECT, GET INFO and OPEN SECURE CHANNEL: who the card is, and the authenticated channel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Reason, StatusWord
from safescan.carrier.channel import KeyKind, card_handshake
from safescan.carrier.eeprom import Lifecycle
from safescan.carrier.errors import ChannelError
from safescan.carrier.firmware.common import no_data, refuse
from safescan.carrier.messages import CardInfo, LastError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from safescan.carrier.device import Card


def select(card: Card, command: CommandApdu) -> bytes:
    """SELECT by AID: ends any session; P2=00 answers version and lifecycle."""
    if command.data != rom.AID:
        raise refuse(StatusWord.APPLET_NOT_FOUND, Reason.UNKNOWN_AID, "no such applet")
    card.ram.end_session()
    card.ram.selected = True
    if command.p2 == 0x0C:
        return b""
    return bytes(rom.VERSION) + bytes([int(card.lifecycle)])


def get_info(card: Card, command: CommandApdu) -> bytes:
    """GET INFO: the card's public information (:class:`~safescan.carrier.messages.CardInfo`,
    docs/carrier.md)."""
    no_data(command)
    image = card.image
    assert image is not None
    personalized = image.lifecycle is Lifecycle.PERSONALIZED
    keys = card.keys
    return CardInfo(
        version=tuple(rom.VERSION),
        lifecycle=int(image.lifecycle),
        device_id=image.device_id,
        attestation_key=_raw(keys.attestation),
        carrier_serial=image.carrier_serial if personalized else None,
        certificate=image.certificate if personalized else None,
        retries_left=image.retries_left if personalized else None,
        retry_limit=image.retry_limit if personalized else None,
        signature_counter=image.signature_counter,
        signing_key=_raw(keys.signing),
        transport_key=_raw(keys.transport),
        pin_tries_this_power_cycle=rom.WRONG_PINS_PER_POWER_CYCLE - card.ram.wrong_pins,
        algorithms=tuple(rom.ALGORITHMS),
        crl_sequence=image.crl_sequence if personalized else None,
        model=int(image.model),
        attestation_certificate=image.attestation_certificate,
        key_epoch=image.key_epoch if personalized else None,
    ).to_cbor()


def _raw(key: Ed25519PrivateKey | X25519PrivateKey | None) -> bytes | None:
    return None if key is None else key.public_key().public_bytes_raw()


def open_channel(card: Card, command: CommandApdu) -> bytes:
    """OPEN SECURE CHANNEL: authenticated key agreement (see :mod:`safescan.carrier.channel`)."""
    if len(command.data) != 32:
        raise refuse(StatusWord.WRONG_LENGTH, Reason.BAD_LENGTH, "send a 32-byte X25519 key")
    image = card.image
    assert image is not None
    card.ram.end_session()
    if image.lifecycle is Lifecycle.PERSONALIZED:
        assert card.keys.signing is not None and image.certificate is not None
        key, kind, identity = card.keys.signing, KeyKind.CERTIFIED, image.certificate
    else:
        assert card.keys.attestation is not None
        key, kind = card.keys.attestation, KeyKind.ATTESTATION
        identity = key.public_key().public_bytes_raw()
    try:
        response, session = card_handshake(command.data, key, kind, identity)
    except ChannelError as exc:
        raise refuse(StatusWord.WRONG_DATA, Reason.BAD_DATA, exc.message) from None
    card.ram.session = session
    card.ram.session_no += 1
    return response


def last_error(card: Card, command: CommandApdu) -> bytes:
    """GET DATA "last error": why the last refused command was refused
    (:class:`~safescan.carrier.messages.LastError`). A refusal answered inside a secure
    session is only readable inside that session, one answered in clear only in clear;
    otherwise (or if the last command succeeded) ``6A88``.
    """
    no_data(command)
    last = card.ram.last_error
    if last is None or last.session != card.ram.level:
        raise refuse(
            StatusWord.REFERENCED_DATA_NOT_FOUND, Reason.UNKNOWN_OBJECT, "no error recorded"
        )
    return LastError(
        sw=last.sw, ins=last.ins, reason=int(last.reason), message=last.message
    ).to_cbor()
