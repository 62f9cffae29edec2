"""Ledger invariants, immutability, the hash-chained audit log, the audit command, settlement."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import DBAPIError

from safescan.api.errors import InsufficientFunds
from safescan.institution import audit, ledger
from safescan.institution.db import Database, migrate
from safescan.institution.models import Account, AuditEntry, Base, Transfer
from tests.institution.conftest import BACKENDS, make_db
from tests.institution.harness import World, institution_cli


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest) -> Iterator[Database]:
    with tempfile.TemporaryDirectory() as d:
        database = Database(make_db(request.param, request, Path(d)))
        migrate(database.engine)
        database.write(audit.create_heads)
        try:
            yield database
        finally:
            database.dispose()


def accounts(db: Database) -> tuple[int, int, int]:
    def tx(c):  # type: ignore[no-untyped-def]
        cust = ledger.ensure_account(c, ledger.CUSTOMER, "C1", 978, 0)
        merch = ledger.ensure_account(c, ledger.MERCHANT, "M1", 978, 0)
        fund = ledger.ensure_account(c, ledger.FUNDING, ledger.INSTITUTION, 978, 0)
        return cust, merch, fund

    return db.write(tx)


def test_migrations_create_exactly_the_models(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_transfers_balance_and_customers_never_go_negative(db: Database) -> None:
    cust, merch, fund = accounts(db)

    def post(debit: int, credit: int, amount: int) -> None:
        db.write(
            lambda c: ledger.post_transfer(
                c,
                debit=debit,
                credit=credit,
                amount=amount,
                currency=978,
                kind="t",
                ref="r",
                now=0,
                checked=frozenset({cust}),
            )
        )

    post(fund, cust, 1000)
    post(cust, merch, 600)
    with pytest.raises(InsufficientFunds):
        post(cust, merch, 401)
    post(cust, merch, 400)
    assert db.read(ledger.check_invariants) == []
    bal = db.read(lambda c: {r.id: r.balance for r in c.execute(select(Account))})
    assert bal == {cust: 0, merch: 1000, fund: -1000}


def test_database_refuses_negative_customer_balance_and_edits_of_transfers(db: Database) -> None:
    cust, _merch, fund = accounts(db)
    with pytest.raises(DBAPIError):
        db.write(lambda c: c.execute(update(Account).where(Account.id == cust).values(balance=-1)))
    db.write(
        lambda c: ledger.post_transfer(
            c, debit=fund, credit=cust, amount=5, currency=978, kind="t", ref="r", now=0
        )
    )
    with pytest.raises(DBAPIError):
        db.write(lambda c: c.execute(update(Transfer).values(amount=50)))
    with pytest.raises(DBAPIError):
        db.write(lambda c: c.execute(text("DELETE FROM transfers")))


def test_invariant_check_finds_a_cooked_balance(db: Database) -> None:
    cust, merch, fund = accounts(db)
    db.write(
        lambda c: ledger.post_transfer(
            c, debit=fund, credit=cust, amount=5, currency=978, kind="t", ref="r", now=0
        )
    )
    db.write(lambda c: c.execute(update(Account).where(Account.id == merch).values(balance=7)))
    problems = db.read(ledger.check_invariants)
    assert any("sum of its transfers" in p for p in problems)
    assert any("sum to 7" in p for p in problems)


def test_audit_chain_detects_alteration_deletion_and_truncation(db: Database) -> None:
    for i in range(80):
        db.write(
            lambda c, i=i: audit.append(
                c, at=i, actor="t", action="a", entity=f"e{i}", data={"i": i}
            )
        )

    def problems() -> list[str]:
        return list(db.read(lambda c: list(audit.verify_chains(c))))

    assert problems() == []
    with pytest.raises(DBAPIError):
        db.write(lambda c: c.execute(update(AuditEntry).values(data="{}")))
    with pytest.raises(DBAPIError):
        db.write(lambda c: c.execute(text("DELETE FROM audit_log")))
    # an attacker with database access disables the protection ...
    if db.is_sqlite:
        drops = ["DROP TRIGGER audit_log_no_update", "DROP TRIGGER audit_log_no_delete"]
    else:
        drops = ["ALTER TABLE audit_log DISABLE TRIGGER audit_log_immutable"]
    for drop in drops:
        db.write(lambda c, drop=drop: c.exec_driver_sql(drop))
    rows = db.read(
        lambda c: c.execute(
            select(AuditEntry.id, AuditEntry.chain, AuditEntry.seq).order_by(AuditEntry.id)
        ).all()
    )
    by_chain: dict[int, list[tuple[int, int]]] = {}
    for rid, chain, seq in rows:
        by_chain.setdefault(chain, []).append((seq, rid))
    chains = [c for c, entries in sorted(by_chain.items()) if len(entries) >= 3]
    altered, deleted, truncated = chains[0], chains[1], chains[2]
    # ... alters an entry,
    rid = by_chain[altered][0][1]
    db.write(
        lambda c: c.execute(update(AuditEntry).where(AuditEntry.id == rid).values(data='{"i":-1}'))
    )
    found = problems()
    assert any(f"chain {altered}:" in p and "altered" in p for p in found)
    # ... deletes one from the middle of a chain,
    mid = by_chain[deleted][1][1]
    db.write(lambda c: c.execute(text(f"DELETE FROM audit_log WHERE id = {mid}")))
    found = problems()
    assert any(f"chain {deleted}:" in p and "gap" in p for p in found)
    # ... and cuts off the end of another
    last = by_chain[truncated][-1][1]
    db.write(lambda c: c.execute(text(f"DELETE FROM audit_log WHERE id = {last}")))
    found = problems()
    assert any(f"chain {truncated}:" in p and "truncated" in p for p in found)


def test_audit_command_passes_then_fails_on_tampering(world: World) -> None:
    def utc_day(at: int) -> str:
        return dt.datetime.fromtimestamp(at, dt.UTC).date().isoformat()

    for _ in range(2):  # a payment and its refund on one UTC day (a new merchant's first day)
        m = world.merchant()
        cid = world.customer({"EUR": 10_000})
        carrier = world.carrier(cid)
        o = m.order([("Pen", 2, 150)])
        paid = world.pay(o["code"], carrier.authorize(o["code"]))
        assert paid.status_code == 201, paid.text
        path = f"/v1/merchant/orders/{o['order_id']}/refunds"
        refunded = m.request("POST", path, {"amount": 100})
        assert refunded.status_code == 201, refunded.text
        if utc_day(paid.json()["paid_at"]) == utc_day(refunded.json()["created_at"]):
            break  # else midnight passed between the two: again, all after it
    db_url = world.db_url  # type: ignore[attr-defined]
    ok = institution_cli("audit", "--db", db_url, "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] is True and report["problems"] == [], report
    # settlement for the payment's UTC day agrees with the ledger (the day of the clock now, read
    # after the audit's seconds, was the next one when the payment was made just before midnight)
    today = utc_day(paid.json()["paid_at"])
    out = institution_cli(
        "settlement", "--db", db_url, "--date", today, "--merchant", m.merchant_id,
        "--format", "json",
    )  # fmt: skip
    rows = json.loads(out.stdout)["rows"]
    assert rows == [
        {**rows[0], "payments": 1, "gross": 300, "refunds": 1, "refunded": 100, "net": 200}
    ]
    csv_r = m.request("GET", f"/v1/merchant/settlement?date={today}&format=csv")
    assert csv_r.status_code == 200 and csv_r.text.splitlines()[0].startswith("date,merchant_id")
    assert f"{m.merchant_id}," in csv_r.text and ",1,300,1,100,200" in csv_r.text
    # now cook the books behind the institution's back: the audit must fail
    database = Database(db_url)
    try:
        database.write(
            lambda c: c.execute(
                insert(Account).values(
                    kind="customer",
                    owner_id="ghost",
                    currency=978,
                    balance=10**6,
                    allow_negative=False,
                    created_at=0,
                )
            )
        )
    finally:
        database.dispose()
    bad = institution_cli("audit", "--db", db_url, "--json")
    assert bad.returncode == 1
    assert any("ghost" in p for p in json.loads(bad.stdout)["problems"])
    database = Database(db_url)
    try:  # leave the shared world consistent for other tests
        database.write(lambda c: c.execute(text("DELETE FROM accounts WHERE owner_id = 'ghost'")))
    finally:
        database.dispose()


def test_settlement_rejects_bad_dates(world: World) -> None:
    m = world.merchant()
    r = m.request("GET", "/v1/merchant/settlement?date=2024-13-45")
    assert r.status_code == 400
    r = world.admin("GET", "/v1/admin/settlement?date=2024-01-01&format=json")
    assert r.status_code == 200 and r.json() == {"rows": []}
