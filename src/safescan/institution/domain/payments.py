"""Payments: a carrier-signed authorization for a code, verified and settled in one transaction.

The hot path. :meth:`Payments.pay` (and :meth:`Payments.pay_async`) first does everything
that needs no database (:meth:`~Payments._prepare_payment`: open the code, verify the
authorization, sign the receipt, write out the event and audit entry as a
:class:`_PaymentPlan`), then one write: :meth:`~Payments._payment_tx` (several statements, one
round trip on PostgreSQL) or, for an institution-issued order on PostgreSQL,
:meth:`~Payments._pay_order_in_one_statement` (one call of ``safescan_pay_order``). A checkout
session's order (its id starts ``cs-``) is paid by the several-statement transaction, which
also completes the session (:func:`.checkout_settle.complete_paid`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from safescan.api.errors import (
    CarrierRevoked,
    CounterReplay,
    Forbidden,
    InstitutionError,
    InsufficientFunds,
    OrderNotPayable,
    PaymentRefused,
    StorageError,
    UnknownPayment,
)
from safescan.api.states import PAID_STATES, OrderState, Status
from safescan.code.authorization import Authorization, Receipt
from safescan.code.currency import currency as lookup_currency
from safescan.code.envelope import OpenedCode, open_code
from safescan.code.errors import SafescanError
from safescan.code.payment import CodeKind, DynamicCode
from safescan.institution import audit, ledger, sql, wire
from safescan.institution.db import pay_threads
from safescan.institution.domain import idempotency
from safescan.institution.domain.carriers import Carriers
from safescan.institution.domain.checkout_settle import ORDER_PREFIX as CHECKOUT_ORDER
from safescan.institution.domain.checkout_settle import complete_paid
from safescan.institution.domain.core import Core
from safescan.institution.domain.idempotency import Request, Stored, payment_request
from safescan.institution.domain.orders import ORDER_ID_CHARS
from safescan.institution.domain.results import PaymentMade, PaymentView
from safescan.institution.merchant_sealing import certificate_problem
from safescan.institution.models import CarrierRow, OrderRow, Payment
from safescan.institution.pay_records import PAYMENT_ACTION, payment_records
from safescan.institution.util import canonical_json, new_id


@dataclass(frozen=True, slots=True)
class _PaymentPlan:
    """A verified payment, ready to be written: see :meth:`Payments._plan_payment`."""

    opened: OpenedCode
    auth: Authorization
    customer_id: str
    mid: str
    order_id: str
    payment_id: str
    pseudonym: str
    now: int
    fast: bool  # an institution-issued dynamic code: its order row exists, CREATED
    entity: str
    chain: int
    receipt: bytes
    event: dict[str, Any]
    audit_entry: audit.PreparedEntry  # the audit entry, less its chain position
    idem: Request | None
    made: PaymentMade  # the result
    answer: Stored | None  # with a key: the answer stored for it (with the claim)


def _checkout(plan: _PaymentPlan) -> bool:
    """Whether the payment is a checkout order's (its session completes in the payment's
    transaction: :func:`.checkout_settle.complete_paid`)."""
    return plan.fast and plan.order_id.startswith(CHECKOUT_ORDER)


class Payments:
    """Payments around the :class:`Core`; carriers' signing keys come from :class:`Carriers`."""

    def __init__(self, core: Core, carriers: Carriers) -> None:
        self.core = core
        self.carriers = carriers
        # PostgreSQL payments wait on the network: one thread per pooled connection
        self._pay_executor = ThreadPoolExecutor(
            max_workers=pay_threads(),
            thread_name_prefix="safescan-pay",
        )

    async def warm(self) -> None:
        """At a server's start, what its first payments would otherwise do on the event loop:
        PostgreSQL's payment connections opened, SQLite's writer thread started, the live
        scheme-key epochs read. A database down now is left for the requests to report: on
        PostgreSQL the epochs are read only if a connection opened (a read would wait out a
        failover first, and the start with it)."""
        opened = await self.core.db.warm_async()
        self.core.db.start_writer()
        if self.core.db.is_sqlite or opened:
            with contextlib.suppress(StorageError):
                self.core.scheme_keys.refresh()

    def _prepare_payment(
        self, code_text: str, authorization: bytes, key: str | None
    ) -> tuple[Stored | None, _PaymentPlan | None]:
        """Everything before the transaction: parse, the key's stored answer, open and verify,
        match, and the payment's records (receipt signed, event and audit entry written out)."""
        auth, signed = Authorization.from_bytes_signed(authorization)  # no second encoding
        req = payment_request(auth.carrier_serial, code_text, authorization, key)
        if req is not None:
            stored = self.core.db.read(lambda c: idempotency.lookup(c, req))
            if stored is not None:
                return idempotency.replay(stored), None
        return None, self._verified_plan(code_text, auth, signed, req)

    def _verified_plan(
        self, code_text: str, auth: Authorization, signed: bytes, req: Request | None
    ) -> _PaymentPlan:
        """After the key's lookup: open and verify, match, and the payment's records."""
        now = self.core.now()
        opened = open_code(code_text, self.core.scheme_keys, self.core.trust, now=now)
        carrier_key, customer_id = self.carriers.key(auth.carrier_serial)
        auth.verify(carrier_key, signed)
        self._match(opened, auth)
        return self._plan_payment(opened, auth, customer_id, req, now)

    def pay(
        self, code_text: str, authorization: bytes, idempotency_key: str | None
    ) -> PaymentMade | Stored:
        """Verify a carrier-signed authorization for a code and, in one transaction, pay.
        With an Idempotency-Key, the answer recorded for it (:class:`Stored`, built once; every
        retry gets the same, or "in progress")."""
        stored, plan = self._prepare_payment(code_text, authorization, idempotency_key)
        if stored is not None:
            return stored
        assert plan is not None
        if plan.fast and not self.core.db.is_sqlite and not _checkout(plan):
            return idempotency.finish(
                self.core.db,
                plan.idem,
                plan.now,
                lambda: idempotency.keyed(self._pay_order_in_one_statement(plan), plan.answer),
            )
        work = idempotency.transaction(plan.idem, plan.now, self._payment_tx(plan), plan.answer)
        return idempotency.finish(
            self.core.db, plan.idem, plan.now, lambda: self.core.db.write(work)
        )

    async def pay_async(
        self, code_text: str, authorization: bytes, idempotency_key: str | None
    ) -> PaymentMade | Stored:
        """:meth:`pay` for an event loop: on SQLite the verification runs inline and the
        group-committed transaction is awaited. On PostgreSQL the payment of an
        institution-issued order is verified inline, a key's stored answer read and its one
        statement awaited on the loop's async connections (:meth:`Database.read_one_async`,
        :meth:`Database.write_one_async`); anything that reads or writes the database with
        blocking calls (a refusal's explanation, a checkout order's or a static code's
        transaction) runs in a worker thread."""
        if not self.core.db.is_sqlite:
            return await self._pay_pg_async(code_text, authorization, idempotency_key)
        stored, plan = self._prepare_payment(code_text, authorization, idempotency_key)
        if stored is not None:
            return stored
        assert plan is not None
        work = idempotency.transaction(plan.idem, plan.now, self._payment_tx(plan), plan.answer)
        return await idempotency.finish_async(
            self.core.db, plan.idem, plan.now, self.core.db.write_async(work)
        )

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on a pay thread, in this request's context (its request id)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pay_executor, contextvars.copy_context().run, fn, *args
        )

    async def _pay_pg_async(
        self, code_text: str, authorization: bytes, idempotency_key: str | None
    ) -> PaymentMade | Stored:
        """PostgreSQL's :meth:`pay_async` (see there)."""
        auth, signed = Authorization.from_bytes_signed(authorization)  # no second encoding
        req = payment_request(auth.carrier_serial, code_text, authorization, idempotency_key)
        if req is not None:  # the key's stored answer, read from the loop
            stored = await idempotency.lookup_async(self.core.db, req)
            if stored is not None:
                return idempotency.replay(stored)
        plan = self._verified_plan(code_text, auth, signed, req)
        if not plan.fast or _checkout(plan):  # several statements: the threaded transaction
            work = idempotency.transaction(plan.idem, plan.now, self._payment_tx(plan), plan.answer)
            result: PaymentMade | Stored = await self._in_thread(
                idempotency.finish,
                self.core.db,
                plan.idem,
                plan.now,
                lambda: self.core.db.write(work),
            )
            return result
        try:
            await self.core.db.write_one_async(sql.PAY_ORDER_CALL, self._pay_order_params(plan))
        except (DBAPIError, InstitutionError) as exc:  # as pay() would answer it
            refused: PaymentMade | Stored = await self._in_thread(self._finish_refused, plan, exc)
            return refused
        return idempotency.keyed(plan.made, plan.answer)

    def _finish_refused(
        self, plan: _PaymentPlan, exc: DBAPIError | InstitutionError
    ) -> PaymentMade | Stored:
        """A ``safescan_pay_order`` call that failed, on a pay thread: the typed refusal and,
        with a key, its stored answer (exactly as :meth:`pay` gives it)."""

        def attempt() -> PaymentMade:
            if isinstance(exc, DBAPIError):
                self._refused(plan, exc)
            raise exc

        return idempotency.finish(self.core.db, plan.idem, plan.now, attempt)

    @staticmethod
    def _match(opened: OpenedCode, auth: Authorization) -> None:
        code = opened.code
        if auth.code_digest != opened.digest:
            raise PaymentRefused(
                "the authorization was made for another code", param="authorization"
            )
        if auth.merchant_id != code.merchant.id:
            raise PaymentRefused("the authorization names another merchant", param="authorization")
        if isinstance(code, DynamicCode):
            if auth.order_id != code.order_id:
                raise PaymentRefused("the authorization names another order", param="authorization")
            if auth.amount != code.total or auth.currency != code.currency:
                raise PaymentRefused(
                    "the authorized amount or currency differs from the code's",
                    param="authorization",
                )
        else:
            if auth.order_id != "":
                raise PaymentRefused(
                    "a static-code authorization has no order id", param="authorization"
                )
            if code.currency is not None and auth.currency != code.currency:
                raise PaymentRefused(
                    "the authorized currency differs from the code's", param="authorization"
                )
            try:
                lookup_currency(auth.currency)
            except SafescanError as exc:
                raise PaymentRefused(exc.message, param="authorization") from None

    def _plan_payment(
        self,
        opened: OpenedCode,
        auth: Authorization,
        customer_id: str,
        idem: Request | None,
        now: int,
    ) -> _PaymentPlan:
        """Everything a payment writes that does not depend on the database: ids, the signed
        receipt, the answer, the outbox event and the audit entry (less its chain position)."""
        code = opened.code
        mid = code.merchant.id
        payment_id = new_id("pay_", 16)
        pseudonym = self.core.keys.pseudonym(mid, customer_id)
        cur, amount = auth.currency, auth.amount
        if isinstance(code, DynamicCode):
            order_id = code.order_id
        else:
            order_id = new_id("S", ORDER_ID_CHARS - 1)
        entity = f"order:{mid}:{order_id}"
        receipt_bytes = Receipt(
            payment_id=payment_id,
            order_id=order_id,
            merchant_id=mid,
            amount=amount,
            currency=cur,
            payer_pseudonym=pseudonym,
            paid_at=now,
            code_digest=opened.digest,
            issuer_kid=self.core.keys.root_kid,
        ).signed_bytes(self.core.keys.root)
        made = PaymentMade(payment_id, order_id, mid, amount, cur, pseudonym, now, receipt_bytes)
        # the event and the audit entry, their JSON made here (not on the writer's thread), in
        # one step (pay_records: the same bytes as event_params and audit.prepare_entry)
        event, audit_entry = payment_records(
            event_id=new_id("evt_", 20),
            mid=mid,
            order_id=order_id,
            payment_id=payment_id,
            amount=amount,
            currency=cur,
            pseudonym=pseudonym,
            now=now,
            customer_id=customer_id,
            counter=auth.counter,
            serial=auth.carrier_serial,
            entity=entity,
            webhook=self.core.webhooks_enabled,
        )
        return _PaymentPlan(
            opened=opened,
            auth=auth,
            customer_id=customer_id,
            mid=mid,
            order_id=order_id,
            payment_id=payment_id,
            pseudonym=pseudonym,
            now=now,
            fast=code.kind is CodeKind.DYNAMIC and opened.issuer == "institution",
            entity=entity,
            chain=audit.chain_for(entity),
            receipt=receipt_bytes,
            event=event,
            audit_entry=audit_entry,
            idem=idem,
            made=made,
            answer=None if idem is None else Stored(wire.CREATED, wire.payment_made(made)),
        )

    def _pay_order_in_one_statement(self, plan: _PaymentPlan) -> PaymentMade:
        """PostgreSQL, institution-issued order: the whole payment is one call of
        ``safescan_pay_order`` (migration 0002), committed in the same round trip; a refusal
        raised inside it leaves nothing behind and becomes the same typed error as
        :meth:`_payment_tx` gives."""
        params = self._pay_order_params(plan)
        try:
            self.core.db.write_one(
                lambda conn: sql.run(conn, sql.PAY_ORDER_CALL, params).fetchall()
            )
        except DBAPIError as exc:
            self._refused(plan, exc)
        return plan.made

    @staticmethod
    def _pay_order_params(plan: _PaymentPlan) -> dict[str, Any]:
        """``safescan_pay_order``'s arguments for ``plan``."""
        auth, entry = plan.auth, plan.audit_entry
        return {
            "mid": plan.mid,
            "order_id": plan.order_id,
            "amount": auth.amount,
            "currency": auth.currency,
            "digest": plan.opened.digest,
            "now": plan.now,
            "payment_id": plan.payment_id,
            "serial": auth.carrier_serial,
            "counter": auth.counter,
            "cid": plan.customer_id,
            "pseudonym": plan.pseudonym,
            "receipt": plan.receipt,
            "e_id": plan.event["e_id"],
            "e_type": plan.event["e_type"],
            "e_payload": plan.event["e_payload"],
            "e_state": plan.event["e_state"],
            "e_request_id": plan.event["e_request_id"],
            "a_chain": plan.chain,
            "a_actor": entry.actor,
            "a_action": entry.action,
            "a_entity": entry.entity,
            "a_data": entry.data,
            "a_tail": entry.tail,
            "i_scope": plan.idem.scope if plan.idem else "",
            "i_key": plan.idem.key if plan.idem else None,
            "i_hash": plan.idem.request_hash if plan.idem else "",
            "i_status": wire.CREATED,
            "i_response": None if plan.answer is None else canonical_json(plan.answer.body),
        }

    def _refused(self, plan: _PaymentPlan, exc: DBAPIError) -> NoReturn:
        """The typed error for a ``safescan_pay_order`` call that raised ``exc`` (blocking
        reads explain an unpayable order or a refused carrier); any other error as it is."""
        auth = plan.auth
        state = getattr(exc.orig, "sqlstate", None)
        if state == sql.PAY_MERCHANT_INACTIVE:
            raise Forbidden("the merchant is not active", param="code") from None
        if state == sql.PAY_ORDER_UNPAYABLE:
            self.core.db.read(
                lambda c: self._explain_unpayable(c, plan.mid, plan.order_id, plan.now)
            )
        if state == sql.PAY_CARRIER_REFUSED:
            self.core.db.read(lambda c: self._refuse_carrier(c, auth))
        if state == sql.PAY_INSUFFICIENT_FUNDS:
            raise InsufficientFunds("the customer's balance is too low for this payment") from None
        if state == sql.PAY_IDEMPOTENCY_TAKEN:
            raise idempotency.Answered(None) from None
        raise exc

    @staticmethod
    def _refuse_carrier(conn: Connection, auth: Authorization) -> NoReturn:
        """Why a carrier's counter could not advance: revoked, or a replayed counter."""
        st = conn.execute(
            select(CarrierRow.status, CarrierRow.last_counter).where(
                CarrierRow.serial == auth.carrier_serial
            )
        ).first()
        if st is None or st.status != Status.ACTIVE:
            raise CarrierRevoked(f"key carrier {auth.carrier_serial} has been revoked")
        raise CounterReplay(
            f"the carrier counter {auth.counter} is not greater than {st.last_counter}"
            " (replayed authorization)",
            param="authorization",
        )

    def _payment_tx(self, plan: _PaymentPlan) -> Callable[[Connection], PaymentMade]:
        """The payment as a transaction of several statements (SQLite, and merchant-signed
        or static codes on PostgreSQL): same steps, same lock order as safescan_pay_order."""
        opened, auth, mid, cur, amount = (
            plan.opened,
            plan.auth,
            plan.mid,
            plan.auth.currency,
            plan.auth.amount,
        )
        code, fast, now = opened.code, plan.fast, plan.now

        def tx(conn: Connection) -> PaymentMade:
            if opened.certificate is not None:
                problem = certificate_problem(conn, opened.certificate)
                if problem is not None:
                    raise Forbidden(problem, param="code")
            order_pk: int | None = None
            if not fast:  # merchant-signed or static: the order row is born PAID
                order_pk = self._insert_paid_order(
                    conn, code, plan.order_id, plan.payment_id, amount, cur, opened.digest, now
                )
            # One round trip on PostgreSQL: the statements below do not depend on each other;
            # their results are checked afterwards, in order, and any failure rolls all back.
            batch: list[tuple[str, dict[str, Any]]] = [(sql.MERCHANT_STATUS, {"mid": mid})]
            if fast:
                batch.append(
                    (
                        sql.PAY_ORDER,
                        {
                            "now": now,
                            "amount": amount,
                            "payment_id": plan.payment_id,
                            "mid": mid,
                            "order_id": plan.order_id,
                            "currency": cur,
                            "digest": opened.digest,
                        },
                    )
                )
            batch += [
                (sql.ADVANCE_COUNTER, {"counter": auth.counter, "serial": auth.carrier_serial}),
                (sql.DEBIT_CUSTOMER, {"amount": amount, "cid": plan.customer_id, "currency": cur}),
                (sql.CREDIT_MERCHANT, {"amount": amount, "mid": mid, "currency": cur}),
                (sql.AUDIT_RESERVE, {"chain": plan.chain}),
            ]
            results = iter(sql.run_batch(conn, batch))
            # 0. the merchant is live
            status, _ = next(results)
            if not status or status[0][0] != Status.ACTIVE:
                raise Forbidden("the merchant is not active", param="code")
            # 1. the order: CREATED -> PAID, exactly once
            if fast:
                rows, _ = next(results)
                if not rows:
                    self._explain_unpayable(conn, mid, plan.order_id, now)
                order_pk = rows[0][0]
            # 2. the carrier: live, and its counter strictly increasing
            _, advanced = next(results)
            if advanced != 1:
                self._refuse_carrier(conn, auth)
            # 3. the money: debit the customer (never below zero), credit the merchant
            debited, _ = next(results)
            if not debited:
                raise InsufficientFunds("the customer's balance is too low for this payment")
            credited, _ = next(results)
            if credited:
                merch_acct = credited[0][0]
            else:
                merch_acct = ledger.ensure_account(conn, ledger.MERCHANT, mid, cur, now)
                sql.run(conn, sql.CREDIT, {"amount": amount, "id": merch_acct, "currency": cur})
            reserved, _ = next(results)
            seq, prev_hash = int(reserved[0][0]), str(reserved[0][1])
            # 4. the records: transfer, payment, outbox event, audit entry (one round trip on
            # PostgreSQL)
            sql.run_many(
                conn,
                sql.RECORD_PAYMENT,
                {
                    "t_debit": debited[0][0],
                    "t_credit": merch_acct,
                    "t_ref": plan.payment_id,
                    "p_id": plan.payment_id,
                    "p_order_pk": order_pk,
                    "p_mid": mid,
                    "p_cid": plan.customer_id,
                    "p_serial": auth.carrier_serial,
                    "p_counter": auth.counter,
                    "p_pseudonym": plan.pseudonym,
                    "p_receipt": plan.receipt,
                    "amount": amount,
                    "currency": cur,
                    "now": now,
                    **plan.event,
                    **plan.audit_entry.params(plan.chain, seq, prev_hash),
                },
            )
            if _checkout(plan):  # its checkout session completes with the payment
                complete_paid(conn, mid, plan.order_id, now, webhooks=self.core.webhooks_enabled)
            return plan.made

        return tx

    @staticmethod
    def _insert_paid_order(
        conn: Connection,
        code: Any,
        order_id: str,
        payment_id: str,
        amount: int,
        currency: int,
        digest: bytes,
        now: int,
    ) -> int:
        """Merchant-signed or static code: insert the order already PAID, at most once."""
        if isinstance(code, DynamicCode):
            kind = "dynamic"
            items = canonical_json([i.to_cbor() for i in code.items])
        else:
            kind, items = "static", "[]"
        insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        order_pk = conn.execute(
            insert_(OrderRow)
            .values(
                merchant_id=code.merchant.id,
                order_id=order_id,
                kind=kind,
                state=OrderState.PAID,
                currency=currency,
                total=amount,
                items=items,
                code_digest=digest,
                created_at=now,
                expires_at=code.expires_at,
                paid_at=now,
                paid_amount=amount,
                refunded_amount=0,
                payment_id=payment_id,
            )
            .on_conflict_do_nothing()
            .returning(OrderRow.pk)
        ).scalar()
        if order_pk is None:  # paid already, or withdrawn by the merchant
            Payments._explain_unpayable(conn, code.merchant.id, order_id, now)
        return int(order_pk)

    @staticmethod
    def _explain_unpayable(conn: Connection, mid: str, order_id: str, now: int) -> NoReturn:
        row = conn.execute(
            select(OrderRow.state, OrderRow.expires_at).where(
                OrderRow.merchant_id == mid, OrderRow.order_id == order_id
            )
        ).first()
        if row is None:
            raise OrderNotPayable("the code's order is unknown here", param="code")
        if row.state == OrderState.CREATED and row.expires_at <= now:
            raise OrderNotPayable("the order has expired", param="code")
        if row.state == OrderState.CREATED:
            raise PaymentRefused("the code does not match its order", param="code")
        if row.state in PAID_STATES:
            raise OrderNotPayable("this order has already been paid", param="code")
        raise OrderNotPayable(f"the order is {row.state}", param="code")

    def get(self, mid: str, payment_id: str) -> PaymentView:
        """A payment as its merchant sees it (pseudonym, never the account)."""
        row = self.core.db.read(
            lambda c: c.execute(
                select(Payment, OrderRow.order_id, OrderRow.state.label("order_state"))
                .join(OrderRow, OrderRow.pk == Payment.order_pk)
                .where(Payment.id == payment_id, Payment.merchant_id == mid)
            ).first()
        )
        if row is None:
            raise UnknownPayment(f"no payment {payment_id} for this merchant", param="payment_id")
        p = row
        return PaymentView(
            payment_id=p.id,
            order_id=row.order_id,
            order_state=OrderState(row.order_state),
            merchant_id=mid,
            amount=p.amount,
            currency=p.currency,
            payer_pseudonym=p.payer_pseudonym,
            paid_at=p.created_at,
            receipt=bytes(p.receipt),
        )


__all__ = ["PAYMENT_ACTION", "Payments"]
