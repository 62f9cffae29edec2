"""checkout sessions are settled once: an index of their settling audit entries

* ``ix_audit_log_checkout_settles``: a partial index on ``audit_log.entity`` covering only the
  ``checkout.complete`` / ``checkout.expired`` / ``checkout.canceled`` entries. Settling a
  session looks there first (``safescan.institution.domain.checkout_settle``): a session whose
  row was set back to ``open`` (tampering, a partial restore) is not closed a second time.
  Other audit entries (every payment's) are not in the index and cost nothing more to append.

Revision ID: checkout_settle_index
Revises: merchant_api_keys
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "checkout_settle_index"
down_revision = "merchant_api_keys"
branch_labels = None
depends_on = None

WHERE = "action IN ('checkout.complete', 'checkout.expired', 'checkout.canceled')"


def upgrade() -> None:
    """Apply this revision."""
    op.create_index(
        "ix_audit_log_checkout_settles",
        "audit_log",
        ["entity"],
        unique=False,
        sqlite_where=sa.text(WHERE),
        postgresql_where=sa.text(WHERE),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_audit_log_checkout_settles", table_name="audit_log")
