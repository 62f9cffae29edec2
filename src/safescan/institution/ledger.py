"""The double-entry ledger: accounts and immutable transfers.

Rules (checked by :func:`check_invariants` and ``safescan institution audit``):

1. Every transfer moves a positive ``amount`` from one account (debit) to another (credit) of
   the **same currency**; transfers are never updated or deleted (database triggers).
2. ``accounts.balance`` = sum of credits - sum of debits, for every account.
3. Per currency, the balances of all accounts sum to zero (money is only moved, never made:
   customer funding is a transfer from the institution's ``funding`` account, which goes
   negative by the amount issued).
4. Accounts with ``allow_negative = false`` (customers) never go below zero: the debit is a
   conditional ``UPDATE ... WHERE balance >= amount`` and a CHECK constraint backs it up.

Lock order (no deadlocks): checked (customer) accounts are updated before unchecked ones,
each group by ascending id.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

from safescan.api.errors import InsufficientFunds
from safescan.api.states import PAID_STATES, OrderState
from safescan.institution import sql
from safescan.institution.models import Account, OrderRow, Payment, Refund, Transfer

CUSTOMER = "customer"
MERCHANT = "merchant"
FUNDING = "funding"
INSTITUTION = "institution"


def _insert_ignore(conn: Connection, values: dict[str, Any]) -> None:
    if conn.dialect.name == "postgresql":
        stmt: Any = postgresql.insert(Account).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(Account).values(**values).on_conflict_do_nothing()
    conn.execute(stmt)


def account_id(conn: Connection, kind: str, owner_id: str, currency: int) -> int | None:
    """The id of an account, or None."""
    return conn.execute(
        select(Account.id).where(
            Account.kind == kind, Account.owner_id == owner_id, Account.currency == currency
        )
    ).scalar_one_or_none()


def ensure_account(conn: Connection, kind: str, owner_id: str, currency: int, now: int) -> int:
    """The account's id, creating it if needed (safe under concurrency)."""
    found = account_id(conn, kind, owner_id, currency)
    if found is not None:
        return found
    _insert_ignore(
        conn,
        {
            "kind": kind,
            "owner_id": owner_id,
            "currency": currency,
            "balance": 0,
            "allow_negative": kind != CUSTOMER,
            "created_at": now,
        },
    )
    created = account_id(conn, kind, owner_id, currency)
    assert created is not None
    return created


def post_transfer(
    conn: Connection,
    *,
    debit: int,
    credit: int,
    amount: int,
    currency: int,
    kind: str,
    ref: str,
    now: int,
    checked: frozenset[int] = frozenset(),
) -> None:
    """Move ``amount`` from ``debit`` to ``credit`` (same currency) and record the transfer.

    ``checked``: the customer accounts among the two, which are locked first (lock order).
    Raises :class:`InsufficientFunds` if the debit would make a checked balance negative.
    """
    if amount <= 0 or debit == credit:
        raise ValueError("a transfer moves a positive amount between two accounts")
    legs = sorted(
        [(debit, -amount), (credit, amount)], key=lambda leg: (leg[0] not in checked, leg[0])
    )
    for acct, delta in legs:
        # debits are conditional; the database's CHECK constraint backs this up
        stmt = sql.CREDIT if delta > 0 else sql.DEBIT_CHECKED
        params = {"amount": abs(delta), "id": acct, "currency": currency}
        if sql.run(conn, stmt, params).rowcount != 1:
            raise InsufficientFunds("the balance is too low for this payment")
    sql.run(
        conn,
        sql.INSERT_TRANSFER,
        {
            "debit": debit,
            "credit": credit,
            "amount": amount,
            "currency": currency,
            "kind": kind,
            "ref": ref,
            "now": now,
        },
    )


def balances(conn: Connection, kind: str, owner_id: str) -> dict[int, int]:
    """Balances of an owner's accounts, by currency."""
    rows = conn.execute(
        select(Account.currency, Account.balance).where(
            Account.kind == kind, Account.owner_id == owner_id
        )
    )
    return {r.currency: r.balance for r in rows}


