"""Idempotency-Key on checkout session creation and on API key creation and rotation; checkout
sessions completed in their payment's transaction; sessions set back to ``open`` not settled a
second time (real server on 127.0.0.1, SQLite and PostgreSQL).

Attacks: the same request replayed (byte-identical answer, one effect), the key reused for
another body (each field changed), another merchant using the same key, the same key sent by 8
threads at once, the client's retry path with the answer cut after the commit or a 503 after
the commit (one effect, the retry answered from the key), lookups before and after; an API key's
secret never stored with its key (a retry learns which key was made, never the secret). A paid,
an expired and a canceled session set back to ``open`` in the database: not closed again by a
read or the sweep (one audit entry, one event), and the audit says what happened.

The server's maintenance sweep is slowed down to once an hour here, so a session that completes
does so in its payment's transaction (or on a read), not in the sweep.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update

from safescan.api.errors import ApiKeyAlreadyCreated
from safescan.client import MerchantClient as TypedClient
from safescan.code.payment import LineItem
from safescan.institution.auditing import run_audit
from safescan.institution.db import Database, normalize_url
from safescan.institution.domain.results import CheckoutSessionView
from safescan.institution.keystore import KeyStore
from safescan.institution.models import CheckoutSession, IdempotencyRecord, MerchantApiKey
from safescan.institution.service import Institution
from tests.faults.test_ride_through import CUT, LOST_COMMIT, FaultProxy
from tests.institution.conftest import BACKENDS, make_db
from tests.institution.harness import (
    PASSPHRASE,
    MerchantClient,
    World,
    world_in,
)
from tests.institution.pg import free_port
from tests.institution.test_webhooks_sse import Receiver, trust_of

SHOP = "https://shop.example"
ITEMS = [{"name": "Teapot", "quantity": 1, "unit_price": 2500}]
BODY = {
    "items": ITEMS,
    "currency": "EUR",
    "success_url": f"{SHOP}/done?session={{CHECKOUT_SESSION_ID}}",
    "cancel_url": f"{SHOP}/cart",
    "expires_in": 900,
    "reference": "cart-1",
}


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    """An institution served on 127.0.0.1 whose maintenance sweep runs once an hour."""
    with tempfile.TemporaryDirectory(prefix="safescan-idem-") as d:
        tmp = Path(d)
        db_url = make_db(request.param, request, tmp)
        extra = ["--webhook-base-delay", "0.2", "--maintenance-interval", "3600"]
        with world_in(tmp, db_url, extra=extra) as w:
            yield w


@pytest.fixture
def db(world: World) -> Iterator[Database]:
    d = Database(world.db_url)  # type: ignore[attr-defined]
    try:
        yield d
    finally:
        d.dispose()


def problems(world: World) -> list[str]:
    return run_audit(normalize_url(world.db_url), storage_checks=False).problems  # type: ignore[attr-defined]


def keyed(m: MerchantClient, path: str, body: Any, key: str) -> httpx.Response:
    return m.request("POST", path, body, headers={"Idempotency-Key": key})


def sessions_of(db: Database, mid: str) -> list[str]:
    return list(
        db.read(
            lambda c: (
                c.execute(select(CheckoutSession.id).where(CheckoutSession.merchant_id == mid))
                .scalars()
                .all()
            )
        )
    )


def keys_of(db: Database, mid: str) -> list[str]:
    return list(
        db.read(
            lambda c: (
                c.execute(select(MerchantApiKey.id).where(MerchantApiKey.merchant_id == mid))
                .scalars()
                .all()
            )
        )
    )


def code_of(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


def typed(world: World, m: MerchantClient, url: str | None = None) -> TypedClient:
    """The typed client, signing with the merchant's key (every scope)."""
    return TypedClient(
        url or world.server.base_url, m.merchant_id, m.key, trust_of(world), retry_seconds=20
    )


# --- checkout sessions ------------------------------------------------------------------------


