"""Orders precreated in bulk (``order.create_batch``, one audit entry for the whole batch) and
then paid: the audit must still recognise them as the batch's and check them against it. Found
by the HA cluster's failover test, which pays precreated orders: every paid order of a batch was
reported as "born paid" with the wrong creation time (and the whole batch with it).

Two batches of one merchant in the same second (populate makes one). Attacks on a paid and an
unpaid batch order: its creation time moved (to the payment's time,
or earlier), its total or its expiry changed; each must still be found."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from safescan.code.payment import LineItem
from safescan.institution.auditing import run_audit
from safescan.institution.db import Database, normalize_url
from safescan.institution.domain.results import PrecreatedOrder
from tests.faults.populate import Populated, pay, populate


@pytest.fixture
def paid_batch() -> Iterator[tuple[Populated, list[PrecreatedOrder]]]:
    with tempfile.TemporaryDirectory(prefix="safescan-batch-") as d:
        p = populate(f"sqlite:///{Path(d) / 'db.sqlite'}", Path(d) / "keys", payments=4)
        m0 = p.merchants[0]
        batch = p.inst.orders.precreate(
            m0, [([LineItem("Tea", 1, 250 + k)], "EUR") for k in range(4)], 600
        )
        p.clock.now += 5  # paid later than created
        for o in batch[:2]:
            pay(p, 0, o.code, o.total)
        p.close()
        yield p, batch


def _audit(p: Populated) -> list[str]:
    return list(run_audit(normalize_url(p.db_url), storage_checks=False).problems)


def _change(p: Populated, sql: str, **params: object) -> None:
    db = Database(p.db_url)
    try:
        with db.engine.begin() as conn:
            assert conn.execute(text(sql), params).rowcount == 1
    finally:
        db.dispose()


def test_paid_orders_of_a_batch_pass_the_audit(
    paid_batch: tuple[Populated, list[PrecreatedOrder]],
) -> None:
    p, _ = paid_batch
    assert _audit(p) == []


@pytest.mark.parametrize("paid", [True, False], ids=["paid order", "unpaid order"])
@pytest.mark.parametrize(
    "change",
    [
        "UPDATE orders SET created_at = created_at + 5 WHERE order_id = :oid",
        "UPDATE orders SET created_at = created_at - 1 WHERE order_id = :oid",
        "UPDATE orders SET total = total + 1 WHERE order_id = :oid",
        "UPDATE orders SET expires_at = expires_at + 60 WHERE order_id = :oid",
    ],
    ids=["created at payment time", "created earlier", "total", "expiry"],
)
def test_a_changed_batch_order_is_found(
    paid_batch: tuple[Populated, list[PrecreatedOrder]], change: str, paid: bool
) -> None:
    p, batch = paid_batch
    victim = batch[0] if paid else batch[3]
    _change(p, change, oid=victim.order_id)
    assert _audit(p) != []
