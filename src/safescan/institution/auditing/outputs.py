"""Cross-references of what the institution answered and announced: outbox events, stored
Idempotency-Key answers, merchant request nonces and rate buckets, the schema revision."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

from safescan.api.encoding import b64e
from safescan.api.errors import error_class
from safescan.api.states import CheckoutState, EventType, OrderState
from safescan.code.envelope import decode_text
from safescan.code.errors import SafescanError
from safescan.institution.auditing.context import SKEW, Context, Row, differs, index
from safescan.institution.auditing.merchant_access import keyed_api_key, keyed_checkout
from safescan.institution.util import canonical_json

EVENT_KEYS = {"id", "type", "created", "merchant_id", "data"}
WEBHOOK_STATES = ("pending", "delivered", "failed", "none")
NONCE = re.compile(r"[A-Za-z0-9_\-]{16,64}")
HEX64 = re.compile(r"[0-9a-f]{64}")
#: errors that are never a key's answer (a retry runs the request again)
NEVER_STORED = frozenset(
    {"request_in_progress", "rate_limited", "unauthenticated", "replayed_request"}
)
PAYMENT_FIELDS = ("payment_id", "order_id", "amount", "currency", "payer_pseudonym", "paid_at")


def _payload(e: Row) -> tuple[dict[str, Any] | None, str | None]:
    try:
        doc = json.loads(e["payload"])
    except ValueError:
        return None, "payload is not JSON"
    if not isinstance(doc, dict) or set(doc) != EVENT_KEYS or not isinstance(doc["data"], dict):
        return None, "payload is not an event object"
    if canonical_json(doc) != e["payload"]:
        return None, "payload is not canonical JSON"
    return doc, None


def _payment_view(p: Row, o: Row | None) -> dict[str, Any]:
    return {
        "payment_id": p["id"],
        "order_id": o["order_id"] if o else None,
        "amount": p["amount"],
        "currency": p["currency"],
        "payer_pseudonym": p["payer_pseudonym"],
        "paid_at": p["created_at"],
    }


def _checkout_differences(cs: Row, o: Row, data: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """A ``checkout.session.completed`` event against its session and the session's order
    (complete, paid, by the payment the event names)."""
    return {
        "session status": (cs["status"], CheckoutState.COMPLETE),
        "order paid": (OrderState(o["state"]).is_paid, True),
        "order_id": (data.get("order_id"), cs["order_id"]),
        "payment_id": (data.get("payment_id"), o["payment_id"]),
        "session payment_id": (cs["payment_id"], o["payment_id"]),
        "amount_total": (data.get("amount_total"), o["total"]),
        "currency": (data.get("currency"), o["currency"]),
        "reference": (data.get("reference"), o["reference"]),
        "completed_at": (data.get("completed_at"), o["paid_at"]),
    }


def check_events(ctx: Context) -> Iterator[str]:
    """Every event: canonical payload agreeing with its row and with the payment, refund,
    order or checkout session it reports; every payment, refund, close, expiry and completed
    checkout session announced exactly once."""
    orders = ctx.by_pk("orders", "pk")
    by_oid = index(ctx.rows("orders"), lambda o: (o["merchant_id"], o["order_id"]))
    payments, refunds = ctx.by_pk("payments", "id"), ctx.by_pk("refunds", "id")
    refund_log = {e.data.get("refund_id"): e for e in ctx.journal.of("refund.create")}
    sessions = ctx.by_pk("checkout_sessions", "id")
    announced: dict[tuple[str, str], int] = {}
    for ev in ctx.rows("events"):
        what = f"event {ev['seq']} ({ev['id']})"
        if ev["webhook_state"] not in WEBHOOK_STATES:
            yield f"{what}: unknown webhook state {ev['webhook_state']!r}"
        if (ev["delivered_at"] is not None) != (ev["webhook_state"] == "delivered"):
            yield f"{what}: delivery time does not match its webhook state"
        if ev["attempts"] < 0 or ev["next_attempt_ms"] < 0:
            yield f"{what}: negative attempt count or time"
        if ev["signature"] != "":
            yield f"{what}: events are signed when sent, yet a signature is stored"
        doc, problem = _payload(ev)
        if doc is None:
            yield f"{what}: {problem}"
            continue
        yield from differs(
            what,
            {
                "id": (ev["id"], doc["id"]),
                "type": (ev["type"], doc["type"]),
                "created_at": (ev["created_at"], doc["created"]),
                "merchant_id": (ev["merchant_id"], doc["merchant_id"]),
            },
        )
        data, kind = doc["data"], ev["type"]
        if kind == EventType.PAYMENT_SUCCEEDED:
            p = payments.get(data.get("payment_id"))
            if p is None:
                yield f"{what} announces payment {data.get('payment_id')}, which does not exist"
                continue
            key = ("payment", p["id"])
            expect = _payment_view(p, orders.get(p["order_pk"]))
            yield from differs(what, {k: (data.get(k), expect[k]) for k in PAYMENT_FIELDS})
            yield from differs(
                what,
                {
                    "merchant": (ev["merchant_id"], p["merchant_id"]),
                    "created": (ev["created_at"], p["created_at"]),
                },
            )
        elif kind == EventType.REFUND_SUCCEEDED:
            r, e = refunds.get(data.get("refund_id")), refund_log.get(data.get("refund_id"))
            if r is None or e is None:
                yield f"{what} announces refund {data.get('refund_id')}, which does not exist"
                continue
            key = ("refund", r["id"])
            logged = {k: v for k, v in e.data.items() if k != "reason"}
            yield from _answer(what, data, logged)
            yield from differs(
                what,
                {
                    "merchant": (ev["merchant_id"], r["merchant_id"]),
                    "created": (ev["created_at"], r["created_at"]),
                },
            )
        elif kind in (EventType.ORDER_CLOSED, EventType.ORDER_EXPIRED):
            o = by_oid.get((ev["merchant_id"], data.get("order_id")))
            state = OrderState.CLOSED if kind == EventType.ORDER_CLOSED else OrderState.EXPIRED
            if o is None or o["state"] != state or set(data) != {"order_id"}:
                yield f"{what} announces an order that is not {state}"
                continue
            key = (kind, str(o["pk"]))
        elif kind == EventType.CHECKOUT_SESSION_COMPLETED:
            cs = sessions.get(data.get("session_id"))
            o = by_oid.get((cs["merchant_id"], cs["order_id"])) if cs is not None else None
            if cs is None or o is None or cs["merchant_id"] != ev["merchant_id"]:
                yield f"{what} announces checkout session {data.get('session_id')}, unknown"
                continue
            yield from differs(what, _checkout_differences(cs, o, data))
            key = ("checkout", cs["id"])
        elif kind == "institution.reconciled":
            floors = {e.data.get("event_seq"): e for e in ctx.journal.of("institution.reconcile")}
            e = floors.get(ev["seq"])
            if e is None or ev["merchant_id"] != "" or ev["created_at"] != e.at:
                yield f"{what}: a reconciliation marker without its reconciliation"
            continue
        else:
            yield f"{what}: unknown event type {kind!r}"
            continue
        announced[key] = announced.get(key, 0) + 1
    if not ctx.readable("events"):
        return
    expected = [("payment", p) for p in payments] + [("refund", r) for r in refunds]
    expected += [
        (EventType.ORDER_CLOSED, str(o["pk"]))
        for o in ctx.rows("orders")
        if o["state"] == OrderState.CLOSED
    ]
    expected += [
        (EventType.ORDER_EXPIRED, str(o["pk"]))
        for o in ctx.rows("orders")
        if o["state"] == OrderState.EXPIRED
    ]
    expected += [
        ("checkout", str(cs["id"]))
        for cs in ctx.rows("checkout_sessions")
        if cs["status"] == CheckoutState.COMPLETE
    ]
    for key in expected:
        if announced.get(key, 0) != 1:
            yield f"{key[0]} {key[1]} was announced {announced.get(key, 0)} times (events)"


KEYED_KINDS = ("pay", "order", "refund", "checkout", "api_key")  # Idempotency-Key scopes


def _hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def check_idempotency(ctx: Context) -> Iterator[str]:
    """Every stored Idempotency-Key answer matches the row it answered (the order, refund or
    payment exists and says the same), with the request hash where it can be recomputed."""
    orders = index(ctx.rows("orders"), lambda o: (o["merchant_id"], o["order_id"]))
    orders_pk = ctx.by_pk("orders", "pk")
    payments, refunds = ctx.by_pk("payments", "id"), ctx.by_pk("refunds", "id")
    refund_log = {e.data.get("refund_id"): e for e in ctx.journal.of("refund.create")}
    carriers = {str(s) for s in ctx.by_pk("carriers", "serial")}
    merchants = set(ctx.by_pk("merchants", "id"))
    for rec in ctx.rows("idempotency_keys"):
        what = f"idempotency record {rec['scope']}/{rec['key']}"
        if not HEX64.fullmatch(rec["request_hash"]):
            yield f"{what}: the request hash is not 64 hex digits"
        try:
            body = json.loads(rec["response"])
        except ValueError:
            body = None
        if not isinstance(body, dict) or canonical_json(body) != rec["response"]:
            yield f"{what}: the stored answer is not a canonical JSON object"
            continue
        kind, _, owner = rec["scope"].partition(":")
        if kind == "api_key":  # api_key:<merchant or admin>:<merchant id>
            yield from keyed_api_key(what, rec)
            owner = owner.partition(":")[2]
        if rec["status_code"] != 201:
            yield from _stored_refusal(what, rec["status_code"], body)
            owners = carriers if kind == "pay" else merchants
            known = owner in owners if kind in KEYED_KINDS else False
            if not known and ctx.readable("carriers") and ctx.readable("merchants"):
                yield f"{what}: its scope names no carrier or merchant"
            continue
        if kind == "order":
            o = orders.get((owner, body.get("order_id")))
            if o is None:
                yield f"{what} answered order {body.get('order_id')}, which does not exist"
                continue
            yield from differs(
                what,
                {
                    "merchant_id": (body.get("merchant_id"), owner),
                    "state": (body.get("state"), OrderState.CREATED),
                    "total": (body.get("total"), o["total"]),
                    "currency": (body.get("currency"), o["currency"]),
                    "expires_at": (body.get("expires_at"), o["expires_at"]),
                    "reference": (body.get("reference"), o["reference"]),
                    "created_at": (rec["created_at"], o["created_at"]),
                },
            )
            yield from _code_matches(what, body, o)
        elif kind == "refund":
            r, e = refunds.get(body.get("refund_id")), refund_log.get(body.get("refund_id"))
            if r is None or e is None:
                yield f"{what} answered refund {body.get('refund_id')}, which does not exist"
                continue
            logged = {k: v for k, v in e.data.items() if k != "reason"}
            expect = logged | {"status": "succeeded", "created_at": r["created_at"]}
            yield from _answer(what, body, expect)
            yield from differs(
                what,
                {
                    "scope": (owner, r["merchant_id"]),
                    "created_at": (rec["created_at"], r["created_at"]),
                },
            )
            o = orders_pk.get(r["order_pk"])
            reason = e.data.get("reason", r["reason"])
            requests = {
                _hash({"order_id": o["order_id"] if o else None, "amount": a, "reason": reason})
                for a in (r["amount"], None)
            }
            if rec["request_hash"] not in requests:
                yield f"{what}: the request hash is not that of the refund it answered"
        elif kind == "pay":
            p = payments.get(body.get("payment_id"))
            if p is None:
                yield f"{what} answered payment {body.get('payment_id')}, which does not exist"
                continue
            o = orders_pk.get(p["order_pk"])
            expect = _payment_view(p, o) | {
                "status": "succeeded",
                "merchant_id": p["merchant_id"],
                "receipt": b64e(p["receipt"]),
            }
            yield from _answer(what, body, expect)
            yield from differs(
                what,
                {
                    "scope": (owner, str(p["carrier_serial"])),
                    "created_at": (rec["created_at"], p["created_at"]),
                },
            )
        elif kind == "checkout":
            yield from keyed_checkout(ctx, what, owner, rec, body)
        elif kind == "api_key":
            yield f"{what}: an API key's creation answer is stored (it holds the key's secret)"
        else:
            yield f"{what}: unknown scope"


def _answer(what: str, body: dict[str, Any], expect: dict[str, Any]) -> Iterator[str]:
    """A stored answer field by field against what it answered."""
    if set(body) != set(expect):
        yield f"{what}: the stored answer has fields {sorted(body)}, expected {sorted(expect)}"
    yield from differs(what, {k: (body.get(k), v) for k, v in expect.items()})


def _code_matches(what: str, body: dict[str, Any], o: Row) -> Iterator[str]:
    try:
        binary = decode_text(str(body.get("code")))
    except SafescanError:
        yield f"{what}: the stored code is not a payment code"
        return
    if hashlib.sha256(binary).digest() != o["code_digest"] or body.get("code_bytes") != len(binary):
        yield f"{what}: the stored code is not the order's code"


def _stored_refusal(what: str, status: int, body: dict[str, Any]) -> Iterator[str]:
    """A stored answer that is not a success: a final refusal of the request, or "withdrawn"
    (a status lookup settled it first); it answers no row, so it must be a well-formed error
    of a final kind with its own status."""
    err = body.get("error")
    cls = error_class(err.get("code", "")) if isinstance(err, dict) else None
    if cls is None or set(body) != {"error"}:
        yield f"{what}: status {status} with an answer that is not a known error"
    elif cls.status != status or not (400 <= status < 500) or cls.code in NEVER_STORED:
        yield f"{what}: status {status} for {cls.code!r}, which is never a stored answer"


def check_nonces_and_rates(ctx: Context) -> Iterator[str]:
    """Request nonces and rate buckets belong to real merchants and hold plausible values (they
    are short-lived anti-replay and rate state: see docs/reliability.md, "Audit")."""
    merchants = ctx.by_pk("merchants", "id")
    for n in ctx.rows("request_nonces"):
        what = f"request nonce of {n['merchant_id']}"
        if not NONCE.fullmatch(n["nonce"]):
            yield f"{what}: {n['nonce']!r} is not a nonce"
        m = merchants.get(n["merchant_id"])
        if m is None:
            if ctx.readable("merchants"):
                yield f"{what}: the merchant does not exist"
        elif not m["created_at"] <= n["seen_at"] <= ctx.now + SKEW:
            yield f"{what}: seen at {n['seen_at']}, outside the merchant's lifetime"
    for f in ctx.rows("nonce_floors"):
        if f["merchant_id"] not in merchants and ctx.readable("merchants"):
            yield f"nonce floor of {f['merchant_id']}: the merchant does not exist"
    clock = {r["name"]: r["value"] for r in ctx.rows("elapsed_clock")}
    if ctx.readable("elapsed_clock") and set(clock) != {"elapsed_ms"}:
        yield f"elapsed clock: rows {sorted(clock)}, expected exactly 'elapsed_ms'"
    for b in ctx.rows("merchant_rate"):
        what = f"rate bucket of {b['merchant_id']}"
        m = merchants.get(b["merchant_id"])
        if m is None:
            if ctx.readable("merchants"):
                yield f"{what}: the merchant does not exist"
            continue
        if b["tokens_milli"] < 0:
            yield f"{what}: negative tokens"
        if not m["created_at"] * 1000 <= b["updated_ms"] <= (ctx.now + SKEW) * 1000:
            yield f"{what}: updated at {b['updated_ms']} ms, outside the merchant's lifetime"


def check_schema_revision(ctx: Context) -> Iterator[str]:
    """The database is at the newest migration this release knows."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from safescan.institution.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    rows = [r["version_num"] for r in ctx.rows("alembic_version")]
    if ctx.readable("alembic_version") and rows != [head]:
        yield f"schema revision {rows} is not the newest ({head})"
    for name in ctx.snap.extra_tables:
        yield f"unknown table {name!r}"


CHECKS = (check_events, check_idempotency, check_nonces_and_rates, check_schema_revision)

__all__ = ["CHECKS"]
