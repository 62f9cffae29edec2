"""The institution and merchant-signed codes (#13.1, #14): the certificate carries the identity,
the published scheme key list lets a merchant seal offline, and the institution pays such a
code once, and only for the identity it certified and the certificate bytes it issued.

Forged codes are paid with authorizations from a software carrier that signs whatever it is
given (a modified carrier): the institution must refuse them on its own.
"""

from __future__ import annotations

import base64
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from safescan.code import (
    Authorization,
    Certificate,
    Issuer,
    Merchant,
    Role,
    SigningKey,
    TrustStore,
    decode_text,
    encode_text,
    issue_certificate,
    open_code,
    seal,
)
from safescan.code.keys import VerifyKey
from safescan.code.payment import DynamicCode, LineItem
from safescan.code.schemelist import SchemeKeyList
from safescan.institution.auditing import run_audit
from safescan.institution.db import Database
from safescan.institution.epochs import EpochKeyring
from safescan.institution.keystore import KeyStore
from safescan.institution.models import MerchantRow
from tests.forgery import dynamic_body, forge, identity_swaps, inline_identity
from tests.institution.harness import PASSPHRASE, Carrier, MerchantClient, World, b64


def _trust(world: World) -> TrustStore:
    keys = world.http.get("/v1/keys").json()
    return TrustStore(
        {k["kid"]: VerifyKey(base64.b64decode(k["public_key"])) for k in keys["root_keys"]}
    )


def _published(world: World) -> SchemeKeyList:
    doc = world.http.get("/v1/keys").json()
    return SchemeKeyList.from_bytes(base64.b64decode(doc["scheme_key_list"]), _trust(world))


def _sealed(world: World, cert: Certificate, key: SigningKey) -> str:
    """A well-formed code for ``cert``, signed by ``key``, sealed to the published key."""
    now = int(time.time())
    scheme = _published(world).for_sealing(now, now + 300)
    return encode_text(forge(cert.to_bytes(), dynamic_body(cert, now=now), key, scheme))


def _order_id(code: str, world: World) -> str:
    """The order id inside a code (opened with the institution's own keys)."""
    keys = KeyStore(world.tmp / "keys").load(PASSPHRASE.encode())  # type: ignore[attr-defined]
    database = Database(world.db_url)  # type: ignore[attr-defined]
    try:  # dynamic codes are sealed to the scheme-key epochs (#14): static + epoch keys
        keyring = EpochKeyring(database, keys.scheme, keys.secret)
        opened = open_code(code, keyring, _trust(world), now=int(time.time()))
    finally:
        database.dispose()
    assert isinstance(opened.code, DynamicCode)
    return opened.code.order_id


def _certify(m: MerchantClient, key: SigningKey, **extra: Any) -> httpx.Response:
    return m.request(
        "POST", "/v1/merchant/certificates", {"public_key": b64(key.public_key.raw), **extra}
    )


def _identity(m: MerchantClient) -> Merchant:
    me = m.request("GET", "/v1/merchant").json()
    return Merchant(m.merchant_id, me["name"], me["city"], me["country"], me["mcc"])


def _balance(world: World, cid: str) -> int:
    c = world.admin("GET", f"/v1/admin/customers/{cid}").json()
    return next((b["amount"] for b in c["balances"] if b["currency"] == "EUR"), 0)


def _blind(carrier: Carrier, code: str, merchant_id: str, amount: int = 650) -> Authorization:
    """A modified carrier: signs an authorization for a code it never verified."""
    carrier.counter += 1
    order_id = "F"  # placeholder: the institution must refuse before matching the order
    return Authorization(
        code_digest=hashlib.sha256(decode_text(code)).digest(),
        merchant_id=merchant_id,
        order_id=order_id,
        amount=amount,
        currency=978,
        counter=carrier.counter,
        carrier_serial=carrier.serial,
        created_at=int(time.time()),
    ).signed(carrier.key)


@pytest.fixture(scope="module")
def setup(world: World) -> tuple[MerchantClient, MerchantClient, str, Carrier]:
    """An attacker merchant, a victim merchant, a funded customer with a carrier."""
    attacker = world.merchant("Kiosk Nord")
    victim = world.merchant("Boulangerie Moreau", country="FR")
    cid = world.customer({"EUR": 100_000})
    return attacker, victim, cid, world.carrier(cid)


@pytest.fixture(scope="module")
def attacker_cert(setup: Any) -> tuple[SigningKey, Certificate]:
    """One code-signing certificate of the attacker, shared by the forgery tests (a merchant
    holds at most MAX_LIVE_MERCHANT_CERTS live certificates)."""
    attacker = setup[0]
    key = SigningKey.generate()
    r = _certify(attacker, key)
    assert r.status_code == 201, r.text
    return key, Certificate.from_bytes(base64.b64decode(r.json()["certificate"]))


