"""Input checks at the service boundary, whoever calls (HTTP API, CLI, tests, bench).

The HTTP models (:mod:`safescan.api.fields`) refuse the same inputs first; these make the
service itself refuse them too, as the API's typed :class:`InvalidRequest` naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence

from safescan.api.errors import InvalidRequest
from safescan.code.errors import SafescanError
from safescan.code.keys import VerifyKey
from safescan.code.lookalike import protected_match, protected_names
from safescan.code.numbers import MAX_AMOUNT, MAX_QUANTITY, json_int
from safescan.code.payment import LineItem
from safescan.code.text import clean_name, clean_text


def text(value: str, *, param: str, max_chars: int = 64) -> str:
    """A stored free text (:func:`clean_text`), NFC-normalised."""
    try:
        return clean_text(value, field=param, max_chars=max_chars)
    except SafescanError as exc:
        raise InvalidRequest(exc.message, param=param) from None


def optional_text(value: str | None, *, param: str, max_chars: int = 64) -> str | None:
    """:func:`text` unless ``value`` is None."""
    return None if value is None else text(value, param=param, max_chars=max_chars)


def name(value: str, *, param: str) -> str:
    """A display name (:func:`clean_name`), NFC-normalised."""
    try:
        return clean_name(value, field=param)
    except SafescanError as exc:
        raise InvalidRequest(exc.message, param=param) from None


def amount(value: object, *, param: str = "amount") -> int:
    """Money in minor units: an ``int`` (never a bool) from 1 to MAX_AMOUNT."""
    try:
        return json_int(value, field=param, maximum=MAX_AMOUNT)
    except SafescanError as exc:
        raise InvalidRequest(exc.message, param=param) from None


def items(values: Sequence[LineItem]) -> list[LineItem]:
    """Order lines, each checked (a bad field is an :class:`InvalidRequest` naming
    ``items.N.<field>``); names NFC-normalised."""
    out = []
    for i, line in enumerate(values):
        if not isinstance(line, LineItem):
            raise InvalidRequest("an order line must be a LineItem", param=f"items.{i}")
        try:
            qty = json_int(line.quantity, field=f"items.{i}.quantity", maximum=MAX_QUANTITY)
        except SafescanError as exc:
            raise InvalidRequest(exc.message, param=f"items.{i}.quantity") from None
        out.append(
            LineItem(
                name(line.name, param=f"items.{i}.name"),
                qty,
                amount(line.unit_price, param=f"items.{i}.unit_price"),
            )
        )
    return out


def public_key(raw: bytes, *, param: str) -> VerifyKey:
    """An Ed25519 public key that is canonical, on the curve and not of small order."""
    try:
        return VerifyKey(raw)
    except SafescanError as exc:
        raise InvalidRequest(exc.message, param=param) from None


class LookalikeName(InvalidRequest):
    """A merchant name that passes for a protected brand or another merchant's name."""

    code = "lookalike_name"
    status = 409


def merchant_name(name: str, others: list[str], *, allow_protected: bool) -> None:
    """Refuse a name that looks like a protected name or another merchant's (UTS #39
    skeletons after NFKC); a protected name itself only with ``allow_protected`` (the brand's
    owner, onboarded by an administrator who checked it)."""
    protected = protected_names()
    like = protected_match(name, [*protected, *others])
    if like is not None:
        raise LookalikeName(
            f"the name {name!r} looks like {like!r}: refused (look-alike names)", param="name"
        )
    if name in protected and not allow_protected:
        raise LookalikeName(
            f"{name!r} is a protected name: onboard it with allow_protected_name once the"
            " merchant is known to be its owner",
            param="name",
        )


class CertificateLimit(InvalidRequest):
    """A merchant asked for more live code-signing certificates than it may hold."""

    code = "certificate_limit"
    status = 409
