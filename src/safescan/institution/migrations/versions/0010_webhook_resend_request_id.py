"""A resend's own request id, and the request ids of each delivery attempt

* ``events.resend_request_id``: the ``X-Request-Id`` of the merchant's latest ``resend`` of the
  event (NULL until it is resent). Deliveries after a resend carry it as ``X-Request-Id``; the
  event keeps ``request_id`` (the request that caused it), so the two stay linked.
* ``webhook_deliveries.request_id``: the id sent with that attempt (the resend's, else the
  causing request's); ``webhook_deliveries.original_request_id``: the causing request's id.

Revision ID: webhook_resend_request_id
Revises: event_request_id
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "webhook_resend_request_id"
down_revision = "event_request_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resend_request_id", sa.String(length=64), nullable=True))
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("original_request_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_column("original_request_id")
        batch_op.drop_column("request_id")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("resend_request_id")
