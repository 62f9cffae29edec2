"""Orders and codes: institution-sealed dynamic codes (one order each), static (printed) codes,
closing, expiry, listing, and what a wallet may learn of a code before paying it."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import postgresql, sqlite

from safescan.api.errors import Conflict, InvalidRequest, UnknownOrder
from safescan.api.states import CodeState, EventType, OrderState, Status
from safescan.code.currency import currency as lookup_currency
from safescan.code.envelope import encode_text, open_code, seal
from safescan.code.errors import SafescanError
from safescan.code.payment import (
    MAX_DYNAMIC_VALIDITY,
    MAX_STATIC_VALIDITY,
    DynamicCode,
    LineItem,
    StaticCode,
)
from safescan.institution import audit, guards, ledger, wire
from safescan.institution.domain import idempotency
from safescan.institution.domain.core import Core
from safescan.institution.domain.idempotency import Request, Stored, order_request
from safescan.institution.domain.merchants import merchant_identity
from safescan.institution.domain.results import (
    CodeStatus,
    OrderCreated,
    OrderPage,
    OrderView,
    PrecreatedOrder,
    StaticCodeIssued,
)
from safescan.institution.merchant_sealing import certificate_problem, withdrawn_order
from safescan.institution.models import ORDERS_OPEN_WHERE, MerchantRow, OrderRow
from safescan.institution.util import canonical_json, new_id
from safescan.institution.webhooks import new_event

ORDER_ID_CHARS = 12
DEFAULT_ORDER_TTL = 900
#: what a wallet is told of a code whose order is in this state
CODE_STATE = {
    OrderState.CREATED: CodeState.PAYABLE,
    OrderState.PAID: CodeState.PAID,
    OrderState.PARTIALLY_REFUNDED: CodeState.PAID,
    OrderState.REFUNDED: CodeState.REFUNDED,
    OrderState.CLOSED: CodeState.CLOSED,
    OrderState.EXPIRED: CodeState.EXPIRED,
}


def _view(r: Any) -> OrderView:
    return OrderView(
        order_id=r.order_id,
        merchant_id=r.merchant_id,
        kind=r.kind,
        state=OrderState(r.state),
        reference=r.reference,
        currency=r.currency,
        total=r.total,
        items=tuple(LineItem(*line) for line in json.loads(r.items)),
        created_at=r.created_at,
        expires_at=r.expires_at,
        paid_at=r.paid_at,
        paid_amount=r.paid_amount,
        refunded_amount=r.refunded_amount,
        payment_id=r.payment_id,
    )


def order_pk(conn: Connection, mid: str, order_id: str) -> int | None:
    """A merchant's order's primary key, None if it has none by that id."""
    pk: int | None = conn.execute(
        select(OrderRow.pk).where(OrderRow.merchant_id == mid, OrderRow.order_id == order_id)
    ).scalar_one_or_none()
    return pk


def order_row(conn: Connection, mid: str, order_id: str) -> Any:
    """A merchant's order row (:class:`UnknownOrder` if it has none by that id)."""
    row = conn.execute(
        select(OrderRow).where(OrderRow.merchant_id == mid, OrderRow.order_id == order_id)
    ).one_or_none()
    if row is None:
        raise UnknownOrder(f"no order {order_id} for this merchant", param="order_id")
    return row


