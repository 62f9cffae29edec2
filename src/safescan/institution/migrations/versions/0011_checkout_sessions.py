"""checkout sessions: the hosted checkout page's sessions (issue 18)

* ``checkout_sessions``: one row per session, naming its merchant and its institution-issued
  order (unique together), its status (``open``, ``complete``, ``expired``, ``canceled``),
  the merchant's ``success_url`` and ``cancel_url``, the order's code text (what the
  page shows), its times and, once complete, the payment.

Revision ID: checkout_sessions
Revises: webhook_resend_request_id
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "checkout_sessions"
down_revision = "webhook_resend_request_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "checkout_sessions",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("success_url", sa.String(length=512), nullable=False),
        sa.Column("cancel_url", sa.String(length=512), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("completed_at", sa.BigInteger(), nullable=True),
        sa.Column("payment_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_checkout_sessions_merchant_id_merchants"),
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_checkout_sessions")),
        sa.UniqueConstraint("id", name=op.f("uq_checkout_sessions_id")),
        sa.UniqueConstraint("merchant_id", "order_id", name="uq_checkout_sessions_order"),
    )
    with op.batch_alter_table("checkout_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_checkout_sessions_status", ["status"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("checkout_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_checkout_sessions_status")
    op.drop_table("checkout_sessions")
