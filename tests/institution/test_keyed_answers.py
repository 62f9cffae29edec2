"""A keyed operation builds its answer once (issue #15): with an Idempotency-Key the domain
returns the answer it recorded for the key (the HTTP layer sends those bytes), never a result
the HTTP layer encodes a second time; without a key it returns its typed result."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from safescan.code import LineItem
from safescan.institution import wire
from safescan.institution.domain.idempotency import Stored
from safescan.institution.domain.results import OrderCreated
from safescan.institution.service import Institution
from tests.institution.conftest import BACKENDS, make_db
from tests.institution.harness import institution_in


@pytest.fixture(scope="module", params=BACKENDS)
def inst(request: pytest.FixtureRequest) -> Iterator[Institution]:
    with tempfile.TemporaryDirectory(prefix="safescan-keyed-") as d:
        url = make_db(request.param, request, Path(d))
        with institution_in(url, Path(d) / "keys") as institution:
            yield institution


def _merchant(inst: Institution, name: str) -> str:
    return inst.merchants.create(
        name=name,
        city="Berlin",
        country="DE",
        mcc=5814,
        settlement_account="DE89370400440532013000",
        api_public_key=None,
        webhook_url=None,
    ).merchant.id


def _order(inst: Institution, mid: str, key: str | None, price: int = 250) -> object:
    return inst.orders.create(
        mid,
        items=[LineItem("Tea", 2, price)],
        currency_code="EUR",
        expires_in=900,
        reference=None,
        idempotency_key=key,
    )


@pytest.mark.parametrize("variant", ["first", "retry", "other-merchant-same-key"])
def test_a_keyed_order_answer_is_encoded_once_and_sent_as_recorded(
    inst: Institution, monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    calls: list[OrderCreated] = []
    encode = wire.order_created

    def counting(made: OrderCreated) -> dict[str, object]:
        calls.append(made)
        return encode(made)

    monkeypatch.setattr(wire, "order_created", counting)
    mid = _merchant(inst, f"Keyed {variant}")
    key = f"k-{variant}"
    first = _order(inst, mid, key)
    assert isinstance(first, Stored) and first.status == wire.CREATED
    assert len(calls) == 1, "the answer was built more than once"
    assert first.body == encode(calls[0])
    if variant == "retry":
        again = _order(inst, mid, key)
        assert again == first and len(calls) == 1  # the recorded answer, nothing re-encoded
        assert len(inst.orders.page(mid, limit=10, after=None).orders) == 1
    elif variant == "other-merchant-same-key":
        other = _order(inst, _merchant(inst, "Keyed other"), key)
        assert isinstance(other, Stored) and other.body["order_id"] != first.body["order_id"]


def test_without_a_key_the_result_is_typed(inst: Institution) -> None:
    made = _order(inst, _merchant(inst, "Unkeyed Shop"), None)
    assert isinstance(made, OrderCreated) and made.total == 500
