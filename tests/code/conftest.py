"""Shared fixtures for the format tests: a small local institution with fixed keys."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from safescan.code import (
    DynamicCode,
    Issuer,
    LineItem,
    Merchant,
    Role,
    SchemeKey,
    SchemeKeyring,
    SigningKey,
    StaticCode,
    TrustStore,
    issue_certificate,
)

NOW = 1_790_000_000  # 2026-09-21, a fixed clock for deterministic tests


@dataclass
class Scheme:
    institution_key: SigningKey
    scheme_key: SchemeKey
    keyring: SchemeKeyring
    trust: TrustStore
    issuer: Issuer
    merchant_key: SigningKey
    merchant_issuer: Issuer


def make_scheme(seed: int = 1) -> Scheme:
    ik = SigningKey.from_seed(bytes([seed]) * 32)
    sk = SchemeKey.from_seed(1, bytes([seed + 100]) * 32)
    keyring = SchemeKeyring()
    keyring.add(sk)
    trust = TrustStore({1: ik.public_key})
    mk = SigningKey.from_seed(bytes([seed + 50]) * 32)
    cert = issue_certificate(
        ik,
        1,
        serial=1001,
        role=Role.MERCHANT,
        subject="m_7Qx2",
        public_key=mk.public_key,
        not_before=NOW - 86400,
        not_after=NOW + 365 * 86400,
        merchant=MERCHANT,
    )
    return Scheme(ik, sk, keyring, trust, Issuer.institution(ik, 1), mk, Issuer.merchant(mk, cert))


MERCHANT = Merchant("m_7Qx2", "Café Lumière", "Paris", "FR", 5814)
ITEMS = (
    LineItem("Flat white", 2, 350),
    LineItem("Croissant", 1, 180),
    LineItem("Orange juice", 1, 420),
)


def dynamic_code(**changes: object) -> DynamicCode:
    fields: dict[str, object] = dict(
        merchant=MERCHANT,
        order_id="o_20261126_0001",
        items=ITEMS,
        total=1300,
        currency=978,
        issued_at=NOW,
        expires_at=NOW + 300,
        nonce=bytes(range(8)),
    )
    fields.update(changes)
    return DynamicCode(**fields)  # type: ignore[arg-type]


def static_code(**changes: object) -> StaticCode:
    fields: dict[str, object] = dict(
        merchant=MERCHANT, currency=978, issued_at=NOW, expires_at=NOW + 365 * 86400
    )
    fields.update(changes)
    return StaticCode(**fields)  # type: ignore[arg-type]


@pytest.fixture
def scheme() -> Scheme:
    return make_scheme()