def test_certificate_carries_the_registered_identity(world: World, setup: Any) -> None:
    attacker, _, _, _ = setup
    key = SigningKey.generate()
    r = _certify(attacker, key)
    assert r.status_code == 201, r.text
    cert = Certificate.from_bytes(base64.b64decode(r.json()["certificate"]))
    assert cert.version == 2 and cert.role is Role.MERCHANT
    assert cert.merchant == _identity(attacker)
    assert cert.public_key == key.public_key


@pytest.mark.parametrize(
    "extra",
    [{"name": "Boulangerie Moreau"}, {"city": "Paris"}, {"mcc": 6011}, {"merchant_id": "M1"}],
)
def test_a_merchant_cannot_ask_for_another_identity(
    world: World, setup: Any, extra: dict[str, Any]
) -> None:
    attacker, _, _, _ = setup
    r = _certify(attacker, SigningKey.generate(), **extra)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text


def test_published_scheme_key_list_verifies_and_matches(world: World) -> None:
    doc = world.http.get("/v1/keys").json()
    listed = _published(world)
    current = next(k for k in doc["scheme_keys"] if k["current"])
    assert listed.current_kid == current["kid"]
    assert {k.key.kid: base64.b64encode(k.key.raw).decode() for k in listed.keys} == {
        k["kid"]: k["public_key"] for k in doc["scheme_keys"]
    }


def test_merchant_sealed_code_with_public_keys_only_pays_exactly_once(
    world: World, setup: Any
) -> None:
    """Sealed from the certificate and the published list alone; a second payment by the same
    carrier (new counter) or by another carrier is refused and moves no money."""
    attacker, _, cid, carrier = setup
    key = SigningKey.generate()
    cert = Certificate.from_bytes(base64.b64decode(_certify(attacker, key).json()["certificate"]))
    now = int(time.time())
    assert cert.merchant is not None
    code = encode_text(
        seal(
            DynamicCode(
                cert.merchant,
                "POS-" + hashlib.sha256(str(now).encode()).hexdigest()[:8],
                (LineItem("Soup", 1, 650),),
                650,
                978,
                now,
                now + 300,
                b"12345678",
            ),
            Issuer.merchant(key, cert),
            _published(world).for_sealing(now, now + 300),
        )
    )
    before = _balance(world, cid)
    first = world.pay(code, carrier.authorize(code))
    assert first.status_code == 201, first.text
    other = world.carrier(cid)
    for again in (carrier.authorize(code), other.authorize(code)):
        r = world.pay(code, again)
        assert r.status_code == 409 and r.json()["error"]["code"] == "order_not_payable"
    assert _balance(world, cid) == before - 650
    got = attacker.request("GET", f"/v1/merchant/orders/{first.json()['order_id']}").json()
    assert got["state"] == "PAID" and got["total"] == 650


@pytest.mark.parametrize(
    "swap",
    list(
        identity_swaps(
            Merchant("x", "Boulangerie Moreau", "Berlin", "DE", 5814),
            Merchant("y", "Boulangerie Moreau", "Paris", "FR", 5812),
        )
    ),
)
def test_identity_swaps_are_refused_by_the_institution(
    world: World, setup: Any, attacker_cert: tuple[SigningKey, Certificate], swap: str
) -> None:
    attacker, victim, cid, carrier = setup
    key, cert = attacker_cert
    shown = identity_swaps(_identity(attacker), _identity(victim))[swap]
    now = int(time.time())
    scheme = _published(world).for_sealing(now, now + 300)
    code = encode_text(
        forge(cert.to_bytes(), inline_identity(dynamic_body(cert, now=now), shown), key, scheme)
    )
    before = _balance(world, cid)
    for merchant_id in {shown.id, attacker.merchant_id}:
        r = world.pay(code, _blind(carrier, code, merchant_id))
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_code", r.text
    status = world.http.post("/v1/codes/status", json={"code": code})
    assert status.status_code == 400 and status.json()["error"]["code"] == "malformed_code"
    assert _balance(world, cid) == before


