"""Value corruptions: one stored value changed behind the institution's back (SQL, triggers
disabled), for every column of every table, on SQLite and PostgreSQL alike.

What a disk, a bad controller, a buggy script or an intruder with database access could do to
one value. Each corruption is applied, audited, and undone (the same UPDATE with the old value).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, Integer, LargeBinary, text

from safescan.api.errors import InvalidRequest
from safescan.institution.db import Database
from safescan.institution.models import Base

# Columns whose corruption the audit cannot see, and why (docs/reliability.md, "Audit"): state
# that is rewritten all the time and recorded nowhere else. A change there is either harmless
# or shows up as a refusal, never as money moving.
UNDETECTABLE: dict[tuple[str, str], str] = {
    ("events", "attempts"): "webhook delivery bookkeeping",
    ("events", "next_attempt_ms"): "webhook delivery bookkeeping",
    ("events", "last_error"): "webhook delivery bookkeeping",
    ("events", "webhook_state"): "webhook delivery bookkeeping (pending/failed/none)",
    ("events", "delivered_at"): "webhook delivery bookkeeping",
    ("events", "requeued_at"): "webhook delivery bookkeeping (a merchant's resend)",
    ("events", "request_id"): "request correlation id for operators (logs, webhooks)",
    ("events", "resend_request_id"): "correlation id of a merchant's resend (operators' logs)",
    ("webhook_deliveries", "request_id"): "webhook delivery log: correlation id (bookkeeping)",
    ("webhook_deliveries", "original_request_id"): "webhook delivery log: correlation id",
    ("webhook_endpoints", "secret_box"): "sealed under the server secret: the audit has no key",
    ("webhook_endpoints", "previous_box"): "sealed under the server secret: the audit has no key",
    ("webhook_deliveries", "id"): "an internal row number",
    ("webhook_deliveries", "attempt"): "webhook delivery log (bookkeeping)",
    ("webhook_deliveries", "at_ms"): "webhook delivery log (bookkeeping)",
    ("webhook_deliveries", "url"): "webhook delivery log (bookkeeping)",
    ("webhook_deliveries", "status"): "webhook delivery log (bookkeeping)",
    ("webhook_deliveries", "error_kind"): "webhook delivery log (bookkeeping)",
    ("webhook_deliveries", "error"): "webhook delivery log (bookkeeping)",
    ("webhook_deliveries", "latency_ms"): "webhook delivery log (bookkeeping)",
    ("webhook_deliveries", "next_retry_ms"): "webhook delivery log (bookkeeping)",
    ("request_nonces", "nonce"): "random anti-replay nonces, recorded nowhere else",
    ("request_nonces", "seen_at"): "kept only for the replay window",
    ("request_nonces", "seen_ms"): "kept only for the replay window (elapsed clock)",
    ("request_nonces", "ts"): "kept only for the replay window (signed timestamp)",
    ("nonce_floors", "ts"): "anti-replay floor, recorded nowhere else",
    ("elapsed_clock", "value"): "the elapsed clock (processes run ahead of it between sweeps)",
    ("merchant_rate", "tokens_milli"): "rate-limit bucket",
    ("merchant_rate", "updated_ms"): "rate-limit bucket",
    ("idempotency_keys", "key"): "the client's own key, recorded nowhere else",
    ("idempotency_keys", "request_hash"): "payments: the request is not stored",
    ("accounts", "created_at"): "checked only against its owner's lifetime",
    ("orders", "expires_at"): "born-paid orders: the code's expiry is not recorded",
    ("orders", "kind"): "born-paid orders: static and merchant-signed look alike",
    # surrogate keys that nothing else names (when something does, the reference breaks)
    ("orders", "pk"): "an internal row number",
    ("transfers", "id"): "an internal row number",
    ("events", "seq"): "an internal row number (the stream cursor)",
    ("audit_log", "id"): "an internal row number (entries are named by chain and seq)",
    ("accounts", "id"): "an internal row number",
    ("checkout_sessions", "pk"): "an internal row number (sessions are named by their id)",
    ("merchant_api_keys", "last_used_at"): "when a key was last used: bookkeeping, logged nowhere",
    # compared with the checkpoint file, which these campaigns do not give the audit (a head
    # moved up reads as a truncated file there; one moved down only weakens that one check)
    ("checkpoint_head", "name"): "compared with the checkpoint file (not given here)",
    ("checkpoint_head", "n"): "compared with the checkpoint file (not given here)",
    ("checkpoint_head", "hash"): "compared with the checkpoint file (not given here)",
}

#: Columns of a stored refusal or "withdrawn" answer (an ``idempotency_keys`` row whose status is
#: not 201): it answers no row, so only its form is checked (its status against its error code).
UNDETECTABLE_IN_REFUSALS: dict[tuple[str, str], str] = {
    ("idempotency_keys", "created_at"): "a refusal answers no row to compare with",
    ("idempotency_keys", "response"): "a refusal's message and parameter are free text",
}


@dataclass(frozen=True)
class Corruption:
    """Set ``column`` of the row ``where`` (primary key) in ``table`` to ``new``."""

    table: str
    column: str
    where: dict[str, Any]
    old: Any
    new: Any
    refusal: bool = False  # the row is a stored refusal (see UNDETECTABLE_IN_REFUSALS)

    @property
    def known_undetectable(self) -> bool:
        """Whether the audit cannot see this column by design (see UNDETECTABLE)."""
        where = (self.table, self.column)
        return where in UNDETECTABLE or (self.refusal and where in UNDETECTABLE_IN_REFUSALS)

    def __str__(self) -> str:
        return f"{self.table}.{self.column} {self.where}: {self.old!r} -> {self.new!r}"


def _changed(value: Any, col: Any, rng: random.Random) -> Any:
    """A different value of the same type (what a flipped bit or a typo leaves)."""
    if value is None:
        if isinstance(col.type, Integer):
            return 1_700_000_000
        if isinstance(col.type, LargeBinary):
            return bytes(32)
        return "https://corrupted.example/x"
    if isinstance(col.type, Boolean):
        return not value
    if isinstance(col.type, Integer):
        return value ^ (1 << rng.randrange(0, 8)) if value else 1
    if isinstance(col.type, LargeBinary):
        raw = bytearray(value)
        i = rng.randrange(len(raw)) if raw else 0
        if not raw:
            return b"\x01"
        raw[i] ^= 1 << rng.randrange(8)
        return bytes(raw)
    chars = list(value) or ["a"]
    i = rng.randrange(len(chars))
    alphabet = "ABCDEFGHJKMNPQRSTUVWXYZ0123456789abcdefgh"
    chars[i] = rng.choice([c for c in alphabet if c != chars[i]])
    return "".join(chars)


def plan(db: Database, *, per_column: int = 1, seed: int = 1) -> list[Corruption]:
    """``per_column`` corruptions of random rows for every column of every table."""
    rng = random.Random(seed)
    out: list[Corruption] = []

    def read(conn: Any) -> None:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(table.select()).mappings().all()
            if not rows:
                continue
            pk = [c.name for c in table.primary_key.columns]
            for col in table.columns:
                for row in rng.sample(list(rows), min(per_column, len(rows))):
                    where = {k: row[k] for k in pk}
                    out.append(
                        Corruption(
                            table.name,
                            col.name,
                            where,
                            row[col.name],
                            _changed(row[col.name], col, rng),
                            refusal=table.name == "idempotency_keys" and row["status_code"] != 201,
                        )
                    )

    db.read(read)
    return out


IMMUTABLE = ("transfers", "audit_log")


def _set(db: Database, c: Corruption, value: Any) -> bool:
    """UPDATE one value, with the immutability triggers off for the statement; False if the
    database refuses (a constraint: then there is nothing for the audit to find)."""
    cond = " AND ".join(f'"{k}" = :w_{k}' for k in c.where)
    params = {f"w_{k}": v for k, v in c.where.items()}
    if c.column in c.where:  # the key itself changes: find the row by its current key
        params[f"w_{c.column}"] = c.old if value == c.new else c.new
    params["v"] = value
    stmt = text(f'UPDATE "{c.table}" SET "{c.column}" = :v WHERE {cond}')
    guarded = c.table in IMMUTABLE

    def tx(conn: Any) -> bool:
        if guarded and db.is_sqlite:
            conn.exec_driver_sql(f"DROP TRIGGER {c.table}_no_update")
        elif guarded:
            conn.exec_driver_sql(f"ALTER TABLE {c.table} DISABLE TRIGGER {c.table}_immutable")
        res = conn.execute(stmt, params)
        if guarded and db.is_sqlite:
            conn.exec_driver_sql(
                f"CREATE TRIGGER {c.table}_no_update BEFORE UPDATE ON {c.table}"
                f" BEGIN SELECT RAISE(ABORT, 'safescan: {c.table} rows are immutable'); END"
            )
        elif guarded:
            conn.exec_driver_sql(f"ALTER TABLE {c.table} ENABLE TRIGGER {c.table}_immutable")
        return bool(res.rowcount == 1)

    try:
        return db.write(tx)
    except InvalidRequest:  # a value the column cannot hold (too long for it, out of range)
        return False
    except Exception as exc:
        if "constraint" in str(exc).lower() or "violates" in str(exc).lower():
            return False
        raise


def apply(db: Database, c: Corruption) -> bool:
    """Corrupt; False if the database refused the value."""
    return _set(db, c, c.new)


def undo(db: Database, c: Corruption) -> None:
    """Put the old value back."""
    assert _set(db, c, c.old), f"cannot undo {c}"


def campaign(
    db: Database, corruptions: list[Corruption], audit: Any
) -> Iterator[tuple[Corruption, bool | None]]:
    """For each corruption: (it, detected) — ``None`` when the database refused it."""
    for c in corruptions:
        if not apply(db, c):
            yield c, None
            continue
        try:
            yield c, audit()
        finally:
            undo(db, c)


__all__ = ["UNDETECTABLE", "Corruption", "apply", "campaign", "plan", "undo"]
