"""The size of the dynamic codes the institution issues (issue 20): the demo's three-item order,
made the way the demo makes it (merchant "Café Lumière", Paris, FR, 5814; reference "demo";
5 minutes), fits QR version 11 at level M, and so do other typical orders
(docs/protocol.md section 8, byte budget)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from safescan.code import LineItem, decode_text, qr
from safescan.demo.story import ITEMS
from safescan.institution.service import Institution
from tests.institution.harness import institution_in

# QR version 11 at level M holds 366 alphanumeric characters (Base45 text of 244 bytes)
V11_M_CHARS = 366


@pytest.fixture(scope="module")
def inst() -> Iterator[Institution]:
    with tempfile.TemporaryDirectory(prefix="safescan-size-") as d:
        tmp = Path(d)
        with institution_in(f"sqlite:///{tmp / 'size.db'}", tmp / "keys") as institution:
            yield institution


def _code(inst: Institution, name: str, city: str, items: list[tuple[str, int, int]]) -> str:
    m = inst.merchants.create(
        name=name,
        city=city,
        country="FR",
        mcc=5814,
        settlement_account="FR7630006000011234567890189",
        api_public_key=None,
        webhook_url=None,
    )
    made = inst.orders.create(
        m.merchant.id,
        items=[LineItem(*line) for line in items],
        currency_code="EUR",
        expires_in=300,
        reference="demo",
        idempotency_key=None,
    )
    return str(made.code)  # type: ignore[union-attr]


def test_the_demo_code_is_qr_version_11_at_level_m(inst: Institution) -> None:
    items = [(i.name, i.quantity, i.unit_price) for i in ITEMS]
    code = _code(inst, "Café Lumière", "Paris", items)
    assert len(items) == 3
    assert qr.qr_version(code) == 11, (len(decode_text(code)), len(code))
    assert len(code) <= V11_M_CHARS


@pytest.mark.parametrize(
    "items",
    [
        [("Espresso", 1, 250)],
        [("Flat white", 2, 350), ("Croissant", 1, 180), ("Orange juice", 1, 420)],
        [("Cappuccino", 3, 1450), ("Pain au chocolat", 12, 195), ("Water", 2, 90)],
    ],
)
def test_typical_dynamic_codes_fit_version_11(
    inst: Institution, items: list[tuple[str, int, int]]
) -> None:
    code = _code(inst, "Boulangerie Moreau", "Lyon", items)
    assert qr.qr_version(code) <= 11, (len(decode_text(code)), len(code))


def test_longer_names_take_version_12(inst: Institution) -> None:
    """The budget is bytes, not items: three items whose names add up to 46 characters (15
    more than the demo's 31) no longer fit version 11 (docs/protocol.md section 8)."""
    items = [
        ("Cappuccino grande", 3, 1450),
        ("Pain au chocolat", 12, 195),
        ("Mineral water", 2, 90),
    ]
    code = _code(inst, "Boulangerie Moreau", "Lyon", items)
    assert qr.qr_version(code) == 12, (len(decode_text(code)), len(code))
