"""The POS's local journal of the orders it created (SQLite), for ``safescan pos orders``.

The institution stays the source of truth: :meth:`Journal.refresh` asks it for each order's
current state. The journal only remembers which orders this terminal made.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from safescan.code.errors import SafescanError
from safescan.merchant.client import Order

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
)
"""


class JournalError(SafescanError):
    """The POS journal could not be read or written."""

    code = "pos_journal_error"


class Journal:
    """Orders created by this terminal."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=5, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(_SCHEMA)
            self.db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the POS journal {path}: {exc}") from None

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        try:
            with self.db:
                self.db.execute(sql, args)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write the POS journal: {exc}") from None

    def add(self, order: Order) -> None:
        """Record a new order."""
        items = json.dumps([i.to_cbor() for i in order.items])
        now = int(time.time())
        self._write(
            "INSERT OR IGNORE INTO orders (order_id, created_at, total, currency, items, state,"
            " updated_at) VALUES (?, ?, ?, ?, ?, 'CREATED', ?)",
            (order.order_id, now, order.total, order.currency, items, now),
        )

    def update(self, order_id: str, doc: dict[str, Any]) -> None:
        """Store what the institution says about an order (its ``GET`` answer or an event)."""
        self._write(
            "UPDATE orders SET state = COALESCE(?, state), payment_id = COALESCE(?, payment_id),"
            " paid_at = COALESCE(?, paid_at), payer = COALESCE(?, payer),"
            " refunded = COALESCE(?, refunded), updated_at = ? WHERE order_id = ?",
            (
                doc.get("state"),
                doc.get("payment_id"),
                doc.get("paid_at"),
                doc.get("payer_pseudonym"),
                doc.get("refunded_amount"),
                int(time.time()),
                order_id,
            ),
        )

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest orders first."""
        try:
            rows = self.db.execute(
                "SELECT order_id, created_at, total, currency, items, state, payment_id,"
                " paid_at, payer, refunded FROM orders ORDER BY created_at DESC, rowid DESC"
                " LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the POS journal: {exc}") from None
        keys = [
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
        ]
        out = []
        for row in rows:
            doc = dict(zip(keys, row, strict=True))
            doc["items"] = json.loads(doc["items"])
            out.append(doc)
        return out
