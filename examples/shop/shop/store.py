"""The shop's own records in SQLite: carts (by an opaque browser-session id), orders, and the
ids of the webhooks already handled (a replayed delivery changes nothing)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS carts (
    sid TEXT NOT NULL, product TEXT NOT NULL, quantity INTEGER NOT NULL,
    PRIMARY KEY (sid, product));
CREATE TABLE IF NOT EXISTS orders (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    reference TEXT NOT NULL UNIQUE,
    session_id TEXT UNIQUE,
    browser TEXT NOT NULL,
    items TEXT NOT NULL,
    total INTEGER NOT NULL,
    status TEXT NOT NULL,          -- pending / paid
    payment_id TEXT,
    paid_via TEXT,                 -- webhook / success-page
    created_at REAL NOT NULL,
    paid_at REAL);
CREATE TABLE IF NOT EXISTS webhooks_seen (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, at REAL NOT NULL);
"""


@dataclass(frozen=True)
class Order:
    """One order of the shop."""

    number: int
    reference: str
    session_id: str | None
    items: list[dict[str, Any]]
    total: int
    status: str
    payment_id: str | None
    paid_via: str | None


def _order(row: sqlite3.Row) -> Order:
    return Order(
        row["number"],
        row["reference"],
        row["session_id"],
        json.loads(row["items"]),
        row["total"],
        row["status"],
        row["payment_id"],
        row["paid_via"],
    )


class Store:
    """The shop's database (one file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._db() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    # --- carts ---------------------------------------------------------------------------------

    def cart(self, sid: str) -> dict[str, int]:
        """product id -> quantity."""
        with self._db() as db:
            rows = db.execute("SELECT product, quantity FROM carts WHERE sid = ?", (sid,))
            return {r["product"]: r["quantity"] for r in rows}

    def set_quantity(self, sid: str, product: str, quantity: int) -> None:
        """Put ``quantity`` of ``product`` in the cart (0 removes it)."""
        with self._db() as db:
            if quantity <= 0:
                db.execute("DELETE FROM carts WHERE sid = ? AND product = ?", (sid, product))
            else:
                db.execute(
                    "INSERT INTO carts (sid, product, quantity) VALUES (?, ?, ?)"
                    " ON CONFLICT (sid, product) DO UPDATE SET quantity = excluded.quantity",
                    (sid, product, quantity),
                )

    def clear_cart(self, sid: str) -> None:
        """Empty the cart."""
        with self._db() as db:
            db.execute("DELETE FROM carts WHERE sid = ?", (sid,))

    # --- orders --------------------------------------------------------------------------------

    def new_order(self, browser: str, items: list[dict[str, Any]], total: int) -> Order:
        """A pending order (its reference is what the institution echoes back)."""
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO orders (reference, browser, items, total, status, created_at)"
                " VALUES ('', ?, ?, ?, 'pending', ?)",
                (browser, json.dumps(items), total, time.time()),
            )
            number = int(cur.lastrowid or 0)
            db.execute(
                "UPDATE orders SET reference = ? WHERE number = ?", (f"shop-{number:05d}", number)
            )
            row = db.execute("SELECT * FROM orders WHERE number = ?", (number,)).fetchone()
            return _order(row)

    def attach_session(self, number: int, session_id: str) -> None:
        """The checkout session made for order ``number``."""
        with self._db() as db:
            db.execute("UPDATE orders SET session_id = ? WHERE number = ?", (session_id, number))

    def by_session(self, session_id: str) -> Order | None:
        """The order a checkout session was made for."""
        with self._db() as db:
            row = db.execute("SELECT * FROM orders WHERE session_id = ?", (session_id,)).fetchone()
            return _order(row) if row else None

    def mark_paid(self, session_id: str, payment_id: str, via: str) -> bool:
        """Pending -> paid, once (False when it was paid already)."""
        with self._db() as db:
            cur = db.execute(
                "UPDATE orders SET status = 'paid', payment_id = ?, paid_via = ?, paid_at = ?"
                " WHERE session_id = ? AND status = 'pending'",
                (payment_id, via, time.time(), session_id),
            )
            return cur.rowcount == 1

    def orders(self) -> list[Order]:
        """Every order, newest first."""
        with self._db() as db:
            return [_order(r) for r in db.execute("SELECT * FROM orders ORDER BY number DESC")]

    # --- webhooks ------------------------------------------------------------------------------

    def seen(self, webhook_id: str) -> bool:
        """Whether a webhook id was handled before (a replay or a retry)."""
        with self._db() as db:
            row = db.execute("SELECT 1 FROM webhooks_seen WHERE id = ?", (webhook_id,)).fetchone()
            return row is not None

    def remember(self, webhook_id: str, kind: str) -> None:
        """Record a handled webhook id (and its event type)."""
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO webhooks_seen (id, type, at) VALUES (?, ?, ?)",
                (webhook_id, kind, time.time()),
            )
