"""GENERATE KEYS and PERSONALIZE: a BLANK card makes its keys and takes the institution's bundle."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import cbor2

from safescan.carrier import pin as pinmod
from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Reason, StatusWord
from safescan.carrier.eeprom import Lifecycle
from safescan.carrier.firmware.common import refuse
from safescan.carrier.messages import MalformedMessage, Personalize
from safescan.code.errors import SafescanError

if TYPE_CHECKING:
    from safescan.carrier.device import Card


def put_attestation(card: Card, command: CommandApdu) -> bytes:
    """PUT DATA (attestation certificate): the factory step after the chip made its attestation
    key. Taken once, while BLANK, and only a certificate of this chip's own attestation key,
    device id and model; the card cannot check the manufacturer's signature (the institution
    does, at enrollment), so a wrong one only makes the chip unsellable."""
    from safescan.code.attestation import CarrierModel, device_subject
    from safescan.code.certs import Certificate, Role

    image = card.image
    assert image is not None and card.keys.attestation is not None
    if image.attestation_certificate is not None:
        raise refuse(
            StatusWord.CONDITIONS_NOT_SATISFIED,
            Reason.ALREADY_ATTESTED,
            "the attestation certificate is already fused",
        )
    try:
        cert = Certificate.from_bytes(command.data)
    except SafescanError as exc:
        raise refuse(StatusWord.WRONG_DATA, Reason.BAD_ATTESTATION, exc.message) from None
    own = card.keys.attestation.public_key().public_bytes_raw()
    subject = device_subject(image.device_id, CarrierModel(image.model))
    if cert.role is not Role.ATTESTATION or cert.public_key.raw != own or cert.subject != subject:
        raise refuse(
            StatusWord.WRONG_DATA,
            Reason.BAD_ATTESTATION,
            f"not an attestation certificate for this chip ({subject})",
        )
    image.attestation_certificate = cert.to_bytes()
    card.eeprom.write(image)
    return b""


def generate_keys(card: Card, command: CommandApdu) -> bytes:
    """GENERATE KEYS: fresh signing and transport keys; answers the attestation statement
    (:class:`safescan.code.attestation.AttestationStatement`) over them and the host's
    32-byte challenge, signed by the attestation key."""
    from safescan.code.attestation import AttestationStatement, CarrierModel, statement_message
    from safescan.code.certs import Certificate
    from safescan.code.keys import VerifyKey

    image = card.image
    assert image is not None and card.keys.attestation is not None
    if len(command.data) != rom.CHALLENGE_BYTES:
        raise refuse(
            StatusWord.WRONG_LENGTH, Reason.BAD_LENGTH, "send the 32-byte enrollment challenge"
        )
    if image.attestation_certificate is None:
        raise refuse(
            StatusWord.CONDITIONS_NOT_SATISFIED,
            Reason.NOT_ATTESTED,
            "this chip has no manufacturer attestation certificate",
        )
    signing, transport = secrets.token_bytes(32), secrets.token_bytes(32)
    image.signing_seed = bytearray(signing)
    image.transport_seed = bytearray(transport)
    card.eeprom.write(image)
    card.load_keys()
    assert card.keys.signing is not None and card.keys.transport is not None
    signing_pub = card.keys.signing.public_key().public_bytes_raw()
    transport_pub = card.keys.transport.public_key().public_bytes_raw()
    model = CarrierModel(image.model)
    message = statement_message(image.device_id, model, command.data, signing_pub, transport_pub)
    statement = AttestationStatement(
        device_id=image.device_id,
        model=model,
        challenge=command.data,
        signing_public=VerifyKey(signing_pub),
        transport_public=transport_pub,
        signature=card.keys.attestation.sign(message),
        certificate=Certificate.from_bytes(image.attestation_certificate),
    )
    return statement.to_bytes()


def personalize(card: Card, command: CommandApdu) -> bytes:
    """PERSONALIZE: ``[bundle, PIN block, retry limit]``; the card is PERSONALIZED afterwards."""
    image = card.image
    assert image is not None
    if card.keys.signing is None or card.keys.transport is None:
        raise refuse(
            StatusWord.CONDITIONS_NOT_SATISFIED,
            Reason.KEYS_NOT_GENERATED,
            "generate the carrier's keys first",
        )
    try:
        value = cbor2.loads(command.data)
    except (cbor2.CBORError, ValueError, TypeError, RecursionError):
        raise refuse(StatusWord.WRONG_DATA, Reason.BAD_DATA, "not CBOR") from None
    try:
        request = Personalize.from_value(value)
    except MalformedMessage:
        raise refuse(
            StatusWord.WRONG_DATA, Reason.BAD_DATA, "expected [bundle, PIN block, retry limit]"
        ) from None
    bundle_bytes, block, limit = request.bundle, request.pin_block, request.retry_limit
    if not rom.RETRY_LIMIT_MIN <= limit <= rom.RETRY_LIMIT_MAX:
        raise refuse(
            StatusWord.WRONG_DATA,
            Reason.BAD_RETRY_LIMIT,
            f"the retry limit must be {rom.RETRY_LIMIT_MIN}-{rom.RETRY_LIMIT_MAX}",
        )
    try:
        pin_digits = pinmod.unpad_pin(block)
    except pinmod.PinFormatError as exc:
        raise refuse(StatusWord.WRONG_DATA, Reason.BAD_PIN_FORMAT, str(exc)) from None
    from safescan.code.certs import TrustStore
    from safescan.code.keys import VerifyKey
    from safescan.code.provisioning import open_bundle

    # A factory-installed anchor (BLANK image's institution keys) pins the institution.
    anchor = (
        TrustStore({kid: VerifyKey(raw) for kid, raw in image.institution_keys})
        if image.institution_keys
        else None
    )
    try:
        bundle = open_bundle(
            bundle_bytes,
            card.keys.transport,
            carrier_signing_key=VerifyKey(card.keys.signing.public_key().public_bytes_raw()),
            now=card.trusted_now(),
            trust_anchor=anchor,
        )
    except SafescanError as exc:
        raise refuse(StatusWord.WRONG_DATA, Reason.BAD_BUNDLE, exc.message) from None
    salt = secrets.token_bytes(16)
    image.carrier_serial = bundle.carrier_serial
    image.certificate = bundle.certificate.to_bytes()
    image.institution_keys = sorted((k, v.raw) for k, v in bundle.institution_keys.items())
    image.scheme_keys = [
        (k.kid, bytearray(k.private_bytes()), k.retire_at or 0) for k in bundle.scheme_keys
    ]
    image.pin_salt = salt
    image.pin_verifier = bytearray(pinmod.verifier(card.eeprom.pin_key, salt, pin_digits))
    image.retry_limit = image.retries_left = limit
    image.personalized_at = card.clock()
    card.advance_time_mark(bundle.issued_at)  # institution-signed, verified by open_bundle
    image.lifecycle = Lifecycle.PERSONALIZED
    card.eeprom.write(image)
    card.keys.extra.clear()
    # The attested session ends here; the next one is authenticated by the certified key.
    card.ram.close_after_response = True
    return b""
