"""merchant request rate limit in the database (shared by every API process)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "merchant_rate",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("tokens_milli", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", name=op.f("pk_merchant_rate")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("merchant_rate")
