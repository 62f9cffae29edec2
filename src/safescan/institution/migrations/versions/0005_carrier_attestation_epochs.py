"""carrier attestation (trusted manufacturer keys, attested devices) and scheme-key epochs

Revision ID: carrier_attestation_epochs
Revises: serial_counter
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "carrier_attestation_epochs"
down_revision = "serial_counter"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "manufacturer_keys",
        sa.Column("kid", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_manufacturer_keys")),
    )
    op.create_table(
        "carrier_devices",
        sa.Column("serial", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("device_id", sa.LargeBinary(length=8), nullable=False),
        sa.Column("model", sa.Integer(), nullable=False),
        sa.Column("manufacturer_kid", sa.Integer(), nullable=False),
        sa.Column("attestation_serial", sa.BigInteger(), nullable=False),
        sa.Column("statement", sa.LargeBinary(), nullable=False),
        sa.Column("enrolled_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["serial"], ["carriers.serial"], name=op.f("fk_carrier_devices_serial_carriers")
        ),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_carrier_devices")),
    )
    op.create_index(
        op.f("ix_carrier_devices_device_id"), "carrier_devices", ["device_id"], unique=False
    )
    op.create_table(
        "scheme_epochs",
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kid", sa.Integer(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("retire_at", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("epoch", name=op.f("pk_scheme_epochs")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("scheme_epochs")
    op.drop_index(op.f("ix_carrier_devices_device_id"), table_name="carrier_devices")
    op.drop_table("carrier_devices")
    op.drop_table("manufacturer_keys")