def test_a_replayed_session_creation_gets_the_first_answer_byte_for_byte(
    world: World, db: Database
) -> None:
    m = world.merchant("Replay Shop")
    first = keyed(m, "/v1/checkout/sessions", BODY, "cs-replay-1")
    assert first.status_code == 201, first.text
    for _ in range(3):
        again = keyed(m, "/v1/checkout/sessions", BODY, "cs-replay-1")
        assert again.status_code == 201 and again.content == first.content
    assert sessions_of(db, m.merchant_id) == [first.json()["id"]]
    # the stored answer is the session as made (the GET says the same)
    got = m.request("GET", f"/v1/checkout/sessions/{first.json()['id']}")
    assert got.json() == first.json()
    # after the session moved on, a replay still gets the first answer (as sent then)
    m.request("POST", f"/v1/checkout/sessions/{first.json()['id']}/cancel")
    late = keyed(m, "/v1/checkout/sessions", BODY, "cs-replay-1")
    assert late.content == first.content and late.json()["status"] == "open"
    # without a key every request is a new session
    for _ in range(2):
        assert m.request("POST", "/v1/checkout/sessions", BODY).status_code == 201
    assert len(sessions_of(db, m.merchant_id)) == 3


@pytest.mark.parametrize(
    "change",
    [
        {"items": [{"name": "Teapot", "quantity": 2, "unit_price": 2500}]},
        {"items": [{"name": "Teacup", "quantity": 1, "unit_price": 2500}]},
        {"currency": "USD"},
        {"success_url": f"{SHOP}/elsewhere"},
        {"cancel_url": f"{SHOP}/other-cart"},
        {"expires_in": 901},
        {"reference": "cart-2"},
        {"reference": None},
    ],
)
def test_the_key_reused_for_another_session_is_refused(
    world: World, db: Database, change: dict[str, Any]
) -> None:
    m = world.merchant("Conflict Shop")
    first = keyed(m, "/v1/checkout/sessions", BODY, "cs-conflict")
    assert first.status_code == 201, first.text
    other = keyed(m, "/v1/checkout/sessions", BODY | change, "cs-conflict")
    assert other.status_code == 409 and code_of(other) == "idempotency_conflict", other.text
    assert sessions_of(db, m.merchant_id) == [first.json()["id"]]
    assert keyed(m, "/v1/checkout/sessions", BODY, "cs-conflict").content == first.content


def test_another_merchant_with_the_same_key_gets_its_own_session(
    world: World, db: Database
) -> None:
    a, b = world.merchant("Shop A"), world.merchant("Shop B")
    ra = keyed(a, "/v1/checkout/sessions", BODY, "shared-key")
    rb = keyed(b, "/v1/checkout/sessions", BODY, "shared-key")
    assert ra.status_code == rb.status_code == 201
    assert ra.json()["id"] != rb.json()["id"] and rb.json()["merchant_id"] == b.merchant_id
    assert sessions_of(db, a.merchant_id) == [ra.json()["id"]]
    assert sessions_of(db, b.merchant_id) == [rb.json()["id"]]
    # B cannot learn A's session through the key: its replay is its own
    assert keyed(b, "/v1/checkout/sessions", BODY, "shared-key").content == rb.content


def test_the_same_session_creation_sent_by_8_threads_at_once_makes_one(
    world: World, db: Database
) -> None:
    m = world.merchant("Race Shop")
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: keyed(m, "/v1/checkout/sessions", BODY, "cs-race"), range(8))
        )
    made = [r for r in answers if r.status_code == 201]
    assert made and len({r.content for r in made}) == 1
    for r in answers:
        assert r.status_code == 201 or code_of(r) == "request_in_progress", r.text
    assert sessions_of(db, m.merchant_id) == [made[0].json()["id"]]


