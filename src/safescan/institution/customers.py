"""Customer views: the administrator's list, and the statement a customer reads with its key
carrier (balances, payments, refunds; see :mod:`safescan.api.account` for the protocol)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from safescan.api import account
from safescan.api.errors import Forbidden, Unauthenticated
from safescan.api.states import Status
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import UnknownCurrency
from safescan.code.keys import VerifyKey
from safescan.institution import ledger, wire
from safescan.institution.db import Database
from safescan.institution.domain.results import (
    CustomerList,
    CustomerListed,
    Money,
    Statement,
    StatementPayment,
    StatementRefund,
)
from safescan.institution.models import (
    CarrierRow,
    CertificateRow,
    CustomerRow,
    MerchantRow,
    Payment,
    Refund,
)

STATEMENT_PAYMENTS = 50  # the newest payments a statement lists


def _money(currency: int, amount: int) -> Money:
    try:
        cur = lookup_currency(currency)
    except UnknownCurrency:
        return Money(str(currency), amount, f"{amount} ({currency})")
    return Money(cur.alpha, amount, cur.format(amount))


def list_customers(db: Database, *, limit: int, after: str | None) -> CustomerList:
    """Customers in id order (page with ``after``), each with balances and carrier count."""

    def q(conn: Connection) -> CustomerList:
        query = select(CustomerRow).order_by(CustomerRow.id).limit(limit + 1)
        if after is not None:
            query = query.where(CustomerRow.id > after)
        rows = conn.execute(query).all()
        more = len(rows) > limit
        rows = rows[:limit]
        carriers = dict(
            conn.execute(
                select(CarrierRow.customer_id, func.count())
                .where(CarrierRow.customer_id.in_([r.id for r in rows]))
                .group_by(CarrierRow.customer_id)
            ).all()
        )
        out = tuple(
            CustomerListed(
                id=r.id,
                name=r.name,
                status=Status(r.status),
                created_at=r.created_at,
                balances=tuple(
                    _money(c, a)
                    for c, a in sorted(ledger.balances(conn, ledger.CUSTOMER, r.id).items())
                ),
                carriers=int(carriers.get(r.id, 0)),
            )
            for r in rows
        )
        return CustomerList(customers=out, has_more=more)

    return db.read(q)


def carrier_identity(db: Database, serial: int) -> tuple[str, VerifyKey, bytes]:
    """An active carrier's customer, signing key and certificate bytes (for the proof)."""

    def q(conn: Connection) -> Any:
        return conn.execute(
            select(
                CarrierRow.customer_id,
                CarrierRow.signing_public_key,
                CarrierRow.status,
                CertificateRow.cert,
                CustomerRow.status.label("customer_status"),
            )
            .join(CertificateRow, CertificateRow.serial == CarrierRow.serial)
            .join(CustomerRow, CustomerRow.id == CarrierRow.customer_id)
            .where(CarrierRow.serial == serial)
        ).one_or_none()

    row = db.read(q)
    if row is None or row.cert is None:
        raise Unauthenticated("no such key carrier", param="carrier_serial")
    if row.status != Status.ACTIVE:
        raise Forbidden("this key carrier is revoked", param="carrier_serial")
    if row.customer_status != Status.ACTIVE:
        raise Forbidden("this customer's account is not active", param="carrier_serial")
    return row.customer_id, VerifyKey(row.signing_public_key), bytes(row.cert)


