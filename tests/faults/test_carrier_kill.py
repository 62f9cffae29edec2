"""The key carrier killed while it signs, end to end through the wallet flow, again and again.

A real institution and a real carrier process (``safescan.demo.Stack``). Between the wallet and
the carrier sits a relay that, when the wallet's AUTHORIZE PAYMENT frame passes, delivers it
to the carrier and SIGKILLs the carrier a random moment later (or just before delivering it),
never letting an answer through: a carrier pulled out of the phone in the middle of signing.
The carrier is then restarted on the same EEPROM image. Each time:

* the wallet reports that no payment was made; the order is still payable and no money moved;
* the carrier comes back working (its image survived the kill) and its signature counter never
  goes back;
* the same order is then paid, with an authorization counter greater than every counter the
  carrier ever produced, so the counter never repeats; the institution has it as the last.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from safescan.carrier.apdu import Ins
from safescan.carrier.client import CarrierClient
from safescan.carrier.rom import CLA_SECURE
from safescan.carrier.testing import FrameRelay
from safescan.carrier.transport import parse_tcp_url
from safescan.carrier.transport.tcp import recv_frame, send_frame
from safescan.code import Authorization, LineItem
from safescan.demo import DEMO_PIN, Stack
from safescan.merchant.client import MerchantApi
from safescan.merchant.config import PosConfig
from safescan.procs import ManagedProcess
from safescan.wallet.errors import PaymentNotMade
from safescan.wallet.flow import Wallet
from safescan.wallet.store import WalletConfig
from tests.institution.harness import institution_run
from tests.institution.pg import free_port

CYCLES = 8
FUNDS = 100_000
ITEMS = [LineItem("Flat white", 1, 350)]


class KillingRelay(FrameRelay):
    """Relays the vpcd TCP link to ``target``; when armed, kills the carrier during AUTHORIZE.

    ``delay`` < 0: kill before the frame reaches the carrier; otherwise deliver it, wait
    ``delay`` seconds, kill. The answer, if any, is never relayed.
    """

    def __init__(self) -> None:
        self.victim: ManagedProcess | None = None
        self.delay: float | None = None  # None: disarmed
        self.fired = threading.Event()
        super().__init__(("127.0.0.1", free_port()))  # the target is set once the carrier runs

    def _relay(self, host: socket.socket, card: socket.socket) -> None:
        while True:
            frame = recv_frame(host)
            if frame is None:
                return
            armed = self.delay is not None and self.victim is not None
            authorize = len(frame) > 2 and frame[:2] == bytes((CLA_SECURE, Ins.AUTHORIZE_PAYMENT))
            if armed and authorize:
                assert self.victim is not None and self.delay is not None
                if self.delay >= 0:
                    send_frame(card, frame)
                    if self.delay:
                        self._stop.wait(self.delay)
                self.victim.kill()
                self.fired.set()
                return  # no answer reaches the wallet
            send_frame(card, frame)
            if len(frame) == 1 and frame[0] != 0x04:
                continue  # power controls other than GET ATR get no answer
            reply = recv_frame(card)
            if reply is None:
                return
            send_frame(host, reply)


@dataclass
class Setup:
    stack: Stack
    pos: PosConfig
    customer: str
    wallet_dir: Path
    carrier_name: str
    relay: KillingRelay


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    stack = Stack(tmp_path_factory.mktemp("carrier-kill"), run_cli=institution_run)
    relay = KillingRelay()
    try:
        stack.begin_institution_init()
        proc, url = stack.start_carrier("carrier-k")
        stack.start_institution()
        pos = stack.onboard_merchant()
        cid = stack.customer("Kay", fund=FUNDS)
        wallet_dir = stack.enroll_wallet(cid, url, name="wallet-k")
        relay.target = parse_tcp_url(url)
        relay.victim = proc
        cfg = WalletConfig.load(wallet_dir)
        cfg.carrier_url = relay.url
        cfg.save()
        yield Setup(stack, pos, cid, wallet_dir, "carrier-k", relay)
    finally:
        relay.close()
        stack.stop()


def _counter(url: str) -> int:
    with CarrierClient.connect(url) as c:
        return int(c.get_info().signature_counter)


@pytest.mark.slow
def test_carrier_killed_while_signing_moves_no_money_and_never_repeats_a_counter(
    setup: Setup,
) -> None:
    rng = random.Random()
    relay, stack = setup.relay, setup.stack
    admin = stack.need_admin()
    delays = [-1.0, 0.0, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.02]
    rng.shuffle(delays)
    seen_counters: list[int] = []
    spent = 0
    with MerchantApi(setup.pos) as api:
        for cycle in range(CYCLES):
            assert relay.victim is not None
            card_url = f"tcp://{relay.target[0]}:{relay.target[1]}"
            counter_before = _counter(card_url)
            order = api.create_order(ITEMS, currency="EUR")
            relay.fired.clear()
            relay.delay = delays[cycle % len(delays)]
            with Wallet.load(setup.wallet_dir) as wallet:
                with pytest.raises(PaymentNotMade) as info, wallet.open(order.code) as offer:
                    offer.pay(DEMO_PIN)
                assert "no payment was made" in info.value.message
                assert all(r["order_id"] != order.order_id for r in wallet.history.recent(100))
            assert relay.fired.is_set()
            relay.delay = None
            assert not relay.victim.alive()
            # nothing moved, the order is still payable
            assert api.orders.get(order.order_id).state == "CREATED"
            assert admin.customers.balance(setup.customer, "EUR") == FUNDS - spent
            # power the carrier up again on the same image
            proc, url = stack.start_carrier(setup.carrier_name)
            relay.victim, relay.target = proc, parse_tcp_url(url)
            after_restart = _counter(url)  # the image opens: the kill tore nothing
            assert after_restart in (counter_before, counter_before + 1)
            # the next payment works and uses a counter never used before
            with Wallet.load(setup.wallet_dir) as wallet, wallet.open(order.code) as offer:
                paid = offer.pay(DEMO_PIN)
            counter = Authorization.from_bytes(paid.authorization).counter
            assert counter > after_restart and counter > max(seen_counters, default=0)
            seen_counters.append(counter)
            spent += order.total
            assert api.orders.get(order.order_id).state == "PAID"
            assert admin.customers.balance(setup.customer, "EUR") == FUNDS - spent
    carriers = admin.customers.get(setup.customer).carriers
    assert [c.last_counter for c in carriers] == [seen_counters[-1]]
    assert len(set(seen_counters)) == CYCLES
    audit = stack.audit()
    assert audit["ok"], audit