def test_lookups_tell_what_a_session_creation_did(world: World, db: Database) -> None:
    m = world.merchant("Lookup Shop")
    made = keyed(m, "/v1/checkout/sessions", BODY, "cs-look-1")
    found = keyed(m, "/v1/checkout/sessions/lookup", BODY, "cs-look-1").json()
    assert found["outcome"] == "succeeded" and found["checkout_session"] == made.json()
    other = keyed(m, "/v1/checkout/sessions/lookup", BODY | {"reference": "x"}, "cs-look-1")
    assert code_of(other) == "idempotency_conflict"
    # a request never seen: withdrawn by the lookup, then refused should it still arrive
    assert keyed(m, "/v1/checkout/sessions/lookup", BODY, "cs-look-2").json()["outcome"] == (
        "not_processed"
    )
    late = keyed(m, "/v1/checkout/sessions", BODY, "cs-look-2")
    assert late.status_code == 409 and code_of(late) == "request_withdrawn"
    assert sessions_of(db, m.merchant_id) == [made.json()["id"]]


@pytest.mark.parametrize("fault", [CUT, LOST_COMMIT])
def test_the_client_retries_a_session_creation_whose_answer_was_lost(
    world: World, db: Database, fault: str
) -> None:
    m = world.merchant("Retry Shop")
    proxy = FaultProxy(world.server, watch=("/v1/checkout/sessions",), plan=[fault])
    try:
        with typed(world, m, proxy.url) as client:
            s = client.checkout.create(
                [LineItem("Teapot", 1, 2500)],
                currency="EUR",
                success_url=f"{SHOP}/done",
                cancel_url=f"{SHOP}/cart",
            )
        assert proxy.actions("/v1/checkout/sessions")[0] == fault
        assert len(proxy.actions("/v1/checkout/sessions")) >= 2  # retried, same key
    finally:
        proxy.close()
    assert sessions_of(db, m.merchant_id) == [s.id]


# --- API keys ---------------------------------------------------------------------------------

KEY_BODY = {"scopes": ["orders:read", "checkout:write"], "name": "web shop"}


def _stored_answers(db: Database, scope: str) -> list[str]:
    return list(
        db.read(
            lambda c: (
                c.execute(
                    select(IdempotencyRecord.response).where(IdempotencyRecord.scope == scope)
                )
                .scalars()
                .all()
            )
        )
    )


def test_a_replayed_key_creation_names_the_key_and_never_shows_or_stores_its_secret(
    world: World, db: Database
) -> None:
    m = world.merchant("Key Shop")
    first = keyed(m, "/v1/merchant/api-keys", KEY_BODY, "key-1")
    assert first.status_code == 201, first.text
    secret, kid = first.json()["key"], first.json()["id"]
    for _ in range(3):
        again = keyed(m, "/v1/merchant/api-keys", KEY_BODY, "key-1")
        assert again.status_code == 409 and code_of(again) == "api_key_already_created"
        assert kid in again.json()["error"]["message"] and secret not in again.text
    assert keys_of(db, m.merchant_id) == [kid]
    stored = _stored_answers(db, f"api_key:merchant:{m.merchant_id}")
    assert len(stored) == 1 and kid in stored[0] and secret not in stored[0]
    # the secret part follows "sk_live_<id>_" and may itself hold "_": take all of it
    secret_part = secret.removeprefix(f"sk_live_{kid}_")
    assert secret_part != secret and len(secret_part) >= 32
    assert secret_part not in stored[0]
    # the lookup says the same
    found = keyed(m, "/v1/merchant/api-keys/lookup", KEY_BODY, "key-1").json()
    assert found["outcome"] == "refused" and found["error"]["code"] == "api_key_already_created"
    # another body under the key; another merchant with the key
    for change in ({"name": "other"}, {"scopes": ["orders:read"]}, {"expires_in": 3600}):
        r = keyed(m, "/v1/merchant/api-keys", KEY_BODY | change, "key-1")
        assert r.status_code == 409 and code_of(r) == "idempotency_conflict", r.text
    other = world.merchant("Other Key Shop")
    theirs = keyed(other, "/v1/merchant/api-keys", KEY_BODY, "key-1")
    assert theirs.status_code == 201 and theirs.json()["id"] != kid
    assert keys_of(db, m.merchant_id) == [kid]


