"""The payment smart code's contents: merchant identity, order, line items, amounts.

These are plain, validated value objects. :mod:`safescan.code.envelope` signs and seals them.
Amounts are integers in minor units; currencies are ISO 4217 numeric codes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import InvalidAmount, MalformedCode, TotalMismatch, UnknownCurrency
from safescan.code.lookalike import check_identity_letters
from safescan.code.text import check_stored_name, clean_name, lookalike_warning

MAX_AMOUNT = 10**12 - 1  # minor units; the largest amount EMV field 54 can also carry
MAX_QUANTITY = 9999
MAX_ITEMS = 32
MAX_NAME_CHARS = 64
MAX_ID_CHARS = 40
MAX_DYNAMIC_VALIDITY = 7 * 24 * 3600  # seconds
MAX_STATIC_VALIDITY = 10 * 366 * 24 * 3600
NONCE_BYTES = 8
BODY_VERSION = 2  # the newest body layout (docs/protocol.md 1.4); version 1 is still read
_ID_RE = re.compile(r"[A-Za-z0-9._:\-]+")
_COUNTRY_RE = re.compile(r"[A-Z]{2}")


class CodeKind(IntEnum):
    """The two kinds of payment smart code."""

    DYNAMIC = 1  # one order, one payment, short expiry
    STATIC = 2  # a printed merchant code; the customer enters the amount


def check_identifier(value: object, field_name: str) -> str:
    """An id (merchant id, order id): 1-40 chars of ``A-Z a-z 0-9 . _ : -``."""
    # the common case first, without the regular expression: ASCII letters and digits only
    # (institution-made order ids); exactly what the full check accepts for such a value
    if (
        type(value) is str
        and 0 < len(value) <= MAX_ID_CHARS
        and value.isascii()
        and value.isalnum()
    ):
        return value
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        raise MalformedCode(f"{field_name} must be 1-{MAX_ID_CHARS} characters")
    if not _ID_RE.fullmatch(value):
        raise MalformedCode(f"{field_name} may only use letters, digits and . _ : -")
    return value


def check_amount(value: object, field_name: str = "amount") -> int:
    """An amount in minor units: an integer from 1 to :data:`MAX_AMOUNT`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(f"{field_name} must be a whole number of minor units")
    if value <= 0:
        raise InvalidAmount(f"{field_name} must be greater than zero")
    if value > MAX_AMOUNT:
        raise InvalidAmount(f"{field_name} is larger than the maximum {MAX_AMOUNT}")
    return value


def check_time(value: object, field_name: str) -> int:
    """A unix time in seconds (0 .. 2^32-1)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise MalformedCode(f"{field_name} must be a unix time in seconds")
    return value


@dataclass(frozen=True, slots=True)
class Merchant:
    """The merchant identity shown to the customer."""

    id: str
    name: str
    city: str
    country: str  # ISO 3166-1 alpha-2
    mcc: int  # ISO 18245 merchant category code

    def validated(self, *, clean: bool = True) -> Merchant:
        """A normalised copy, or a typed error (``clean=False``: names already checked)."""
        if isinstance(self.mcc, bool) or not isinstance(self.mcc, int) or not 0 <= self.mcc <= 9999:
            raise MalformedCode("merchant category code must be 0000-9999")
        if not isinstance(self.country, str) or not _COUNTRY_RE.fullmatch(self.country):
            raise MalformedCode("merchant country must be an ISO 3166 two-letter code")
        for value, what in ((self.name, "merchant name"), (self.city, "merchant city")):
            check_identity_letters(str(value), field=what)  # no 𝐏, ｐ, ℊ, Ⅿ in identities
        return Merchant(
            id=check_identifier(self.id, "merchant id"),
            name=clean_name(self.name, field="merchant name", max_chars=MAX_NAME_CHARS)
            if clean
            else self.name,
            city=clean_name(self.city, field="merchant city", max_chars=MAX_NAME_CHARS)
            if clean
            else self.city,
            country=self.country,
            mcc=self.mcc,
        )

    def to_cbor(self) -> list[object]:
        """The CBOR array form."""
        return [self.id, self.name, self.city, self.country, self.mcc]

    def shown_json(self) -> dict[str, str]:
        """What a code's reader shows of the merchant (``code inspect``, the wallet's scan):
        ``{"id", "name", "city", "country", "mcc"}``, the category as its four digits."""
        return {
            "id": self.id,
            "name": self.name,
            "city": self.city,
            "country": self.country,
            "mcc": f"{self.mcc:04d}",
        }

    @classmethod
    def from_cbor(cls, value: object) -> Merchant:
        """Parse and validate the CBOR array form strictly (every check of :meth:`validated`,
        each once, in its order; the merchant is built once)."""
        if not isinstance(value, list) or len(value) != 5:
            raise MalformedCode("merchant must be a 5-element array")
        mid, name, city, country, mcc = value
        for v, n in ((name, "merchant name"), (city, "merchant city")):
            if not isinstance(v, str):
                raise MalformedCode(f"{n} must be text")
            check_stored_name(v, field=n, max_chars=MAX_NAME_CHARS)
        if not isinstance(country, str) or not isinstance(mcc, int):
            raise MalformedCode("merchant country / category code have the wrong type")
        if isinstance(mcc, bool) or not 0 <= mcc <= 9999:
            raise MalformedCode("merchant category code must be 0000-9999")
        if not _COUNTRY_RE.fullmatch(country):
            raise MalformedCode("merchant country must be an ISO 3166 two-letter code")
        check_identity_letters(name, field="merchant name")
        check_identity_letters(city, field="merchant city")
        return cls(check_identifier(mid, "merchant id"), name, city, country, mcc)

    def warnings(self) -> list[str]:
        """Look-alike warnings for the merchant's name and city."""
        found = [
            lookalike_warning(self.name, field="merchant name", country=self.country),
            lookalike_warning(self.city, field="merchant city", country=self.country),
        ]
        return [w for w in found if w]


