"""Cross-references of the money: accounts and transfers (the ledger rules), orders, payments
with their receipts, refunds, and funding, each against the others and the audit log."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from safescan.api.states import PAID_STATES, OrderState
from safescan.code.authorization import Receipt
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import SafescanError
from safescan.institution.audit import batch_rows_sha256
from safescan.institution.auditing.context import SKEW, Context, Row, differs, group, index

ACCOUNT_KINDS = ("customer", "merchant", "funding")
ORDER_STATES = tuple(OrderState)


def ledger_rules(accounts: list[Row], transfers: list[Row]) -> list[str]:
    """Rules 1, 3, 4, 5 of docs/institution.md "Ledger rules" over plain rows."""
    problems: list[str] = []
    by_id = index(accounts, "id")
    computed = dict.fromkeys(by_id, 0)
    for t in transfers:
        d, c = by_id.get(t["debit_account_id"]), by_id.get(t["credit_account_id"])
        if d is None or c is None:
            problems.append(f"transfer {t['id']} names an unknown account")
            continue
        if t["amount"] <= 0:
            problems.append(f"transfer {t['id']} has a non-positive amount")
        if d["id"] == c["id"]:
            problems.append(f"transfer {t['id']} moves money from an account to itself")
        if not d["currency"] == c["currency"] == t["currency"]:
            problems.append(f"transfer {t['id']} mixes currencies")
        computed[d["id"]] -= t["amount"]
        computed[c["id"]] += t["amount"]
    per_currency: dict[int, int] = {}
    for a in by_id.values():
        what = f"account {a['id']} ({a['kind']} {a['owner_id']})"
        if a["balance"] != computed[a["id"]]:
            problems.append(
                f"{what} balance {a['balance']} != sum of its transfers {computed[a['id']]}"
            )
        if not a["allow_negative"] and a["balance"] < 0:
            problems.append(f"{what} is negative")
        if a["kind"] == "customer" and a["allow_negative"]:
            problems.append(f"customer account {a['id']} allows a negative balance")
        per_currency[a["currency"]] = per_currency.get(a["currency"], 0) + a["balance"]
    for cur, total in sorted(per_currency.items()):
        if total != 0:
            problems.append(f"currency {cur}: balances sum to {total}, not zero")
    return problems


def check_ledger(ctx: Context) -> Iterator[str]:
    """The ledger rules, then every account's kind, owner, currency and flags."""
    if not ctx.readable("accounts", "transfers"):
        return
    yield from ledger_rules(ctx.rows("accounts"), ctx.rows("transfers"))
    owners = {
        "customer": ctx.by_pk("customers", "id"),
        "merchant": ctx.by_pk("merchants", "id"),
        "funding": {"institution": {"created_at": 0}},
    }
    for a in ctx.rows("accounts"):
        what = f"account {a['id']}"
        if a["kind"] not in ACCOUNT_KINDS:
            yield f"{what}: unknown kind {a['kind']!r}"
            continue
        owner = owners[a["kind"]].get(a["owner_id"])
        if owner is None:
            yield f"{what}: its {a['kind']} {a['owner_id']!r} does not exist"
        elif not owner["created_at"] <= a["created_at"] <= ctx.now + SKEW:
            yield f"{what}: created at {a['created_at']}, outside its owner's lifetime"
        if a["allow_negative"] != (a["kind"] != "customer"):
            yield f"{what}: allow_negative is {a['allow_negative']} for a {a['kind']} account"
        yield from _currency(what, a["currency"])


def _currency(what: str, code: int) -> Iterator[str]:
    try:
        lookup_currency(code)
    except SafescanError:
        yield f"{what}: currency {code} is not an ISO 4217 code"


def _accounts(ctx: Context) -> dict[tuple[str, str, Any], int]:
    return {(a["kind"], a["owner_id"], a["currency"]): a["id"] for a in ctx.rows("accounts")}


