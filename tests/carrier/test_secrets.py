"""Private keys never leave: every INS (0x00-0xFF), every class, every state, clear and secure."""

from __future__ import annotations

import os

import pytest

from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Ins, ResponseApdu
from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.eeprom import Lifecycle, MemoryStorage
from safescan.carrier.pin import pad_pin
from safescan.carrier.provision import personalize
from safescan.carrier.testing import LocalInstitution, leaks, secrets_of

from .conftest import PIN, Clock, connect

STATES = ["blank", "blank_with_keys", "personalized", "pin_verified_with_pending_code"]


def prepare(state: str, institution: LocalInstitution) -> tuple[Card, CarrierClient]:
    card = Card(MemoryStorage(), clock=Clock(institution.now))
    card.power_on()
    client = connect(card)
    institution.manufacture(client)
    if state == "blank":
        return card, client
    if state == "blank_with_keys":
        client.open_session()
        client.generate_keys()
        return card, client
    personalize(client, institution.make_bundle, PIN, 16)
    if not institution.epochs:
        institution.rotate()
    serial = client.get_info().carrier_serial
    assert serial is not None
    client.key_update(institution.key_update(serial, 0))  # epoch keys are secrets too
    if state == "pin_verified_with_pending_code":
        client.open_session(institution.trust)
        client.verify_pin(PIN)
        client.open_code(institution.dynamic_code())
    return card, client


def ensure_session(client: CarrierClient, card: Card, institution: LocalInstitution) -> None:
    if not client.has_session or card.ram.session is None:
        client.open_session(institution.trust)


@pytest.mark.parametrize("state", STATES)
def test_no_response_contains_private_key_bytes(state: str, institution: LocalInstitution) -> None:
    card, client = prepare(state, institution)
    secret_list = secrets_of(card)
    assert len(secret_list) >= (3 if state == "blank" else 5)
    payloads = [b"", os.urandom(32), pad_pin(PIN), rom.AID, os.urandom(300)]
    seen = 0
    for ins in range(256):
        for payload in payloads:
            for cla, p1, p2 in ((0x00, 4, 0), (0x80, 0, 0), (0x80, 4, 0x0C), (0x80, 1, 1)):
                if ins == Ins.SELECT:
                    client.select()
                raw = card.transmit(CommandApdu(cla, ins, p1, p2, payload, ne=256).to_bytes())
                assert not leaks(raw, secret_list), (hex(cla), hex(ins))
                seen += 1
            # inside the secure channel: the raw frame and the decrypted answer
            ensure_session(client, card, institution)
            session = client._session
            assert session is not None
            header = bytes((0x84, ins, 0, 0))
            frame = session.seal_command(header, payload)
            raw = card.transmit(CommandApdu(0x84, ins, 0, 0, frame, ne=65536).to_bytes())
            assert not leaks(raw, secret_list), hex(ins)
            out = ResponseApdu.from_bytes(raw)
            if out.ok:
                inner = session.open_response(header, out.data)
                assert not leaks(inner, secret_list), hex(ins)
            else:
                client.close_session()
            seen += 1
    assert card.lifecycle is not Lifecycle.DESTROYED
    assert seen == 256 * len(payloads) * 5
