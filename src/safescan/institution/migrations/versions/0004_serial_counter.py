"""certificate serials from a counter (reserved in the checkpoint file); amcheck for the audit

Serials were the certificates table's own auto-increment, which a restored database resets.
They now come from the ``certificate_serial`` counter (see safescan.institution.reservations),
started at the highest serial issued so far. On PostgreSQL, as a superuser, the ``amcheck``
extension is installed so that ``safescan institution audit`` can verify heap and index pages
(without it the audit says it could not).

Revision ID: serial_counter
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "serial_counter"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.execute(
        "INSERT INTO counters (name, value) SELECT 'certificate_serial',"
        " COALESCE(MAX(serial), 0) FROM certificates"
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        superuser = bind.execute(
            sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        ).scalar()
        available = bind.execute(
            sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'")
        ).scalar()
        if superuser and available:
            op.execute("CREATE EXTENSION IF NOT EXISTS amcheck")


def downgrade() -> None:
    """Revert this revision (amcheck, if installed, stays: other users may rely on it)."""
    op.execute("DELETE FROM counters WHERE name = 'certificate_serial'")
