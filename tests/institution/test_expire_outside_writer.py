"""The maintenance round finds the orders due by a read outside the writer (domain.orders.
expire), then writes: an order the read saw as due but paid, closed or not yet due by the time
of the write is left exactly as it is (no state change, no audit entry, no event)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event, func, select

from safescan.institution.db import Database, migrate
from safescan.institution.domain.orders import Orders
from safescan.institution.keystore import KeyStore
from safescan.institution.models import AuditEntry, OrderRow
from safescan.institution.service import Institution
from tests.institution.harness import PASSPHRASE, init_db
from tests.institution.loadprep import make_payables


def test_a_stale_read_expires_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with tempfile.TemporaryDirectory(prefix="safescan-expire-") as d:
        db_url = f"sqlite:///{Path(d) / 'e.db'}"
        keys = Path(d) / "keys"
        init_db(db_url, keys)
        inst = Institution(Database(db_url), KeyStore(keys).load(PASSPHRASE.encode()))
        try:
            make_payables(inst, 1, 3, 1)  # three CREATED orders, none past its expiry

            def orders(c: Any) -> list[Any]:
                return list(c.execute(select(OrderRow.pk, OrderRow.state)).all())

            def audit_count(c: Any) -> int:
                return int(c.execute(select(func.count()).select_from(AuditEntry)).scalar())

            before = inst.db.read(orders)
            entries = inst.db.read(audit_count)
            assert before and all(state == "CREATED" for _, state in before)
            every = inst.db.read(
                lambda c: c.execute(
                    select(OrderRow.pk, OrderRow.merchant_id, OrderRow.order_id)
                ).all()
            )
            real_read = inst.db.read
            # the read says every order is due (as a read racing a payment or a clock would)
            monkeypatch.setattr(inst.db, "read", lambda fn: every)
            assert inst.orders.expire() == 0
            monkeypatch.setattr(inst.db, "read", real_read)
            assert inst.db.read(orders) == before
            assert inst.db.read(audit_count) == entries
        finally:
            inst.db.dispose()


def test_the_read_searches_the_open_orders_index_not_the_table(tmp_path: Path) -> None:
    """The maintenance round's read (migration 0015's partial index, its condition word for
    word): SQLite searches ``ix_orders_created_expires`` instead of scanning every order ever
    made. Fails without the index (the plan is then ``SCAN orders``)."""
    db = Database(f"sqlite:///{tmp_path / 'i.db'}")
    try:
        migrate(db.engine)
        seen: list[tuple[str, Any]] = []

        def capture(_c: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT") and "orders" in statement:
                seen.append((statement, params))

        event.listen(db.engine, "before_cursor_execute", capture)
        core = SimpleNamespace(now=lambda: 2_000_000_000, db=db)
        assert Orders(core).expire() == 0  # type: ignore[arg-type]  # nothing is due
        event.remove(db.engine, "before_cursor_execute", capture)
        assert len(seen) == 1
        statement, params = seen[0]
        with db.engine.connect() as c:
            plan = " ".join(
                str(row[-1]) for row in c.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            )
        assert "USING INDEX ix_orders_created_expires" in plan, plan
        assert "SCAN orders" not in plan, plan
    finally:
        db.dispose()
