"""A populated institution database: every table holds rows, every kind of state change done.

Used by the audit's fault tests (restores, byte flips, value corruptions) and by
``bench/audit_campaign.py``. Everything runs in-process through :class:`Institution` (no
server), with real keys and real carrier-signed authorizations.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import select, update

from safescan.api.errors import OrderNotPayable
from safescan.api.merchant_auth import sign_request
from safescan.code import Authorization, SigningKey, decode_text, open_code
from safescan.code.envelope import Issuer, encode_text, seal
from safescan.code.payment import DynamicCode, LineItem, Merchant
from safescan.institution import admin_tokens, nonces, outcomes, webhook_log, wire
from safescan.institution.checkpoints import default_path
from safescan.institution.db import Database, migrate
from safescan.institution.domain.idempotency import Stored
from safescan.institution.domain.results import PaymentMade
from safescan.institution.keystore import KeyStore
from safescan.institution.models import Event
from safescan.institution.rollback import RollbackGuard
from safescan.institution.service import Institution
from safescan.institution.webhook_secrets import EndpointSecrets
from safescan.institution.webhook_targets import TargetPolicy
from safescan.institution.webhook_transport import Attempt
from tests.institution.conftest import make_db
from tests.institution.harness import PASSPHRASE, attest


class Clock:
    """A settable clock (so that orders can expire without waiting)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@dataclass
class Populated:
    """What :func:`populate` made (ids for tests to aim at)."""

    db_url: str
    keys: Path
    inst: Institution
    clock: Clock
    merchants: list[str] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)
    carriers: list[tuple[int, SigningKey]] = field(default_factory=list)
    counters: dict[int, int] = field(default_factory=dict)
    payments: list[str] = field(default_factory=list)
    merchant_keys: dict[str, SigningKey] = field(default_factory=dict)

    def close(self) -> None:
        """Release the database connections."""
        self.inst.db.dispose()


def _authorize(p: Populated, carrier: int, code: str, amount: int, currency: int) -> bytes:
    serial, key = p.carriers[carrier]
    p.counters[serial] = p.counters.get(serial, 0) + 1
    binary = decode_text(code)
    c = open_code(code, p.inst.scheme_keys, p.inst.trust, now=int(p.clock()))
    return (
        Authorization(
            code_digest=hashlib.sha256(binary).digest(),
            merchant_id=c.code.merchant.id,
            order_id=getattr(c.code, "order_id", ""),
            amount=amount,
            currency=currency,
            counter=p.counters[serial],
            carrier_serial=serial,
            created_at=int(p.clock()),
        )
        .signed(key)
        .to_bytes()
    )


def pay(p: Populated, carrier: int, code: str, amount: int, idem: str | None = None) -> str:
    """Pay ``code`` with carrier number ``carrier``; returns the payment id."""
    made = p.inst.payments.pay(code, _authorize(p, carrier, code, amount, 978), idem)
    if isinstance(made, Stored):  # keyed: the answer recorded for the key
        assert made.status == 201, made
        pid = str(made.body["payment_id"])
    else:
        assert isinstance(made, PaymentMade), made
        pid = made.payment_id
    p.payments.append(pid)
    return pid


def order(p: Populated, mid: str, price: int, idem: str | None = None, **kw: Any) -> dict[str, Any]:
    """Precreate an order of one item; returns its body (order_id, code, ...)."""
    result = p.inst.orders.create(
        mid,
        items=[LineItem("Coffee", 1, price)],
        currency_code="EUR",
        expires_in=kw.get("expires_in", 600),
        reference=kw.get("reference"),
        idempotency_key=idem,
    )
    return dict(result.body) if isinstance(result, Stored) else wire.order_created(result)


def _enroll(p: Populated, cid: str) -> None:
    token = p.inst.customers.issue_enrollment_token(cid).token
    key = SigningKey.generate()
    transport = X25519PrivateKey.generate().public_key().public_bytes_raw()
    statement = attest(p.inst, token, key.public_key.raw, transport)  # a genuine chip's
    out = p.inst.carriers.enroll(token, key.public_key.raw, transport, statement)
    p.carriers.append((out.carrier_serial, key))


def _signed_request(p: Populated, mid: str) -> None:
    """One authenticated merchant request (a nonce and a rate bucket row)."""
    key = p.merchant_keys[mid]
    headers = sign_request(key, mid, "GET", "/v1/merchant/orders", b"", timestamp=int(p.clock()))
    p.inst.access.authenticate_merchant("GET", "/v1/merchant/orders", headers, b"")


