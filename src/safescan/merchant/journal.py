"""The POS's local journal (SQLite): the orders it knows, refunds its staff made, staff
sessions, printed static codes. Used by ``safescan pos orders`` and the web POS.

The institution stays the source of truth: :meth:`Journal.refresh_from` stores what it says
about an order (its ``GET`` answer, an order of ``GET /v1/merchant/orders``, or an event).
Orders this terminal made keep their code and checkout token, so the web POS shows them again
after a restart; orders other terminals of the merchant made arrive from the institution's
order list (``origin = 'institution'``, no code).

Staff session ids are stored only as their SHA-256 (a copied journal holds no usable session).

An order's row only moves forward (threat model H30): its state to a later one, the refunded
amount up, and what its payment says (``payment_id``, ``paid_at``, ``payer``,
``paid_amount``, ``receipt``: :data:`WRITE_ONCE`) is set once, by the first delivery that says
it; a later delivery saying something else (a replayed or reordered snapshot, a bug) is ignored
and logged (a warning naming the order and the column, never the values), not written over
(before: the last non-empty value won, so the row's payment changed with delivery order).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from safescan.api.states import LATER_STATES, OrderState
from safescan.client.answers import OrderView, RefundMade, StaticCodeIssued
from safescan.code.errors import SafescanError
from safescan.code.payment import LineItem
from safescan.merchant.client import Order

T = TypeVar("T")
log = logging.getLogger("safescan.merchant.journal")

#: an order's columns set once, by the first delivery that says them (never overwritten)
WRITE_ONCE = ("payment_id", "paid_at", "payer", "paid_amount", "receipt")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id     TEXT PRIMARY KEY,
    created_at   INTEGER NOT NULL,
    total        INTEGER NOT NULL,
    currency     INTEGER NOT NULL,
    items        TEXT NOT NULL,
    state        TEXT NOT NULL,
    payment_id   TEXT,
    paid_at      INTEGER,
    payer        TEXT,
    refunded     INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    refund_id    TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL,
    amount       INTEGER NOT NULL,
    currency     INTEGER NOT NULL,
    reason       TEXT,
    staff        TEXT,
    created_at   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    sid_hash     TEXT PRIMARY KEY,
    user         TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created      REAL NOT NULL,
    last_seen    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS static_codes (
    code_id      TEXT PRIMARY KEY,
    code         TEXT NOT NULL,
    currency     INTEGER,
    label        TEXT NOT NULL,
    expires_at   INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
"""

# columns added to ``orders`` after its first version (older journals are migrated in place)
_ADDED = {
    "origin": "TEXT NOT NULL DEFAULT 'here'",
    "kind": "TEXT",
    "reference": "TEXT",
    "merchant_id": "TEXT",
    "code": "TEXT",
    "checkout": "TEXT",
    "expires_at": "INTEGER",
    "code_bytes": "INTEGER",
    "sealed_here": "INTEGER NOT NULL DEFAULT 0",
    "paid_amount": "INTEGER",
    "receipt": "TEXT",
}

ORDER_COLUMNS = (
    "order_id",
    "created_at",
    "total",
    "currency",
    "items",
    "state",
    "payment_id",
    "paid_at",
    "payer",
    "refunded",
    "origin",
    "kind",
    "reference",
    "paid_amount",
    "receipt",
)


# the SQL of :func:`~safescan.api.states.later_order_state` over the row's ``state`` and the
# bound ``:state`` (NULL: no state said), built from the one table of the order's life
_STATES = ", ".join(f"'{s}'" for s in OrderState)
_FORWARD = ", ".join(
    f"'{held}>{seen}'" for held, later in LATER_STATES.items() for seen in sorted(later)
)
_LATER_STATE_SQL = (
    f"CASE WHEN :state IS NULL OR :state NOT IN ({_STATES}) THEN state"
    f" WHEN state NOT IN ({_STATES}) OR state || '>' || :state IN ({_FORWARD}) THEN :state"
    " ELSE state END"
)


# one statement: the state only forward, the refunded amount only up, the payment's columns
# (WRITE_ONCE) only where the row has none yet
_UPDATE_SQL = (
    f"UPDATE orders SET state = {_LATER_STATE_SQL},"  # noqa: S608 - constant states, values bound
    " refunded = CASE WHEN :refunded > refunded THEN :refunded ELSE refunded END, "
    + ", ".join(f"{c} = COALESCE({c}, :{c})" for c in WRITE_ONCE)
    + ", updated_at = :now WHERE order_id = :order_id"
)