def check_transfers(ctx: Context) -> Iterator[str]:
    """Every transfer answers to exactly one payment, refund or logged funding, with the same
    accounts, amount, currency and time; each of those has exactly one transfer."""
    if not ctx.readable("transfers", "accounts"):
        return
    acct = _accounts(ctx)
    payments, refunds = ctx.by_pk("payments", "id"), ctx.by_pk("refunds", "id")
    fundings = index(ctx.journal.of("customer.fund"), lambda e: e.data.get("ref"))
    by_ref = group(ctx.rows("transfers"), lambda t: (t["kind"], t["ref"]))
    for (kind, ref), ts in by_ref.items():
        if len(ts) != 1:
            yield f"{kind} {ref} was posted {len(ts)} times"
        t = ts[0]
        what = f"transfer {t['id']} ({kind} {ref})"
        if kind == "payment":
            p = payments.get(ref)
            if p is None:
                if ctx.readable("payments"):
                    yield f"{what} has no payment"
                continue
            cur = p["currency"]
            expect = (
                acct.get(("customer", p["customer_id"], cur)),
                acct.get(("merchant", p["merchant_id"], cur)),
                p["amount"],
                cur,
                p["created_at"],
            )
        elif kind == "refund":
            r = refunds.get(ref)
            pay = payments.get(r["payment_id"]) if r is not None else None
            if r is None or pay is None:
                if ctx.readable("refunds", "payments"):
                    yield f"{what} has no refund of a payment"
                continue
            cur = r["currency"]
            expect = (
                acct.get(("merchant", r["merchant_id"], cur)),
                acct.get(("customer", pay["customer_id"], cur)),
                r["amount"],
                cur,
                r["created_at"],
            )
        elif kind == "funding":
            e = fundings.get(ref)
            if e is None:
                yield f"{what} has no funding entry in the audit log"
                continue
            cur = e.data.get("currency")
            expect = (
                acct.get(("funding", "institution", cur)),
                acct.get(("customer", e.entity.partition(":")[2], cur)),
                e.data.get("amount"),
                cur,
                e.at,
            )
        else:
            yield f"{what}: unknown transfer kind"
            continue
        stored = (
            t["debit_account_id"],
            t["credit_account_id"],
            t["amount"],
            t["currency"],
            t["created_at"],
        )
        names = ("debit account", "credit account", "amount", "currency", "created_at")
        yield from differs(what, {n: (s, x) for n, s, x in zip(names, stored, expect, strict=True)})
    for pid in payments:
        if ("payment", pid) not in by_ref:
            yield f"payment {pid} has no ledger transfer"
    for rid in refunds:
        if ("refund", rid) not in by_ref:
            yield f"refund {rid} has no ledger transfer"
    for ref in fundings:
        if ("funding", ref) not in by_ref:
            yield f"funding {ref} of the audit log has no ledger transfer"


def _items(o: Row) -> tuple[list[Any] | None, str | None]:
    try:
        items = json.loads(o["items"])
    except ValueError:
        return None, "items are not JSON"
    ok = isinstance(items, list) and all(
        isinstance(i, list)
        and len(i) == 3
        and isinstance(i[0], str)
        and all(isinstance(x, int) and not isinstance(x, bool) for x in i[1:])
        for i in items
    )
    if not ok:
        return None, "items are not [name, quantity, unit price] lists"
    return items, None


def _expected_order(ctx: Context, o: Row, pay: Row | None) -> Iterator[str]:
    """The order's fields against the entries about it, applied in order."""
    what = f"order {o['merchant_id']}:{o['order_id']}"
    entries = ctx.journal.about(f"order:{o['merchant_id']}:{o['order_id']}")
    created = next((e for e in entries if e.action == "order.create"), None)
    expect: dict[str, Any] = {
        "state": OrderState.CREATED,
        "paid_at": None,
        "paid_amount": 0,
        "refunded_amount": 0,
        "payment_id": None,
    }
    if created is not None:
        d = created.data
        expect |= {
            "total": d.get("total"),
            "currency": d.get("currency"),
            "expires_at": d.get("expires_at"),
            "created_at": created.at,
            "kind": "dynamic",
        }
        for name in ("reference", "code_digest", "items_sha256"):  # logged since 0004
            if name in d:
                expect[name] = d[name]
    batch = created is None and _in_batch(ctx, o)
    if created is None and not batch and not any(e.action == "payment.create" for e in entries):
        yield f"{what} has no creation entry in the audit log"
    elif created is None:  # precreated in bulk, or born paid: never with a reference
        expect["reference"] = None
    for e in entries:
        d = e.data
        if e.action == "payment.create":
            expect |= {
                "state": OrderState.PAID,
                "paid_at": e.at,
                "paid_amount": d.get("amount"),
                "payment_id": d.get("payment_id"),
            }
            if created is None and not batch:  # born paid: a static or merchant-signed code
                expect |= {
                    "created_at": e.at,
                    "total": d.get("amount"),
                    "currency": d.get("currency"),
                }
        elif e.action == "refund.create":
            expect |= {"state": d.get("order_state"), "refunded_amount": d.get("refunded_amount")}
        elif e.action in ("order.close", "order.expire"):
            expect["state"] = d.get("state")
    stored = dict(o)
    stored["code_digest"] = o["code_digest"].hex() if o["code_digest"] is not None else None
    stored["items_sha256"] = hashlib.sha256(o["items"].encode()).hexdigest()
    yield from differs(what, {k: (stored.get(k), v) for k, v in expect.items()})
    if pay is not None and o["code_digest"] is not None:
        try:
            digest = Receipt.from_bytes(pay["receipt"]).code_digest
        except SafescanError:
            return  # reported with the payment
        if digest != o["code_digest"]:
            yield f"{what}: its code digest is not the one its payment's receipt names"