def populate(db_url: str, keys: Path, *, payments: int = 12) -> Populated:
    """Create and fill an institution at ``db_url`` (keys in ``keys``)."""
    store = KeyStore(keys)
    institution_keys = store.create(PASSPHRASE.encode())
    database = Database(db_url)
    migrate(database.engine)
    clock = Clock()
    inst = Institution(database, institution_keys, clock=clock)
    ahead = [0.0]  # the elapsed clock runs ahead by this much (to forget nonces at once)
    inst.elapsed = nonces.ElapsedClock(lambda: time.monotonic() + ahead[0])
    # a fixed answer for the one webhook host (no DNS in tests)
    inst.webhook_targets = TargetPolicy(resolver=lambda host, port: ["93.184.215.14"])
    inst.setup.bootstrap()
    p = Populated(db_url, keys, inst, clock)
    admin_tokens.create(database)
    for i, hook in enumerate(["https://shop.example/hook", None, None]):
        mkey = SigningKey.generate()
        m = inst.merchants.create(
            name=f"Shop {i}",
            city="Berlin",
            country="DE",
            mcc=5814,
            settlement_account=f"DE8937040044053201300{i}",
            api_public_key=mkey.public_key.raw,
            webhook_url=hook,
        )
        p.merchants.append(m.merchant.id)
        p.merchant_keys[m.merchant.id] = mkey
    for i in range(4):
        cid = inst.customers.create(f"Customer {i}").id
        inst.customers.fund(cid, "EUR", 100_000)
        p.customers.append(cid)
    inst.customers.fund(p.customers[0], "USD", 5_000)
    for cid in p.customers[:3]:
        _enroll(p, cid)
    inst.customers.issue_enrollment_token(p.customers[3])  # never used
    m0, m1, m2 = p.merchants
    for _ in range(2):
        _signed_request(p, m0)
    _signed_request(p, m1)
    # the replay window passes: those nonces are forgotten, their merchants get floors
    ahead[0] += nonces.RETENTION + 1
    assert inst.access.purge_nonces() == 3
    clock.now += 1
    _signed_request(p, m0)
    # institution-issued dynamic codes, some with Idempotency-Keys
    paid: list[str] = []
    for n in range(payments):
        mid = (m0, m1)[n % 2]
        o = order(p, mid, 250 + 10 * n, idem=f"order-{n}" if n % 3 == 0 else None)
        pay(p, n % 3, o["code"], o["total"], idem=f"pay-{n}" if n % 2 == 0 else None)
        paid.append(o["order_id"])
    # refunds: partial, full, with and without key
    inst.refunds.refund(m0, paid[0], amount=100, reason="damaged", idempotency_key="refund-0")
    inst.refunds.refund(m1, paid[1], amount=None, reason=None, idempotency_key=None)
    inst.refunds.refund(m0, paid[2], amount=50, reason=None, idempotency_key=None)
    # a static code paid with a customer-chosen amount
    static = inst.orders.static_code(m1, currency_code="EUR", valid_days=30)
    pay(p, 1, static.code, 777)
    # a merchant-signed code (certified merchant key)
    mkey = SigningKey.generate()
    cert = inst.merchants.certify_key(m2, mkey.public_key.raw, 30)
    now = int(clock())
    code = DynamicCode(
        merchant=Merchant(m2, "Shop 2", "Berlin", "DE", 5814),
        order_id="MSIGNED00001",
        items=(LineItem("Tea", 2, 180),),
        total=360,
        currency=978,
        issued_at=now,
        expires_at=now + 600,
        nonce=b"\x01" * 8,
    ).validated()
    text = encode_text(
        seal(code, Issuer.merchant(mkey, cert), inst.keys.scheme.current(now).public)
    )
    pay(p, 2, text, 360)
    # a closed and an expired order, and a batch of precreated ones
    closed = order(p, m0, 990, reference="to-close")
    inst.orders.close(m0, closed["order_id"])
    order(p, m1, 555, expires_in=5)
    clock.now += 10
    inst.orders.expire()
    batch = inst.orders.precreate(
        m0, [([LineItem("Bagel", 1, 300)], "EUR"), ([LineItem("Juice", 2, 200)], "EUR")], 600
    )
    clock.now += 5
    pay(p, 0, batch[0].code, batch[0].total)  # a precreated order paid later
    unpaid = order(p, m0, 123)  # stays CREATED
    # a refusal stored as its key's answer (the order is paid already)
    try:
        p.inst.payments.pay(text, _authorize(p, 0, text, 360, 978), "pay-late")
    except OrderNotPayable:
        pass
    else:  # pragma: no cover - populate's own check
        raise AssertionError("a paid code was paid again")
    # a status lookup that withdrew an authorization never sent (its counter fenced, logged)
    auth = _authorize(p, 1, unpaid["code"], 123, 978)
    looked = outcomes.lookup_payment(inst, unpaid["code"], auth, "pay-lost")
    assert looked["outcome"] == "not_processed", looked
    # a lookup, seconds later and under a key of its own, of an authorization that paid: the
    # payment's answer is stored under that key dated as the payment (the audit compares them)
    later = order(p, m1, 321)
    auth = _authorize(p, 0, later["code"], 321, 978)
    made = inst.payments.pay(later["code"], auth, None)
    assert isinstance(made, PaymentMade), made
    p.payments.append(made.payment_id)
    clock.now += 3
    looked = outcomes.lookup_payment(inst, later["code"], auth, "pay-looked-up-later")
    assert looked["outcome"] == "succeeded", looked
    # a revoked carrier, a revoked merchant (and its certificate), a static code left unpaid
    _enroll(p, p.customers[3])
    inst.carriers.revoke(p.carriers[-1][0])
    inst.merchants.revoke(m2)
    inst.orders.static_code(m0, currency_code=None, valid_days=1)
    _webhook_operations(p, m0)
    _merchant_access(p, m0, m1)
    # the checkpoint file beside the keys, and the database's head of it (checkpoint_head)
    RollbackGuard(database, institution_keys, default_path(keys)).tick()
    return p


