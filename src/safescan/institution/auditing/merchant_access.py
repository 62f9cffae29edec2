"""The merchants' API keys and hosted checkout sessions against the audit log.

A key row written behind the institution's back would let its holder act for a merchant: every
``merchant_api_keys`` row must be what its ``api_key.create`` entry logged (merchant, label,
scopes, creation and expiry time, and since this audit covers them a SHA-256 of the stored keyed
hash, ``secret_hash_sha256``), rotated (expiry, replacement) and revoked exactly as the later
``api_key.rotate`` / ``api_key.revoke`` entries say; a logged key without its row (deleted) and
a row without its entry (forged) are findings. Entries written before the digest was logged do
not say what the hash was: only its form (64 hex digits) is checked for them.

Every ``checkout_sessions`` row must be what its ``checkout.create`` entry logged (merchant,
order, redirect URLs, creation and expiry time), its status the one its last ``checkout.*``
settling entry gives it (``open`` without one), its order the order created with it (same
time, same expiry, the code the page shows is that order's code) and in the state its status
says; a complete session names its order's payment, which exists (and, since entries log them,
the payment and time its ``checkout.complete`` entry names). A session the log settled whose row
says ``open`` again was set back (tampering, a partial restore): reported as such (the
institution does not settle it a second time). A stored Idempotency-Key answer of a session
creation must be the session as made; one of an API key creation never holds a secret. The
session's amount, currency and line items are its order's (checked with the order,
:mod:`.money`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

from safescan.api.states import PAID_STATES, CheckoutState, OrderState
from safescan.code.envelope import decode_text
from safescan.code.errors import SafescanError
from safescan.institution.auditing.context import SKEW, Context, Row, differs, index

HEX64 = re.compile(r"[0-9a-f]{64}")
#: the order state a settled session's status requires
ORDER_STATES_OF: dict[str, frozenset[str]] = {
    CheckoutState.COMPLETE: frozenset(PAID_STATES),
    CheckoutState.EXPIRED: frozenset({OrderState.EXPIRED}),
    CheckoutState.CANCELED: frozenset({OrderState.CLOSED}),
}
SETTLING = tuple(f"checkout.{s}" for s in ORDER_STATES_OF)


def secret_digest(secret_hash: str) -> str:
    """What an ``api_key.create`` entry logs of the stored keyed hash (never the hash itself)."""
    return hashlib.sha256(secret_hash.encode("ascii", "replace")).hexdigest()


def _expected_key(ctx: Context, created: Any) -> dict[str, Any]:
    """A key's fields as its creation entry and the later entries about it leave them."""
    d = created.data
    expect: dict[str, Any] = {
        "merchant_id": d.get("merchant_id"),
        "name": d.get("name"),
        "scopes": d.get("scopes"),
        "created_at": created.at,
        "expires_at": d.get("expires_at"),
        "revoked_at": None,
        "replaced_by": None,
    }
    for later in ctx.journal.about(created.entity):
        if later.seq <= created.seq:  # an entity's entries are on one chain, in order
            continue
        if later.action == "api_key.rotate":
            expect |= {
                "expires_at": later.data.get("expires_at"),
                "replaced_by": later.data.get("replaced_by"),
            }
        elif later.action == "api_key.revoke" and expect["revoked_at"] is None:
            expect["revoked_at"] = later.at
    return expect


def check_api_keys(ctx: Context) -> Iterator[str]:
    """Every API key row against its ``api_key.*`` entries; no row without, no entry without."""
    rows = ctx.by_pk("merchant_api_keys", "id")
    merchants = ctx.by_pk("merchants", "id")
    seen: set[Any] = set()
    for e in ctx.journal.of("api_key.create"):
        kid = e.data.get("id")
        what = f"API key {kid}"
        if e.entity != f"api_key:{kid}":
            yield f"{what}: its creation entry is about {e.entity!r}"
        if kid in seen:
            yield f"{what} was created twice in the audit log"
            continue
        seen.add(kid)
        r = rows.get(kid)
        if r is None:
            if ctx.readable("merchant_api_keys"):
                yield f"{what} is in the audit log but missing (deleted?)"
            continue
        expect = _expected_key(ctx, e)
        yield from differs(what, {k: (r[k], v) for k, v in expect.items()})
        logged = e.data.get("secret_hash_sha256")  # since this audit: older entries lack it
        if logged is not None and secret_digest(r["secret_hash"]) != logged:
            yield f"{what}: secret_hash is not the one its creation logged (replaced?)"
    for kid, r in rows.items():
        what = f"API key {kid}"
        if kid not in seen:
            yield f"{what} has no creation entry in the audit log (api_key.create)"
        if not HEX64.fullmatch(r["secret_hash"]):
            yield f"{what}: the stored hash is not 64 hex digits"
        if r["merchant_id"] not in merchants and ctx.readable("merchants"):
            yield f"{what} belongs to merchant {r['merchant_id']}, which does not exist"
        used = r["last_used_at"]
        if used is not None and not r["created_at"] <= used <= ctx.now + SKEW:
            yield f"{what}: last used at {used}, outside its lifetime"


