"""checkpoint head: the newest checkpoint file record the database knows was written

* ``checkpoint_head``: per checkpoint file (by its file name: hosts sharing the database each
  name their own), the chain position ``n`` and SHA-256 ``hash`` of the newest record appended
  to it; no row until the first chained record. A checkpoint file that is missing, ends before
  ``n`` or holds another record at ``n`` was deleted, truncated or replaced
  (``safescan.institution.checkpoints``).

Revision ID: checkpoint_head
Revises: checkout_settle_index
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "checkpoint_head"
down_revision = "checkout_settle_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "checkpoint_head",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_checkpoint_head")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("checkpoint_head")
