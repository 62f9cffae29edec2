"""The wallet's payment history unreadable or damaged (redteam, a sibling of the history write
failure): a lock held by another process, its tables replaced, a row edited outside the
wallet. Reading it (before the PIN: is this code pending or paid already?) was a raw
``sqlite3.OperationalError``/``ValueError`` traceback; now a typed ``WalletError``."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from safescan.wallet.errors import WalletError
from safescan.wallet.store import History

READS: list[Callable[[History], Any]] = [
    lambda h: h.pending(),
    lambda h: h.pending(b"\x01" * 32),
    lambda h: h.paid_code(b"\x01" * 32),
    lambda h: h.recent(),
]


def _fresh(tmp_path: Path) -> Path:
    path = tmp_path / "history.sqlite3"
    History(path).close()
    return path


@pytest.mark.parametrize("read", range(len(READS)))
def test_tables_replaced_under_the_wallet_are_a_typed_error(tmp_path: Path, read: int) -> None:
    path = _fresh(tmp_path)
    history = History(path)  # the wallet runs; another process replaces the tables
    try:
        with sqlite3.connect(path) as conn:
            conn.executescript(
                "DROP TABLE pending; CREATE TABLE pending (x); DROP TABLE payments;"
                " CREATE TABLE payments (y);"
            )
        with pytest.raises(WalletError, match="cannot read the payment history"):
            READS[read](history)
    finally:
        history.close()


@pytest.mark.parametrize(
    ("column", "value"),
    [("created_at", "soon"), ("authorization", "A"), ("code_digest", "zz"), ("items", "{")],
)
def test_a_pending_row_edited_outside_the_wallet_is_a_typed_error(
    tmp_path: Path, column: str, value: str
) -> None:
    path = _fresh(tmp_path)
    row = {"idempotency_key": "k", "created_at": 1, "code_text": "SS1:x", "authorization": "AA==",
           "merchant_id": "M", "merchant_name": "Cafe", "merchant_city": "Lyon", "order_id": "o",
           "amount": 1, "currency": 978, "items": "[]", "code_digest": "00" * 32}  # fmt: skip
    row[column] = value
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"INSERT INTO pending VALUES ({', '.join('?' * len(row))})", list(row.values())
        )
    history = History(path)
    try:
        with pytest.raises(WalletError, match="damaged"):
            history.pending()
    finally:
        history.close()


def test_a_history_locked_by_another_process_is_a_typed_error(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    history = History(path)
    history.db.execute("PRAGMA busy_timeout = 100")  # the test need not wait the 5 s
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(WalletError, match="cannot read the payment history"):
            history.pending()
    finally:
        holder.close()
        history.close()
