"""Idempotency-Key claimed first; payments found by (carrier serial, counter)

* PostgreSQL: ``safescan_pay_order`` takes the Idempotency-Key as its *first* step (revision
  0002 stored it last): a concurrent request with the same key waits for the first one (at most
  1 s, then ``lock_not_available``, answered "in progress") and then gets its answer, instead of
  running the business checks and being told "already paid". Same signature, same steps
  otherwise.
* ``ix_payments_carrier_counter``: the payment a carrier-signed authorization made is found by
  its carrier serial and counter (the status lookup a wallet uses when it lost the answer).

Revision ID: idempotency_claim_first
Revises: nonce_elapsed_clock
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "idempotency_claim_first"
down_revision = "nonce_elapsed_clock"
branch_labels = None
depends_on = None

_V2 = importlib.import_module(
    "safescan.institution.migrations.versions.0002_pay_order_function"
).PAY_ORDER_FUNCTION

_STORE_LAST = """
    IF p_idem_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response,
                                      created_at)
        VALUES (p_idem_scope, p_idem_key, p_idem_hash, p_idem_status, p_idem_response, p_now)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'idempotency key already stored' USING ERRCODE = 'SS005';
        END IF;
    END IF;
"""

_CLAIM_FIRST = """BEGIN
    -- the key first: a request holding it makes this one wait (bounded), then its answer
    -- counts (SS005) and none of the checks below runs
    IF p_idem_key IS NOT NULL THEN
        v_lock_timeout := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout', '1s', true);
        INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response,
                                      created_at)
        VALUES (p_idem_scope, p_idem_key, p_idem_hash, p_idem_status, p_idem_response, p_now)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'idempotency key already answered' USING ERRCODE = 'SS005';
        END IF;
        PERFORM set_config('lock_timeout', v_lock_timeout, true);
    END IF;
"""


def _claim_first(v2: str) -> str:
    assert _STORE_LAST in v2 and v2.count("\nBEGIN\n") == 1
    text = v2.replace(_STORE_LAST, "")
    text = text.replace("    v_hash text;\n", "    v_hash text;\n    v_lock_timeout text;\n")
    return text.replace("\nBEGIN\n", "\n" + _CLAIM_FIRST, 1)


PAY_ORDER_FUNCTION = _claim_first(_V2)


def upgrade() -> None:
    """Apply this revision."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PAY_ORDER_FUNCTION)
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payments_carrier_counter", ["carrier_serial", "counter"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_carrier_counter")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_V2)
