"""The audit cross-checks merchant API keys and checkout sessions with the audit log (real
server, SQLite and PostgreSQL).

Healthy keys (made, used, rotated, revoked) and sessions (open, complete, canceled) audit clean.
Then rows are changed behind the institution's back (SQL) and each change must be reported:
a forged key row, a scope widened, a secret hash replaced by the hash of a key the attacker
knows (shown to work against the server first), a revoked key un-revoked, a rotated key's expiry
lifted, a key moved to another merchant, a key deleted; a session marked complete without a
payment or by another order's payment, its payment or completion time changed, its redirect
URL, code, order or expiry swapped, its order's amount, currency or items changed, a session
added, one deleted. Each change is undone afterwards and the audit is clean again.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update

from safescan.institution.auditing import run_audit
from safescan.institution.db import Database, normalize_url
from safescan.institution.domain.api_keys import ApiKeys
from safescan.institution.keystore import KeyStore
from safescan.institution.models import CheckoutSession, MerchantApiKey, OrderRow
from tests.institution.harness import PASSPHRASE, MerchantClient, World
from tests.institution.test_api_keys import bearer, make_key

SHOP = "https://shop.example"
ITEMS = [{"name": "Teapot", "quantity": 1, "unit_price": 2500}]


def problems(world: World) -> list[str]:
    url = normalize_url(world.db_url)  # type: ignore[attr-defined]
    return run_audit(url, storage_checks=False).problems


@pytest.fixture
def db(world: World) -> Iterator[Database]:
    d = Database(world.db_url)  # type: ignore[attr-defined]
    try:
        yield d
    finally:
        d.dispose()


def _rows(db: Database, model: Any, col: Any, key: Any) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in db.read(lambda c: c.execute(select(model).where(col == key)).mappings().all())
    ]


@contextmanager
def tampered(
    world: World, db: Database, model: Any, col: Any, keys: list[Any], change: Callable[[Any], Any]
) -> Iterator[list[str]]:
    """Apply ``change`` (a function of the connection), yield the audit's findings, then put
    the rows ``col`` in ``keys`` back as they were (and check the audit is clean again)."""
    table = model.__table__

    def read(key: Any) -> list[dict[str, Any]]:
        found = db.read(lambda c: c.execute(table.select().where(col == key)).mappings().all())
        return [dict(r) for r in found]

    before = {k: read(k) for k in keys}
    db.write(change)
    try:
        yield problems(world)
    finally:

        def restore(c: Any) -> None:
            for k, rows in before.items():
                c.execute(delete(model).where(col == k))
                for r in rows:
                    c.execute(insert(model).values(**r))

        db.write(restore)
    assert problems(world) == []


def _found(found: list[str], *needles: str) -> None:
    for needle in needles:
        assert any(needle in p for p in found), (needle, found)


# --- API keys ---------------------------------------------------------------------------------


def _institution_api_keys(world: World) -> ApiKeys:
    """The institution's API-key hashing (an insider holding the key store and passphrase)."""
    keys = KeyStore(world.tmp / "keys").load(PASSPHRASE.encode())  # type: ignore[attr-defined]
    return ApiKeys(SimpleNamespace(keys=keys))  # type: ignore[arg-type]


