"""SELECT, GET INFO and OPEN SECURE CHANNEL: who the card is, and the authenticated channel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cbor2

from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Reason, StatusWord
from safescan.carrier.channel import KeyKind, card_handshake
from safescan.carrier.eeprom import Lifecycle
from safescan.carrier.errors import ChannelError
from safescan.carrier.firmware.common import no_data, refuse

if TYPE_CHECKING:
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
    """GET INFO: the card's public information as a CBOR map (docs/carrier.md)."""
    no_data(command)
    image = card.image
    assert image is not None
    doc: dict[int, Any] = {
        1: list(rom.VERSION),
        2: int(image.lifecycle),
        3: image.device_id,
        9: image.signature_counter,
        12: rom.WRONG_PINS_PER_POWER_CYCLE - card.ram.wrong_pins,
        13: list(rom.ALGORITHMS),
        15: image.model,
    }
    if image.attestation_certificate is not None:
        doc[16] = image.attestation_certificate
    if card.keys.attestation is not None:
        doc[4] = card.keys.attestation.public_key().public_bytes_raw()
    if image.lifecycle is Lifecycle.PERSONALIZED:
        doc[5] = image.carrier_serial
        doc[6] = image.certificate
        doc[7] = image.retries_left
        doc[8] = image.retry_limit
        doc[14] = image.crl_sequence
        doc[17] = image.key_epoch
    if card.keys.signing is not None:
        doc[10] = card.keys.signing.public_key().public_bytes_raw()
    if card.keys.transport is not None:
        doc[11] = card.keys.transport.public_key().public_bytes_raw()
    return cbor2.dumps(doc, canonical=True)


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
    """GET DATA "last error": why the last refused command was refused.

    ``{1: SW, 2: INS, 3: reason, 4: message}`` (CBOR). A refusal answered inside a secure
    session is only readable inside that session, one answered in clear only in clear;
    otherwise (or if the last command succeeded) ``6A88``.
    """
    no_data(command)
    last = card.ram.last_error
    if last is None or last.session != card.ram.level:
        raise refuse(
            StatusWord.REFERENCED_DATA_NOT_FOUND, Reason.UNKNOWN_OBJECT, "no error recorded"
        )
    doc = {1: last.sw, 2: last.ins, 3: int(last.reason), 4: last.message}
    return cbor2.dumps(doc, canonical=True)