def _in_batch(ctx: Context, o: Row) -> bool:
    if "batches" not in ctx.memo:
        ctx.memo["batches"] = _batch_members(ctx)
    return o["pk"] in ctx.memo["batches"]


def _batch_members(ctx: Context) -> set[int]:
    """Orders (pks) that a logged bulk precreation names exactly (count, ids, and since 0004
    every order's fields).

    A batch's orders share its merchant and second and are one INSERT, so they are contiguous
    in pk order among that merchant's orders of that second that were not created one by one
    (``order.create``). Those may also hold several batches, and orders born paid (static or
    merchant-signed codes; batch orders paid since look alike): the rows are walked in pk
    order and each batch entry is tried where it could start."""
    members: set[int] = set()
    by_key = group(ctx.rows("orders"), lambda r: (r["merchant_id"], r["created_at"]))
    batches = group(
        ctx.journal.of("order.create_batch"), lambda e: (e.entity.partition(":")[2], e.at)
    )
    for (mid, at), entries in batches.items():
        rows = sorted(
            (
                r
                for r in by_key.get((mid, at), [])
                if not any(
                    x.action == "order.create"
                    for x in ctx.journal.about(f"order:{mid}:{r['order_id']}")
                )
            ),
            key=lambda r: r["pk"],
        )
        left, i = list(entries), 0
        while left and i < len(rows):
            found = next(
                (
                    e
                    for e in left
                    if isinstance(n := e.data.get("count"), int)
                    and _is_the_batch(e.data, rows[i : i + n])
                ),
                None,
            )
            if found is None:
                i += 1  # not the start of a batch (an order born paid)
                continue
            n = int(found.data["count"])
            members.update(r["pk"] for r in rows[i : i + n])
            left.remove(found)
            i += n
    return members


def _is_the_batch(logged: dict[str, Any], rows: list[Row]) -> bool:
    """Whether ``rows`` (by pk) are exactly the orders a batch entry names (count, ids and,
    since 0004, every order's fixed fields)."""
    ids = ",".join(r["order_id"] for r in rows)
    if len(rows) != logged.get("count") or (
        hashlib.sha256(ids.encode()).hexdigest() != logged.get("orders_sha256")
    ):
        return False
    return "rows_sha256" not in logged or (
        all(r["code_digest"] is not None for r in rows)
        and batch_rows_sha256(rows) == logged["rows_sha256"]
    )


def check_orders(ctx: Context) -> Iterator[str]:
    """Every order: a known state and kind, well-formed items adding up to its total, and the
    fields and state its audit entries give it; refunds never exceed the payment."""
    payments = index(ctx.rows("payments"), "order_pk")
    refunds = group(ctx.rows("refunds"), "order_pk")
    for o in ctx.rows("orders"):
        what = f"order {o['merchant_id']}:{o['order_id']}"
        if o["state"] not in ORDER_STATES:
            yield f"{what}: unknown state {o['state']!r}"
        if o["kind"] not in ("dynamic", "static"):
            yield f"{what}: unknown kind {o['kind']!r}"
        items, problem = _items(o)
        if problem:
            yield f"{what}: {problem}"
        elif o["kind"] == "dynamic" and sum(q * p for _, q, p in items or []) != o["total"]:
            yield f"{what}: its items do not add up to its total"
        elif o["kind"] == "static" and items:
            yield f"{what}: a static-code order has items"
        if o["code_digest"] is not None and len(o["code_digest"]) != 32:
            yield f"{what}: the code digest is not 32 bytes"
        yield from _currency(what, o["currency"])
        pay = payments.get(o["pk"])
        if o["state"] in PAID_STATES:
            if pay is None and ctx.readable("payments"):
                yield f"{what} is {o['state']} without its payment"
        elif pay is not None:
            yield f"{what} is {o['state']} but has a payment"
        if ctx.readable("refunds"):
            total = sum(r["amount"] for r in refunds.get(o["pk"], []))
            if total != o["refunded_amount"]:
                yield f"{what}: refunded amount differs from its refunds"
        if o["refunded_amount"] > o["paid_amount"]:
            yield f"{what}: refunded more than was paid"
        yield from _expected_order(ctx, o, pay)


