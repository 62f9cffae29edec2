"""What staff type into the terminal (command line and web POS): order lines and refund
amounts. A bad entry is :class:`PosInputInvalid`, never a payment-code error: nothing is
sent to the institution until every line is right.
"""

from __future__ import annotations

from typing import Any

from safescan.code.cli_input import whole_number
from safescan.code.errors import CodeError, SafescanError
from safescan.code.numbers import MAX_QUANTITY, json_int
from safescan.code.payment import LineItem
from safescan.code.text import clean_text

MAX_LINES = 50


class PosInputInvalid(SafescanError):
    """An order line or an amount typed into the terminal is not valid (``param`` names it)."""

    code = "pos_input_invalid"
    status = 400

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param

    def to_dict(self) -> dict[str, Any]:
        """``{"type", "code", "message", "param"}``."""
        return {**super().to_dict(), "param": self.param}


def _line(name: object, quantity: object, price: object, *, where: str) -> LineItem:
    """One validated line; the code format's own checks, reported as input errors."""
    try:
        qty = json_int(quantity, field=f"{where} quantity", maximum=MAX_QUANTITY)
        unit = json_int(price, field=f"{where} unit price")
        text = name.strip() if isinstance(name, str) else name
        return LineItem(text, qty, unit).validated()  # type: ignore[arg-type]
    except CodeError as exc:
        raise PosInputInvalid(exc.message, param=where) from None


def parse_item(spec: str) -> LineItem:
    """``"Flat white:2:350"`` -> ``LineItem("Flat white", 2, 350)`` (price in minor units)."""
    name, sep, rest = spec.rpartition(":")
    name2, sep2, qty = name.rpartition(":")
    if not sep or not sep2 or not name2.strip():
        raise PosInputInvalid(
            f"item {spec!r} must be NAME:QUANTITY:UNIT_PRICE (minor units)", param="item"
        )
    quantity, price = whole_number(qty.strip()), whole_number(rest.strip())
    if quantity is None or price is None:
        raise PosInputInvalid(
            f"item {spec!r}: quantity and price must be whole numbers (the price in minor"
            " units: 350 = 3.50)",
            param="item",
        )
    return _line(name2, quantity, price, where="item")


def items_from_json(doc: dict[str, Any]) -> list[LineItem]:
    """Order lines from a page (``LineItem``'s JSON form): JSON integers only for quantities
    and prices."""
    raw_items = doc.get("items")
    if not isinstance(raw_items, list) or not raw_items or len(raw_items) > MAX_LINES:
        raise PosInputInvalid(
            'send {"items": [{"name", "quantity", "unit_price"}, ...]}', param="items"
        )
    items = []
    for n, raw in enumerate(raw_items):
        if not isinstance(raw, dict) or set(raw) != set(LineItem.JSON_FIELDS):
            raise PosInputInvalid("each item is {name, quantity, unit_price}", param="items")
        items.append(_line(raw["name"], raw["quantity"], raw["unit_price"], where=f"item {n + 1}"))
    return items


def refund_amount(value: object, *, left: int) -> int:
    """A refund amount typed on the page: a JSON integer from 1 to what is ``left``."""
    try:
        amount = json_int(value, field="amount", maximum=left)
    except CodeError as exc:
        raise PosInputInvalid(exc.message, param="amount") from None
    return amount


def refund_reason(value: object) -> str | None:
    """A refund reason typed on the page (None: no reason), at most 200 characters."""
    if value is None:
        return None
    try:
        return clean_text(value, field="reason", max_chars=200)
    except CodeError as exc:
        raise PosInputInvalid(exc.message, param="reason") from None
