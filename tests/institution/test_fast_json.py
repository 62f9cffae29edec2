"""The payment path's JSON rendered by orjson is byte for byte what ``json`` renders (issue 20,
part B): canonical JSON feeds the audit chain's hashes, the idempotency request hash and the
outbox events, so a single byte of difference would break the audit of old entries or a
replayed key. Attacked with every kind of value ``json`` takes: control characters, DEL,
non-ASCII and astral text, lone surrogates, keys that sort differently as UTF-8 and as code
points, integers beyond 64 bits, floats orjson writes differently, NaN, bools, tuples and
subclasses of int and str (which must go to ``json``)."""

from __future__ import annotations

import enum
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safescan.institution import audit
from safescan.institution.util import canonical_json, framework_json


def old_canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def old_framework(value: Any) -> bytes:
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


class Color(enum.IntEnum):
    RED = 1


class Name(str, enum.Enum):  # noqa: UP042 - the old-style str enum on purpose
    A = "a"


class Kind(enum.StrEnum):
    PAID = "payment.succeeded"
    ODD = "caf\u00e9\x7f"


class Shouty(str):
    def __str__(self) -> str:
        return "LOUD"

    def __repr__(self) -> str:
        return "LOUD"


class Big(int):
    def __repr__(self) -> str:
        return "many"


scalars = (
    st.text()
    | st.text(alphabet=st.characters(max_codepoint=0x80))
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(
        [Color.RED, Name.A, Kind.PAID, Kind.ODD, Shouty("x"), Big(7), 1e-7, 2.5e-5, 1e16, -0.0]
    )
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
        | st.tuples(inner, inner)
    ),
    max_leaves=25,
)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _same(new: Any, old: Any, value: Any) -> None:
    """Both raise the same exception type, or give the same bytes."""
    try:
        want = old(value)
    except (ValueError, TypeError) as exc:
        with pytest.raises(type(exc)):
            new(value)
        return
    assert new(value) == want


@settings(max_examples=400, deadline=None)
@given(values)
def test_canonical_json_is_byte_for_byte_json(value: Any) -> None:
    _same(canonical_json, old_canonical, value)


@settings(max_examples=400, deadline=None)
@given(values)
def test_framework_json_is_byte_for_byte_json(value: Any) -> None:
    _same(framework_json, old_framework, value)


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": '\x00\x08\x0c\n\r\t\x1f\x7f"\\/'},
        {"z": "\u2028\u2029", "\u00e9": 1, "e": 2, "\U0001f600": [None, True, False]},
        {"x": "\ud800"},  # a lone surrogate
        {"big": 2**64, "neg": -(2**63) - 1, "ok": 2**63 - 1},
        {"f": 1.5, "nan": math.nan, "inf": math.inf},
        {"enum": Color.RED, "s": Name.A, "type": Kind.PAID, "odd": Kind.ODD},
        {"sub": Shouty("quiet"), "n": Big(12), Shouty("key"): 1},
        {1: "int key"},
        ["a", ("tuple", 1)],
        {"deep": _nested(40)},  # past the depth orjson is asked to go
    ],
)
def test_the_odd_values_go_to_json_or_agree(value: Any) -> None:
    _same(canonical_json, old_canonical, value)
    _same(framework_json, old_framework, value)


def test_a_payments_records_are_the_same_bytes() -> None:
    """What a payment writes: the event payload, the audit entry's data and tail, the answer."""
    data = {
        "payment_id": "pay_ABCDEFGHJKLMNPQR",
        "order_id": "ORD-1",
        "amount": 1250,
        "currency": "EUR",
        "payer_pseudonym": "0123456789abcdef" * 2,
        "paid_at": 1_764_547_200,
    }
    event = {"id": "evt_X", "type": "payment.succeeded", "created": 1, "merchant_id": "m"}
    event["data"] = data
    assert canonical_json(event) == old_canonical(event)
    text = canonical_json(data | {"customer_id": "c_1", "counter": 7, "request_id": "req_1"})
    tail = audit.entry_tail(1, "carrier:3", "payment.create", "order:m:ORD-1", text)
    doc = [1, "carrier:3", "payment.create", "order:m:ORD-1", text]
    assert tail == json.dumps(doc, separators=(",", ":"))[1:]
    assert framework_json(data) == old_framework(data)
