"""replay protection that does not trust the wall clock: nonces on the elapsed clock, floors

* ``request_nonces.seen_ms``: the institution's elapsed clock (ms of real time, shared by every
  API process through the table ``elapsed_clock``) when the nonce was recorded; nonces are kept for
  a fixed span of that clock, never of the wall clock. Existing nonces get 0: they are kept for
  the whole span from the first start after this migration.
* ``request_nonces.ts``: the request's signed timestamp (existing rows: the time seen plus the
  tolerance, an upper bound).
* ``nonce_floors``: per merchant, the newest signed timestamp among forgotten nonces; a request
  not newer than its merchant's floor is refused.

Revision ID: nonce_elapsed_clock
Revises: carrier_attestation_epochs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "nonce_elapsed_clock"
down_revision = "carrier_attestation_epochs"
branch_labels = None
depends_on = None

TOLERANCE = 300  # safescan.api.merchant_auth.TOLERANCE when this revision was written


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("request_nonces", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("seen_ms", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(
            sa.Column("ts", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.drop_index(batch_op.f("ix_request_nonces_seen_at"))
        batch_op.create_index(batch_op.f("ix_request_nonces_seen_ms"), ["seen_ms"], unique=False)
    op.execute(f"UPDATE request_nonces SET ts = seen_at + {TOLERANCE}")  # noqa: S608 - a constant
    op.create_table(
        "nonce_floors",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", name=op.f("pk_nonce_floors")),
    )
    op.create_table(
        "elapsed_clock",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_elapsed_clock")),
    )
    op.execute("INSERT INTO elapsed_clock (name, value) VALUES ('elapsed_ms', 0)")


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("elapsed_clock")
    op.drop_table("nonce_floors")
    with op.batch_alter_table("request_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_request_nonces_seen_ms"))
        batch_op.create_index(batch_op.f("ix_request_nonces_seen_at"), ["seen_at"], unique=False)
        batch_op.drop_column("ts")
        batch_op.drop_column("seen_ms")
