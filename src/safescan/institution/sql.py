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
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

_PARAM = re.compile(r"(?<!:):([a-z_]+)")
_PG_CACHE: dict[str, str] = {}


def _pg(statement: str) -> str:
    pg = _PG_CACHE.get(statement)
    if pg is None:
        pg = _PG_CACHE[statement] = _PARAM.sub(r"%(\1)s", statement)
    return pg


def pg_text(statement: str) -> str:
    """``statement`` in psycopg's ``%(name)s`` parameter style (converted once, then cached)."""
    return _pg(statement)


def _wrapped(conn: Connection, statement: str, exc: Exception) -> DBAPIError:
    """The driver's error as SQLAlchemy's (so retries and storage errors treat both alike);
    parameters are left out of the message (they can hold receipts and tokens)."""
    err = DBAPIError.instance(
        statement, None, exc, conn.dialect.loaded_dbapi.Error, hide_parameters=True
    )
    assert isinstance(err, DBAPIError)  # always, for a driver error
    return err


def run(conn: Connection, statement: str, params: dict[str, Any]) -> Any:
    """Execute ``statement`` on the raw DBAPI cursor; returns the cursor. Driver errors are
    raised as :class:`sqlalchemy.exc.DBAPIError` subclasses, the driver's error as ``orig``."""
    dbapi = conn.connection.driver_connection
    assert dbapi is not None
    cur = dbapi.cursor()
    pg = conn.dialect.name == "postgresql"
    try:
        cur.execute(_pg(statement) if pg else statement, params)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, statement, exc) from exc
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
    try:
        with dbapi.pipeline():
            for statement, params in items:
                cur = dbapi.cursor()
                cur.execute(_pg(statement), params)
                cursors.append(cur)
        return [(cur.fetchall() if cur.description else [], cur.rowcount) for cur in cursors]
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, "; ".join(s for s, _ in items), exc) from exc


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
CARRIER_KEY = "SELECT signing_public_key, customer_id, status FROM carriers WHERE serial = :serial"

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
    " attempts, next_attempt_ms, request_id) VALUES (:e_id, :e_mid, :e_type, :e_payload, '',"
    " :e_created, :e_state, 0, :e_next_ms, :e_request_id)"
)

AUDIT_RESERVE = "UPDATE audit_heads SET seq = seq + 1 WHERE chain = :chain RETURNING seq, hash"
INSERT_AUDIT = (
    "INSERT INTO audit_log (chain, seq, at, actor, action, entity, data, prev_hash, hash)"
    " VALUES (:a_chain, :a_seq, :a_at, :a_actor, :a_action, :a_entity, :a_data, :a_prev_hash,"
    " :a_hash)"
)
AUDIT_SET_HASH = "UPDATE audit_heads SET hash = :a_hash WHERE chain = :a_chain"

# PostgreSQL: the whole payment of an institution-issued order in one statement (migrations
# 0002, 0007, 0009); casts pin the argument types, so one prepared statement serves every call.
PAY_ORDER_CALL = (
    "SELECT safescan_pay_order(:mid, :order_id, CAST(:amount AS bigint),"
    " CAST(:currency AS integer), :digest, CAST(:now AS bigint), :payment_id,"
    " CAST(:serial AS integer), CAST(:counter AS bigint), :cid, :pseudonym, :receipt,"
    " :e_id, :e_type, :e_payload, :e_state, CAST(:a_chain AS integer), :a_actor, :a_action,"
    " :a_entity, :a_data, :a_tail, :i_scope, CAST(:i_key AS text), :i_hash,"
    " CAST(:i_status AS integer), :i_response, CAST(:e_request_id AS text))"
)
# SQLSTATEs safescan_pay_order raises (its changes are then rolled back)
PAY_MERCHANT_INACTIVE = "SS001"
PAY_ORDER_UNPAYABLE = "SS002"
PAY_CARRIER_REFUSED = "SS003"
PAY_INSUFFICIENT_FUNDS = "SS004"
PAY_IDEMPOTENCY_TAKEN = "SS005"

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

# Merchant request rate limit: a token bucket per merchant in thousandths of a request,
# refilled by :rate_milli per second since updated_ms (never backwards, whatever the clocks of
# several hosts say) and capped at :burst_milli; one token (1000) is taken only if there is one:
# no row updated = rate limited. Integer arithmetic and plain CASE (no LEAST / multi-argument
# MIN), so the same text runs on SQLite and PostgreSQL.
RATE_BUCKET_CREATE = (
    "INSERT INTO merchant_rate (merchant_id, tokens_milli, updated_ms)"
    " VALUES (:mid, :burst_milli, :now_ms) ON CONFLICT DO NOTHING"
)
_ELAPSED = "(CASE WHEN :now_ms > updated_ms THEN :now_ms - updated_ms ELSE 0 END)"
_REFILLED = (
    f"(CASE WHEN tokens_milli + {_ELAPSED} * :rate_milli / 1000 > :burst_milli"
    f" THEN :burst_milli ELSE tokens_milli + {_ELAPSED} * :rate_milli / 1000 END)"
)
# built from the constant fragments above; every value is a bound parameter
TAKE_TOKEN = (
    f"UPDATE merchant_rate SET tokens_milli = {_REFILLED} - 1000,"  # noqa: S608
    " updated_ms = CASE WHEN :now_ms > updated_ms THEN :now_ms ELSE updated_ms END"
    f" WHERE merchant_id = :mid AND {_REFILLED} >= 1000"
)


def insert_ignore(conn: Connection, table: Any, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True if the row was inserted."""
    if conn.dialect.name == "postgresql":
        stmt: Any = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    return bool(conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount == 1)