def check_invariants(conn: Connection) -> list[str]:
    """Check every ledger rule; returns the violations (empty when the ledger is sound)."""
    problems: list[str] = []
    accounts = {r.id: r for r in conn.execute(select(Account))}
    computed = dict.fromkeys(accounts, 0)
    n = 0
    rows = conn.execution_options(yield_per=5000).execute(
        select(
            Transfer.id,
            Transfer.debit_account_id,
            Transfer.credit_account_id,
            Transfer.amount,
            Transfer.currency,
        )
    )
    for t in rows:
        n += 1
        d, c = accounts.get(t.debit_account_id), accounts.get(t.credit_account_id)
        if d is None or c is None:
            problems.append(f"transfer {t.id} names an unknown account")
            continue
        if t.amount <= 0:
            problems.append(f"transfer {t.id} has a non-positive amount")
        if not d.currency == c.currency == t.currency:
            problems.append(f"transfer {t.id} mixes currencies")
        computed[d.id] -= t.amount
        computed[c.id] += t.amount
    per_currency: dict[int, int] = {}
    for acct in accounts.values():
        if acct.balance != computed[acct.id]:
            problems.append(
                f"account {acct.id} ({acct.kind} {acct.owner_id}) balance {acct.balance}"
                f" != sum of its transfers {computed[acct.id]}"
            )
        if not acct.allow_negative and acct.balance < 0:
            problems.append(f"account {acct.id} ({acct.kind} {acct.owner_id}) is negative")
        if acct.kind == CUSTOMER and acct.allow_negative:
            problems.append(f"customer account {acct.id} allows a negative balance")
        per_currency[acct.currency] = per_currency.get(acct.currency, 0) + acct.balance
    for cur, total in sorted(per_currency.items()):
        if total != 0:
            problems.append(f"currency {cur}: balances sum to {total}, not zero")
    problems.extend(_check_orders(conn))
    return problems


def _check_orders(conn: Connection) -> list[str]:
    problems: list[str] = []
    paid = dict(
        conn.execute(
            select(Transfer.ref, func.count())
            .where(Transfer.kind == "payment")
            .group_by(Transfer.ref)
        ).all()
    )
    for ref, count in paid.items():
        if count != 1:
            problems.append(f"payment {ref} was posted {count} times")
    refunded = dict(
        conn.execute(
            select(Refund.order_pk, func.sum(Refund.amount)).group_by(Refund.order_pk)
        ).all()
    )
    refund_transfers = dict(
        conn.execute(
            select(Transfer.ref, func.count())
            .where(Transfer.kind == "refund")
            .group_by(Transfer.ref)
        ).all()
    )
    for (rid,) in conn.execute(select(Refund.id)):
        if refund_transfers.get(rid) != 1:
            problems.append(f"refund {rid} has {refund_transfers.get(rid, 0)} ledger transfers")
    payments = {
        r.order_pk: r for r in conn.execute(select(Payment.id, Payment.order_pk, Payment.amount))
    }
    for o in conn.execute(
        select(
            OrderRow.pk,
            OrderRow.order_id,
            OrderRow.state,
            OrderRow.total,
            OrderRow.paid_amount,
            OrderRow.refunded_amount,
            OrderRow.payment_id,
        )
    ):
        p = payments.get(o.pk)
        if o.state in PAID_STATES:
            if p is None or p.id != o.payment_id:
                problems.append(f"order {o.order_id} is {o.state} without its payment")
            elif paid.get(p.id) != 1:
                problems.append(f"order {o.order_id}: payment {p.id} is not in the ledger once")
            elif p.amount != o.paid_amount:
                problems.append(f"order {o.order_id}: paid amount differs from its payment")
            if refunded.get(o.pk, 0) != o.refunded_amount:
                problems.append(f"order {o.order_id}: refunded amount differs from its refunds")
            if o.refunded_amount > o.paid_amount:
                problems.append(f"order {o.order_id}: refunded more than was paid")
            full = o.refunded_amount == o.paid_amount
            if (o.state == OrderState.REFUNDED) != full or (
                o.state == OrderState.PAID and o.refunded_amount
            ):
                problems.append(f"order {o.order_id}: state {o.state} does not match its refunds")
        elif p is not None:
            problems.append(f"order {o.order_id} is {o.state} but has a payment")
    return problems