def check_payments(ctx: Context) -> Iterator[str]:
    """Every payment: its order, its audit entry, its carrier and customer, and its receipt
    (signed by the institution, naming exactly this payment)."""
    orders = ctx.by_pk("orders", "pk")
    carriers, customers = ctx.by_pk("carriers", "serial"), ctx.by_pk("customers", "id")
    logged: dict[str, Any] = {}
    for e in ctx.journal.of("payment.create"):
        logged[e.data.get("payment_id", "")] = e
    for p in ctx.rows("payments"):
        what = f"payment {p['id']}"
        o = orders.get(p["order_pk"])
        if o is None:
            if ctx.readable("orders"):
                yield f"{what}: its order does not exist"
            continue
        e = logged.pop(p["id"], None)
        if e is None or e.entity != f"order:{o['merchant_id']}:{o['order_id']}":
            yield f"{what} has no payment entry in the audit log for its order"
        else:
            d = e.data
            yield from differs(
                what,
                {
                    "amount": (p["amount"], d.get("amount")),
                    "currency": (p["currency"], d.get("currency")),
                    "payer_pseudonym": (p["payer_pseudonym"], d.get("payer_pseudonym")),
                    "created_at": (p["created_at"], e.at),
                    "customer_id": (p["customer_id"], d.get("customer_id")),
                    "counter": (p["counter"], d.get("counter")),
                    "carrier_serial": (f"carrier:{p['carrier_serial']}", e.actor),
                    "merchant_id": (p["merchant_id"], o["merchant_id"]),
                },
            )
        c = carriers.get(p["carrier_serial"])
        if c is None:
            if ctx.readable("carriers"):
                yield f"{what}: its carrier {p['carrier_serial']} does not exist"
        elif c["customer_id"] != p["customer_id"]:
            yield f"{what}: its carrier belongs to another customer"
        if p["customer_id"] not in customers and ctx.readable("customers"):
            yield f"{what}: its customer does not exist"
        yield from _receipt(ctx, p, o)
    if ctx.readable("payments"):
        for pid in sorted(logged):
            yield f"payment {pid} is in the audit log but missing"


def _receipt(ctx: Context, p: Row, o: Row) -> Iterator[str]:
    what = f"payment {p['id']}"
    try:
        receipt = Receipt.from_bytes(p["receipt"])
        receipt.verify(ctx.trust)
    except SafescanError as exc:
        yield f"{what}: receipt does not verify ({exc.message})"
        return
    yield from differs(
        what + " receipt",
        {
            "payment_id": (receipt.payment_id, p["id"]),
            "order_id": (receipt.order_id, o["order_id"]),
            "merchant_id": (receipt.merchant_id, p["merchant_id"]),
            "amount": (receipt.amount, p["amount"]),
            "currency": (receipt.currency, p["currency"]),
            "payer_pseudonym": (receipt.payer_pseudonym, p["payer_pseudonym"]),
            "paid_at": (receipt.paid_at, p["created_at"]),
        },
    )


def check_refunds(ctx: Context) -> Iterator[str]:
    """Every refund against its audit entry and its payment."""
    payments = ctx.by_pk("payments", "id")
    logged = {e.data.get("refund_id"): e for e in ctx.journal.of("refund.create")}
    for r in ctx.rows("refunds"):
        what = f"refund {r['id']}"
        e = logged.pop(r["id"], None)
        if e is None:
            yield f"{what} has no refund entry in the audit log"
            continue
        d = e.data
        fields = {
            "payment_id": (r["payment_id"], d.get("payment_id")),
            "amount": (r["amount"], d.get("amount")),
            "currency": (r["currency"], d.get("currency")),
            "created_at": (r["created_at"], e.at),
            "merchant_id": (
                r["merchant_id"],
                e.entity.split(":", 2)[1] if e.entity.count(":") >= 2 else None,
            ),
        }
        if "reason" in d:
            fields["reason"] = (r["reason"], d["reason"])
        p = payments.get(r["payment_id"])
        if p is not None:
            fields["order_pk"] = (r["order_pk"], p["order_pk"])
        elif ctx.readable("payments"):
            yield f"{what}: its payment does not exist"
        yield from differs(what, fields)
    if ctx.readable("refunds"):
        for rid in sorted(str(x) for x in logged):
            yield f"refund {rid} is in the audit log but missing"


CHECKS = (check_ledger, check_transfers, check_orders, check_payments, check_refunds)

__all__ = ["CHECKS", "ledger_rules"]
