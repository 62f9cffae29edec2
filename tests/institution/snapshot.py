"""Whole-database snapshots: "a refusal changed nothing" as a diff of every table's rows.

Only the anti-replay nonces (with their floors), the rate-limit buckets, the elapsed clock and
the checkpoint file's head are left out: a refused merchant request with a valid signature still
spends its nonce and a token of its bucket, on purpose, the maintenance sweep advances the elapsed
clock (table ``elapsed_clock``) and the floors as real time passes, and every API process appends
a signed checkpoint of the audit log's head to the checkpoint file on its own schedule, recording
the file's new head in ``checkpoint_head``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData, select

from safescan.institution.db import Database

VOLATILE = frozenset(
    {"request_nonces", "nonce_floors", "elapsed_clock", "merchant_rate", "checkpoint_head"}
)
#: Webhook delivery bookkeeping the background dispatcher updates on its own schedule.
DELIVERY_COLUMNS = frozenset(
    {"webhook_state", "attempts", "next_attempt_ms", "delivered_at", "last_error"}
)

Snapshot = dict[str, list[tuple[Any, ...]]]


def snapshot(db_url: str) -> Snapshot:
    """Every row of every table (but :data:`VOLATILE`, and without the webhook delivery
    columns), sorted, as plain tuples."""
    db = Database(db_url, pool_size=1)
    try:
        meta = MetaData()
        meta.reflect(db.engine)
        out: Snapshot = {}
        with db.engine.connect() as conn:
            for name, table in sorted(meta.tables.items()):
                if name in VOLATILE or name.startswith("alembic"):
                    continue
                cols = [c for c in table.columns if c.name not in DELIVERY_COLUMNS]
                rows = [tuple(r) for r in conn.execute(select(*cols)).all()]
                out[name] = sorted(rows, key=repr)
        return out
    finally:
        db.dispose()


def diff(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """Tables whose rows differ, with the rows added and removed (empty: nothing changed)."""
    changed: dict[str, Any] = {}
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name, []), after.get(name, [])
        if a != b:
            changed[name] = {
                "added": [r for r in b if r not in a][:3],
                "removed": [r for r in a if r not in b][:3],
            }
    return changed
