"""PostgreSQL: pay an institution-issued order in one statement (safescan_pay_order)

The function runs the same steps, in the same lock order, as the multi-statement path in
``Institution._payment_tx`` (which SQLite and merchant-signed or static codes use): merchant
live, order CREATED -> PAID, carrier counter strictly increasing, customer debited (never below
zero), merchant credited, transfer + payment + outbox event recorded, one audit entry appended
to its hash chain (the hash is computed here, from the previous entry's, exactly as
``audit.entry_hash`` does), and the Idempotency-Key's stored answer. Any refusal raises with a
``SS0nn`` SQLSTATE, so nothing it did stays; the caller maps the code to a typed error. Called
in autocommit mode it is one round trip and one transaction, and row locks are held only for the
function's own few statements and the commit.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PAY_ORDER_FUNCTION = """
CREATE OR REPLACE FUNCTION safescan_pay_order(
    p_mid text, p_order_id text, p_amount bigint, p_currency integer, p_digest bytea,
    p_now bigint, p_payment_id text, p_serial integer, p_counter bigint, p_customer_id text,
    p_pseudonym text, p_receipt bytea,
    p_event_id text, p_event_type text, p_event_payload text, p_event_state text,
    p_audit_chain integer, p_audit_actor text, p_audit_action text, p_audit_entity text,
    p_audit_data text, p_audit_tail text,
    p_idem_scope text, p_idem_key text, p_idem_hash text, p_idem_status integer,
    p_idem_response text
) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_status text;
    v_order_pk bigint;
    v_debit integer;
    v_credit integer;
    v_seq bigint;
    v_prev text;
    v_hash text;
BEGIN
    SELECT status INTO v_status FROM merchants WHERE id = p_mid;
    IF v_status IS DISTINCT FROM 'active' THEN
        RAISE EXCEPTION 'the merchant is not active' USING ERRCODE = 'SS001';
    END IF;

    UPDATE orders SET state = 'PAID', paid_at = p_now, paid_amount = p_amount,
                      payment_id = p_payment_id
     WHERE merchant_id = p_mid AND order_id = p_order_id AND state = 'CREATED'
       AND expires_at > p_now AND total = p_amount AND currency = p_currency
       AND code_digest = p_digest
    RETURNING pk INTO v_order_pk;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the order cannot be paid' USING ERRCODE = 'SS002';
    END IF;

    UPDATE carriers SET last_counter = p_counter
     WHERE serial = p_serial AND status = 'active' AND last_counter < p_counter;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'carrier revoked or counter not increasing' USING ERRCODE = 'SS003';
    END IF;

    UPDATE accounts SET balance = balance - p_amount
     WHERE kind = 'customer' AND owner_id = p_customer_id AND currency = p_currency
       AND balance >= p_amount
    RETURNING id INTO v_debit;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insufficient funds' USING ERRCODE = 'SS004';
    END IF;

    UPDATE accounts SET balance = balance + p_amount
     WHERE kind = 'merchant' AND owner_id = p_mid AND currency = p_currency
    RETURNING id INTO v_credit;
    IF NOT FOUND THEN
        INSERT INTO accounts (kind, owner_id, currency, balance, allow_negative, created_at)
        VALUES ('merchant', p_mid, p_currency, 0, true, p_now)
        ON CONFLICT DO NOTHING;
        UPDATE accounts SET balance = balance + p_amount
         WHERE kind = 'merchant' AND owner_id = p_mid AND currency = p_currency
        RETURNING id INTO v_credit;
    END IF;

    INSERT INTO transfers (debit_account_id, credit_account_id, amount, currency, kind, ref,
                           created_at)
    VALUES (v_debit, v_credit, p_amount, p_currency, 'payment', p_payment_id, p_now);

    INSERT INTO payments (id, order_pk, merchant_id, customer_id, carrier_serial, counter,
                          amount, currency, payer_pseudonym, created_at, receipt)
    VALUES (p_payment_id, v_order_pk, p_mid, p_customer_id, p_serial, p_counter, p_amount,
            p_currency, p_pseudonym, p_now, p_receipt);

    INSERT INTO events (id, merchant_id, type, payload, signature, created_at, webhook_state,
                        attempts, next_attempt_ms)
    VALUES (p_event_id, p_mid, p_event_type, p_event_payload, '', p_now, p_event_state, 0,
            p_now * 1000);

    UPDATE audit_heads SET seq = seq + 1 WHERE chain = p_audit_chain
    RETURNING seq, hash INTO v_seq, v_prev;
    v_hash := encode(sha256(convert_to(
        '["' || v_prev || '",' || p_audit_chain || ',' || v_seq || ',' || p_audit_tail,
        'UTF8')), 'hex');
    INSERT INTO audit_log (chain, seq, at, actor, action, entity, data, prev_hash, hash)
    VALUES (p_audit_chain, v_seq, p_now, p_audit_actor, p_audit_action, p_audit_entity,
            p_audit_data, v_prev, v_hash);
    UPDATE audit_heads SET hash = v_hash WHERE chain = p_audit_chain;

    IF p_idem_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response,
                                      created_at)
        VALUES (p_idem_scope, p_idem_key, p_idem_hash, p_idem_status, p_idem_response, p_now)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'idempotency key already stored' USING ERRCODE = 'SS005';
        END IF;
    END IF;

    RETURN v_order_pk;
END;
$$
"""

DROP = (
    "DROP FUNCTION IF EXISTS safescan_pay_order(text, text, bigint, integer, bytea, bigint,"
    " text, integer, bigint, text, text, bytea, text, text, text, text, integer, text, text,"
    " text, text, text, text, text, text, integer, text)"
)


def upgrade() -> None:
    """Apply this revision (PostgreSQL only; SQLite has no stored functions)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PAY_ORDER_FUNCTION)


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP)
