"""Failures in the middle of a payment: no money moves, the error says so, nothing is recorded."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from safescan.client import AdminClient
from safescan.client.answers import PaymentMade
from safescan.code import LineItem
from safescan.merchant.client import MerchantApi
from safescan.procs import free_port
from safescan.wallet.errors import CodeRefusedByWallet, PaymentNotMade
from safescan.wallet.flow import Wallet
from safescan.wallet.store import PendingPayment, WalletConfig
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


def _hold(path: Path) -> sqlite3.Connection:
    """Another process's exclusive lock on the wallet's history: every write there fails
    (after the history's 5 s busy wait), as on a read-only or full disk."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def test_paid_but_the_history_cannot_be_written_says_paid_and_never_pays_twice(
    world: World, fresh_party: Callable[[str], Party], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The institution took the payment, then the wallet's history could not be written
    (redteam: the wallet raised "cannot write the payment history" instead of the outcome,
    and the customer, told of an error, would pay again): the answer is the verified payment
    with ``history_error`` apart; the code stays pending, so opening it again is refused
    before any PIN; once the history can be written the receipt is kept; money moved once."""
    erin = fresh_party("erin-history")  # "erin" is test_enroll.py's carrier (state files persist)
    with MerchantApi(world.pos) as api, Wallet.load(erin.wallet_dir) as wallet:
        order = api.create_order(ITEMS, currency="EUR")
        held: list[sqlite3.Connection] = []
        send = wallet.pay_authorization

        def send_then_lock_the_history(p: PendingPayment) -> PaymentMade:
            answer = send(p)  # the institution has it: the answer is a success
            held.append(_hold(wallet.config.history_path))
            return answer

        monkeypatch.setattr(wallet, "pay_authorization", send_then_lock_the_history)
        offer = wallet.open(order.code)
        try:
            paid = offer.pay(PIN)
        finally:
            offer.close()
            for conn in held:
                conn.close()
        assert paid.history_error is not None
        assert "do not pay this code again" in paid.history_error
        doc = paid.to_json()
        assert doc["history_saved"] is False and doc["receipt_verified"] is True
        assert doc["payment_id"] == api.orders.get(order.order_id).payment_id
        assert [p.order_id for p in wallet.history.pending()] == [order.order_id]
        with pytest.raises(CodeRefusedByWallet) as refused:  # no second payment
            wallet.open(order.code)
        assert refused.value.reason == "already_paid"
        assert wallet.history.pending() == []
        assert [r["order_id"] for r in wallet.history.recent()] == [order.order_id]
    assert _balance(world, erin.customer_id) == FUNDS - 350
    assert world.stack.audit()["ok"]


def test_a_history_that_cannot_be_written_before_sending_pays_nothing(
    world: World, fresh_party: Callable[[str], Party]
) -> None:
    """The history cannot record the payment before it is sent: ``payment_not_made`` saying
    it was not sent (before: a bare "cannot write the payment history"), nothing charged."""
    fay = fresh_party("fay")
    with MerchantApi(world.pos) as api, Wallet.load(fay.wallet_dir) as wallet:
        order = api.create_order(ITEMS, currency="EUR")
        offer = wallet.open(order.code)
        lock = _hold(wallet.config.history_path)
        try:
            with pytest.raises(PaymentNotMade) as info:
                offer.pay(PIN)
        finally:
            lock.close()
            offer.close()
        assert "no payment was made" in info.value.message
        assert api.orders.get(order.order_id).state == "CREATED"
        assert wallet.history.pending() == [] and wallet.history.recent() == []
    assert _balance(world, fay.customer_id) == FUNDS