def test_certificates_the_institution_did_not_issue_are_refused(
    world: World, setup: Any, attacker_cert: tuple[SigningKey, Certificate]
) -> None:
    """Signed by the real root key (a leaked signing step, the offline `keys certify` tool) but
    not what the institution recorded: another identity or key under an issued serial, or a
    serial it never issued."""
    _attacker, victim, cid, carrier = setup
    keys = KeyStore(world.tmp / "keys").load(PASSPHRASE.encode())  # type: ignore[attr-defined]
    key, real = attacker_cert
    assert real.merchant is not None
    variants = {
        "victim identity, attacker serial": replace(real.merchant, name=_identity(victim).name),
        "longer validity": real.merchant,
        "unknown serial": real.merchant,
    }
    before = _balance(world, cid)
    for what, identity in variants.items():
        cert = issue_certificate(
            keys.root,
            keys.root_kid,
            serial=2**31 - 5 if what == "unknown serial" else real.serial,
            role=Role.MERCHANT,
            subject=identity.id,
            public_key=key.public_key,
            not_before=real.not_before,
            not_after=real.not_after + (86400 if what == "longer validity" else 0),
            merchant=identity,
        )
        code = _sealed(world, cert, key)
        r = world.pay(code, carrier.authorize(code))
        assert r.status_code == 403, (what, r.text)
        assert "certificate" in r.json()["error"]["message"]
        status = world.http.post("/v1/codes/status", json={"code": code}).json()
        assert status["state"] == "revoked", what
    assert _balance(world, cid) == before


def test_certificate_is_refused_once_the_merchant_identity_changes(
    world: World, setup: Any
) -> None:
    """A renamed merchant's older certificates no longer pay: they show the old identity."""
    cid = setup[2]
    carrier: Carrier = setup[3]
    m = world.merchant("Rename Me")
    key = SigningKey.generate()
    cert = Certificate.from_bytes(base64.b64decode(_certify(m, key).json()["certificate"]))
    db = Database(world.db_url)  # type: ignore[attr-defined]
    try:
        db.write(
            lambda c: c.execute(
                update(MerchantRow).where(MerchantRow.id == m.merchant_id).values(name="Renamed")
            )
        )
    finally:
        db.dispose()
    code = _sealed(world, cert, key)
    before = _balance(world, cid)
    r = world.pay(code, carrier.authorize(code))
    assert r.status_code == 403 and "identity" in r.json()["error"]["message"]
    assert _balance(world, cid) == before


def _close(m: MerchantClient, order_id: str, code: str | None) -> httpx.Response:
    body = {} if code is None else {"code": code}
    return m.request("POST", f"/v1/merchant/orders/{order_id}/close", body)


def test_a_terminal_sealed_code_can_be_withdrawn_before_it_is_paid(
    world: World, setup: Any, attacker_cert: tuple[SigningKey, Certificate]
) -> None:
    attacker, victim, cid, carrier = setup
    key, cert = attacker_cert
    code = _sealed(world, cert, key)
    order_id = _order_id(code, world)
    # only with the code, only by its merchant, only for its own order id
    assert _close(attacker, order_id, None).status_code == 404
    assert _close(victim, order_id, code).status_code == 403
    assert _close(attacker, "L-other", code).status_code == 400
    assert world.http.post("/v1/codes/status", json={"code": code}).json()["state"] == "payable"
    r = _close(attacker, order_id, code)
    assert r.status_code == 200 and r.json()["state"] == "CLOSED", r.text
    assert world.http.post("/v1/codes/status", json={"code": code}).json()["state"] == "closed"
    before = _balance(world, cid)
    paid = world.pay(code, carrier.authorize(code))
    assert paid.status_code == 409 and paid.json()["error"]["code"] == "order_not_payable"
    assert "CLOSED" in paid.json()["error"]["message"]
    assert _balance(world, cid) == before
    assert _close(attacker, order_id, code).status_code == 409  # closed already
    # once paid, a sealed code cannot be withdrawn any more
    other = _sealed(world, cert, key)
    assert world.pay(other, carrier.authorize(other)).status_code == 201
    late = _close(attacker, _order_id(other, world), other)
    assert late.status_code == 409 and "PAID" in late.json()["error"]["message"]
    # the withdrawn order was recorded with its creation: the audit finds it as the log says
    report = run_audit(world.server.db_url, quick=True, checkpoint_file=None)
    assert not [p for p in report.problems if order_id in p], report.problems


def test_withdrawal_racing_payment_has_one_winner(
    world: World, setup: Any, attacker_cert: tuple[SigningKey, Certificate]
) -> None:
    attacker, _, cid, carrier = setup
    key, cert = attacker_cert
    codes = [_sealed(world, cert, key) for _ in range(8)]
    auths = [carrier.authorize(c) for c in codes]
    before = _balance(world, cid)
    with ThreadPoolExecutor(max_workers=4) as pool:
        pays = [pool.submit(world.pay, c, a) for c, a in zip(codes, auths, strict=True)]
        closes = [pool.submit(_close, attacker, _order_id(c, world), c) for c in codes]
        outcomes = [
            (p.result().status_code, c.result().status_code)
            for p, c in zip(pays, closes, strict=True)
        ]
    paid = sum(1 for p, _ in outcomes if p == 201)
    for pay_status, close_status in outcomes:
        assert (pay_status, close_status) in ((201, 409), (409, 200)), outcomes
    assert _balance(world, cid) == before - 650 * paid