class Orders:
    """A merchant's orders and codes around the :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def create(
        self,
        mid: str,
        *,
        items: Sequence[LineItem],
        currency_code: str | int,
        expires_in: int,
        reference: str | None,
        idempotency_key: str | None,
        also: Callable[[Connection, OrderCreated], None] | None = None,
        keyed: tuple[Request, Callable[[OrderCreated], Stored]] | None = None,
        id_prefix: str = "",
        now: int | None = None,
    ) -> OrderCreated | Stored:
        """Precreate an order and seal its dynamic code (institution-signed). With an
        ``idempotency_key`` the answer recorded for it (:class:`Stored`, built once; a retry
        gets the first answer). ``also`` runs in the order's transaction (a checkout session
        records itself with its order); ``keyed``: instead of the order's key, the key of the
        request the order is made for and how its answer is made from the order (a checkout
        session's); ``id_prefix`` starts the order id (a checkout order's); ``now``: the
        caller's one clock read when the order is part of something it times too (a checkout
        session is created at its order's time, to the second)."""
        lines = guards.items(items)
        reference = guards.optional_text(reference, param="reference")
        try:
            cur = lookup_currency(currency_code).numeric
        except SafescanError as exc:
            raise InvalidRequest(exc.message, param="currency") from None
        if not 1 <= expires_in <= MAX_DYNAMIC_VALIDITY:
            raise InvalidRequest(
                f"expires_in must be 1-{MAX_DYNAMIC_VALIDITY} seconds", param="expires_in"
            )
        req = order_request(mid, idempotency_key, lines, cur, expires_in, reference)
        if keyed is not None:
            req = keyed[0]
        stored = idempotency.recorded(self.core.db, req)
        if stored is not None:  # a retry: nothing sealed or built again
            return stored
        now = self.core.now() if now is None else now
        order_id = new_id(id_prefix, ORDER_ID_CHARS)
        merchant = self.core.db.read(lambda c: merchant_identity(c, mid))
        try:
            code = DynamicCode(
                merchant=merchant,
                order_id=order_id,
                items=tuple(lines),
                total=sum(i.amount for i in lines),
                currency=cur,
                issued_at=now,
                expires_at=now + expires_in,
                nonce=secrets.token_bytes(8),
            ).validated()
        except SafescanError as exc:
            raise InvalidRequest(exc.message, param="items") from None
        binary = seal(code, self.core.issuer, self.core.scheme_keys.current(now).public)
        text = encode_text(binary)
        digest = hashlib.sha256(binary).digest()
        items_json = canonical_json([i.to_cbor() for i in code.items])

        created = OrderCreated(
            order_id=order_id,
            merchant_id=mid,
            state=OrderState.CREATED,
            total=code.total,
            currency=cur,
            expires_at=code.expires_at,
            reference=reference,
            code=text,
            code_bytes=len(binary),
        )
        if req is None:
            answer = None
        elif keyed is not None:
            answer = keyed[1](created)
        else:
            answer = Stored(wire.CREATED, wire.order_created(created))

        def tx(conn: Connection) -> OrderCreated:
            merchant_identity(conn, mid)
            ledger.ensure_account(conn, ledger.MERCHANT, mid, cur, now)
            conn.execute(
                insert(OrderRow).values(
                    merchant_id=mid,
                    order_id=order_id,
                    kind="dynamic",
                    state=OrderState.CREATED,
                    reference=reference,
                    currency=cur,
                    total=code.total,
                    items=items_json,
                    code_digest=digest,
                    created_at=now,
                    expires_at=code.expires_at,
                    paid_amount=0,
                    refunded_amount=0,
                )
            )
            audit.append(
                conn,
                at=now,
                actor=f"merchant:{mid}",
                action="order.create",
                entity=f"order:{mid}:{order_id}",
                data={
                    "total": code.total,
                    "currency": cur,
                    "expires_at": code.expires_at,
                    "reference": reference,
                    "code_digest": digest.hex(),
                    "items_sha256": hashlib.sha256(items_json.encode()).hexdigest(),
                },
            )
            if also is not None:
                also(conn, created)
            return created

        return idempotency.run(self.core.db, req, now, tx, answer=answer)

    def precreate(
        self, mid: str, orders: Sequence[tuple[Sequence[LineItem], str | int]], expires_in: int
    ) -> list[PrecreatedOrder]:
        """Bulk precreation (one transaction, one audit entry naming every order): for load tests
        and merchants that print batches of codes. Returns order id, code and total per order."""
        now = self.core.now()
        merchant = self.core.db.read(lambda c: merchant_identity(c, mid))
        scheme = self.core.scheme_keys.current(now).public
        rows: list[dict[str, Any]] = []
        out: list[PrecreatedOrder] = []
        for items, currency_code in orders:
            cur = lookup_currency(currency_code).numeric
            order_id = new_id("", ORDER_ID_CHARS)
            code = DynamicCode(
                merchant=merchant,
                order_id=order_id,
                items=tuple(items),
                total=sum(i.amount for i in items),
                currency=cur,
                issued_at=now,
                expires_at=now + expires_in,
                nonce=secrets.token_bytes(8),
            ).validated()
            binary = seal(code, self.core.issuer, scheme)
            rows.append(
                {
                    "merchant_id": mid,
                    "order_id": order_id,
                    "kind": "dynamic",
                    "state": OrderState.CREATED,
                    "reference": None,
                    "currency": cur,
                    "total": code.total,
                    "items": canonical_json([i.to_cbor() for i in code.items]),
                    "code_digest": hashlib.sha256(binary).digest(),
                    "created_at": now,
                    "expires_at": code.expires_at,
                    "paid_amount": 0,
                    "refunded_amount": 0,
                }
            )
            out.append(PrecreatedOrder(order_id, encode_text(binary), code.total, cur))

        def tx(conn: Connection) -> None:
            for cur in {r["currency"] for r in rows}:
                ledger.ensure_account(conn, ledger.MERCHANT, mid, cur, now)
            conn.execute(insert(OrderRow), rows)
            ids = [r["order_id"] for r in rows]
            audit.append(
                conn,
                at=now,
                actor=f"merchant:{mid}",
                action="order.create_batch",
                entity=f"merchant:{mid}",
                data={
                    "count": len(ids),
                    "orders_sha256": hashlib.sha256(",".join(ids).encode()).hexdigest(),
                    "rows_sha256": audit.batch_rows_sha256(rows),
                },
            )

        self.core.db.write(tx)
        return out

    def static_code(
        self, mid: str, *, currency_code: str | int | None, valid_days: int
    ) -> StaticCodeIssued:
        """Seal a static (printed) merchant code; the customer enters the amount."""
        cur: int | None = None
        if currency_code is not None:
            try:
                cur = lookup_currency(currency_code).numeric
            except SafescanError as exc:
                raise InvalidRequest(exc.message, param="currency") from None
        if not 1 <= valid_days * 86400 <= MAX_STATIC_VALIDITY:
            raise InvalidRequest("valid_days is out of range", param="valid_days")
        now = self.core.now()
        merchant = self.core.db.read(lambda c: merchant_identity(c, mid))
        code = StaticCode(merchant, cur, now, now + valid_days * 86400)
        # printed codes live for years: sealed to the long-lived static-code key, not an epoch
        binary = seal(code, self.core.issuer, self.core.keys.scheme.current(now).public)
        return StaticCodeIssued(mid, cur, code.expires_at, encode_text(binary), len(binary))

    def get(self, mid: str, order_id: str) -> OrderView:
        """An order (an unpaid order past its expiry is moved to EXPIRED first)."""
        row = self.core.db.read(lambda c: order_row(c, mid, order_id))
        if row.state == OrderState.CREATED and self.core.now() >= row.expires_at:
            self.expire(only=(mid, order_id))
            row = self.core.db.read(lambda c: order_row(c, mid, order_id))
        return _view(row)

    def close(self, mid: str, order_id: str, code: str | None = None) -> OrderView:
        """Close an unpaid order: its code can no longer be paid. ``code``: a code the merchant's
        terminal sealed itself, unknown here until paid, is withdrawn by recording its order
        closed (``merchant_sealing.withdrawn_order``)."""
        now = self.core.now()
        opened = (
            None
            if code is None
            else open_code(code, self.core.scheme_keys, self.core.trust, now=now)
        )

        def tx(conn: Connection) -> None:
            res = conn.execute(
                update(OrderRow)
                .where(
                    OrderRow.merchant_id == mid,
                    OrderRow.order_id == order_id,
                    OrderRow.state == OrderState.CREATED,
                    OrderRow.expires_at > now,
                )
                .values(state=OrderState.CLOSED)
            )
            closed = res.rowcount == 1
            if not closed and opened is not None and order_pk(conn, mid, order_id) is None:
                insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
                row = withdrawn_order(opened, mid, order_id, now)
                closed = (
                    conn.execute(
                        insert_(OrderRow)
                        .values(**row)
                        .on_conflict_do_nothing()
                        .returning(OrderRow.pk)
                    ).scalar()
                    is not None
                )
                if closed:  # the order is recorded here for the first time: log its creation
                    audit.append(
                        conn,
                        at=now,
                        actor=f"merchant:{mid}",
                        action="order.create",
                        entity=f"order:{mid}:{order_id}",
                        data={
                            "total": row["total"],
                            "currency": row["currency"],
                            "expires_at": row["expires_at"],
                            "reference": None,
                            "code_digest": row["code_digest"].hex(),
                            "items_sha256": hashlib.sha256(row["items"].encode()).hexdigest(),
                            "withdrawn": True,
                        },
                    )
            if not closed:
                row = order_row(conn, mid, order_id)
                state = OrderState.EXPIRED if row.state == OrderState.CREATED else row.state
                raise Conflict(f"the order is {state} and cannot be closed", param="order_id")
            audit.append(
                conn,
                at=now,
                actor=f"merchant:{mid}",
                action="order.close",
                entity=f"order:{mid}:{order_id}",
                data={"state": OrderState.CLOSED},
            )
            new_event(
                conn,
                merchant_id=mid,
                type_=EventType.ORDER_CLOSED,
                data={"order_id": order_id},
                now=now,
                webhook=self.core.webhooks_enabled,
            )

        self.core.db.write(tx)
        return self.get(mid, order_id)

    def expire(self, *, only: tuple[str, str] | None = None, limit: int = 500) -> int:
        """Move unpaid orders past their expiry to EXPIRED (with audit entries and events).

        The orders due are found by a read, outside the writer (the query scans the orders
        table: inside the write transaction it held up every payment for its length, every
        maintenance round, a per-second p99 spike); the write then moves each one still
        CREATED and due (an order paid or closed since the read is left alone), and is
        skipped when none is due."""
        now = self.core.now()
        # the open orders' index (ix_orders_created_expires): its condition word for word
        q = select(OrderRow.pk, OrderRow.merchant_id, OrderRow.order_id).where(
            sql_text(ORDERS_OPEN_WHERE), OrderRow.expires_at <= now
        )
        if only is not None:
            q = q.where(OrderRow.merchant_id == only[0], OrderRow.order_id == only[1])
        due = self.core.db.read(lambda c: c.execute(q.limit(limit)).all())
        if not due:
            return 0

        def tx(conn: Connection) -> int:
            n = 0
            for pk, mid, oid in due:
                res = conn.execute(
                    update(OrderRow)
                    .where(
                        OrderRow.pk == pk,
                        OrderRow.state == OrderState.CREATED,
                        OrderRow.expires_at <= now,
                    )
                    .values(state=OrderState.EXPIRED)
                )
                if res.rowcount == 1:
                    n += 1
                    audit.append(
                        conn,
                        at=now,
                        actor="system",
                        action="order.expire",
                        entity=f"order:{mid}:{oid}",
                        data={"state": OrderState.EXPIRED},
                    )
                    new_event(
                        conn,
                        merchant_id=mid,
                        type_=EventType.ORDER_EXPIRED,
                        data={"order_id": oid},
                        now=now,
                        webhook=self.core.webhooks_enabled,
                    )
            return n

        return self.core.db.write(tx)

    def page(self, mid: str, *, limit: int, after: str | None) -> OrderPage:
        """The merchant's orders, newest first, ``limit`` of them; ``after`` is the last order
        id of the previous page (a cursor: orders made meanwhile are neither repeated nor
        skipped); ``has_more`` whether older ones follow."""

        def q(conn: Connection) -> OrderPage:
            stmt = select(OrderRow).where(OrderRow.merchant_id == mid)
            if after is not None:
                pivot = conn.execute(
                    select(OrderRow.pk).where(
                        OrderRow.merchant_id == mid, OrderRow.order_id == after
                    )
                ).scalar_one_or_none()
                if pivot is None:
                    raise UnknownOrder(
                        f"no order {after} for this merchant", param="starting_after"
                    )
                stmt = stmt.where(OrderRow.pk < pivot)
            rows = conn.execute(stmt.order_by(OrderRow.pk.desc()).limit(limit + 1)).all()
            return OrderPage(tuple(_view(r) for r in rows[:limit]), len(rows) > limit)

        return self.core.db.read(q)

    def code_status(self, code_text: str) -> CodeStatus:
        """What a wallet may learn before asking the customer anything: is this exact code
        still payable? (Only the state of the code the caller holds; no amounts, no payer.)"""
        now = self.core.now()
        opened = open_code(code_text, self.core.scheme_keys, self.core.trust, now=now)
        code = opened.code
        mid = code.merchant.id

        def q(conn: Connection) -> CodeStatus:
            status = conn.execute(
                select(MerchantRow.status).where(MerchantRow.id == mid)
            ).scalar_one_or_none()
            merchant_status = Status.ACTIVE if status == Status.ACTIVE else Status.REVOKED
            if opened.certificate is not None and certificate_problem(conn, opened.certificate):
                merchant_status = Status.REVOKED
            if merchant_status != Status.ACTIVE or status is None:
                state = CodeState.UNKNOWN if status is None else CodeState.REVOKED
                return CodeStatus(state, merchant_status, None, code.expires_at)
            if not isinstance(code, DynamicCode):
                return CodeStatus(CodeState.PAYABLE, merchant_status, None, code.expires_at)
            row = conn.execute(
                select(OrderRow.state, OrderRow.expires_at, OrderRow.code_digest).where(
                    OrderRow.merchant_id == mid, OrderRow.order_id == code.order_id
                )
            ).first()
            if row is None or row.code_digest != opened.digest:
                unknown = opened.issuer == "institution"  # its order must be recorded here
                state = CodeState.UNKNOWN if unknown else CodeState.PAYABLE
                return CodeStatus(state, merchant_status, None, code.expires_at)
            order_state = OrderState(row.state)
            if order_state is OrderState.CREATED and row.expires_at <= now:
                order_state = OrderState.EXPIRED
            return CodeStatus(CODE_STATE[order_state], merchant_status, order_state, row.expires_at)

        return self.core.db.read(q)


__all__ = ["DEFAULT_ORDER_TTL", "ORDER_ID_CHARS", "Orders", "order_pk", "order_row"]