class JournalError(SafescanError):
    """The POS journal could not be read or written."""

    code = "pos_journal_error"


@dataclass(frozen=True)
class Filters:
    """The back office's order search: every field optional."""

    state: str | None = None
    since: int | None = None  # created at or after (Unix seconds)
    until: int | None = None  # created before
    min_total: int | None = None
    max_total: int | None = None
    text: str | None = None  # in the order id, the reference or an item name
    limit: int = 200  # a page
    starting_after: str | None = None  # the last order id of the page before


@dataclass(frozen=True)
class Stored:
    """An order this terminal made, as the journal keeps it (to show it again)."""

    order: Order
    checkout: str
    row: dict[str, Any]


def sid_hash(sid: str) -> str:
    """What the journal keeps of a session id."""
    return hashlib.sha256(sid.encode()).hexdigest()


class Journal:
    """The POS's SQLite journal (one connection, used under a lock from any thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=5, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
            have = {r[1] for r in self.db.execute("PRAGMA table_info(orders)")}
            for column, decl in _ADDED.items():
                if column not in have:
                    self.db.execute(f"ALTER TABLE orders ADD COLUMN {column} {decl}")
            self.db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the POS journal {path}: {exc}") from None

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self.db.close()

    def _run(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            with self._lock, self.db:
                return fn(self.db)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot {what} the POS journal: {exc}") from None

    def _write(self, sql: str, args: tuple[Any, ...] | dict[str, Any]) -> None:
        self._run("write", lambda db: db.execute(sql, args))

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._run("read", lambda db: db.execute(sql, args).fetchall())

    # --- orders ----------------------------------------------------------------------------

    def add(
        self, order: Order, *, checkout: str | None = None, reference: str | None = None
    ) -> None:
        """Record a new order made by this terminal (with its code and checkout token)."""
        items = json.dumps([i.to_cbor() for i in order.items], ensure_ascii=False)
        now = int(time.time())
        self._write(
            "INSERT OR IGNORE INTO orders (order_id, created_at, total, currency, items, state,"
            " updated_at, origin, kind, reference, merchant_id, code, checkout, expires_at,"
            " code_bytes, sealed_here) VALUES (?, ?, ?, ?, ?, 'CREATED', ?, 'here', 'dynamic',"
            " ?, ?, ?, ?, ?, ?, ?)",
            (
                order.order_id,
                now,
                order.total,
                order.currency,
                items,
                now,
                reference,
                order.merchant_id,
                order.code,
                checkout,
                order.expires_at,
                order.code_bytes,
                int(order.sealed_here),
            ),
        )

    def update(self, order_id: str, doc: dict[str, Any]) -> None:
        """Store what the institution says about an order (its ``GET`` answer or an event;
        ``receipt``: the verified receipt's summary).

        The row only moves forward, in one statement: the state only to a later one
        (:data:`~safescan.api.states.LATER_STATES`), the refunded amount only up. What the
        institution says arrives by several ways that race (a refund's answer, the event
        stream, the order list read on reconnecting and by the back office): a snapshot
        older than the row (an event delivered late or again) changes neither. The payment's
        columns (:data:`WRITE_ONCE`) are set once: a different later value is ignored and
        logged, never written over."""
        receipt = doc.get("receipt")
        state = doc.get("state")
        refunded = doc.get("refunded_amount")
        args: dict[str, Any] = {
            "state": None if state is None else str(state),
            "payment_id": doc.get("payment_id"),
            "paid_at": doc.get("paid_at"),
            "payer": doc.get("payer_pseudonym"),
            # a NULL compares as NULL: the CASE keeps the row's amount
            "refunded": refunded if isinstance(refunded, int) else None,
            "paid_amount": doc.get("paid_amount") or doc.get("amount"),
            "receipt": json.dumps(receipt) if isinstance(receipt, dict) else None,
            "now": int(time.time()),
            "order_id": order_id,
        }

        def run(db: sqlite3.Connection) -> tuple[Any, ...] | None:
            kept: tuple[Any, ...] | None = db.execute(
                f"SELECT {', '.join(WRITE_ONCE)} FROM orders WHERE order_id = ?",  # noqa: S608 - constant columns
                (order_id,),
            ).fetchone()
            db.execute(_UPDATE_SQL, args)
            return kept

        kept = self._run("write", run)
        if kept is None:
            return
        for column, old in zip(WRITE_ONCE, kept, strict=True):
            if old is not None and args[column] is not None and args[column] != old:
                log.warning(
                    "POS journal: order %s already has its %s; a different later value was"
                    " ignored (it is set once)",
                    order_id,
                    column,
                )

    def refresh_from(self, order: OrderView) -> None:
        """Store an order as the institution lists it (``GET /v1/merchant/orders``): added
        if this journal does not know it (made by another terminal), else updated."""
        items = json.dumps([i.to_cbor() for i in order.items], ensure_ascii=False)
        self._write(
            "INSERT OR IGNORE INTO orders (order_id, created_at, total, currency, items, state,"
            " updated_at, origin, kind, reference, merchant_id, expires_at) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, 'institution', ?, ?, ?, ?)",
            (
                order.order_id,
                order.created_at,
                order.total,
                order.currency,
                items,
                str(order.state),
                int(time.time()),
                order.kind,
                order.reference,
                order.merchant_id,
                order.expires_at,
            ),
        )
        self.update(order.order_id, order.to_json())
        if order.kind == "static" and order.total:
            # a static code's order: its amount is known once paid
            self._write(
                "UPDATE orders SET total = ?, items = ? WHERE order_id = ? AND origin ="
                " 'institution'",
                (order.total, items, order.order_id),
            )

    def _docs(self, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            doc = dict(zip(ORDER_COLUMNS, row, strict=True))
            doc["items"] = json.loads(doc["items"])
            doc["receipt"] = json.loads(doc["receipt"]) if doc["receipt"] else None
            out.append(doc)
        return out

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest orders first."""
        return self._docs(
            self._rows(
                f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders"  # noqa: S608 - constant columns, values bound
                " ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (limit,),
            )
        )

    def get(self, order_id: str) -> dict[str, Any] | None:
        """One order, or None."""
        found = self._docs(
            self._rows(
                f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE order_id = ?",  # noqa: S608
                (order_id,),
            )
        )
        return found[0] if found else None

    def search(self, f: Filters) -> list[dict[str, Any]]:
        """Orders matching every given filter, newest first (text: a plain substring, not a
        pattern: ``%`` and ``_`` match themselves): one page (:meth:`page`)."""
        return self.page(f)[0]

    def page(self, f: Filters) -> tuple[list[dict[str, Any]], bool]:
        """A page of :meth:`search`: at most ``f.limit`` orders, after the order
        ``f.starting_after`` (a cursor: orders recorded meanwhile neither repeat nor shift the
        pages), and whether more follow. An unknown cursor: :class:`JournalError`."""
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        if f.starting_after is not None:
            pivot = self._rows(
                "SELECT created_at, rowid FROM orders WHERE order_id = ?", (f.starting_after,)
            )
            if not pivot:
                raise JournalError(f"no order {f.starting_after} to list after")
            where.append("(created_at < ? OR (created_at = ? AND rowid < ?))")
            args += [pivot[0][0], pivot[0][0], pivot[0][1]]
        if f.state:
            where.append("state = ?")
            args.append(f.state)
        for column, op, value in (
            ("created_at", ">=", f.since),
            ("created_at", "<", f.until),
            ("total", ">=", f.min_total),
            ("total", "<=", f.max_total),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        if f.text:
            like = "%" + f.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(
                "(order_id LIKE ? ESCAPE '\\' OR COALESCE(reference, '') LIKE ? ESCAPE '\\'"
                " OR items LIKE ? ESCAPE '\\' OR COALESCE(payment_id, '') LIKE ? ESCAPE '\\')"
            )
            args += [like, like, like, like]
        args.append(f.limit + 1)
        rows = self._docs(
            self._rows(
                f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE {' AND '.join(where)}"  # noqa: S608 - constant columns, values bound
                " ORDER BY created_at DESC, rowid DESC LIMIT ?",
                tuple(args),
            )
        )
        return rows[: f.limit], len(rows) > f.limit

    def paid_between(self, start: int, end: int) -> list[dict[str, Any]]:
        """Orders paid in ``[start, end)`` (the settlement's day)."""
        return self._docs(
            self._rows(
                f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE paid_at >= ? AND"  # noqa: S608 - constant columns, values bound
                " paid_at < ? ORDER BY paid_at",
                (start, end),
            )
        )

    def made_here(self, since: int) -> list[Stored]:
        """Orders this terminal made since ``since`` that it can show again (with their code)."""
        rows = self._rows(
            "SELECT order_id, merchant_id, code, total, currency, expires_at, code_bytes, items,"
            " sealed_here, checkout FROM orders WHERE origin = 'here' AND code IS NOT NULL AND"
            " checkout IS NOT NULL AND created_at >= ?",
            (since,),
        )
        out = []
        for oid, mid, code, total, cur, exp, size, items, sealed, checkout in rows:
            order = Order(
                oid,
                mid,
                code,
                total,
                cur,
                exp,
                size,
                tuple(LineItem.from_cbor(i) for i in json.loads(items)),
                bool(sealed),
            )
            found = self.get(oid)
            out.append(Stored(order, checkout, found or {}))
        return out

    # --- refunds ---------------------------------------------------------------------------

    def add_refund(self, refund: RefundMade, *, reason: str | None, staff: str) -> None:
        """A refund the institution made at this terminal's request (its answer)."""
        self._write(
            "INSERT OR IGNORE INTO refunds (refund_id, order_id, amount, currency, reason, staff,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                refund.refund_id,
                refund.order_id,
                refund.amount,
                refund.currency,
                reason,
                staff,
                refund.created_at or int(time.time()),
            ),
        )
        self.update(
            refund.order_id,
            {"state": str(refund.order_state), "refunded_amount": refund.refunded_amount},
        )

    def refunds(
        self, order_id: str | None = None, *, start: int = 0, end: int = 2**62
    ) -> list[dict[str, Any]]:
        """Refunds made here: of one order, or in ``[start, end)``."""
        keys = ("refund_id", "order_id", "amount", "currency", "reason", "staff", "created_at")
        sql = f"SELECT {', '.join(keys)} FROM refunds WHERE created_at >= ? AND created_at < ?"  # noqa: S608 - constant columns, values bound
        args: tuple[Any, ...] = (start, end)
        if order_id is not None:
            sql += " AND order_id = ?"
            args += (order_id,)
        return [
            dict(zip(keys, r, strict=True)) for r in self._rows(sql + " ORDER BY created_at", args)
        ]

    # --- staff sessions (ids hashed) ---------------------------------------------------------

    def session_put(self, sid: str, user: str, csrf: str, created: float, seen: float) -> None:
        """Store a new session."""
        self._write(
            "INSERT OR REPLACE INTO sessions (sid_hash, user, csrf, created, last_seen)"
            " VALUES (?, ?, ?, ?, ?)",
            (sid_hash(sid), user, csrf, created, seen),
        )

    def session_get(self, sid: str) -> tuple[str, str, float, float] | None:
        """(user, csrf, created, last seen) of a stored session."""
        rows = self._rows(
            "SELECT user, csrf, created, last_seen FROM sessions WHERE sid_hash = ?",
            (sid_hash(sid),),
        )
        return (
            (str(rows[0][0]), str(rows[0][1]), float(rows[0][2]), float(rows[0][3]))
            if rows
            else None
        )

    def session_seen(self, sid: str, seen: float) -> None:
        """A session was used."""
        self._write("UPDATE sessions SET last_seen = ? WHERE sid_hash = ?", (seen, sid_hash(sid)))

    def session_end(self, sid: str) -> None:
        """Forget a session."""
        self._write("DELETE FROM sessions WHERE sid_hash = ?", (sid_hash(sid),))

    def sessions_purge(self, older_than: float) -> None:
        """Forget sessions last used before ``older_than``."""
        self._write("DELETE FROM sessions WHERE last_seen < ?", (older_than,))

    # --- printed static codes ------------------------------------------------------------------

    def add_static_code(self, code_id: str, issued: StaticCodeIssued, label: str) -> None:
        """A static code the institution issued, to print."""
        self._write(
            "INSERT INTO static_codes (code_id, code, currency, label, expires_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                code_id,
                issued.code,
                issued.currency,
                label,
                issued.expires_at,
                int(time.time()),
            ),
        )

    def static_codes(self) -> list[dict[str, Any]]:
        """Every printed static code, newest first."""
        keys = ("code_id", "code", "currency", "label", "expires_at", "created_at")
        sql = f"SELECT {', '.join(keys)} FROM static_codes"  # noqa: S608 - constant columns
        rows = self._rows(sql + " ORDER BY created_at DESC, rowid DESC", ())
        return [dict(zip(keys, r, strict=True)) for r in rows]
