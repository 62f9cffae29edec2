"""Attacks against the running system: every one refused, with its reason, before any question.

"Before any question" is structural here: :meth:`Wallet.open` raises instead of returning an
offer, so the wallet never gets to ask for confirmation or a PIN; the CLI test checks that no
offer is printed.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from safescan.carrier.apdu import Reason
from safescan.carrier.client import CarrierClient
from safescan.carrier.errors import CarrierBlocked, CodeRefused, WrongData
from safescan.client import AdminClient
from safescan.code import DynamicCode, Issuer, LineItem, Merchant, SigningKey, encode_text, seal
from safescan.code.certs import Certificate, TrustStore
from safescan.demo import (
    altered_code,
    brute_force_pin,
    forged_code,
    institution_refuses_resubmission,
    replay_authorization,
)
from safescan.institution.keystore import KeyStore
from safescan.merchant.client import MerchantApi
from safescan.wallet.errors import CodeRefusedByWallet, PaymentNotMade
from safescan.wallet.flow import Payment, Wallet
from tests.e2e.conftest import PIN, Party, World

ITEMS = [LineItem("Flat white", 2, 350), LineItem("Croissant", 1, 180)]


def _merchant(world: World) -> Merchant:
    return Merchant(world.pos.merchant_id, "Café Lumière", "Paris", "FR", 5814)


def _refusal(wallet: Wallet, text: str) -> CodeRefusedByWallet:
    with pytest.raises(CodeRefusedByWallet) as info:
        wallet.open(text).close()
    return info.value


def _paid_order(world: World) -> tuple[str, Payment]:
    with MerchantApi(world.pos) as api, Wallet.load(world.alice.wallet_dir) as wallet:
        order = api.create_order(ITEMS, currency="EUR")
        with wallet.open(order.code) as offer:
            return order.code, offer.pay(PIN)


def _balance(world: World, customer: str) -> int:
    with AdminClient(world.base_url, world.stack.admin_token) as admin:
        return admin.customers.balance(customer, "EUR")


def test_swapped_sticker_is_refused_as_not_signed_by_the_institution(world: World) -> None:
    with MerchantApi(world.pos) as api:
        genuine = api.create_order(ITEMS, currency="EUR")
    kid = next(iter(world.pos.trust.institution_keys))
    fake = forged_code(world.base_url, genuine, _merchant(world), kid)
    with Wallet.load(world.alice.wallet_dir) as wallet:
        exc = _refusal(wallet, fake)
    assert exc.reason == "signature_invalid"
    assert "sticker" in exc.message


def test_swapped_sticker_refused_by_the_cli_without_any_question(world: World) -> None:
    with MerchantApi(world.pos) as api:
        genuine = api.create_order(ITEMS, currency="EUR")
    kid = next(iter(world.pos.trust.institution_keys))
    fake = forged_code(world.base_url, genuine, _merchant(world), kid)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "safescan.wallet",
            "scan",
            fake,
            "--json",
            "--wallet-dir",
            str(world.alice.wallet_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        input="",
    )
    assert out.returncode == 4, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["result"] for x in lines] == ["refused"]  # no offer, no prompt
    assert lines[0]["reason"] == "signature_invalid"


def test_altered_amount_is_refused_as_altered(world: World) -> None:
    with MerchantApi(world.pos) as api:
        order = api.create_order(ITEMS, currency="EUR")
    with Wallet.load(world.alice.wallet_dir) as wallet:
        for offset in (40, 90, 150):
            exc = _refusal(wallet, altered_code(order.code, offset))
            assert exc.reason == "decryption_failed"


def test_replay_of_the_paid_code_is_refused_by_wallet_and_institution(world: World) -> None:
    code, paid = _paid_order(world)
    before = _balance(world, world.alice.customer_id)
    with Wallet.load(world.alice.wallet_dir) as wallet:
        exc = _refusal(wallet, code)
        assert exc.reason == "already_paid" and paid.receipt.payment_id in exc.message
        refused, reason = institution_refuses_resubmission(wallet, code, PIN)
    assert refused and reason.startswith("order_not_payable")
    assert _balance(world, world.alice.customer_id) == before


def test_replay_of_a_captured_authorization_is_refused(world: World) -> None:
    code, paid = _paid_order(world)
    before = _balance(world, world.alice.customer_id)
    refused, reason = replay_authorization(world.base_url, code, paid.authorization)
    assert refused, reason
    assert reason.split(":")[0] in ("order_not_payable", "counter_replay")
    assert _balance(world, world.alice.customer_id) == before


def test_expired_code_is_refused(world: World) -> None:
    keys = KeyStore(world.stack.keys_dir).load(world.stack.passphrase.encode())
    now = int(time.time())
    code = DynamicCode(
        merchant=_merchant(world),
        order_id="old-" + secrets.token_hex(4),
        items=tuple(ITEMS),
        total=880,
        currency=978,
        issued_at=now - 900,
        expires_at=now - 300,
        nonce=secrets.token_bytes(8),
    )
    text = encode_text(
        seal(code, Issuer.institution(keys.root, keys.root_kid), keys.scheme.current(now).public)
    )
    with Wallet.load(world.alice.wallet_dir) as wallet:
        exc = _refusal(wallet, text)
    assert exc.reason == "code_expired"


def test_code_of_a_revoked_merchant_certificate_is_refused(world: World) -> None:
    cfg = world.stack.onboard_merchant("Kiosk Nord", "Lille", config_name="kiosk.json")
    signing = SigningKey.generate()
    with MerchantApi(cfg) as api:
        cert = Certificate.from_bytes(api.certificates.create(signing.public_key.raw))
    keys = KeyStore(world.stack.keys_dir).load(world.stack.passphrase.encode())
    now = int(time.time())
    code = DynamicCode(
        merchant=Merchant(cfg.merchant_id, "Kiosk Nord", "Lille", "FR", 5814),
        order_id="k-" + secrets.token_hex(4),
        items=tuple(ITEMS),
        total=880,
        currency=978,
        issued_at=now,
        expires_at=now + 300,
        nonce=secrets.token_bytes(8),
    )
    text = encode_text(seal(code, Issuer.merchant(signing, cert), keys.scheme.current(now).public))
    with Wallet.load(world.alice.wallet_dir) as wallet:
        with wallet.open(text) as offer:  # valid until revoked
            assert offer.describe()["certificate_serial"] == cert.serial
        with AdminClient(world.base_url, world.stack.admin_token) as admin:
            admin.merchants.revoke(cfg.merchant_id)
        exc = _refusal(wallet, text)
        pinned = TrustStore(dict(wallet.config.trust.institution_keys))
    assert exc.reason in ("certificate_revoked", "merchant_revoked")
    # The wallet handed the newest revocation list to the carrier on the way: a modified
    # wallet that skips every check of its own still gets the code refused by the card.
    with CarrierClient.connect(world.alice.carrier_url) as card:
        assert card.get_info().revocations_sequence >= 1
        card.open_session(pinned)  # no revocation list on the host side
        with pytest.raises(CodeRefused) as refused:
            card.open_code(text)
    assert refused.value.reason == Reason.CERTIFICATE_REVOKED


def test_pin_brute_force_destroys_the_carrier(
    world: World, fresh_party: Callable[[str], Party]
) -> None:
    bob: Party = fresh_party("bob")
    with Wallet.load(bob.wallet_dir) as wallet:
        trust, _ = wallet.trust()
        said: list[str] = []
        refused, reason = brute_force_pin(bob.carrier_url, trust, real_pin=PIN, say=said.append)
        assert refused, reason
        assert "destroyed" in reason
        assert any("power cycle" in s for s in said)  # 3 wrong PINs per power cycle
        with pytest.raises(CarrierBlocked), CarrierClient.connect(bob.carrier_url) as c:
            c.open_session(trust)
        with MerchantApi(world.pos) as api:
            order = api.create_order(ITEMS, currency="EUR")
        with pytest.raises(PaymentNotMade) as info:
            wallet.open(order.code)
        assert info.value.cause == "carrier_blocked"
    assert _balance(world, bob.customer_id) == 50_000


def test_a_carrier_that_keeps_an_older_revocation_list_is_reported_to_the_customer(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the card refuses the newest list (say it is longer than the card can keep), the
    offer says so, and merchant-signed codes are refused until it can (fail closed, issue #13
    item 8); the wallet's own check of the newest list still applies."""
    real_open = CarrierClient.open_session

    def card_with_an_older_list(self: CarrierClient, *args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(real_open(self, *args, **kwargs), revocations_sequence=-1)

    def card_refuses(self: CarrierClient, crl: bytes) -> int:
        raise WrongData("the card keeps at most 1024 revoked serials", sw=0x6A80, reason=0x02)

    monkeypatch.setattr(CarrierClient, "open_session", card_with_an_older_list)
    monkeypatch.setattr(CarrierClient, "update_revocations", card_refuses)
    with MerchantApi(world.pos) as api:
        order = api.create_order([LineItem("Tea", 1, 200)], currency="EUR")
    with Wallet.load(world.alice.wallet_dir) as wallet, wallet.open(order.code) as offer:
        warnings = offer.describe()["warnings"]
    assert any(
        "could not take the newest revocation list" in w and "1024" in w for w in warnings
    ), warnings
    assert any("merchant-signed codes are refused" in w for w in warnings), warnings


def test_a_revocation_list_longer_than_the_card_keeps_is_not_sent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list the card would refuse for its length is not sent at every session (5 KB and
    more, which on the audio link costs seconds); the offer says the card keeps its own."""
    import safescan.carrier.rom as rom

    real_open = CarrierClient.open_session

    def card_with_an_older_list(self: CarrierClient, *args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(real_open(self, *args, **kwargs), revocations_sequence=-1)

    def must_not_send(self: CarrierClient, crl: bytes) -> int:
        raise AssertionError("a list the card cannot keep was sent")

    monkeypatch.setattr(CarrierClient, "open_session", card_with_an_older_list)
    monkeypatch.setattr(CarrierClient, "update_revocations", must_not_send)
    monkeypatch.setattr(rom, "MAX_REVOKED_SERIALS", -1)  # any list is "too long"
    with MerchantApi(world.pos) as api:
        order = api.create_order([LineItem("Tea", 1, 200)], currency="EUR")
    with Wallet.load(world.alice.wallet_dir) as wallet, wallet.open(order.code) as offer:
        warnings = offer.describe()["warnings"]
    assert any("more than the -1 entries it can keep" in w for w in warnings), warnings
