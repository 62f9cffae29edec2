"""A payment's outbox event and audit entry rendered in one step (``pay_records``, issue 20,
twelfth sitting) are the bytes the general functions (``event_params``, ``audit.prepare_entry``:
what the payment path called before) make: on many payments, plain or not, and as stored by
real payments on both stores (every path: the SQLite writer, PostgreSQL's one statement from a
thread and from the event loop, with and without a key), whose audit chain verifies."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import string
import tempfile
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from safescan.api.obslog import reset_request_id, set_request_id
from safescan.institution import audit
from safescan.institution.domain.idempotency import Stored
from safescan.institution.domain.results import PaymentMade
from safescan.institution.models import AuditEntry, Event
from safescan.institution.pay_records import general_records, payment_records
from safescan.institution.service import Institution
from tests.institution.conftest import BACKENDS, make_db
from tests.institution.harness import institution_in
from tests.institution.test_pay_statement import Payer


class _Small(IntEnum):
    ONE = 1


_PLAIN = string.ascii_letters + string.digits + "_.:-"
_ODD = _PLAIN + "\"\\/ é東\x7f\x00\n\u2028'{}[],"


def _text(rng: random.Random, alphabet: str, most: int = 24) -> str:
    return "".join(rng.choices(alphabet, k=rng.randrange(0, most)))


def _int(rng: random.Random) -> Any:
    value = rng.choice([0, 1, 978, 2**31, 2**63 - 1, 2**70, rng.randrange(-(2**40), 2**40)])
    return rng.choice([value] * 8 + [_Small.ONE, True])  # an int subclass now and then


def _payment(rng: random.Random, odd: bool) -> dict[str, Any]:
    alphabet = _ODD if odd else _PLAIN
    mid, order_id = _text(rng, alphabet), _text(rng, alphabet)
    return {
        "event_id": "evt_" + _text(rng, alphabet),
        "mid": mid,
        "order_id": order_id,
        "payment_id": "pay_" + _text(rng, alphabet),
        "amount": _int(rng) if odd else rng.randrange(1, 10**9),
        "currency": _int(rng) if odd else 978,
        "pseudonym": _text(rng, alphabet, 40),
        "now": _int(rng) if odd else rng.randrange(0, 2**40),
        "customer_id": _text(rng, alphabet),
        "counter": _int(rng) if odd else rng.randrange(0, 2**63),
        "serial": _int(rng) if odd else rng.randrange(0, 2**31),
        "entity": f"order:{mid}:{order_id}",
        "webhook": rng.random() < 0.5,
    }


@pytest.mark.parametrize("odd", [False, True], ids=["plain", "odd"])
def test_the_one_step_records_are_the_general_records(odd: bool) -> None:
    rng = random.Random(2012 + odd)
    for i in range(1000):
        p = _payment(rng, odd)
        rid = rng.choice([None, f"req_{i:08d}", "req-" + _text(rng, _ODD if odd else _PLAIN)])
        token = set_request_id(rid)
        try:
            event, entry = payment_records(**p)
            want_event, want_entry = general_records(**p)
        finally:
            reset_request_id(token)
        assert event == want_event
        assert [type(v) for v in event.values()] == [type(v) for v in want_event.values()]
        assert entry == want_entry
        # and the entry's hash is the documented formula's
        prev = rng.randbytes(32).hex()
        params = entry.params(3, i + 1, prev)
        doc = json.dumps(
            [prev, 3, i + 1, entry.at, entry.actor, entry.action, entry.entity, entry.data],
            separators=(",", ":"),
        )
        assert params["a_hash"] == hashlib.sha256(doc.encode()).hexdigest()


@pytest.fixture(scope="module", params=BACKENDS)
def inst(request: pytest.FixtureRequest) -> Iterator[Institution]:
    with tempfile.TemporaryDirectory(prefix="safescan-payrec-") as d:
        url = make_db(request.param, request, Path(d))
        with institution_in(url, Path(d) / "keys") as institution:
            yield institution


def _stored(inst: Institution, made: PaymentMade, payer: Payer) -> None:
    """The payment's stored event and audit entry are the general functions' bytes."""

    def rows(c: Any) -> tuple[Any, Any]:
        entity = f"order:{made.merchant_id}:{made.order_id}"
        entry = c.execute(
            select(AuditEntry).where(
                AuditEntry.entity == entity, AuditEntry.action == "payment.create"
            )
        ).one()
        event = c.execute(
            select(Event).where(Event.payload.contains(f'"payment_id":"{made.payment_id}"'))
        ).one()
        return event, entry

    event, entry = inst.db.read(rows)
    token = set_request_id(event.request_id)
    try:
        want_event, want_entry = general_records(
            event_id=event.id,
            mid=made.merchant_id,
            order_id=made.order_id,
            payment_id=made.payment_id,
            amount=made.amount,
            currency=made.currency,
            pseudonym=made.payer_pseudonym,
            now=made.paid_at,
            customer_id=payer.cid,
            counter=int(json.loads(entry.data)["counter"]),
            serial=payer.serial,
            entity=f"order:{made.merchant_id}:{made.order_id}",
            webhook=inst.webhooks_enabled,
        )
    finally:
        reset_request_id(token)
    assert event.payload == want_event["e_payload"]
    assert event.type == want_event["e_type"] and event.webhook_state == want_event["e_state"]
    assert (entry.actor, entry.at, entry.data) == (want_entry.actor, want_entry.at, want_entry.data)
    assert entry.hash == want_entry.params(entry.chain, entry.seq, entry.prev_hash)["a_hash"]


@pytest.mark.parametrize(
    ("way", "key", "rid"),
    [
        ("pay", None, None),
        ("pay", "k-sync", "req_0123456789abcdef"),
        ("pay_async", None, "req_fedcba9876543210"),
        ("pay_async", "k-async", None),
        ("pay_async", None, "req-odd/é"),  # not plain: the general functions render it
    ],
)
def test_stored_payments_hold_the_general_records(
    inst: Institution, way: str, key: str | None, rid: str | None
) -> None:
    payer = Payer(inst, 100_000)
    orders = [payer.order(1234) for _ in range(3)]
    paid = [(o, payer.authorize(o), key and f"{key}-{payer.counter}") for o in orders]

    async def pay_all_async() -> list[Any]:
        results = [await inst.payments.pay_async(o.code, a, k) for o, a, k in paid]
        if not inst.db.is_sqlite:  # this loop's connections, closed with it
            inst.db._async_pool().close()
        return results

    token = set_request_id(rid)
    try:
        if way == "pay":
            results = [inst.payments.pay(o.code, a, k) for o, a, k in paid]
        else:
            results = asyncio.run(pay_all_async())
    finally:
        reset_request_id(token)
    for (order, _, _), result in zip(paid, results, strict=True):
        if key is None:
            assert isinstance(result, PaymentMade)
            made = result
        else:
            assert isinstance(result, Stored) and result.status == 201
            body = result.body
            made = PaymentMade(
                body["payment_id"],
                body["order_id"],
                body["merchant_id"],
                body["amount"],
                order.currency,
                body["payer_pseudonym"],
                body["paid_at"],
                b"",
            )
        _stored(inst, made, payer)
    assert inst.db.read(lambda c: list(audit.verify_chains(c))) == []
