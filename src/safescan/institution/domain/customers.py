"""Customers: account holders, their funding, and the tokens their wallets enroll carriers with."""

from __future__ import annotations

import secrets

from sqlalchemy import Connection, insert, select

from safescan.api.errors import InvalidRequest, UnknownCustomer
from safescan.api.states import Status
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import SafescanError
from safescan.institution import audit, guards, ledger
from safescan.institution.domain.core import Core
from safescan.institution.domain.results import (
    Balance,
    CarrierSummary,
    CustomerAccount,
    EnrollmentTokenIssued,
)
from safescan.institution.models import CarrierRow, CustomerRow, EnrollmentToken
from safescan.institution.util import new_id

ENROLLMENT_TTL = 7 * 24 * 3600


class Customers:
    """Customer accounts around the :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def create(self, name: str) -> CustomerAccount:
        """Open a customer account holder."""
        name = guards.name(name, param="name")
        cid = new_id("C", 11)
        now = self.core.now()

        def tx(conn: Connection) -> None:
            conn.execute(
                insert(CustomerRow).values(id=cid, name=name, status=Status.ACTIVE, created_at=now)
            )
            audit.append(
                conn,
                at=now,
                actor="admin",
                action="customer.create",
                entity=f"customer:{cid}",
                data={"name": name},
            )

        self.core.db.write(tx)
        return self.get(cid)

    def get(self, cid: str) -> CustomerAccount:
        """A customer with balances (by ISO 4217 alpha code) and carriers."""

        def q(conn: Connection) -> CustomerAccount:
            row = conn.execute(select(CustomerRow).where(CustomerRow.id == cid)).one_or_none()
            if row is None:
                raise UnknownCustomer(f"no customer {cid}", param="customer_id")
            bal = ledger.balances(conn, ledger.CUSTOMER, cid)
            carriers = conn.execute(
                select(CarrierRow.serial, CarrierRow.status, CarrierRow.last_counter).where(
                    CarrierRow.customer_id == cid
                )
            ).all()
            return CustomerAccount(
                id=row.id,
                name=row.name,
                status=Status(row.status),
                created_at=row.created_at,
                balances=tuple(
                    Balance(lookup_currency(c).alpha, a) for c, a in sorted(bal.items())
                ),
                carriers=tuple(CarrierSummary(s, Status(st), lc) for s, st, lc in carriers),
            )

        return self.core.db.read(q)

    def fund(
        self, cid: str, currency_code: str | int, amount: int, *, actor: str = "admin"
    ) -> CustomerAccount:
        """Credit a customer's account from the institution's funding account."""
        try:
            cur = lookup_currency(currency_code).numeric
        except SafescanError as exc:
            raise InvalidRequest(exc.message, param="currency") from None
        amount = guards.amount(amount)
        now = self.core.now()
        ref = new_id("fund_", 16)

        def tx(conn: Connection) -> None:
            exists = conn.execute(select(CustomerRow.id).where(CustomerRow.id == cid)).first()
            if exists is None:
                raise UnknownCustomer(f"no customer {cid}", param="customer_id")
            cust = ledger.ensure_account(conn, ledger.CUSTOMER, cid, cur, now)
            fund = ledger.ensure_account(conn, ledger.FUNDING, ledger.INSTITUTION, cur, now)
            ledger.post_transfer(
                conn,
                debit=fund,
                credit=cust,
                amount=amount,
                currency=cur,
                kind="funding",
                ref=ref,
                now=now,
                checked=frozenset({cust}),
            )
            audit.append(
                conn,
                at=now,
                actor=actor,
                action="customer.fund",
                entity=f"customer:{cid}",
                data={"currency": cur, "amount": amount, "ref": ref},
            )

        self.core.db.write(tx)
        return self.get(cid)

    def issue_enrollment_token(self, cid: str, ttl: int = ENROLLMENT_TTL) -> EnrollmentTokenIssued:
        """A single-use token with which the customer's wallet enrolls one key carrier."""
        token = "enr_" + secrets.token_urlsafe(24)
        now = self.core.now()

        def tx(conn: Connection) -> None:
            row = conn.execute(select(CustomerRow.status).where(CustomerRow.id == cid)).first()
            if row is None:
                raise UnknownCustomer(f"no customer {cid}", param="customer_id")
            conn.execute(
                insert(EnrollmentToken).values(
                    token_hash=self.core.keys.token_hash(token),
                    customer_id=cid,
                    expires_at=now + ttl,
                )
            )
            audit.append(
                conn,
                at=now,
                actor="admin",
                action="enrollment.token",
                entity=f"customer:{cid}",
                data={"expires_at": now + ttl, "token_hash": self.core.keys.token_hash(token)},
            )

        self.core.db.write(tx)
        return EnrollmentTokenIssued(token, cid, now + ttl)


__all__ = ["ENROLLMENT_TTL", "Customers"]
