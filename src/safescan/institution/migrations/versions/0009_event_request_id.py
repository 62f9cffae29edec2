"""events.request_id: the HTTP request that caused an event (its webhook carries it)

* ``events.request_id``: the ``X-Request-Id`` of the request whose transaction wrote the event
  (NULL for events written outside a request: expiry sweeps, reconciliation, older events).
  The webhook dispatcher sends it as ``X-Request-Id`` with every delivery of the event, so a
  merchant's logs and the institution's join on it.
* PostgreSQL: ``safescan_pay_order`` takes it as a last argument (``p_event_request_id``) and
  stores it with the event; otherwise the function of revision ``idempotency_claim_first``.

Revision ID: event_request_id
Revises: webhook_operations
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "event_request_id"
down_revision = "webhook_operations"
branch_labels = None
depends_on = None

_PREVIOUS = importlib.import_module(
    "safescan.institution.migrations.versions.0007_idempotency_claim_first"
).PAY_ORDER_FUNCTION
_DROP_PREVIOUS = importlib.import_module(
    "safescan.institution.migrations.versions.0002_pay_order_function"
).DROP

_SIGNATURE_END = "    p_idem_response text\n) RETURNS bigint"
# the events INSERT: its column list and its last value line
_COLUMNS = "attempts, next_attempt_ms)\n    VALUES (p_event_id,"
_VALUES_END = "            p_now * 1000);\n"


def _with_request_id(previous: str) -> str:
    for part in (_SIGNATURE_END, _COLUMNS, _VALUES_END):
        assert previous.count(part) == 1, part
    text = previous.replace(
        _SIGNATURE_END, "    p_idem_response text, p_event_request_id text\n) RETURNS bigint"
    )
    text = text.replace(
        _COLUMNS, _COLUMNS.replace("next_attempt_ms)", "next_attempt_ms, request_id)")
    )
    return text.replace(_VALUES_END, "            p_now * 1000, p_event_request_id);\n")


PAY_ORDER_FUNCTION = _with_request_id(_PREVIOUS)
DROP = _DROP_PREVIOUS.replace("integer, text)", "integer, text, text)")


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=64), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_DROP_PREVIOUS)  # the signature changes: a new function, not a replacement
        op.execute(PAY_ORDER_FUNCTION)


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP)
        op.execute(_PREVIOUS)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("request_id")
