"""The key carrier's lifecycle end to end: real carrier processes, wallets and institution.

* Only attested carriers enroll: a chip no factory attested cannot even make customer keys;
  one attested by a factory the institution does not trust is refused (403).
* Scheme-key epochs: a revoked carrier cannot open a code sealed in the next epoch (asked
  directly, past its wallet), while the others' wallets fetch and deliver the new epoch by
  themselves; a carrier that was offline for several epochs catches up in one update.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import httpx
import pytest

from safescan.carrier.client import CarrierClient
from safescan.carrier.errors import CodeRefused
from safescan.carrier.factory import Factory
from safescan.code import LineItem, decode_text
from safescan.code.certs import TrustStore
from safescan.code.keys import parse_pinned_keys
from safescan.code.keyupdate import epoch_kid
from safescan.merchant.client import MerchantApi
from safescan.wallet.errors import EnrollmentFailed
from safescan.wallet.flow import Wallet, enroll

from .conftest import PIN, Party, World

ITEMS = [LineItem("Espresso", 2, 250)]


def admin(world: World) -> httpx.Client:
    return httpx.Client(
        base_url=world.base_url,
        headers={"Authorization": f"Bearer {world.stack.admin_token}"},
        timeout=30,
        verify=world.verify,
    )


def rotate(world: World) -> int:
    with admin(world) as client:
        r = client.post("/v1/admin/scheme-epochs")
    assert r.status_code == 201, r.text
    return int(r.json()["epoch"])


def card_epoch(url: str) -> int:
    with CarrierClient.connect(url) as c:
        return c.get_info().key_epoch


def test_unattested_and_untrusted_chips_are_not_enrolled(world: World) -> None:
    stack = world.stack
    pins = TrustStore(parse_pinned_keys(stack.root_keys()))
    # a chip no factory attested (started by hand, skipping the factory step)
    proc = stack._spawn(
        "carrier-unattested",
        [
            sys.executable,
            "-m",
            "safescan.carrier.server",
            "--state",
            str(stack.workdir / "unattested.eeprom"),
            "--listen",
            "tcp://127.0.0.1:0",
        ],
        capture=True,
    )
    url = proc.ready_line("READY")
    cid = stack.customer("Una", fund=0)
    try:
        with pytest.raises(EnrollmentFailed, match="attestation certificate"):
            enroll(
                directory=stack.workdir / "wallet-una",
                institution_url=stack.base_url,
                carrier_url=url,
                token=stack.need_admin().enrollment_tokens.issue(cid).token,
                pin=PIN,
                trust=pins,
            )
        # attested by a factory the institution does not trust
        with CarrierClient.connect(url) as chip:
            Factory.generate(kid=31337).attest(chip)
        with pytest.raises(Exception, match="attestation") as exc:
            enroll(
                directory=stack.workdir / "wallet-una",
                institution_url=stack.base_url,
                carrier_url=url,
                token=stack.need_admin().enrollment_tokens.issue(cid).token,
                pin=PIN,
                trust=pins,
            )
        assert "not trusted" in str(exc.value)
        with CarrierClient.connect(url) as chip:
            assert chip.get_info().carrier_serial is None  # still blank: nothing was issued
    finally:
        proc.stop()


def test_a_revoked_carrier_cannot_open_a_code_of_the_next_epoch(
    world: World, fresh_party: Callable[[str], Party]
) -> None:
    victor = fresh_party("victor")  # his carrier is stolen
    with Wallet.load(victor.wallet_dir) as wallet:
        trust, _ = wallet.trust()  # (before the revocation: the thief's view)
        serial = wallet.config.carrier_serial
    with MerchantApi(world.pos) as api:
        before = api.create_order(ITEMS, currency="EUR")
        with admin(world) as client:
            r = client.post(f"/v1/admin/carriers/{serial}/revoke")
            assert r.status_code == 200, r.text
        epoch = rotate(world)  # cut it off now rather than at the next scheduled epoch
        after = api.create_order(ITEMS, currency="EUR")
    assert decode_text(after.code)[2] == epoch_kid(epoch)
    with CarrierClient.connect(victor.carrier_url) as thief:
        thief.open_session(trust)  # straight to the card, past any wallet check
        assert thief.open_code(before.code).total == 500  # older epochs: until they retire
        with pytest.raises(CodeRefused) as exc:
            thief.open_code(after.code)
        assert exc.value.error_code == "unknown_key_id"
    # the institution sends it nothing more, whatever epoch it claims
    with httpx.Client(base_url=world.base_url, timeout=30, verify=world.verify) as client:
        r = client.post(f"/v1/carriers/{serial}/key-update", json={"from_epoch": 0})
        assert r.status_code == 403 and r.json()["error"]["code"] == "carrier_revoked"
    # alice's wallet fetched and delivered the new epoch by itself: she pays the new code
    with Wallet.load(world.alice.wallet_dir) as wallet, wallet.open(after.code) as offer:
        paid = offer.pay(PIN)
    assert paid.receipt.amount == 500
    assert card_epoch(world.alice.carrier_url) == epoch


def test_a_carrier_offline_for_several_epochs_catches_up(
    world: World, fresh_party: Callable[[str], Party]
) -> None:
    olga = fresh_party("odile")  # a carrier name no other test uses (state files persist)
    start = card_epoch(olga.carrier_url)
    assert start >= 1  # the enrollment delivered the current epoch
    for _ in range(3):  # three epochs pass while olga's phone is offline
        rotate(world)
    with MerchantApi(world.pos) as api:
        order = api.create_order(ITEMS, currency="EUR")
    assert card_epoch(olga.carrier_url) == start  # the carrier itself has not moved
    with Wallet.load(olga.wallet_dir) as wallet, wallet.open(order.code) as offer:
        paid = offer.pay(PIN)  # connecting brought it up to date in one update
    assert paid.receipt.order_id == order.order_id
    assert card_epoch(olga.carrier_url) == start + 3
