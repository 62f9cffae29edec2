"""The live event stream's envelope is read like every answer (:mod:`safescan.client.fields`):
an event whose signature verifies but whose envelope is malformed (a field missing or of the
wrong type, at any depth the envelope declares) is rejected and reported, never yielded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from safescan.api.events import sign_event
from safescan.client.events import VerifiedEvent, verified
from safescan.code import SigningKey
from safescan.code.certs import TrustStore

KEY = SigningKey.generate()
TRUST = TrustStore({1: KEY.public_key})
EVENT = {
    "id": "evt_0123456789abcdefghij",
    "type": "payment.succeeded",
    "created": 1_796_000_000,
    "merchant_id": "MABCDEFGHJKL",
    "data": {"order_id": "o1", "amount": 500},
}


def _message(event: Any, key: SigningKey = KEY, kid: int = 1) -> str:
    payload = json.dumps(event)
    return json.dumps({"payload": payload, "signature": sign_event(key, payload), "kid": kid})


def _read(message: str) -> tuple[VerifiedEvent | None, list[str]]:
    rejected: list[str] = []
    return verified("7", message, TRUST, rejected.append), rejected


def test_a_signed_well_formed_event_is_yielded_typed() -> None:
    got, rejected = _read(_message(EVENT))
    assert rejected == []
    assert got == VerifiedEvent(7, "payment.succeeded", EVENT["id"], 1_796_000_000, EVENT["data"])


MISSING = object()
WRONG = [
    (field, value)
    for field, right in (("type", str), ("created", int), ("data", dict))
    for value in (MISSING, None, True, 1.5, "x", [], {"a": 1}, 7)
    if type(value) is not right
]


@pytest.mark.parametrize(("field", "value"), WRONG)
def test_a_signed_event_with_a_malformed_envelope_is_rejected(field: str, value: Any) -> None:
    event = dict(EVENT)
    if value is MISSING:
        del event[field]
    else:
        event[field] = value
    got, rejected = _read(_message(event))
    assert got is None and len(rejected) == 1
    assert "malformed" in rejected[0] and field in rejected[0]


def test_a_forged_or_unsigned_event_is_rejected_before_its_envelope_is_read() -> None:
    for message in (_message(EVENT, SigningKey.generate()), _message(EVENT, kid=2), "{}", "x"):
        got, rejected = _read(message)
        assert got is None and len(rejected) == 1 and "malformed" not in rejected[0]
