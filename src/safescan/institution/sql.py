"""Plain SQL for the payment hot path, run on the DBAPI cursor of the transaction's connection.

SQLAlchemy's per-statement execution machinery costs more than the SQLite work itself, so the
statements every payment runs are written out here (named ``:param`` style, identical on SQLite
and PostgreSQL; converted once to psycopg's ``%(param)s`` style) and executed directly on the
cursor of the connection that :meth:`Database.write` opened, inside its transaction.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection

_PARAM = re.compile(r"(?<!:):([a-z_]+)")
_PG_CACHE: dict[str, str] = {}


def run(conn: Connection, statement: str, params: dict[str, Any]) -> Any:
    """Execute ``statement`` on the raw DBAPI cursor; returns the cursor."""
    dbapi = conn.connection.driver_connection
    assert dbapi is not None
    cur = dbapi.cursor()
    if conn.dialect.name == "postgresql":
        pg = _PG_CACHE.get(statement)
        if pg is None:
            pg = _PG_CACHE[statement] = _PARAM.sub(r"%(\1)s", statement)
        cur.execute(pg, params)
    else:
        cur.execute(statement, params)
    return cur


def run_batch(
    conn: Connection, items: list[tuple[str, dict[str, Any]]]
) -> list[tuple[list[Any], int]]:
    """Run independent statements; returns (rows, rowcount) for each. On PostgreSQL they go
    out in one pipeline (one round trip); on SQLite one after the other."""
    dbapi = conn.connection.driver_connection
    assert dbapi is not None
    if conn.dialect.name != "postgresql":
        out = []
        for statement, params in items:
            cur = run(conn, statement, params)
            out.append((cur.fetchall() if cur.description else [], cur.rowcount))
        return out
    cursors = []
    with dbapi.pipeline():
        for statement, params in items:
            pg = _PG_CACHE.get(statement)
            if pg is None:
                pg = _PG_CACHE[statement] = _PARAM.sub(r"%(\1)s", statement)
            cur = dbapi.cursor()
            cur.execute(pg, params)
            cursors.append(cur)
    return [(cur.fetchall() if cur.description else [], cur.rowcount) for cur in cursors]


def run_many(conn: Connection, statements: tuple[str, ...], params: dict[str, Any]) -> None:
    """Run several statements with one parameter set: on PostgreSQL as one statement (data-
    modifying CTEs, one round trip), on SQLite one after the other."""
    if conn.dialect.name == "postgresql":
        parts = [f"s{i} AS ({stmt})" for i, stmt in enumerate(statements[:-1])]
        combined = "WITH " + ", ".join(parts) + " " + statements[-1]
        run(conn, combined, params)
    else:
        for stmt in statements:
            run(conn, stmt, params)


MERCHANT_STATUS = "SELECT status FROM merchants WHERE id = :mid"

PAY_ORDER = (
    "UPDATE orders SET state = 'PAID', paid_at = :now, paid_amount = :amount,"
    " payment_id = :payment_id"
    " WHERE merchant_id = :mid AND order_id = :order_id AND state = 'CREATED'"
    " AND expires_at > :now AND total = :amount AND currency = :currency"
    " AND code_digest = :digest RETURNING pk"
)

ADVANCE_COUNTER = (
    "UPDATE carriers SET last_counter = :counter"
    " WHERE serial = :serial AND status = 'active' AND last_counter < :counter"
)

DEBIT_CUSTOMER = (
    "UPDATE accounts SET balance = balance - :amount WHERE kind = 'customer'"
    " AND owner_id = :cid AND currency = :currency AND balance >= :amount RETURNING id"
)
CREDIT_MERCHANT = (
    "UPDATE accounts SET balance = balance + :amount WHERE kind = 'merchant'"
    " AND owner_id = :mid AND currency = :currency RETURNING id"
)
DEBIT_CHECKED = (
    "UPDATE accounts SET balance = balance - :amount"
    " WHERE id = :id AND currency = :currency AND (allow_negative OR balance >= :amount)"
)
CREDIT = "UPDATE accounts SET balance = balance + :amount WHERE id = :id AND currency = :currency"

INSERT_TRANSFER = (
    "INSERT INTO transfers (debit_account_id, credit_account_id, amount, currency, kind, ref,"
    " created_at) VALUES (:debit, :credit, :amount, :currency, :kind, :ref, :now)"
)

INSERT_EVENT = (
    "INSERT INTO events (id, merchant_id, type, payload, signature, created_at, webhook_state,"
    " attempts, next_attempt_ms) VALUES (:e_id, :e_mid, :e_type, :e_payload, '', :e_created,"
    " :e_state, 0, :e_next_ms)"
)

AUDIT_RESERVE = "UPDATE audit_heads SET seq = seq + 1 WHERE chain = :chain RETURNING seq, hash"
INSERT_AUDIT = (
    "INSERT INTO audit_log (chain, seq, at, actor, action, entity, data, prev_hash, hash)"
    " VALUES (:a_chain, :a_seq, :a_at, :a_actor, :a_action, :a_entity, :a_data, :a_prev_hash,"
    " :a_hash)"
)
AUDIT_SET_HASH = "UPDATE audit_heads SET hash = :a_hash WHERE chain = :a_chain"

RECORD_PAYMENT = (
    "INSERT INTO transfers (debit_account_id, credit_account_id, amount, currency, kind, ref,"
    " created_at) VALUES (:t_debit, :t_credit, :amount, :currency, 'payment', :t_ref, :now)",
    "INSERT INTO payments (id, order_pk, merchant_id, customer_id, carrier_serial, counter,"
    " amount, currency, payer_pseudonym, created_at, receipt) VALUES (:p_id, :p_order_pk,"
    " :p_mid, :p_cid, :p_serial, :p_counter, :amount, :currency, :p_pseudonym, :now,"
    " :p_receipt)",
    INSERT_EVENT,
    INSERT_AUDIT,
    AUDIT_SET_HASH,
)