@contextlib.contextmanager
def populated_on(
    request: pytest.FixtureRequest, *, payments: int, prefix: str | None = None
) -> Iterator[Populated]:
    """An institution filled by :func:`populate` on the backend ``request.param`` names (a
    parametrized fixture's request), in a temporary directory; its connections released at the
    end."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        p = populate(make_db(request.param, request, Path(d)), Path(d) / "keys", payments=payments)
        try:
            yield p
        finally:
            p.close()


def _merchant_access(p: Populated, m0: str, m1: str) -> None:
    """API keys (one used, one rotated, one revoked, one with an expiry and no name) and
    checkout sessions in every status (open, complete, expired, canceled)."""
    inst, keys = p.inst, p.inst.access.api_keys
    used = keys.create(m0, ["orders:read", "orders:write"], name="till 1")
    inst.access.authenticate_key(used.secret)  # a last_used_at
    keys.create(m1, ["checkout:write"], expires_in=3600)
    old = keys.create(m0, ["refunds:write"], name="refunds")
    p.clock.now += 1
    keys.rotate(m0, old.info.id, grace=600)
    gone = keys.create(m1, ["events:read", "webhooks:read"], name="gone")
    p.clock.now += 1
    keys.revoke(m1, gone.info.id)
    shop = "https://shop.example"

    def session(mid: str, price: int, expires_in: int = 600) -> Any:
        return inst.checkout.create(
            mid,
            items=[LineItem("Teapot", 1, price), LineItem("Tea", 2, 150)],
            currency_code="EUR",
            success_url=f"{shop}/done?session={{CHECKOUT_SESSION_ID}}",
            cancel_url=f"{shop}/cart",
            expires_in=expires_in,
            reference=f"cart-{price}",
        )

    session(m0, 2500)  # stays open
    paid = session(m1, 1800)
    pay(p, 2, paid.code, paid.total)
    p.clock.now += 1
    inst.checkout.settle(paid.id)  # complete, its event
    inst.checkout.cancel(m0, session(m0, 1200).id)
    late = session(m1, 900, expires_in=10)
    p.clock.now += 11
    inst.checkout.settle(late.id)  # expired with its order


def _webhook_operations(p: Populated, mid: str) -> None:
    """An endpoint secret rotated with overlap, a logged attempt and a resent event."""
    secrets = EndpointSecrets(p.inst.keys.secret)
    db, now = p.inst.db, int(p.clock())
    db.write(lambda c: secrets.rotate(c, mid, now=now, overlap=0))
    db.write(lambda c: secrets.rotate(c, mid, now=now + 1, overlap=3600))
    eid = db.read(
        lambda c: c.execute(select(Event.id).where(Event.merchant_id == mid).limit(1)).scalar()
    )
    assert eid is not None
    db.write(
        lambda c: c.execute(update(Event).where(Event.id == eid).values(webhook_state="failed"))
    )
    att = Attempt("https://shop.example/hook", now, 0.05, 500, "http_status", "HTTP 500")
    db.write(
        lambda c: webhook_log.record_attempt(
            c,
            merchant_id=mid,
            event_id=eid,
            kind="event",
            attempt=1,
            att=att,
            state="failed",
            next_retry_ms=None,
        )
    )
    resent = db.write(lambda c: webhook_log.resend(c, mid, eid, now + 2, "req-populate-resend"))
    assert resent["requeued"]


__all__ = ["Clock", "Populated", "order", "pay", "populate", "populated_on"]