def test_a_key_creation_sent_by_8_threads_at_once_makes_one_key(world: World, db: Database) -> None:
    m = world.merchant("Key Race Shop")
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: keyed(m, "/v1/merchant/api-keys", KEY_BODY, "key-race"), range(8))
        )
    made = [r for r in answers if r.status_code == 201]
    assert len(made) == 1, [r.text for r in answers]
    for r in answers:
        if r.status_code != 201:
            assert code_of(r) in ("api_key_already_created", "request_in_progress"), r.text
    assert keys_of(db, m.merchant_id) == [made[0].json()["id"]]


def test_a_replayed_rotation_rotates_once(world: World, db: Database) -> None:
    m = world.merchant("Rotate Shop")
    old = keyed(m, "/v1/merchant/api-keys", KEY_BODY, "key-old").json()["id"]
    path = f"/v1/merchant/api-keys/{old}/rotate"
    first = keyed(m, path, {"grace_seconds": 60}, "rot-1")
    assert first.status_code == 201, first.text
    new = first.json()["id"]
    for _ in range(2):
        again = keyed(m, path, {"grace_seconds": 60}, "rot-1")
        assert again.status_code == 409 and code_of(again) == "api_key_already_created"
        assert new in again.json()["error"]["message"]
        assert first.json()["key"] not in again.text
    other = keyed(m, path, {"grace_seconds": 0}, "rot-1")
    assert code_of(other) == "idempotency_conflict"
    assert sorted(keys_of(db, m.merchant_id)) == sorted([old, new])
    looked = keyed(m, path + "/lookup", {"grace_seconds": 60}, "rot-1").json()
    assert looked["outcome"] == "refused"


def test_the_client_retrying_a_lost_key_creation_learns_which_key_was_made(
    world: World, db: Database
) -> None:
    m = world.merchant("Key Retry Shop")
    proxy = FaultProxy(world.server, watch=("/v1/merchant/api-keys",), plan=[CUT])
    try:
        with typed(world, m, proxy.url) as client, pytest.raises(ApiKeyAlreadyCreated) as info:
            client.api_keys.create(["orders:read"], name="lost")
    finally:
        proxy.close()
    made = keys_of(db, m.merchant_id)
    assert len(made) == 1 and made[0] in info.value.message  # one key: revoke it, make another
    with typed(world, m) as client:
        client.api_keys.revoke(made[0])
        fresh = client.api_keys.create(["orders:read"], name="again")
        assert fresh.key.startswith("sk_live_")
        rotated = client.api_keys.rotate(fresh.info.id, 0)
        assert rotated.info.id != fresh.info.id
    assert len(keys_of(db, m.merchant_id)) == 3


# --- completion on the pay path, and sessions set back to open --------------------------------


def _inst(world: World, clock: Callable[[], float] = time.time) -> Institution:
    """The institution in this process over the same database (its sweep, run by hand;
    ``clock``: its wall clock)."""
    keys = KeyStore(world.tmp / "keys").load(PASSPHRASE.encode())  # type: ignore[attr-defined]
    return Institution(Database(world.db_url), keys, clock=clock)  # type: ignore[attr-defined]


def _made_ago(world: World, mid: str, seconds: int) -> str:
    """An open session expiring 10 s after it was made, made ``seconds`` ago: by the institution
    in this process with its clock set back (instead of making it on the server and waiting
    ``seconds`` for the server's clock to pass its expiry)."""
    inst = _inst(world, clock=lambda: time.time() - seconds)
    try:
        made = inst.checkout.create(
            mid,
            items=[LineItem("Teapot", 1, 2500)],  # BODY's
            currency_code="EUR",
            success_url=f"{SHOP}/done?session={{CHECKOUT_SESSION_ID}}",
            cancel_url=f"{SHOP}/cart",
            expires_in=10,
            reference="cart-1",
        )
    finally:
        inst.db.dispose()
    assert isinstance(made, CheckoutSessionView)
    return made.id