def test_tampered_api_keys_are_found(world: World, db: Database) -> None:
    m = world.merchant("Key Audit Shop")
    other = world.merchant("Other Shop")
    reader = make_key(m, "orders:read", name="reader")
    assert bearer(world, reader["key"], "GET", "/v1/merchant/orders").status_code == 200
    rotated = make_key(m, "refunds:write")
    r = m.request("POST", f"/v1/merchant/api-keys/{rotated['id']}/rotate", {"grace_seconds": 600})
    assert r.status_code == 201, r.text
    successor = r.json()["id"]
    revoked = make_key(m, "orders:write", "checkout:write", expires_in=3600)
    r = m.request("POST", f"/v1/merchant/api-keys/{revoked['id']}/revoke")
    assert r.status_code == 200, r.text
    assert problems(world) == []
    col = MerchantApiKey.id
    row = _rows(db, MerchantApiKey, col, reader["id"])[0]

    # a forged key row: another row's fields under a new id, every scope
    forged_id = "zz" + secrets.token_hex(7)
    forged = row | {"id": forged_id, "scopes": "orders:read orders:write refunds:write"}
    with tampered(
        world,
        db,
        MerchantApiKey,
        col,
        [forged_id],
        lambda c: c.execute(insert(MerchantApiKey).values(**forged)),
    ) as found:
        _found(found, f"API key {forged_id} has no creation entry")
    # a scope widened
    wide = (
        update(MerchantApiKey).where(col == reader["id"]).values(scopes="orders:read refunds:write")
    )
    with tampered(
        world, db, MerchantApiKey, col, [reader["id"]], lambda c: c.execute(wide)
    ) as found:
        _found(found, f"API key {reader['id']}: scopes is 'orders:read refunds:write'")
    # the secret hash replaced by the hash of a key the attacker made up: it works ...
    known = f"sk_live_{reader['id']}_{secrets.token_urlsafe(32)}"
    swap = (
        update(MerchantApiKey)
        .where(col == reader["id"])
        .values(secret_hash=_institution_api_keys(world).hash(known))
    )
    with tampered(
        world, db, MerchantApiKey, col, [reader["id"]], lambda c: c.execute(swap)
    ) as found:
        assert bearer(world, known, "GET", "/v1/merchant/orders").status_code == 200
        assert bearer(world, reader["key"], "GET", "/v1/merchant/orders").status_code == 401
        _found(found, f"API key {reader['id']}: secret_hash is not the one its creation logged")
    # ... and a hash copied from another key row (not even a working key) is found too
    copy = (
        update(MerchantApiKey)
        .where(col == reader["id"])
        .values(secret_hash=_rows(db, MerchantApiKey, col, successor)[0]["secret_hash"])
    )
    with tampered(
        world, db, MerchantApiKey, col, [reader["id"]], lambda c: c.execute(copy)
    ) as found:
        _found(found, f"API key {reader['id']}: secret_hash is not the one")
    # a revoked key un-revoked (it would work again)
    unrevoke = update(MerchantApiKey).where(col == revoked["id"]).values(revoked_at=None)
    with tampered(
        world, db, MerchantApiKey, col, [revoked["id"]], lambda c: c.execute(unrevoke)
    ) as found:
        # it authenticates again (403: a scope it lacks; no longer 401)
        assert bearer(world, revoked["key"], "GET", "/v1/merchant/orders").status_code == 403
        _found(found, f"API key {revoked['id']}: revoked_at is None, expected")
    # a rotated key's grace period lifted (it would never expire)
    forever = (
        update(MerchantApiKey).where(col == rotated["id"]).values(expires_at=None, replaced_by=None)
    )
    with tampered(
        world, db, MerchantApiKey, col, [rotated["id"]], lambda c: c.execute(forever)
    ) as found:
        _found(
            found,
            f"API key {rotated['id']}: expires_at is None, expected",
            f"API key {rotated['id']}: replaced_by is None, expected '{successor}'",
        )
    # a new expiry on a key logged without one, a key moved to another merchant
    moved = (
        update(MerchantApiKey)
        .where(col == successor)
        .values(merchant_id=other.merchant_id, expires_at=row["created_at"] + 10**6)
    )
    with tampered(world, db, MerchantApiKey, col, [successor], lambda c: c.execute(moved)) as found:
        _found(
            found,
            f"API key {successor}: merchant_id is '{other.merchant_id}'",
            f"API key {successor}: expires_at is",
        )
    # a key deleted (its rotation and revocation would leave no trace in the table)
    gone = delete(MerchantApiKey).where(col == revoked["id"])
    with tampered(
        world, db, MerchantApiKey, col, [revoked["id"]], lambda c: c.execute(gone)
    ) as found:
        _found(found, f"API key {revoked['id']} is in the audit log but missing")


# --- checkout sessions ------------------------------------------------------------------------