def _order_of_session(ctx: Context, what: str, r: Row, o: Row | None) -> Iterator[str]:
    """The session's order: created with it, the code it shows, a state its status allows."""
    if o is None:
        if ctx.readable("orders"):
            yield f"{what}: its order {r['order_id']} does not exist"
        return
    yield from differs(
        what + " (its order)",
        {
            "created_at": (o["created_at"], r["created_at"]),
            "expires_at": (o["expires_at"], r["expires_at"]),
        },
    )
    try:
        digest = hashlib.sha256(decode_text(r["code"])).digest()
    except SafescanError:
        yield f"{what}: the code it shows is not a payment code"
    else:
        if digest != o["code_digest"]:
            yield f"{what}: the code it shows is not its order's code"
    allowed = ORDER_STATES_OF.get(r["status"])
    if allowed is not None and o["state"] not in allowed:
        yield f"{what} is {r['status']} but its order is {o['state']}"


def _expected_session(ctx: Context, created: Any, o: Row | None) -> dict[str, Any]:
    d = created.data
    settles = [e for e in ctx.journal.about(created.entity) if e.action in SETTLING]
    status = settles[0].data.get("status") if settles else CheckoutState.OPEN.value
    expect: dict[str, Any] = {
        "merchant_id": created.entity.split(":", 2)[1],
        "order_id": d.get("order_id"),
        "success_url": d.get("success_url"),
        "cancel_url": d.get("cancel_url"),
        "created_at": created.at,
        "expires_at": d.get("expires_at"),
        "status": status,
        "completed_at": None,
        "payment_id": None,
    }
    if status == CheckoutState.COMPLETE:
        logged = settles[0].data
        expect["payment_id"] = logged.get("payment_id", o["payment_id"] if o else None)
        expect["completed_at"] = logged.get("completed_at", o["paid_at"] if o else None)
    return expect


def check_checkout_sessions(ctx: Context) -> Iterator[str]:
    """Every checkout session against its ``checkout.*`` entries, its order and its payment."""
    rows = ctx.by_pk("checkout_sessions", "id")
    orders = index(ctx.rows("orders"), lambda o: (o["merchant_id"], o["order_id"]))
    payments = ctx.by_pk("payments", "id")
    seen: set[str] = set()
    for e in ctx.journal.of("checkout.create"):
        parts = e.entity.split(":", 2)
        sid = parts[2] if len(parts) == 3 else ""
        what = f"checkout session {sid}"
        if sid in seen:
            yield f"{what} was created twice in the audit log"
            continue
        seen.add(sid)
        settles = [x for x in ctx.journal.about(e.entity) if x.action in SETTLING]
        if len(settles) > 1:  # (before the institution checked the log when settling)
            how = ", then ".join(str(x.data.get("status")) for x in settles)
            yield (
                f"{what} was settled {len(settles)} times in the audit log ({how}): its row was"
                " set back to open in between (tampering or a partial restore)"
            )
        r = rows.get(sid)
        if r is None:
            if ctx.readable("checkout_sessions"):
                yield f"{what} is in the audit log but missing (deleted?)"
            continue
        if settles and r["status"] == CheckoutState.OPEN:
            yield (
                f"{what} is open in the database but the audit log settled it"
                f" ({settles[0].data.get('status')} at {settles[0].at}): set back behind the"
                " institution's back (tampering or a partial restore)"
            )
        o = orders.get((r["merchant_id"], r["order_id"]))
        expect = _expected_session(ctx, e, o)
        yield from differs(what, {k: (r[k], v) for k, v in expect.items()})
        yield from _order_of_session(ctx, what, r, o)
        if r["status"] == CheckoutState.COMPLETE and ctx.readable("payments"):
            p = payments.get(r["payment_id"])
            if p is None or o is None or p["order_pk"] != o["pk"]:
                yield f"{what}: completed by payment {r['payment_id']}, not a payment of its order"
            elif o["payment_id"] != p["id"] or o["paid_at"] != r["completed_at"]:
                yield f"{what}: its payment and time are not its order's"
    for sid in rows:
        if sid not in seen:
            yield f"checkout session {sid} has no creation entry in the audit log"


#: a whole secret API key (``sk_live_<id>_<secret>``): never in a stored answer
WHOLE_KEY = re.compile(r"sk_live_[a-km-z2-9]{16}_[A-Za-z0-9_-]{20,}")


def keyed_api_key(what: str, rec: Row) -> Iterator[str]:
    """An API key creation's or rotation's Idempotency-Key record: a refusal naming the key
    (``api_key_already_created``), never an answer holding a secret."""
    if WHOLE_KEY.search(str(rec["response"])):
        yield f"{what}: the stored answer holds a secret API key"


def keyed_checkout(
    ctx: Context, what: str, owner: str, rec: Row, body: dict[str, Any]
) -> Iterator[str]:
    """A checkout session creation's stored answer against the session it made."""
    sessions = ctx.by_pk("checkout_sessions", "id")
    cs = sessions.get(body.get("id"))
    if cs is None:
        if ctx.readable("checkout_sessions"):
            yield f"{what} answered checkout session {body.get('id')}, which does not exist"
        return
    yield from differs(
        what,
        {
            "merchant_id": (body.get("merchant_id"), owner),
            "session merchant_id": (cs["merchant_id"], owner),
            "status": (body.get("status"), CheckoutState.OPEN),
            "order_id": (body.get("order_id"), cs["order_id"]),
            "success_url": (body.get("success_url"), cs["success_url"]),
            "cancel_url": (body.get("cancel_url"), cs["cancel_url"]),
            "created_at": (body.get("created_at"), cs["created_at"]),
            "expires_at": (body.get("expires_at"), cs["expires_at"]),
        },
    )


CHECKS = (check_api_keys, check_checkout_sessions)

__all__ = ["CHECKS", "keyed_api_key", "keyed_checkout", "secret_digest"]