def statement(db: Database, customer_id: str, serial: int, *, now: int) -> Statement:
    """Balances and the newest payments with their refunds."""

    def q(conn: Connection) -> Statement:
        bal = ledger.balances(conn, ledger.CUSTOMER, customer_id)
        payments = conn.execute(
            select(
                Payment.id,
                Payment.merchant_id,
                Payment.amount,
                Payment.currency,
                Payment.created_at,
                Payment.carrier_serial,
                MerchantRow.name,
                MerchantRow.city,
            )
            .join(MerchantRow, MerchantRow.id == Payment.merchant_id)
            .where(Payment.customer_id == customer_id)
            .order_by(Payment.created_at.desc(), Payment.id)
            .limit(STATEMENT_PAYMENTS)
        ).all()
        refunds: dict[str, list[StatementRefund]] = {}
        if payments:
            for r in conn.execute(
                select(
                    Refund.id, Refund.payment_id, Refund.amount, Refund.currency, Refund.created_at
                )
                .where(Refund.payment_id.in_([p.id for p in payments]))
                .order_by(Refund.created_at, Refund.id)
            ):
                refunds.setdefault(r.payment_id, []).append(
                    StatementRefund(r.id, r.created_at, _money(r.currency, r.amount))
                )
        listed = []
        for p in payments:
            mine = tuple(refunds.get(p.id, ()))
            listed.append(
                StatementPayment(
                    payment_id=p.id,
                    merchant_id=p.merchant_id,
                    merchant_name=p.name,
                    merchant_city=p.city,
                    paid_at=p.created_at,
                    carrier_serial=p.carrier_serial,
                    money=_money(p.currency, p.amount),
                    refunded=_money(p.currency, sum(e.money.amount for e in mine)),
                    refunds=mine,
                )
            )
        return Statement(
            customer_id=customer_id,
            carrier_serial=serial,
            as_of=now,
            balances=tuple(_money(c, a) for c, a in sorted(bal.items())),
            payments=tuple(listed),
        )

    return db.read(q)


def read_statement(
    db: Database,
    key: bytes,
    *,
    serial: int,
    wallet_key: bytes,
    expires_at: int,
    response: bytes,
    now: int | None = None,
) -> bytes:
    """Check the carrier's proof for a challenge and return the statement sealed to the wallet."""
    now = int(time.time()) if now is None else now
    if expires_at < now:
        raise Unauthenticated("the challenge has expired: ask for a new one", param="expires_at")
    if expires_at > now + account.CHALLENGE_TTL:
        raise Unauthenticated("the challenge's expiry is not one we issued", param="expires_at")
    challenge = account.make_challenge(key, serial, expires_at, wallet_key)
    customer_id, signing_key, certificate = carrier_identity(db, serial)
    account.verify_presence(signing_key, certificate, challenge, response)
    doc = wire.statement(statement(db, customer_id, serial, now=now))
    return account.seal_statement(doc, wallet_key, serial, expires_at)


@dataclass(frozen=True)
class Challenge:
    """A one-time account challenge for a key carrier to sign."""

    value: bytes  # 32 bytes
    expires_at: int  # unix seconds


class Accounts:
    """Customer accounts as their readers see them: the administrator's list and the statement
    a wallet reads with its key carrier (challenge, then the carrier's answer)."""

    def __init__(self, db: Database, server_secret: bytes, now: Callable[[], int]) -> None:
        self.db = db
        self.key = account.challenge_key(server_secret)
        self.now = now

    def page(self, *, limit: int, after: str | None) -> CustomerList:
        """Customers in id order (page with ``after``): :func:`list_customers`."""
        return list_customers(self.db, limit=limit, after=after)

    def challenge(self, serial: int, wallet_key: bytes) -> Challenge:
        """A challenge for carrier ``serial`` to answer, bound to ``wallet_key``."""
        expires_at = self.now() + account.CHALLENGE_TTL
        return Challenge(
            account.make_challenge(self.key, serial, expires_at, wallet_key), expires_at
        )

    def sealed_statement(
        self, *, serial: int, wallet_key: bytes, expires_at: int, response: bytes
    ) -> bytes:
        """The statement sealed to ``wallet_key``, for a carrier that answered the challenge:
        :func:`read_statement`."""
        return read_statement(
            self.db,
            self.key,
            serial=serial,
            wallet_key=wallet_key,
            expires_at=expires_at,
            response=response,
            now=self.now(),
        )
