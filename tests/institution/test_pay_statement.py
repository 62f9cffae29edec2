"""The one-statement payment on PostgreSQL (``safescan_pay_order``), in process.

The HTTP suites already run every payment refusal against both stores; these tests pin what is
particular to the stored function: that institution-issued orders really take it (one
autocommitted statement, no multi-statement transaction), that a refusal raised after its
writes leaves nothing behind, and that the audit hashes it computes in SQL verify in Python.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import func, insert, select

from safescan.api.errors import ConfigError, InsufficientFunds, OrderNotPayable
from safescan.code import Authorization, LineItem, SigningKey, decode_text
from safescan.institution import audit, ledger
from safescan.institution.db import Database, _alembic_config, schema_revisions
from safescan.institution.domain import idempotency
from safescan.institution.domain.idempotency import Stored
from safescan.institution.domain.results import PaymentMade, PrecreatedOrder
from safescan.institution.models import (
    Account,
    AuditEntry,
    AuditHead,
    CarrierRow,
    Event,
    IdempotencyRecord,
    OrderRow,
    Payment,
    Transfer,
)
from safescan.institution.server import open_institution
from safescan.institution.service import Institution
from tests.institution.conftest import BACKENDS, make_db
from tests.institution.harness import PASSPHRASE, attest, init_db, institution_cli, institution_in
from tests.institution.pg import Cluster


@pytest.fixture(scope="module")
def inst(pg_cluster: Cluster) -> Iterator[Institution]:
    with (
        tempfile.TemporaryDirectory(prefix="safescan-paystmt-") as d,
        institution_in(pg_cluster.create_database(), Path(d) / "keys") as institution,
    ):
        yield institution


class Payer:
    """A funded customer with one enrolled carrier, and a merchant with orders to pay."""

    def __init__(self, inst: Institution, funds: int) -> None:
        self.inst = inst
        m = inst.merchants.create(
            name="Stmt Shop",
            city="Berlin",
            country="DE",
            mcc=5814,
            settlement_account="DE89370400440532013000",
            api_public_key=None,
            webhook_url=None,
        )
        self.mid = m.merchant.id
        self.cid = inst.customers.create("Stmt customer").id
        inst.customers.fund(self.cid, "EUR", funds)
        token = inst.customers.issue_enrollment_token(self.cid).token
        self.key = SigningKey.generate()
        transport = X25519PrivateKey.generate().public_key().public_bytes_raw()
        self.serial = inst.carriers.enroll(
            token,
            self.key.public_key.raw,
            transport,
            attest(inst, token, self.key.public_key.raw, transport),
        ).carrier_serial
        self.counter = 0

    def order(self, price: int) -> PrecreatedOrder:
        return self.inst.orders.precreate(self.mid, [([LineItem("Item", 1, price)], "EUR")], 600)[0]

    def authorize(self, order: PrecreatedOrder) -> bytes:
        self.counter += 1
        return (
            Authorization(
                code_digest=hashlib.sha256(decode_text(order.code)).digest(),
                merchant_id=self.mid,
                order_id=order.order_id,
                amount=order.total,
                currency=order.currency,
                counter=self.counter,
                carrier_serial=self.serial,
                created_at=int(time.time()),
            )
            .signed(self.key)
            .to_bytes()
        )


def snapshot(inst: Institution) -> dict[str, Any]:
    """Everything a payment writes: rows counted, balances, counters, chain heads, states."""

    def q(c: Any) -> dict[str, Any]:
        counts = {
            t.__tablename__: c.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (Transfer, Payment, Event, AuditEntry, IdempotencyRecord)
        }
        return {
            "counts": counts,
            "balances": sorted(c.execute(select(Account.id, Account.balance)).all()),
            "counters": sorted(c.execute(select(CarrierRow.serial, CarrierRow.last_counter)).all()),
            "heads": sorted(
                c.execute(select(AuditHead.chain, AuditHead.seq, AuditHead.hash)).all()
            ),
            "orders": sorted(c.execute(select(OrderRow.order_id, OrderRow.state)).all()),
        }

    return inst.db.read(q)


def test_institution_orders_are_paid_by_one_autocommitted_statement(
    inst: Institution, monkeypatch: pytest.MonkeyPatch
) -> None:
    payer = Payer(inst, 10_000)
    calls = {"write": 0, "write_one": 0}
    write, write_one = inst.db.write, inst.db.write_one

    def counting(name: str, real: Any) -> Any:
        def wrapper(fn: Any) -> Any:
            calls[name] += 1
            return real(fn)

        return wrapper

    o = payer.order(1234)
    auth = payer.authorize(o)
    monkeypatch.setattr(inst.db, "write", counting("write", write))
    monkeypatch.setattr(inst.db, "write_one", counting("write_one", write_one))
    made = inst.payments.pay(o.code, auth, None)
    assert isinstance(made, PaymentMade) and made.amount == 1234
    assert calls == {"write": 0, "write_one": 1}
    balances = inst.db.read(lambda c: ledger.balances(c, ledger.CUSTOMER, payer.cid))
    assert balances == {978: 10_000 - 1234}
    # a second payment of the same code is refused inside the function, with the typed error
    with pytest.raises(OrderNotPayable, match="already been paid"):
        inst.payments.pay(o.code, payer.authorize(o), None)
    # the hashes the function computed in SQL are the ones the Python verifier expects
    assert inst.db.read(lambda c: list(audit.verify_chains(c))) == []
    assert inst.db.read(ledger.check_invariants) == []


def test_a_key_answered_in_between_stops_the_function_at_its_first_step(
    inst: Institution,
) -> None:
    """The Idempotency-Key is the function's first step: when a concurrent request with the
    same key has committed its answer in between, the function changes nothing (order,
    balances, counter, ledger, outbox, audit chain as before) and that answer is returned."""
    payer = Payer(inst, 10_000)
    o = payer.order(700)
    stored, plan = inst.payments._prepare_payment(o.code, payer.authorize(o), "key-1")
    assert stored is None and plan is not None and plan.idem is not None
    # the concurrent request commits its answer for the same key first
    theirs = {"payment_id": "pay_THEIRS", "status": "succeeded"}
    inst.db.write(
        lambda c: c.execute(
            insert(IdempotencyRecord).values(
                scope=plan.idem.scope,
                key="key-1",
                request_hash=plan.idem.request_hash,
                status_code=201,
                response=json.dumps(theirs),
                created_at=0,
            )
        )
    )
    before = snapshot(inst)
    with pytest.raises(idempotency.Answered):
        inst.payments._pay_order_in_one_statement(plan)
    assert snapshot(inst) == before
    # through the public path the caller gets the other request's answer
    answer = idempotency.finish(
        inst.db, plan.idem, plan.now, lambda: inst.payments._pay_order_in_one_statement(plan)
    )
    assert isinstance(answer, Stored) and answer.body == theirs and snapshot(inst) == before


def test_insufficient_funds_inside_the_function_changes_nothing(inst: Institution) -> None:
    payer = Payer(inst, 500)
    o = payer.order(900)
    auth = payer.authorize(o)
    before = snapshot(inst)
    with pytest.raises(InsufficientFunds):
        inst.payments.pay(o.code, auth, None)
    assert snapshot(inst) == before
    # the same authorization pays once the customer is funded (its counter was not consumed)
    inst.customers.fund(payer.cid, "EUR", 1000)
    made = inst.payments.pay(o.code, auth, None)
    assert isinstance(made, PaymentMade) and made.receipt != b""


@pytest.mark.parametrize("backend", BACKENDS)
def test_migrate_upgrades_an_older_schema_that_serve_refuses(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database initialised by the previous release (revision 0001, no payment function):
    the API refuses it, `institution migrate` brings it to the newest revision, then it serves
    and pays; a second `migrate` says there is nothing to do."""
    url = make_db(backend, request, tmp_path)
    init_db(url, tmp_path / "keys", fresh=True)  # about the migrations
    old = Database(url)
    with old.engine.connect() as conn:
        command.downgrade(_alembic_config(conn), "0001")
        conn.commit()
    old.dispose()
    monkeypatch.setenv("SAFESCAN_INSTITUTION_PASSPHRASE", PASSPHRASE)
    with pytest.raises(ConfigError, match="institution migrate"):
        open_institution(url, tmp_path / "keys", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return institution_cli(*args, "--db", url)

    out = cli("migrate")
    probe = Database(url)
    head = schema_revisions(probe.engine)[1]
    probe.dispose()
    assert out.returncode == 0 and f"from revision 0001 to {head}" in out.stdout, out.stderr
    assert "already at the newest" in cli("migrate").stdout
    inst = open_institution(url, tmp_path / "keys", None)
    try:
        payer = Payer(inst, 1000)
        o = payer.order(250)
        assert isinstance(inst.payments.pay(o.code, payer.authorize(o), None), PaymentMade)
        assert inst.db.read(lambda c: list(audit.verify_chains(c))) == []
    finally:
        inst.db.dispose()


def test_migrate_refuses_a_database_that_was_never_initialised(tmp_path: Path) -> None:
    out = institution_cli("migrate", "--db", f"sqlite:///{tmp_path / 'empty.db'}")
    assert out.returncode == 2 and "not initialised" in out.stderr