def _session_row(db: Database, sid: str) -> Any:
    return db.read(
        lambda c: c.execute(select(CheckoutSession).where(CheckoutSession.id == sid)).one()
    )


def _count(db: Database, sql: str, **args: Any) -> int:
    return int(db.read(lambda c: c.execute(text(sql), args).scalar_one()))


def _settles(db: Database, mid: str, sid: str) -> int:
    return _count(
        db,
        "SELECT count(*) FROM audit_log WHERE entity = :e AND action LIKE 'checkout.%'"
        " AND action != 'checkout.create'",
        e=f"checkout:{mid}:{sid}",
    )


def _completed_events(db: Database, sid: str) -> int:
    return _count(
        db,
        "SELECT count(*) FROM events WHERE type = 'checkout.session.completed' AND payload LIKE :p",
        p=f'%"session_id":"{sid}"%',
    )


def test_a_paid_session_completes_in_its_payments_transaction(world: World, db: Database) -> None:
    port = free_port()
    m = world.merchant("Prompt Shop", webhook_url=f"http://127.0.0.1:{port}/hook")
    carrier = world.carrier(world.customer({"EUR": 100_000}))
    receiver = Receiver(port, trust_of(world))
    receiver.start()
    try:
        s = m.request("POST", "/v1/checkout/sessions", BODY).json()
        assert s["order_id"].startswith("cs-")
        code = _session_row(db, s["id"]).code  # from the database: no read of the session
        paid = world.pay(code, carrier.authorize(code))
        assert paid.status_code == 201, paid.text
        # at once, with no read and no sweep (once an hour here): complete, one entry, one event
        row = _session_row(db, s["id"])
        assert row.status == "complete" and row.payment_id == paid.json()["payment_id"]
        assert row.completed_at == paid.json()["paid_at"]
        assert _settles(db, m.merchant_id, s["id"]) == 1
        assert _completed_events(db, s["id"]) == 1
        # the payment makes two events (payment.succeeded, checkout.session.completed),
        # delivered as two requests: wait for the one checked, not for the first to arrive
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            e["type"] == "checkout.session.completed" for e in receiver.deliveries
        ):
            time.sleep(0.1)
    finally:
        receiver.stop()
    hooks = [e for e in receiver.deliveries if e["type"] == "checkout.session.completed"]
    assert len(hooks) == 1 and hooks[0]["data"]["session_id"] == s["id"]
    assert hooks[0]["data"]["payment_id"] == paid.json()["payment_id"]
    assert m.request("GET", f"/v1/checkout/sessions/{s['id']}").json()["status"] == "complete"
    assert _settles(db, m.merchant_id, s["id"]) == 1  # the read changed nothing
    # an ordinary order is paid as before (no session, nothing else written)
    o = m.order([("Plain", 1, 100)])
    assert not o["order_id"].startswith("cs-")
    assert world.pay(o["code"], carrier.authorize(o["code"])).status_code == 201


def _reopen(db: Database, sid: str) -> None:
    db.write(
        lambda c: c.execute(
            update(CheckoutSession)
            .where(CheckoutSession.id == sid)
            .values(status="open", payment_id=None, completed_at=None)
        )
    )


