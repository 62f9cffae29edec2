"""The customer's statement (balance, payments, refunds), read with the key carrier: only the
carrier of that customer can read it, and only the wallet that asked can open the answer.

Attacks run against the real institution and real carrier processes on 127.0.0.1
(protocol: safescan.api.account).
"""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.api import account
from safescan.api.errors import Forbidden, InvalidRequest, Unauthenticated
from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Ins, StatusWord
from safescan.carrier.channel import KeyKind, transcript
from safescan.carrier.client import EXTENDED_NE, CarrierClient
from safescan.code import LineItem
from safescan.merchant.client import MerchantApi
from safescan.wallet.account import read_statement
from safescan.wallet.flow import Wallet
from tests.e2e.conftest import PIN, Party, World


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Asker:
    """A wallet-like client that can be made to misbehave."""

    def __init__(self, world: World) -> None:
        self.http = httpx.Client(base_url=world.base_url, timeout=10, verify=world.verify)
        self.key = X25519PrivateKey.generate()

    @property
    def wallet_key(self) -> bytes:
        return self.key.public_key().public_bytes_raw()

    def challenge(self, serial: int, wallet_key: bytes | None = None) -> tuple[bytes, int]:
        r = self.http.post(
            "/v1/account/challenge",
            json={"carrier_serial": serial, "wallet_key": b64(wallet_key or self.wallet_key)},
        )
        assert r.status_code == 200, r.text
        doc = r.json()
        return base64.b64decode(doc["challenge"]), int(doc["expires_at"])

    def statement(
        self, serial: int, expires_at: int, response: bytes, wallet_key: bytes | None = None
    ) -> httpx.Response:
        return self.http.post(
            "/v1/account",
            json={
                "carrier_serial": serial,
                "wallet_key": b64(wallet_key or self.wallet_key),
                "expires_at": expires_at,
                "response": b64(response),
            },
        )

    def open(self, r: httpx.Response, serial: int, expires_at: int) -> dict[str, Any]:
        assert r.status_code == 200, r.text
        return account.open_statement(
            base64.b64decode(r.json()["sealed"]), self.key, serial, expires_at
        )


def answer(carrier_url: str, challenge: bytes) -> bytes:
    """Have a carrier answer ``challenge`` (an OPEN SECURE CHANNEL in clear)."""
    with CarrierClient.connect(carrier_url) as carrier:
        carrier.select()
        resp = carrier.transmit(
            CommandApdu(
                rom.CLA_PROPRIETARY, Ins.OPEN_SECURE_CHANNEL, 0, 0, challenge, ne=EXTENDED_NE
            )
        )
    assert resp.sw == StatusWord.SUCCESS
    return resp.data


def serial_of(party: Party) -> int:
    with Wallet.load(party.wallet_dir) as wallet:
        return wallet.config.carrier_serial


def error_code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


_names = itertools.count()


@pytest.fixture
def two(world: World, fresh_party: Callable[[str], Party]) -> tuple[Party, Party]:
    n = next(_names)
    sam, tom = fresh_party(f"sam{n}"), fresh_party(f"tom{n}")
    with MerchantApi(world.pos) as api:
        order = api.create_order([LineItem("Bread", 1, 320)], currency="EUR")
    with Wallet.load(sam.wallet_dir) as wallet, wallet.open(order.code) as offer:
        offer.pay(PIN)
    return sam, tom


def test_transcript_matches_the_carrier_channel() -> None:
    cert, challenge, card = os.urandom(200), os.urandom(32), os.urandom(32)
    assert account.presence_transcript(cert, challenge, card) == transcript(
        KeyKind.CERTIFIED, cert, challenge, card
    )
    assert account.CARRIER_AID == rom.AID and account.KIND_CERTIFIED == KeyKind.CERTIFIED


def test_own_carrier_reads_own_statement_only(world: World, two: tuple[Party, Party]) -> None:
    sam, tom = two
    with Wallet.load(sam.wallet_dir) as wallet:
        doc = read_statement(wallet)
    assert doc["customer_id"] == sam.customer_id
    assert doc["balances"][0]["display"] == "496.80 EUR"
    assert [p["display"] for p in doc["payments"]] == ["3.20 EUR"]
    with Wallet.load(tom.wallet_dir) as wallet:
        other = read_statement(wallet)
    assert other["customer_id"] == tom.customer_id and other["payments"] == []


@pytest.mark.parametrize("how", ["answers_for_the_other_serial", "submits_own_answer_as_other"])
def test_another_carrier_cannot_read_the_statement(
    world: World, two: tuple[Party, Party], how: str
) -> None:
    sam, tom = two
    victim, attacker = serial_of(sam), serial_of(tom)
    asker = Asker(world)
    if how == "answers_for_the_other_serial":
        challenge, expires_at = asker.challenge(victim)
        response = answer(tom.carrier_url, challenge)  # Tom's carrier signs Sam's challenge
    else:
        challenge, expires_at = asker.challenge(attacker)
        response = answer(tom.carrier_url, challenge)  # valid for Tom, presented as Sam
    r = asker.statement(victim, expires_at, response)
    assert r.status_code == 401 and error_code(r) == Unauthenticated.code, r.text
    assert "sealed" not in r.text