def _session(m: MerchantClient, **extra: Any) -> dict[str, Any]:
    body = {
        "items": ITEMS,
        "currency": "EUR",
        "success_url": f"{SHOP}/done?session={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{SHOP}/cart",
        **extra,
    }
    r = m.request("POST", "/v1/checkout/sessions", body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_tampered_checkout_sessions_are_found(world: World, db: Database) -> None:
    m = world.merchant("Session Audit Shop")
    cid = world.customer({"EUR": 1_000_000})
    carrier = world.carrier(cid)
    open_ = _session(m)
    paid = _session(m, reference="cart-9")
    col = CheckoutSession.id
    paid_code = _rows(db, CheckoutSession, col, paid["id"])[0]["code"]  # what its page shows
    assert world.pay(paid_code, carrier.authorize(paid_code), "cs-audit-1").status_code == 201
    r = m.request("GET", f"/v1/checkout/sessions/{paid['id']}")  # settles it after its order
    assert r.json()["status"] == "complete", r.text
    paid = r.json()
    canceled = _session(m)
    r = m.request("POST", f"/v1/checkout/sessions/{canceled['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    assert problems(world) == []
    sid, pid = open_["id"], paid["id"]

    def change(key: str, **values: Any) -> Callable[[Any], Any]:
        return lambda c: c.execute(update(CheckoutSession).where(col == key).values(**values))

    # an open session marked complete, without a payment or with another order's payment
    with tampered(world, db, CheckoutSession, col, [sid], change(sid, status="complete")) as found:
        _found(
            found,
            f"checkout session {sid}: status is 'complete', expected 'open'",
            f"checkout session {sid} is complete but its order is CREATED",
        )
    steal = change(
        sid, status="complete", payment_id=paid["payment_id"], completed_at=paid["completed_at"]
    )
    with tampered(world, db, CheckoutSession, col, [sid], steal) as found:
        _found(
            found,
            f"checkout session {sid}: completed by payment {paid['payment_id']}, not a payment",
        )
    # a complete session's payment or completion time changed
    with tampered(
        world, db, CheckoutSession, col, [pid], change(pid, payment_id="pay_FORGED")
    ) as found:
        _found(
            found,
            f"checkout session {pid}: payment_id is 'pay_FORGED'",
            "not a payment of its order",
        )
    with tampered(
        world, db, CheckoutSession, col, [pid], change(pid, completed_at=paid["completed_at"] + 7)
    ) as found:
        _found(found, f"checkout session {pid}: completed_at is")
    # a canceled session claimed paid; a paid one claimed canceled
    with tampered(
        world, db, CheckoutSession, col, [canceled["id"]], change(canceled["id"], status="complete")
    ) as found:
        _found(
            found, f"checkout session {canceled['id']}: status is 'complete', expected 'canceled'"
        )
    with tampered(
        world,
        db,
        CheckoutSession,
        col,
        [pid],
        change(pid, status="canceled", payment_id=None, completed_at=None),
    ) as found:
        _found(
            found,
            f"checkout session {pid}: status is 'canceled', expected 'complete'",
            "but its order is PAID",
        )
    # where the browser goes after paying (a phishing page), the code the page shows, the
    # order behind it, its expiry
    with tampered(
        world, db, CheckoutSession, col, [sid], change(sid, success_url="https://evil.example/done")
    ) as found:
        _found(found, f"checkout session {sid}: success_url is 'https://evil.example/done'")
    with tampered(world, db, CheckoutSession, col, [sid], change(sid, code=paid_code)) as found:
        _found(found, f"checkout session {sid}: the code it shows is not its order's code")
    with tampered(world, db, CheckoutSession, col, [sid], change(sid, code="not a code")) as found:
        _found(found, f"checkout session {sid}: the code it shows is not a payment code")
    other_order = m.order([("Cheap", 1, 1)])
    with tampered(
        world, db, CheckoutSession, col, [sid], change(sid, order_id=other_order["order_id"])
    ) as found:
        _found(found, f"checkout session {sid}: order_id is '{other_order['order_id']}'")
    with tampered(
        world, db, CheckoutSession, col, [sid], change(sid, expires_at=open_["expires_at"] + 86400)
    ) as found:
        _found(found, f"checkout session {sid}: expires_at is")
    # the amount, currency and items are the session's order's: changed there, found there
    okey = OrderRow.order_id
    for values, needle in (
        ({"total": 1}, "total is 1, expected 2500"),
        ({"currency": 840}, "currency is 840, expected 978"),
        (
            {"items": json.dumps([["Teapot", 1, 1]], separators=(",", ":")), "total": 1},
            "items_sha256",
        ),
    ):
        with tampered(
            world,
            db,
            OrderRow,
            okey,
            [open_["order_id"]],
            lambda c, v=values: c.execute(
                update(OrderRow).where(okey == open_["order_id"]).values(**v)
            ),
        ) as found:
            _found(found, f"order {m.merchant_id}:{open_['order_id']}: {needle}")
    # a session added (for a real order, well-formed) and one deleted
    extra = _rows(db, CheckoutSession, col, sid)[0]
    forged = extra | {
        "pk": extra["pk"] + 1000,
        "id": "cs_" + "F" * 26,
        "order_id": other_order["order_id"],
        "code": other_order["code"],
    }
    with tampered(
        world,
        db,
        CheckoutSession,
        col,
        [forged["id"]],
        lambda c: c.execute(insert(CheckoutSession).values(**forged)),
    ) as found:
        _found(found, f"checkout session {forged['id']} has no creation entry")
    with tampered(
        world,
        db,
        CheckoutSession,
        col,
        [canceled["id"]],
        lambda c: c.execute(delete(CheckoutSession).where(col == canceled["id"])),
    ) as found:
        _found(found, f"checkout session {canceled['id']} is in the audit log but missing")