def test_a_settled_session_set_back_to_open_is_not_settled_again(
    world: World, db: Database
) -> None:
    m = world.merchant("Reopen Shop")
    carrier = world.carrier(world.customer({"EUR": 100_000}))
    paid = m.request("POST", "/v1/checkout/sessions", BODY).json()
    code = _session_row(db, paid["id"]).code
    assert world.pay(code, carrier.authorize(code)).status_code == 201
    canceled = m.request("POST", "/v1/checkout/sessions", BODY).json()
    r = m.request("POST", f"/v1/checkout/sessions/{canceled['id']}/cancel")
    assert r.json()["status"] == "canceled"
    expiring = {"id": _made_ago(world, m.merchant_id, 11)}
    assert _session_row(db, expiring["id"]).status == "open"  # the server's read expires it
    assert m.request("GET", f"/v1/checkout/sessions/{expiring['id']}").json()["status"] == (
        "expired"
    )
    assert problems(world) == []
    settled = {paid["id"]: "complete", canceled["id"]: "canceled", expiring["id"]: "expired"}
    for sid in settled:
        _reopen(db, sid)
    inst = _inst(world)
    try:
        for _ in range(2):
            assert inst.checkout.sweep() == 0  # nothing moved
        for sid, status in settled.items():
            # a read tells the logged status; the row is left as found (evidence)
            got = m.request("GET", f"/v1/checkout/sessions/{sid}").json()
            assert got["status"] == status, got
            assert world.http.get(f"/checkout/{sid}/qr.svg").status_code == 404
            assert inst.checkout.settle(sid).value == status
            assert _session_row(db, sid).status == "open"
            assert _settles(db, m.merchant_id, sid) == 1
        assert _completed_events(db, paid["id"]) == 1
        cancel = m.request("POST", f"/v1/checkout/sessions/{canceled['id']}/cancel")
        assert cancel.status_code == 409 and "canceled" in cancel.json()["error"]["message"]
    finally:
        inst.db.dispose()
    found = problems(world)
    for sid, status in settled.items():
        assert any(
            f"checkout session {sid} is open in the database but the audit log settled it"
            f" ({status}" in p
            for p in found
        ), found
    assert not any("settled 2 times" in p for p in found), found
    # put back: the audit is clean again
    for sid, status in settled.items():
        row = _session_row(db, sid)
        values: dict[str, Any] = {"status": status}
        if status == "complete":
            order = m.request("GET", f"/v1/merchant/orders/{row.order_id}").json()
            values |= {"payment_id": order["payment_id"], "completed_at": order["paid_at"]}
        db.write(
            lambda c, sid=sid, values=values: c.execute(
                update(CheckoutSession).where(CheckoutSession.id == sid).values(**values)
            )
        )
    assert problems(world) == []


def test_zz_the_audit_checks_the_stored_answers(world: World, db: Database) -> None:
    """After every test above: the audit is clean (each stored session answer is the session
    made; no stored answer holds a secret); then a planted secret and a forged answer are
    found."""
    assert problems(world) == []
    m = world.merchant("Audit Shop")
    made = keyed(m, "/v1/merchant/api-keys", KEY_BODY, "key-audit").json()
    scope = f"api_key:merchant:{m.merchant_id}"
    s = keyed(m, "/v1/checkout/sessions", BODY, "cs-audit").json()
    assert problems(world) == []
    stored = _stored_answers(db, scope)[0]
    leaked = json.loads(stored)
    leaked["error"]["message"] += " " + made["key"]

    def plant(body: dict[str, Any], where: str) -> Any:
        return lambda c: c.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.scope == where)
            .values(response=json.dumps(body, separators=(",", ":"), sort_keys=True))
        )

    db.write(plant(leaked, scope))
    assert any("holds a secret API key" in p for p in problems(world))
    db.write(plant(json.loads(stored), scope))
    checkout_scope = f"checkout:{m.merchant_id}"
    original = json.loads(_stored_answers(db, checkout_scope)[0])
    db.write(plant(original | {"success_url": "https://evil.example/"}, checkout_scope))
    assert any("success_url" in p for p in problems(world))
    db.write(plant(original, checkout_scope))
    assert s["id"] in sessions_of(db, m.merchant_id)
    assert problems(world) == []