def test_captured_answer_is_useless_to_an_eavesdropper(
    world: World, two: tuple[Party, Party]
) -> None:
    sam, _ = two
    serial = serial_of(sam)
    wallet = Asker(world)
    challenge, expires_at = wallet.challenge(serial)
    response = answer(sam.carrier_url, challenge)  # seen on the carrier link
    first = wallet.statement(serial, expires_at, response)
    assert wallet.open(first, serial, expires_at)["customer_id"] == sam.customer_id
    spy = Asker(world)
    # replayed as is: the answer is sealed to the wallet's key, not the spy's
    replay = spy.statement(serial, expires_at, response, wallet_key=wallet.wallet_key)
    assert replay.status_code == 200
    with pytest.raises(account.StatementUnreadable):
        spy.open(replay, serial, expires_at)
    # replayed with the spy's own key: the challenge was for the wallet's key
    swapped = spy.statement(serial, expires_at, response)
    assert swapped.status_code == 401 and error_code(swapped) == Unauthenticated.code
    # the sealed answer altered in transit does not open
    sealed = bytearray(base64.b64decode(first.json()["sealed"]))
    sealed[-1] ^= 1
    with pytest.raises(account.StatementUnreadable):
        account.open_statement(bytes(sealed), wallet.key, serial, expires_at)
    with pytest.raises(account.StatementUnreadable):  # bound to the serial and the expiry
        wallet.open(first, serial + 1, expires_at)


@pytest.mark.parametrize(
    "tamper",
    [
        "card_key",
        "kind",
        "signature",
        "short",
        "long",
        "zeros",
        "expiry_moved",
        "expired",
        "far_future",
        "forged_challenge",
    ],
)
def test_tampered_or_forged_answers_are_refused(
    world: World, two: tuple[Party, Party], tamper: str
) -> None:
    sam, _ = two
    serial = serial_of(sam)
    asker = Asker(world)
    challenge, expires_at = asker.challenge(serial)
    if tamper == "forged_challenge":  # a challenge the institution never issued
        challenge = os.urandom(32)
    response = bytearray(answer(sam.carrier_url, challenge))
    if tamper == "card_key":
        response[0] ^= 1
    elif tamper == "kind":
        response[32] = KeyKind.ATTESTATION
    elif tamper == "signature":
        response[-1] ^= 0x80
    elif tamper == "short":
        del response[-1]
    elif tamper == "long":
        response += b"\0"
    elif tamper == "zeros":
        response = bytearray(len(response))
    elif tamper == "expiry_moved":
        expires_at += 60
    elif tamper == "expired":
        expires_at -= 10 * account.CHALLENGE_TTL
    elif tamper == "far_future":
        expires_at += 10 * account.CHALLENGE_TTL
    r = asker.statement(serial, expires_at, bytes(response))
    assert r.status_code == 401 and error_code(r) == Unauthenticated.code, (tamper, r.text)


def test_revoked_and_unknown_carriers_are_refused(
    world: World, fresh_party: Callable[[str], Party]
) -> None:
    uma = fresh_party(f"uma{next(_names)}")
    serial = serial_of(uma)
    asker = Asker(world)
    challenge, expires_at = asker.challenge(serial)
    response = answer(uma.carrier_url, challenge)
    assert world.stack.need_admin().carriers.revoke(serial).status == "revoked"
    r = asker.statement(serial, expires_at, response)
    assert r.status_code == 403 and error_code(r) == Forbidden.code
    unknown = 2**31 - 2
    challenge, expires_at = asker.challenge(unknown)
    r = asker.statement(unknown, expires_at, response)
    assert r.status_code == 401 and error_code(r) == Unauthenticated.code


@pytest.mark.parametrize(
    "body",
    [
        {"carrier_serial": "1", "wallet_key": b64(bytes(32))},
        {"carrier_serial": True, "wallet_key": b64(bytes(32))},
        {"carrier_serial": 1.0, "wallet_key": b64(bytes(32))},
        {"carrier_serial": 0, "wallet_key": b64(bytes(32))},
        {"carrier_serial": 1, "wallet_key": b64(bytes(31))},
        {"carrier_serial": 1, "wallet_key": b64(bytes(33))},
        {"carrier_serial": 1, "wallet_key": "not base64 at all, not at all!!!!!!!!!!!"},
        {"carrier_serial": 1},
        {"carrier_serial": 1, "wallet_key": b64(bytes(32)), "extra": 1},
    ],
)
def test_malformed_challenge_requests_are_refused(world: World, body: dict[str, Any]) -> None:
    r = httpx.post(
        world.base_url + "/v1/account/challenge", json=body, timeout=10, verify=world.verify
    )
    assert r.status_code == 400 and error_code(r) == InvalidRequest.code, r.text
