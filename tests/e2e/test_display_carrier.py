"""A display carrier end to end: what the customer approves is what the carrier showed.

A real carrier process with ``--model display``, enrolled through the real wallet and
institution (the attestation names the model). The customer is a thread that reads the
carrier's own screen through its control socket and presses OK only when it shows what the
customer meant to pay; the wallet may be lying about the code.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from safescan.carrier.client import CarrierClient
from safescan.carrier.control import default_control_path, send_control
from safescan.code import LineItem
from safescan.code.attestation import CarrierModel
from safescan.merchant.client import MerchantApi
from safescan.wallet.errors import PaymentNotMade
from safescan.wallet.flow import Wallet

from .conftest import FUNDS, PIN, Party, World, start_new_carrier
from .test_threats import balance, institution, order_state


@pytest.fixture(scope="module")
def dora(world: World) -> Iterator[Party]:
    """A customer whose carrier has its own screen and OK button."""
    stack = world.stack
    proc, url = start_new_carrier(stack, "carrier-dora", model="display")
    cid = stack.customer("Dora", fund=FUNDS)
    wallet_dir = stack.enroll_wallet(cid, url, name="wallet-dora")
    try:
        yield Party(cid, proc, url, wallet_dir)
    finally:
        proc.stop()


class Customer(threading.Thread):
    """Looks at the carrier's screen; presses OK only if it shows ``expect`` (merchant name,
    amount), else Cancel; ``press=None``: never touches the carrier."""

    def __init__(self, state: Path, expect: tuple[str, str] | None) -> None:
        super().__init__(daemon=True)
        self.ctl = default_control_path(state)
        self.expect = expect
        self.seen: dict[str, object] = {}
        self.pressed = ""

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            screen = json.loads(send_control(self.ctl, "SCREEN"))
            if screen.get("state") == "confirm":
                self.seen = screen
                if self.expect is None:
                    return
                name, amount = self.expect
                ok = screen.get("merchant") == name and screen.get("amount") == amount
                self.pressed = send_control(self.ctl, "PRESS OK" if ok else "PRESS CANCEL")
                return
            time.sleep(0.02)


def test_display_carrier_pays_what_its_screen_showed(world: World, dora: Party) -> None:
    with CarrierClient.connect(dora.carrier_url) as c:
        assert c.get_info().model is CarrierModel.DISPLAY
    state = world.stack.workdir / "carrier-dora.eeprom"
    with MerchantApi(world.pos) as api:
        order = api.create_order([LineItem("Tarte", 1, 1250)], currency="EUR")
    customer = Customer(state, ("Café Lumière", "12.50 EUR"))
    customer.start()
    with Wallet.load(dora.wallet_dir) as wallet, wallet.open(order.code) as offer:
        assert offer.describe()["carrier_display"] is True
        paid = offer.pay(PIN)
    customer.join()  # bounded by its own loop (60 s) and send_control's timeout
    assert customer.pressed == "approved" and paid.receipt.amount == 1250
    assert customer.seen["prompt"] == "Pay 12.50 EUR to Café Lumière (Paris)?"


def test_a_lying_wallet_gets_no_signature(world: World, dora: Party) -> None:
    """The phone shows the customer the café's 3.00 EUR; the code it hands the carrier is a
    fraudster's 300.00 EUR. The carrier's screen says so; the customer cancels."""
    state = world.stack.workdir / "carrier-dora.eeprom"
    with institution(world) as w:
        fraud = w.merchant("Fraud Corp")
        bait = fraud.order([("Gift card", 1, 30_000)])
        before = balance(world, dora.customer_id)
        customer = Customer(state, ("Café Lumière", "3.00 EUR"))  # what the phone claimed
        customer.start()
        with (
            Wallet.load(dora.wallet_dir) as wallet,
            wallet.open(bait["code"]) as offer,
            pytest.raises(PaymentNotMade) as info,
        ):
            offer.pay(PIN)
        customer.join()  # bounded by its own loop (60 s) and send_control's timeout
        assert customer.seen["merchant"] == "Fraud Corp"
        assert customer.seen["amount"] == "300.00 EUR"
        assert customer.pressed == "declined" and info.value.cause == "confirmation_declined"
        assert balance(world, dora.customer_id) == before
        r = fraud.request("GET", f"/v1/merchant/orders/{bait['order_id']}")
        assert r.json()["state"] == "CREATED"


def test_no_confirmation_no_payment(world: World, dora: Party) -> None:
    state = world.stack.workdir / "carrier-dora.eeprom"
    with MerchantApi(world.pos) as api:
        order = api.create_order([LineItem("Tarte", 1, 900)], currency="EUR")
    before = balance(world, dora.customer_id)
    customer = Customer(state, None)  # looks, never presses
    customer.start()
    with (
        Wallet.load(dora.wallet_dir) as wallet,
        wallet.open(order.code) as offer,
        pytest.raises(PaymentNotMade) as info,
    ):
        # the customer thread must see the prompt while it is up (until the wallet gives up
        # and the carrier powers off): 3 s, not 1, for a poll on a loaded machine to land in it
        offer.pay(PIN, confirm_timeout=3.0)
    customer.join()  # bounded by its own loop (60 s) and send_control's timeout
    assert customer.seen["state"] == "confirm" and info.value.cause == "confirmation_timeout"
    assert balance(world, dora.customer_id) == before
    with MerchantApi(world.pos) as api:
        assert order_state(api, order.order_id) == "CREATED"
