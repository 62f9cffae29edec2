"""the maintenance round finds the orders due without scanning the orders table

* ``ix_orders_created_expires``: a partial index on ``orders.expires_at`` covering only the
  orders still ``CREATED`` (payable). ``Orders.expire`` (every maintenance round, on a reader
  connection) looks there for the orders past their expiry instead of scanning every order the
  institution ever made. An order leaves the index when it is paid, expired or closed, so the
  index holds only the open orders, and a payment's update of its order removes one entry.

Revision ID: orders_due_index
Revises: checkpoint_head
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "orders_due_index"
down_revision = "checkpoint_head"
branch_labels = None
depends_on = None

WHERE = "state = 'CREATED'"


def upgrade() -> None:
    """Apply this revision."""
    op.create_index(
        "ix_orders_created_expires",
        "orders",
        ["expires_at"],
        unique=False,
        sqlite_where=sa.text(WHERE),
        postgresql_where=sa.text(WHERE),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_orders_created_expires", table_name="orders")
