"""Failures in the middle of a payment: no money moves, the error says so, nothing is recorded."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from safescan.client import AdminClient
from safescan.code import LineItem
from safescan.merchant.client import MerchantApi
from safescan.procs import free_port
from safescan.wallet.errors import PaymentNotMade
from safescan.wallet.flow import Wallet
from safescan.wallet.store import WalletConfig
from tests.e2e.conftest import FUNDS, PIN, Party, World

ITEMS = [LineItem("Flat white", 1, 350)]


def _balance(world: World, customer: str) -> int:
    with AdminClient(world.base_url, world.stack.admin_token) as admin:
        return admin.customers.balance(customer, "EUR")


def test_carrier_dies_mid_payment(world: World, fresh_party: Callable[[str], Party]) -> None:
    carol = fresh_party("carol")
    with MerchantApi(world.pos) as api, Wallet.load(carol.wallet_dir) as wallet:
        order = api.create_order(ITEMS, currency="EUR")
        offer = wallet.open(order.code)
        try:
            offer.verify_pin(PIN)
            carol.carrier.kill()  # pulled out between the PIN and the signature
            with pytest.raises(PaymentNotMade) as info:
                offer.pay(None)
        finally:
            offer.close()
        assert "no payment was made" in info.value.message
        assert info.value.cause in (
            "carrier_disconnected",
            "carrier_unavailable",
            "transport_error",
            "carrier_timeout",
        )
        assert api.orders.get(order.order_id).state == "CREATED"
        assert wallet.history.recent() == []
    assert _balance(world, carol.customer_id) == FUNDS


def test_institution_unreachable(
    world: World, fresh_party: Callable[[str], Party], tmp_path: Path
) -> None:
    dave = fresh_party("dave")
    offline = tmp_path / "wallet-offline"
    shutil.copytree(dave.wallet_dir, offline)
    cfg = WalletConfig.load(offline)
    cfg.institution_url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    cfg.save()
    with MerchantApi(world.pos) as api, Wallet.load(offline, retry_seconds=1) as wallet:
        order = api.create_order(ITEMS, currency="EUR")
        with wallet.open(order.code) as offer:  # the carrier works offline
            assert offer.describe()["total"] == 350
            with pytest.raises(PaymentNotMade) as info:
                offer.pay(PIN)
        assert info.value.cause == "institution_unreachable"
        assert "cannot be reached" in info.value.message
        assert "no payment was made" in info.value.message
        assert wallet.history.recent() == []
        assert api.orders.get(order.order_id).state == "CREATED"
    assert _balance(world, dave.customer_id) == FUNDS
    assert world.stack.audit()["ok"]
