"""Request field types of the API: JSON integers only for numbers, one text validator.

Every request model derives from :class:`StrictModel`: unknown fields are refused and pydantic
runs in *strict* mode, so ``true``, ``"150"``, ``"1_0"``, ``1.0`` and ``1e2`` are refused
where an integer is expected (lax mode would turn each into a number). Every free text a
person may later read (names, cities, settlement accounts, references, reasons) goes through
:func:`safescan.code.text.clean_text`: control characters (C0, C1), bidi overrides and
isolates, zero-width and other invisible characters are refused, text is NFC-normalised.
:func:`validation_error` turns pydantic's first error into the API's typed error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetPydanticSchema
from pydantic_core import core_schema

from safescan.api.errors import InvalidRequest
from safescan.code.errors import SafescanError
from safescan.code.numbers import MAX_AMOUNT, MAX_QUANTITY
from safescan.code.payment import LineItem
from safescan.code.text import clean_name, clean_text


class StrictModel(BaseModel):
    """Base of every request model: unknown fields refused, no type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _text_check(max_chars: int, *, name: bool) -> Callable[[str], str]:
    check = clean_name if name else clean_text

    def run(value: str) -> str:
        try:
            return check(value, field="the text", max_chars=max_chars)
        except SafescanError as exc:
            raise ValueError(exc.message) from None

    return run


#: A display name (merchant name and city, customer name, item name): :func:`clean_name`.
Name = Annotated[
    str, Field(min_length=1, max_length=64), AfterValidator(_text_check(64, name=True))
]
#: A short stored text (settlement account, order reference): :func:`clean_text`.
ShortText = Annotated[
    str, Field(min_length=1, max_length=64), AfterValidator(_text_check(64, name=False))
]
#: A longer stored text (refund reason): :func:`clean_text`.
LongText = Annotated[
    str, Field(min_length=1, max_length=200), AfterValidator(_text_check(200, name=False))
]


#: Money in minor units: a JSON integer from 1 to MAX_AMOUNT.
Amount = Annotated[int, Field(strict=True, ge=1, le=MAX_AMOUNT)]
#: A quantity of one order line: a JSON integer from 1 to MAX_QUANTITY.
Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]


class LineItemJson(StrictModel):
    """The field rules of :class:`LineItem`'s JSON form (:data:`LineItem.JSON_FIELDS`): what
    :data:`LineItemField` checks before it makes the :class:`LineItem`."""

    name: Name
    quantity: Quantity
    unit_price: Amount


def _line_item(doc: LineItemJson) -> LineItem:
    return LineItem(doc.name, doc.quantity, doc.unit_price)


#: An order line in a request body: :class:`LineItem`'s JSON form ``{"name", "quantity",
#: "unit_price"}``, checked field by field (errors name ``items.N.quantity``...) and parsed to
#: the one :class:`LineItem`.
LineItemField = Annotated[
    LineItem,
    GetPydanticSchema(
        lambda _type, handler: core_schema.no_info_after_validator_function(
            _line_item, handler(LineItemJson)
        )
    ),
]


_INT_ERRORS = {"int_type", "int_parsing", "int_from_float", "bool_type"}


def validation_error(errors: Sequence[Any]) -> InvalidRequest:
    """The API's typed error for pydantic's (or FastAPI's) first validation error."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    if first.get("type") in _INT_ERRORS:
        msg = (
            "must be a whole number written as a JSON integer"
            " (booleans, strings and decimals such as 1.0 or 1e2 are refused)"
        )
    elif first.get("type") == "value_error":
        msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    else:
        msg = str(first.get("msg", "invalid request"))
    return InvalidRequest(f"{param}: {msg}" if param else msg, param=param)
