"""merchant API keys: secret Bearer keys with scopes, stored as keyed hashes

* ``merchant_api_keys``: one row per key (``sk_live_<id>_<secret>``): the merchant, a label,
  HMAC-SHA256 of the key under the institution secret (never the key), the scopes, creation,
  expiry (a rotation's grace period ends there), revocation, last use and the key a rotation
  replaced it with (``safescan.institution.domain.api_keys``).

Revision ID: merchant_api_keys
Revises: checkout_sessions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "merchant_api_keys"
down_revision = "checkout_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "merchant_api_keys",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=True),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("last_used_at", sa.BigInteger(), nullable=True),
        sa.Column("replaced_by", sa.String(length=24), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_merchant_api_keys_merchant_id_merchants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant_api_keys")),
    )
    with op.batch_alter_table("merchant_api_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_merchant_api_keys_merchant_id"), ["merchant_id"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("merchant_api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_merchant_api_keys_merchant_id"))
    op.drop_table("merchant_api_keys")
