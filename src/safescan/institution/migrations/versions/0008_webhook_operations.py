"""webhook operations: the delivery log, endpoint signing secrets, resends

* ``webhook_deliveries``: one row per delivery attempt (event id, attempt number, time, HTTP
  status or transport error class, latency, next retry, state), bounded by age and per merchant
  (``safescan.institution.webhook_log``).
* ``webhook_endpoints``: a merchant endpoint's sealed ``whsec_`` secret for Standard Webhooks
  ``v1`` signatures, and the previous one during a rotation's overlap.
* ``events.requeued_at``: when the merchant asked for an event to be sent again.

Revision ID: webhook_operations
Revises: idempotency_claim_first
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "webhook_operations"
down_revision = "idempotency_claim_first"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requeued_at", sa.BigInteger(), nullable=True))
    op.create_table(
        "webhook_endpoints",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("secret_box", sa.LargeBinary(length=128), nullable=False),
        sa.Column("previous_box", sa.LargeBinary(length=128), nullable=True),
        sa.Column("previous_until", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("rotated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("error_kind", sa.String(length=16), nullable=True),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("next_retry_ms", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_deliveries_at_ms", ["at_ms"], unique=False)
        batch_op.create_index("ix_webhook_deliveries_event_id", ["event_id"], unique=False)
        batch_op.create_index(
            "ix_webhook_deliveries_merchant_id", ["merchant_id", "id"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("requeued_at")