@dataclass(frozen=True, slots=True)
class LineItem:
    """One line of an order: what, how many, at what unit price (minor units).

    The one declaration of an order line on every wire: the CBOR array form
    ``[name, quantity, unit_price]`` (in codes, and as stored by the institution, the POS
    journal and the wallet: :meth:`to_cbor` / :meth:`from_cbor`) and the JSON object form
    ``{"name", "quantity", "unit_price"}`` of the HTTP APIs (:meth:`to_json`,
    :data:`JSON_FIELDS`); :meth:`display_json` adds the amount and how it is shown.
    """

    JSON_FIELDS: ClassVar[tuple[str, str, str]] = ("name", "quantity", "unit_price")

    name: str
    quantity: int
    unit_price: int

    @property
    def amount(self) -> int:
        """quantity x unit price."""
        return self.quantity * self.unit_price

    def validated(self, *, clean: bool = True) -> LineItem:
        """A normalised copy, or a typed error (``clean=False``: name already checked)."""
        q = self.quantity
        if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= MAX_QUANTITY:
            raise InvalidAmount(f"item quantity must be 1-{MAX_QUANTITY}")
        return LineItem(
            name=clean_name(self.name, field="item name", max_chars=MAX_NAME_CHARS)
            if clean
            else self.name,
            quantity=q,
            unit_price=check_amount(self.unit_price, "item unit price"),
        )

    def to_cbor(self) -> list[object]:
        """The array form ``[name, quantity, unit_price]`` (CBOR, and stored JSON)."""
        return [self.name, self.quantity, self.unit_price]

    def to_json(self) -> dict[str, object]:
        """The JSON object form of the HTTP APIs: ``{"name", "quantity", "unit_price"}``."""
        return {"name": self.name, "quantity": self.quantity, "unit_price": self.unit_price}

    def display_json(self, currency: int | None) -> dict[str, object]:
        """:meth:`to_json` with the line's ``amount`` and its ``display`` in ``currency``
        (ISO 4217 numeric; None: the bare amount)."""
        shown = lookup_currency(currency).format(self.amount) if currency else str(self.amount)
        return {**self.to_json(), "amount": self.amount, "display": shown}

    @classmethod
    def from_cbor(cls, value: object) -> LineItem:
        """Parse and validate the CBOR array form strictly (built once)."""
        if not isinstance(value, list) or len(value) != 3:
            raise MalformedCode("a line item must be a 3-element array")
        name, q, price = value
        if not isinstance(name, str):
            raise MalformedCode("item name must be text")
        check_stored_name(name, field="item name", max_chars=MAX_NAME_CHARS)
        if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= MAX_QUANTITY:
            raise InvalidAmount(f"item quantity must be 1-{MAX_QUANTITY}")
        return cls(name, q, check_amount(price, "item unit price"))


