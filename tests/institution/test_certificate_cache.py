"""Merchant-signed codes after the certificate's signature is remembered (issue 20): the
institution verifies a merchant certificate's signature once, and every other check (issued by
this institution as these exact bytes, not revoked, the identity still the merchant's) runs on
every payment. Each attack below first pays a genuine code, so the genuine certificate is
remembered, then tries: the certificate revoked (the merchant, or the certificate alone), the
same subject with another key (the remembered signature re-used, re-signed by the real root
key under the issued serial or a new one, signed by a rogue key with the root's key id), and
the certificate's bytes tampered at positions across it. None pays; no money moves.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import update

from safescan.code import (
    Authorization,
    Certificate,
    Role,
    SigningKey,
    decode_text,
    encode_text,
    issue_certificate,
)
from safescan.institution.db import Database
from safescan.institution.keystore import KeyStore
from safescan.institution.models import CertificateRow
from tests.forgery import dynamic_body, forge
from tests.institution.harness import PASSPHRASE, Carrier, MerchantClient, World
from tests.institution.test_merchant_sealing import _balance, _certify, _published

AMOUNT = 650


def _code(world: World, signer: bytes, cert: Certificate, key: SigningKey) -> tuple[str, str]:
    """A code for ``cert``'s merchant carrying ``signer`` as its certificate, signed by
    ``key``, sealed to the published scheme key; and its order id."""
    now = int(time.time())
    body = dynamic_body(cert, total=AMOUNT, now=now)
    scheme = _published(world).for_sealing(now, now + 300)
    return encode_text(forge(signer, body, key, scheme)), str(body[1])


def _authorize(carrier: Carrier, code: str, mid: str, order_id: str) -> Authorization:
    """What a carrier that signs whatever it is shown would sign (the institution must refuse
    on its own)."""
    carrier.counter += 1
    return Authorization(
        code_digest=hashlib.sha256(decode_text(code)).digest(),
        merchant_id=mid,
        order_id=order_id,
        amount=AMOUNT,
        currency=978,
        counter=carrier.counter,
        carrier_serial=carrier.serial,
        created_at=int(time.time()),
    ).signed(carrier.key)


def _pay(world: World, carrier: Carrier, signer: bytes, cert: Certificate, key: SigningKey) -> Any:
    code, order_id = _code(world, signer, cert, key)
    return world.pay(code, _authorize(carrier, code, cert.subject, order_id))


def _certified(m: MerchantClient) -> tuple[SigningKey, Certificate]:
    key = SigningKey.generate()
    r = _certify(m, key)
    assert r.status_code == 201, r.text
    return key, Certificate.from_bytes(base64.b64decode(r.json()["certificate"]))


@pytest.fixture(scope="module")
def payer(world: World) -> tuple[str, Carrier]:
    cid = world.customer({"EUR": 1_000_000})
    return cid, world.carrier(cid)


@pytest.mark.parametrize("how", ["merchant revoked", "certificate revoked"])
def test_revoked_after_a_payment_is_refused(
    world: World, payer: tuple[str, Carrier], how: str
) -> None:
    cid, carrier = payer
    m = world.merchant(f"Cache Kiosk {how}")
    key, cert = _certified(m)
    first = _pay(world, carrier, cert.to_bytes(), cert, key)
    assert first.status_code == 201, first.text  # the certificate is now remembered
    if how == "merchant revoked":
        assert world.admin("POST", f"/v1/admin/merchants/{m.merchant_id}/revoke").status_code == 200
    else:  # this certificate alone (the merchant stays active)
        db = Database(world.db_url)  # type: ignore[attr-defined]
        try:
            db.write(
                lambda c: c.execute(
                    update(CertificateRow)
                    .where(CertificateRow.serial == cert.serial)
                    .values(revoked_at=int(time.time()))
                )
            )
        finally:
            db.dispose()
    before = _balance(world, cid)
    for _ in range(3):  # and again: a refusal is not remembered as anything either
        r = _pay(world, carrier, cert.to_bytes(), cert, key)
        assert r.status_code == 403, r.text
    assert _balance(world, cid) == before


def test_same_subject_with_another_key_is_refused(world: World, payer: tuple[str, Carrier]) -> None:
    cid, carrier = payer
    m = world.merchant("Cache Kiosk keys")
    key, cert = _certified(m)
    assert _pay(world, carrier, cert.to_bytes(), cert, key).status_code == 201
    keys = KeyStore(world.tmp / "keys").load(PASSPHRASE.encode())  # type: ignore[attr-defined]
    rogue_root = SigningKey.generate()
    attacker = SigningKey.generate()
    assert cert.merchant is not None

    def issued(signer: SigningKey, serial: int) -> Certificate:
        return issue_certificate(
            signer,
            keys.root_kid,
            serial=serial,
            role=Role.MERCHANT,
            subject=cert.subject,
            public_key=attacker.public_key,
            not_before=cert.not_before,
            not_after=cert.not_after,
            merchant=cert.merchant,
        )

    variants = {
        "remembered signature re-used": replace(cert, public_key=attacker.public_key),
        "real root, issued serial": issued(keys.root, cert.serial),
        "real root, serial never issued": issued(keys.root, 2**31 - 9),
        "rogue key with the root's key id": issued(rogue_root, cert.serial),
    }
    before = _balance(world, cid)
    for what, forged in variants.items():
        assert forged.subject == cert.subject
        r = _pay(world, carrier, forged.to_bytes(), forged, attacker)
        assert r.status_code in (400, 403, 422), (what, r.text)
    assert _balance(world, cid) == before
    assert _pay(world, carrier, cert.to_bytes(), cert, key).status_code == 201  # still pays


def test_tampered_certificate_bytes_are_refused(world: World, payer: tuple[str, Carrier]) -> None:
    cid, carrier = payer
    m = world.merchant("Cache Kiosk bytes")
    key, cert = _certified(m)
    assert _pay(world, carrier, cert.to_bytes(), cert, key).status_code == 201
    raw = cert.to_bytes()
    before = _balance(world, cid)
    positions = sorted({*range(0, len(raw), 6), len(raw) - 1, len(raw) - 33})
    accepted = []
    for i in positions:
        for flip in (0x01, 0x80):
            tampered = bytearray(raw)
            tampered[i] ^= flip
            r = _pay(world, carrier, bytes(tampered), cert, key)
            if r.status_code == 201:
                accepted.append((i, flip))
            else:
                assert r.status_code in (400, 403, 422), r.text
    assert accepted == []
    assert _balance(world, cid) == before
    assert _pay(world, carrier, raw, cert, key).status_code == 201  # the genuine one still pays
