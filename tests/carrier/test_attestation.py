"""Attestation on the card: the factory step (PUT DATA) and the statement GENERATE KEYS makes.

The institution's refusals of software keys are in tests/institution/test_attestation.py;
here: a chip without a manufacturer certificate generates no customer keys, the factory can
fuse only a certificate of the chip's own attestation key (once, while blank, in clear), and
the statement binds the device, its model, the challenge and both keys.
"""

from __future__ import annotations

import dataclasses

import pytest

from safescan.carrier.apdu import CommandApdu, Ins, Reason, StatusWord
from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.eeprom import Lifecycle, MemoryStorage
from safescan.carrier.errors import ConditionsNotSatisfied, SecurityStatusNotSatisfied, WrongData
from safescan.carrier.factory import Factory
from safescan.carrier.provision import personalize
from safescan.carrier.testing import LocalInstitution
from safescan.code import CertificateError, Role, SignatureInvalid, SigningKey
from safescan.code.attestation import (
    AttestationError,
    AttestationStatement,
    CarrierModel,
    device_subject,
    enrollment_challenge,
    issue_attestation_certificate,
)
from safescan.code.certs import TrustStore, issue_certificate

from .conftest import PIN, Clock, connect


def virgin(clock: Clock, model: int = 1) -> tuple[Card, CarrierClient]:
    card = Card(MemoryStorage(), clock=clock, model=model)
    card.power_on()
    return card, connect(card)


def test_a_chip_without_attestation_makes_no_customer_keys(clock: Clock) -> None:
    _, client = virgin(clock)
    info = client.get_info()
    assert info.attestation_certificate is None and info.model is CarrierModel.PLAIN
    client.open_session()
    with pytest.raises(ConditionsNotSatisfied) as exc:
        client.generate_keys()
    assert exc.value.reason == Reason.NOT_ATTESTED
    assert client.get_info().signing_key is None


def test_the_factory_fuses_only_this_chips_certificate(
    clock: Clock, institution: LocalInstitution
) -> None:
    card, client = virgin(clock, model=2)
    info = client.get_info()
    assert info.model is CarrierModel.DISPLAY and info.attestation_key is not None
    factory = institution.factory
    mine = factory.certify(info.device_id, CarrierModel.DISPLAY, info.attestation_key)
    other_key = SigningKey.generate().public_key
    wrong = {
        "another key": factory.certify(info.device_id, CarrierModel.DISPLAY, other_key),
        "another device": factory.certify(bytes(8), CarrierModel.DISPLAY, info.attestation_key),
        "another model": factory.certify(info.device_id, CarrierModel.PLAIN, info.attestation_key),
        "another role": issue_certificate(
            factory.key,
            factory.kid,
            serial=99,
            role=Role.CARRIER,
            subject=device_subject(info.device_id, CarrierModel.DISPLAY),
            public_key=info.attestation_key,
            not_before=0,
            not_after=2**40,
        ),
    }
    client.select()
    for name, cert in wrong.items():
        with pytest.raises(WrongData) as exc:
            client.put_attestation(cert.to_bytes())
        assert exc.value.reason == Reason.BAD_ATTESTATION, name
    for junk in (b"", b"\x00" * 50, mine.to_bytes()[:-1]):
        with pytest.raises(WrongData):
            client.put_attestation(junk)
    assert client.get_info().attestation_certificate is None
    # P1P2 other than the attestation object, and inside the secure channel: refused
    resp = client.transmit(CommandApdu(0x80, Ins.PUT_DATA, 1, 1, mine.to_bytes()))
    assert resp.sw == StatusWord.INCORRECT_P1P2
    client.open_session()
    with pytest.raises(ConditionsNotSatisfied):
        client._secure(Ins.PUT_DATA, mine.to_bytes(), p1=1, p2=2)
    client.put_attestation(mine.to_bytes())
    assert client.get_info().attestation_certificate == mine
    with pytest.raises(ConditionsNotSatisfied) as exc:
        client.put_attestation(mine.to_bytes())  # fused once
    assert exc.value.reason == Reason.ALREADY_ATTESTED
    with pytest.raises(ConditionsNotSatisfied):
        factory.attest(client)  # the factory sees it too
    assert card.image is not None and card.image.attestation_certificate == mine.to_bytes()


def test_the_statement_binds_device_model_challenge_and_both_keys(
    blank: CarrierClient, institution: LocalInstitution
) -> None:
    info = blank.open_session()
    challenge = enrollment_challenge("enr_token_1")
    keys = blank.generate_keys(challenge)
    statement = keys.statement
    assert statement.challenge == challenge and statement.device_id == info.device_id
    assert statement.certificate == blank.get_info().attestation_certificate
    assert keys.signing_public == blank.get_info().signing_key
    assert keys.transport_public == blank.get_info().transport_key
    statement.verify(institution.manufacturers, challenge=challenge, now=institution.now)
    assert AttestationStatement.from_bytes(statement.to_bytes()) == statement
    # every bound field matters
    other = SigningKey.generate().public_key
    for change in (
        {"challenge": enrollment_challenge("enr_token_2")},
        {"signing_public": other},
        {"transport_public": bytes(32)},
        {"device_id": bytes(8)},
        {"model": CarrierModel.DISPLAY},
    ):
        forged = dataclasses.replace(statement, **change)
        with pytest.raises((AttestationError, SignatureInvalid)):
            forged.verify(
                institution.manufacturers, challenge=forged.challenge, now=institution.now
            )
    with pytest.raises(AttestationError, match="another enrollment"):
        statement.verify(
            institution.manufacturers,
            challenge=enrollment_challenge("enr_token_2"),
            now=institution.now,
        )
    untrusted = TrustStore({institution.factory.kid: SigningKey.generate().public_key})
    with pytest.raises(CertificateError):
        statement.verify(untrusted, challenge=challenge, now=institution.now)


def test_generate_keys_needs_a_32_byte_challenge(blank: CarrierClient) -> None:
    blank.open_session()
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(Exception) as exc:
            blank._secure(Ins.GENERATE_KEYS, bad)
        assert getattr(exc.value, "sw", None) == StatusWord.WRONG_LENGTH


def test_a_second_factory_cannot_attest_and_the_image_keeps_the_model(
    clock: Clock, institution: LocalInstitution
) -> None:
    storage = MemoryStorage()
    card = Card(storage, clock=clock, model=2)
    card.power_on()
    client = connect(card)
    institution.manufacture(client)
    with pytest.raises(ConditionsNotSatisfied):
        Factory.generate(kid=9).attest(client)
    # the model is hardware: a later power-on with another model setting changes nothing
    again = Card(storage, clock=clock, model=1)
    again.power_on()
    assert again.model == 2 and connect(again).get_info().model is CarrierModel.DISPLAY
    personalize(connect(again), institution.make_bundle, PIN, 5)
    assert again.lifecycle is Lifecycle.PERSONALIZED
    with pytest.raises((ConditionsNotSatisfied, SecurityStatusNotSatisfied)):
        connect(again).put_attestation(b"\x00")


def test_attestation_certificate_names_device_and_model(
    institution: LocalInstitution,
) -> None:
    key = SigningKey.generate()
    cert = issue_attestation_certificate(
        institution.factory.key,
        institution.factory.kid,
        serial=1,
        device_id=bytes(range(8)),
        model=CarrierModel.PLAIN,
        attestation_key=key.public_key,
        not_before=0,
        not_after=100,
    )
    assert cert.role is Role.ATTESTATION and cert.subject == "device:0001020304050607:plain"