def _flat_items(value: object) -> tuple[LineItem, ...]:
    """Line items from one flat array of (name, quantity, unit price) triples (version 2)."""
    if not isinstance(value, list) or not value or len(value) % 3:
        raise MalformedCode("line items must be a flat array of (name, quantity, price) triples")
    if len(value) > 3 * MAX_ITEMS:
        raise MalformedCode(f"an order has 1-{MAX_ITEMS} line items")
    return tuple(LineItem.from_cbor(value[i : i + 3]) for i in range(0, len(value), 3))


def _check_currency(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedCode("currency must be an ISO 4217 numeric code")
    return lookup_currency(value).numeric


def _check_validity(issued_at: int, expires_at: int, limit: int) -> None:
    if expires_at <= issued_at:
        raise MalformedCode("the code expires before it is issued")
    if expires_at - issued_at > limit:
        raise MalformedCode(f"the code's validity is longer than the allowed {limit} s")


@dataclass(frozen=True, slots=True)
class DynamicCode:
    """A code for one order: one payment of exactly ``total``, valid until ``expires_at``."""

    merchant: Merchant
    order_id: str
    items: tuple[LineItem, ...]
    total: int
    currency: int
    issued_at: int
    expires_at: int
    nonce: bytes = field(default=b"")

    kind = CodeKind.DYNAMIC

    def validated(self, *, clean: bool = True) -> DynamicCode:
        """A normalised copy; raises a typed error on any invalid field."""
        if not isinstance(self.items, tuple | list) or not 1 <= len(self.items) <= MAX_ITEMS:
            raise MalformedCode(f"an order has 1-{MAX_ITEMS} line items")
        items = tuple(i.validated(clean=clean) for i in self.items)
        total = check_amount(self.total, "total")
        if sum(i.amount for i in items) != total:
            shown = _money_formatter(self.currency)
            raise TotalMismatch(
                f"the line items add up to {shown(sum(i.amount for i in items))},"
                f" not the total {shown(total)}"
            )
        issued, expires = (
            check_time(self.issued_at, "issue time"),
            check_time(self.expires_at, "expiry time"),
        )
        _check_validity(issued, expires, MAX_DYNAMIC_VALIDITY)
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_BYTES:
            raise MalformedCode(f"the nonce must be {NONCE_BYTES} bytes")
        return DynamicCode(
            merchant=self.merchant.validated(clean=clean),
            order_id=check_identifier(self.order_id, "order id"),
            items=items,
            total=total,
            currency=_check_currency(self.currency),
            issued_at=issued,
            expires_at=expires,
            nonce=self.nonce,
        )

    def to_cbor(self, version: int = BODY_VERSION) -> list[object]:
        """The body's fields, positional (docs/protocol.md 1.4).

        Version 2: ``[merchant, order_id, items, currency, issued_at, lifetime, nonce]`` with
        ``items`` one flat array of (name, quantity, unit price) triples and no total (it is
        the items' sum, which the signature already binds). Version 1 (still read): ``[merchant,
        order_id, [[name, quantity, unit_price], ...], total, currency, issued_at, lifetime,
        nonce]``.
        """
        lifetime = self.expires_at - self.issued_at
        if version == 1:
            items: list[object] = [i.to_cbor() for i in self.items]
            return [self.merchant.to_cbor(), self.order_id, items, self.total, self.currency,
                    self.issued_at, lifetime, self.nonce]  # fmt: skip
        flat = [field for i in self.items for field in i.to_cbor()]
        return [self.merchant.to_cbor(), self.order_id, flat, self.currency, self.issued_at,
                lifetime, self.nonce]  # fmt: skip

    @classmethod
    def from_cbor(cls, value: object, version: int = BODY_VERSION) -> DynamicCode:
        """Parse and validate the body's fields strictly (see :meth:`to_cbor`): every check of
        :meth:`validated`, each once and in its order, and the code built once."""
        fields = 8 if version == 1 else 7
        if not isinstance(value, list) or len(value) != fields:
            raise MalformedCode(f"a dynamic code body must have exactly {fields} fields")
        if version == 1:
            merchant, order_id, items, total, cur, issued, lifetime, nonce = value
            if not isinstance(items, list):
                raise MalformedCode("line items must be an array")
            lines = tuple(LineItem.from_cbor(i) for i in items)
        else:
            merchant, order_id, items, cur, issued, lifetime, nonce = value
            lines = _flat_items(items)
            total = sum(i.amount for i in lines)
        issued = check_time(issued, "issue time")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0:
            raise MalformedCode("the code's lifetime must be a positive number of seconds")
        seller = Merchant.from_cbor(merchant)
        # what validated() checks beyond the fields above (the items and the merchant are)
        if not 1 <= len(lines) <= MAX_ITEMS:
            raise MalformedCode(f"an order has 1-{MAX_ITEMS} line items")
        total = check_amount(total, "total")
        if sum(i.amount for i in lines) != total:
            shown = _money_formatter(cur)
            raise TotalMismatch(
                f"the line items add up to {shown(sum(i.amount for i in lines))},"
                f" not the total {shown(total)}"
            )
        expires = check_time(issued + lifetime, "expiry time")
        _check_validity(issued, expires, MAX_DYNAMIC_VALIDITY)
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise MalformedCode(f"the nonce must be {NONCE_BYTES} bytes")
        return cls(
            merchant=seller,
            order_id=check_identifier(order_id, "order id"),
            items=lines,
            total=total,
            currency=_check_currency(cur),
            issued_at=issued,
            expires_at=expires,
            nonce=nonce,
        )

    def warnings(self) -> list[str]:
        """Look-alike warnings an app should show."""
        found = self.merchant.warnings()
        for item in self.items:
            w = lookalike_warning(item.name, field="item name", country=self.merchant.country)
            if w:
                found.append(w)
        return found


@dataclass(frozen=True, slots=True)
class StaticCode:
    """A printed merchant code: merchant identity (and optionally a fixed currency) only."""

    merchant: Merchant
    currency: int | None
    issued_at: int
    expires_at: int

    kind = CodeKind.STATIC

    def validated(self, *, clean: bool = True) -> StaticCode:
        """A normalised copy; raises a typed error on any invalid field."""
        issued, expires = (
            check_time(self.issued_at, "issue time"),
            check_time(self.expires_at, "expiry time"),
        )
        _check_validity(issued, expires, MAX_STATIC_VALIDITY)
        return StaticCode(
            merchant=self.merchant.validated(clean=clean),
            currency=None if self.currency is None else _check_currency(self.currency),
            issued_at=issued,
            expires_at=expires,
        )

    def to_cbor(self) -> list[object]:
        """The CBOR array form: [merchant, issued_at, lifetime(, currency)]."""
        body: list[object] = [
            self.merchant.to_cbor(),
            self.issued_at,
            self.expires_at - self.issued_at,
        ]
        if self.currency is not None:
            body.append(self.currency)
        return body

    @classmethod
    def from_cbor(cls, value: object) -> StaticCode:
        """Parse and validate the CBOR array form strictly (every check of :meth:`validated`,
        each once and in its order; built once)."""
        if not isinstance(value, list) or len(value) not in (3, 4):
            raise MalformedCode("a static code body must be an array of 3 or 4 fields")
        issued, lifetime = check_time(value[1], "issue time"), value[2]
        if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0:
            raise MalformedCode("the code's lifetime must be a positive number of seconds")
        merchant = Merchant.from_cbor(value[0])
        expires = check_time(issued + lifetime, "expiry time")
        _check_validity(issued, expires, MAX_STATIC_VALIDITY)
        return cls(
            merchant=merchant,
            currency=None if len(value) == 3 or value[3] is None else _check_currency(value[3]),
            issued_at=issued,
            expires_at=expires,
        )

    def warnings(self) -> list[str]:
        """Look-alike warnings an app should show."""
        return self.merchant.warnings()


PaymentCode = DynamicCode | StaticCode


def _money_formatter(currency_code: object) -> Callable[[int], str]:
    """Format amounts in ``currency_code`` for an error message (raw if it is not known)."""
    if not isinstance(currency_code, int | str):
        return str
    try:
        cur = lookup_currency(currency_code)
    except UnknownCurrency:
        return str
    return cur.format
