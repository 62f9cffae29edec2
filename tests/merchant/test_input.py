"""What staff type into the POS is refused as POS input (``PosInputInvalid``, naming the
field), never as a payment-code error: order lines from the command line and the web page,
refund amounts and reasons."""

from __future__ import annotations

from typing import Any

import pytest

from safescan.code.errors import CodeError, MalformedCode
from safescan.code.payment import LineItem
from safescan.merchant.input import (
    PosInputInvalid,
    items_from_json,
    parse_item,
    refund_amount,
    refund_reason,
)


def test_a_good_line_is_the_line_item() -> None:
    assert parse_item("Flat white:2:350") == LineItem("Flat white", 2, 350)
    assert parse_item("  Tea : 1 : 250 ") == LineItem("Tea", 1, 250)
    assert parse_item("Tea: rooibos:1:250") == LineItem("Tea: rooibos", 1, 250)  # colons in names
    doc = {"items": [LineItem("Tea", 1, 250).to_json(), {"name": " Cake ", "quantity": 3,
                                                         "unit_price": 400}]}  # fmt: skip
    assert items_from_json(doc) == [LineItem("Tea", 1, 250), LineItem("Cake", 3, 400)]


@pytest.mark.parametrize(
    "spec",
    [
        "Tea",  # no fields
        "Tea:1",  # no price
        ":1:250",  # no name
        "Tea:one:250",  # not a number
        "Tea:1:2.50",  # a decimal price
        "Tea:1:-250",  # negative
        "Tea:0:250",  # no quantity
        "Tea:100000:250",  # too many
        "Tea:1:0",  # free
        "Tea:1:99999999999999999",  # too much
        "Te\u202ea:1:250",  # a bidi override in the name
        "T" * 200 + ":1:250",  # an over-long name
        "Tea:\u0661:250",  # an Arabic-Indic digit
    ],
)
def test_a_bad_command_line_item_is_pos_input(spec: str) -> None:
    with pytest.raises(PosInputInvalid) as info:
        parse_item(spec)
    assert not isinstance(info.value, CodeError)  # never a payment-code error
    assert info.value.code == "pos_input_invalid" and info.value.param == "item"
    assert info.value.to_dict()["param"] == "item"


@pytest.mark.parametrize(
    ("doc", "param"),
    [
        ({}, "items"),
        ({"items": []}, "items"),
        ({"items": "Tea"}, "items"),
        ({"items": [["Tea", 1, 250]]}, "items"),  # the array form is not the API's
        ({"items": [{"name": "Tea", "quantity": 1}]}, "items"),
        ({"items": [{"name": "Tea", "quantity": 1, "unit_price": 250, "x": 1}]}, "items"),
        ({"items": [{"name": "Tea", "quantity": True, "unit_price": 250}]}, "item 1"),
        ({"items": [{"name": "Tea", "quantity": 1, "unit_price": 2.5}]}, "item 1"),
        ({"items": [{"name": "Tea", "quantity": 1, "unit_price": "250"}]}, "item 1"),
        ({"items": [{"name": 7, "quantity": 1, "unit_price": 250}]}, "item 1"),
        (
            {
                "items": [
                    LineItem("Tea", 1, 250).to_json(),
                    {"name": "", "quantity": 1, "unit_price": 1},
                ]
            },
            "item 2",
        ),
        ({"items": [LineItem("Tea", 1, 250).to_json()] * 51}, "items"),
    ],
)
def test_a_bad_web_order_is_pos_input(doc: dict[str, Any], param: str) -> None:
    with pytest.raises(PosInputInvalid) as info:
        items_from_json(doc)
    assert not isinstance(info.value, MalformedCode | CodeError)
    assert info.value.param == param and info.value.status == 400


@pytest.mark.parametrize("value", [0, -1, 501, 2.5, "100", True, None])
def test_a_bad_refund_amount_is_pos_input(value: object) -> None:
    with pytest.raises(PosInputInvalid) as info:
        refund_amount(value, left=500)
    assert info.value.param == "amount"


def test_refund_amounts_and_reasons() -> None:
    assert refund_amount(500, left=500) == 500 and refund_amount(1, left=500) == 1
    assert refund_reason(None) is None and refund_reason("cold tea") == "cold tea"
    for bad in ("x" * 201, "a\u202eb", 5, ""):
        with pytest.raises(PosInputInvalid) as info:
            refund_reason(bad)
        assert info.value.param == "reason"
