"""The POS's copy of an order only moves forward (the refund flake of
``tests/e2e/test_backoffice.py::test_refunds_beyond_what_was_paid_are_refused``).

What the institution says about an order reaches the POS by ways that race: a refund's own
answer, the signed event stream (delivered late, or again after a reconnect), the order list
read on reconnecting and by the back office (read before a refund, stored after it). Before,
the journal's ``update`` and the web POS's shown orders were last-writer-wins: the second
refund's event (PARTIALLY_REFUNDED, 8.00) handled after the third refund's answer (REFUNDED,
10.00) put the row back to 8.00, and the back office offered "at most 2.00" more. Attacks here:
apply a stale snapshot after a fresh one, replay old events, deliver a life's snapshots in
every order. No server, no sleep: a journal in a temporary file and stubs of the institution.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from safescan.api.states import LATER_STATES, OrderState, later_order_state
from safescan.client.answers import OrderView as InstitutionOrder
from safescan.client.answers import RefundMade
from safescan.client.events import VerifiedEvent
from safescan.code.payment import LineItem
from safescan.merchant import bopages, posorders
from safescan.merchant.client import Order
from safescan.merchant.journal import Journal
from safescan.merchant.webparts import OrderView, PosState, RefundOffer

MID = "M0000000042"
ITEM = LineItem("Soup", 1, 1000)
# one paid order's life as the institution tells it, oldest first
LIFE = [
    ("CREATED", 0),
    ("PAID", 0),
    ("PARTIALLY_REFUNDED", 400),
    ("PARTIALLY_REFUNDED", 800),
    ("REFUNDED", 1000),
]


@pytest.fixture
def journal(tmp_path: Path) -> Any:
    j = Journal(tmp_path / "journal.sqlite3")
    try:
        yield j
    finally:
        j.close()


def _order(oid: str) -> Order:
    return Order(oid, MID, "code", ITEM.amount, 978, 2**40, 10, (ITEM,))


def _institution(oid: str, state: str, refunded: int) -> InstitutionOrder:
    """The order as ``GET /v1/merchant/orders`` lists it."""
    paid = state != "CREATED"
    return InstitutionOrder.from_json(
        {
            "order_id": oid,
            "merchant_id": MID,
            "kind": "dynamic",
            "state": state,
            "reference": None,
            "currency": 978,
            "total": 1000,
            "items": [["Soup", 1, 1000]],
            "created_at": 1_700_000_000,
            "expires_at": 1_700_000_600,
            "paid_at": 1_700_000_100 if paid else None,
            "paid_amount": 1000 if paid else 0,
            "refunded_amount": refunded,
            "payment_id": "pay_1" if paid else None,
        }
    )


def _refund_data(oid: str, n: int, state: str, refunded: int) -> dict[str, Any]:
    return {
        "refund_id": f"rf_{n}",
        "payment_id": "pay_1",
        "order_id": oid,
        "amount": 400 if n < 3 else 200,
        "currency": 978,
        "order_state": state,
        "refunded_amount": refunded,
    }


def _row(journal: Journal, oid: str) -> tuple[str, int]:
    row = journal.get(oid)
    assert row is not None
    return str(row["state"]), int(row["refunded"])


# --- the flake, deterministically --------------------------------------------------------------


class _Refunds:
    def __init__(self, answer: RefundMade) -> None:
        self.answer = answer

    def create(self, *_args: Any, **_kw: Any) -> RefundMade:
        return self.answer


class _Orders:
    def __init__(self, snapshot: InstitutionOrder) -> None:
        self.snapshot = snapshot

    def get(self, _oid: str) -> InstitutionOrder:
        return self.snapshot


def test_a_late_refund_event_never_undoes_a_newer_refund(journal: Journal) -> None:
    oid = "ORD-FLAKE"
    journal.add(_order(oid))
    journal.update(oid, _institution(oid, "PARTIALLY_REFUNDED", 800).to_json())
    third = RefundMade.from_json(
        {
            **_refund_data(oid, 3, "REFUNDED", 1000),
            "status": "succeeded",
            "created_at": 1_700_000_300,
        }
    )
    api = SimpleNamespace(
        refunds=_Refunds(third), orders=_Orders(_institution(oid, "PARTIALLY_REFUNDED", 800))
    )
    state = PosState(SimpleNamespace(), api, journal, SimpleNamespace(), SimpleNamespace())  # type: ignore[arg-type]
    v = OrderView(_order(oid), "checkout", "PARTIALLY_REFUNDED", {"amount": 1000}, 800)
    state.orders[oid] = v
    shown: asyncio.Queue[OrderView] = asyncio.Queue()
    state.listeners[oid] = {shown}
    state.offers["rfc_3"] = RefundOffer(oid, 200, None, "sid", float("inf"), "ann")

    async def run() -> None:
        # the third refund: its answer is stored before the back office redirects
        await posorders.confirm_refund(state, oid, "rfc_3", "sid")
        assert _row(journal, oid) == ("REFUNDED", 1000)
        assert (v.state, v.refunded) == ("REFUNDED", 1000) and shown.qsize() == 1
        # then the second refund's event, delivered late (and again: a replay after a
        # reconnect), and the order list read before the third refund, stored after it
        late = VerifiedEvent(
            7, "refund.succeeded", "evt_2", 0, _refund_data(oid, 2, "PARTIALLY_REFUNDED", 800)
        )
        await posorders.handle_event(state, late)
        await posorders.handle_event(state, late)
        await posorders.apply(state, _institution(oid, "PARTIALLY_REFUNDED", 800))
        await posorders.apply(state, _institution(oid, "PAID", 0))

    asyncio.run(run())
    assert _row(journal, oid) == ("REFUNDED", 1000)
    assert (v.state, v.refunded) == ("REFUNDED", 1000)
    assert shown.qsize() == 1  # nothing older was shown to the staff's page
    assert v.version == 1  # one change published: the page keeps the newest version it got
    # the back office's order page (its load reads this row): no refund form, nothing "left"
    row = journal.get(oid)
    assert row is not None
    page = bopages.order_body(row, [], csrf="x")
    assert "refund-form" not in page and "can be refunded" not in page


# --- the journal row: every delivery order ends at the newest ----------------------------------


def test_the_row_only_moves_forward_whatever_order_the_snapshots_arrive_in(
    journal: Journal,
) -> None:
    rank = {snap: i for i, snap in enumerate(LIFE)}
    for n, deliveries in enumerate(itertools.permutations(LIFE)):
        oid = f"ORD-{n:03d}"
        journal.add(_order(oid))
        newest = LIFE[0]
        for snap in deliveries:
            # each delivered twice (a replay); by the order list or by the event stream
            for _ in range(2):
                if n % 2:
                    journal.refresh_from(_institution(oid, *snap))
                else:
                    journal.update(oid, {"state": snap[0], "refunded_amount": snap[1]})
            newest = max(newest, snap, key=rank.__getitem__)
            # the row is the newest snapshot seen so far (a state never goes back, the
            # refunded amount never down)
            assert _row(journal, oid) == newest, (deliveries, snap)
        assert _row(journal, oid) == ("REFUNDED", 1000)


@pytest.mark.parametrize(
    ("held", "stale"),
    [
        ("PAID", "CREATED"),
        ("PARTIALLY_REFUNDED", "PAID"),
        ("REFUNDED", "PAID"),
        ("REFUNDED", "PARTIALLY_REFUNDED"),
        ("CLOSED", "CREATED"),
        ("CLOSED", "PAID"),  # final: a sibling never replaces it
        ("EXPIRED", "CREATED"),
        ("EXPIRED", "PAID"),
        ("PAID", "EXPIRED"),
        ("PAID", "CLOSED"),
    ],
)
def test_a_state_never_goes_back_and_final_states_stay(
    journal: Journal, held: str, stale: str
) -> None:
    oid = "ORD-1"
    journal.add(_order(oid))
    journal.update(oid, {"state": held})
    assert _row(journal, oid)[0] == held
    journal.update(oid, {"state": stale, "refunded_amount": 0})
    assert _row(journal, oid)[0] == held


def test_what_is_not_said_or_not_a_state_changes_nothing(journal: Journal) -> None:
    oid = "ORD-1"
    journal.add(_order(oid))
    journal.update(oid, {"state": "PARTIALLY_REFUNDED", "refunded_amount": 300})
    for doc in (
        {},
        {"state": None, "refunded_amount": None},
        {"state": "paid; DROP TABLE orders", "refunded_amount": "1000"},
        {"state": "BOGUS", "refunded_amount": -5},
    ):
        journal.update(oid, doc)
        assert _row(journal, oid) == ("PARTIALLY_REFUNDED", 300)
    journal.update(oid, {"state": "REFUNDED", "refunded_amount": 1000})
    assert _row(journal, oid) == ("REFUNDED", 1000)


def test_the_sql_and_the_shown_pages_follow_the_one_table(journal: Journal) -> None:
    """The journal's SQL and :func:`later_order_state` (the web POS's pages) agree on every
    pair of states, and both are :data:`LATER_STATES` (built from it, never restated)."""
    words = [*(str(s) for s in OrderState), "BOGUS"]
    for n, (held, seen) in enumerate(itertools.product(words, words)):
        oid = f"ORD-{n:03d}"
        journal.add(_order(oid))
        # a row holding a word that is no state (written by hand) takes any state
        with journal._lock, journal.db:
            journal.db.execute("UPDATE orders SET state = ? WHERE order_id = ?", (held, oid))
        journal.update(oid, {"state": seen})
        expected = later_order_state(held, seen)
        assert _row(journal, oid)[0] == expected, (held, seen)
        if held in LATER_STATES and seen in LATER_STATES:
            assert (expected != held) == (OrderState(seen) in LATER_STATES[OrderState(held)])
    assert later_order_state("PAID", None) == "PAID"


# --- the payment's columns are set once (payment_id, paid_at, payer, paid_amount, receipt) -----


def _paid(oid: str, n: int) -> dict[str, Any]:
    """What a delivery says about payment ``n`` of the order (as mark_paid stores a verified
    receipt's summary, or the order list's snapshot): two payments differ in every column."""
    paid_at, amount = 1_700_000_100 + 100 * (n - 1), 1000 - 100 * (n - 1)  # n=1: _institution's
    receipt = {"payment_id": f"pay_{n}", "amount": amount, "paid_at": paid_at}
    return {
        "state": "PAID",
        "payment_id": f"pay_{n}",
        "paid_at": paid_at,
        "payer_pseudonym": f"payer-{n}",
        "paid_amount": amount,
        "receipt": receipt,
    }


def _payment_columns(journal: Journal, oid: str) -> tuple[Any, ...]:
    row = journal.get(oid)
    assert row is not None
    return tuple(row[c] for c in ("payment_id", "paid_at", "payer", "paid_amount", "receipt"))


@pytest.mark.parametrize(
    "deliveries", sorted(set(itertools.permutations(["first", "other", "first", "refund"])))
)
def test_the_payment_columns_are_set_once_whatever_order_deliveries_arrive_in(
    journal: Journal, deliveries: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: deliveries about an order's payment replayed and reordered, one of them saying
    another payment (another payment id, time, payer, amount and receipt: a stale or wrong
    snapshot). Before: each column took the last non-empty value, so the row's payment,
    paid amount and receipt changed with the order of delivery (the state and refunded amount
    already only moved forward). Now the first delivery that says them sets them; a different
    later value is ignored with a warning naming the order and the column (no value logged);
    the refund still moves the row forward."""
    oid = "ORD-ONCE"
    journal.add(_order(oid))
    says = {
        "first": _paid(oid, 1),
        "other": _paid(oid, 2),
        "refund": {"state": "PARTIALLY_REFUNDED", "refunded_amount": 400},
    }
    caplog.set_level("WARNING", logger="safescan.merchant.journal")
    for name in deliveries:
        journal.update(oid, says[name])
    winner = next(n for n in deliveries if n != "refund")
    expected = _paid(oid, 1 if winner == "first" else 2)
    row = journal.get(oid)
    assert row is not None
    assert _payment_columns(journal, oid) == (
        expected["payment_id"],
        expected["paid_at"],
        expected["payer_pseudonym"],
        expected["paid_amount"],
        expected["receipt"],
    )
    assert (row["state"], row["refunded"]) == ("PARTIALLY_REFUNDED", 400)
    ignored = [r.getMessage() for r in caplog.records if "was ignored" in r.getMessage()]
    # every delivery of the other payment after the winner: its five columns refused, logged
    losers = sum(1 for n in deliveries if n not in ("refund", winner))
    assert len(ignored) == 5 * losers
    assert all(oid in m and "pay_" not in m and "payer-" not in m for m in ignored)


def test_the_same_payment_said_again_changes_nothing_and_logs_nothing(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    """The ordinary case: the receipt's summary, then the order list's snapshot of the same
    payment, then the event again: the row as after the first, no warning."""
    oid = "ORD-SAME"
    journal.add(_order(oid))
    caplog.set_level("WARNING", logger="safescan.merchant.journal")
    journal.update(oid, _paid(oid, 1))
    first = _payment_columns(journal, oid)
    journal.refresh_from(_institution(oid, "PAID", 0))
    journal.update(oid, _paid(oid, 1))
    journal.update(oid, {"state": "CREATED", "payment_id": None, "paid_at": None})
    assert _payment_columns(journal, oid)[:4] == first[:4]
    assert not [r for r in caplog.records if "was ignored" in r.getMessage()]
