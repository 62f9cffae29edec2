"""Money amounts and quantities as they enter from outside: whole numbers only.

Python is generous with what it calls an integer (``True``, ``int("1_0")``, ``int(" +5 ")``,
``int(1.0)``); money must not be. :func:`json_int` takes a decoded JSON value and accepts only
an ``int`` that is not a ``bool``; :func:`parse_int` takes text (a CLI argument, a form field)
and accepts only plain ASCII digits. Both check the range and raise :class:`InvalidNumber`
(or :class:`InvalidAmount` when out of range), naming the field. :func:`canonical_int` takes
an identifier spelled as text (a key id naming a JSON object's key): only its one spelling,
``str(n)``, so that two spellings (``"1"`` and ``"01"``) cannot name one number twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from safescan.code.errors import InvalidAmount, InvalidNumber

#: The largest amount in minor units anything accepts (fits the ledger's and the codes' limits).
MAX_AMOUNT = 10**12 - 1
#: The largest quantity of one order line.
MAX_QUANTITY = 9999

_DIGITS = re.compile(r"[0-9]{1,19}")
#: ``str(n)`` of a whole number from 0: ASCII digits, no sign, no leading zero
_CANONICAL = re.compile(r"0|[1-9][0-9]{0,18}")
#: The largest key id (a certificate's and a code's kid field is 32 bits).
MAX_KID = 2**32 - 1
#: seconds written plainly: ASCII digits without a leading zero, at most one decimal point with
#: digits on both sides
_SECONDS = re.compile(r"(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,9})?")


def json_int(value: object, *, field: str, minimum: int = 1, maximum: int = MAX_AMOUNT) -> int:
    """``value`` if it is a JSON integer in ``[minimum, maximum]``; else a typed error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidNumber(
            f"{field} must be a whole number written as a JSON integer (not {_kind(value)})"
        )
    if not minimum <= value <= maximum:
        raise InvalidAmount(f"{field} must be from {minimum} to {maximum}")
    return value


def parse_int(text: str, *, field: str, minimum: int = 1, maximum: int = MAX_AMOUNT) -> int:
    """The whole number ``text`` spells in plain ASCII digits; else a typed error."""
    if not isinstance(text, str) or not _DIGITS.fullmatch(text):
        raise InvalidNumber(
            f"{field} must be a whole number in plain digits (0-9), not {str(text)[:24]!r}"
        )
    return json_int(int(text), field=field, minimum=minimum, maximum=maximum)


def canonical_int(text: object, *, field: str, minimum: int = 0, maximum: int = MAX_KID) -> int:
    """The whole number ``text`` is the one spelling of (``str(n)``); else a typed error.
    Refused, where ``int()`` reads them: ``"01"``, ``"+1"``, ``" 1"``, ``"1_0"``, ``"١"``
    (another script's digits), and any value that is not a string."""
    if not isinstance(text, str) or not _CANONICAL.fullmatch(text):
        shown = text[:24] if isinstance(text, str) else _kind(text)
        raise InvalidNumber(
            f"{field} must be a whole number in plain digits (0-9) without a sign or a leading"
            f" zero, not {shown!r}"
        )
    return json_int(int(text), field=field, minimum=minimum, maximum=maximum)


def plain_seconds(text: object, *, field: str, minimum: float, maximum: float) -> float:
    """The seconds ``text`` spells as ``8`` or ``0.5`` (ASCII digits, one optional decimal
    point) in ``[minimum, maximum]``; else :class:`InvalidNumber` naming ``field``. Refused,
    where ``float()`` reads them: ``"nan"``, ``"inf"``, ``"1e3"``, ``" 8"``, ``"1_0"``, ``"-1"``,
    ``"08"``, ``"８"`` (another script's digits)."""
    if not isinstance(text, str) or not _SECONDS.fullmatch(text):
        shown = text[:24] if isinstance(text, str) else _kind(text)
        raise InvalidNumber(
            f"{field} must be a number of seconds in plain digits (e.g. 8 or 0.5), not {shown!r}"
        )
    value = float(text)
    if not minimum <= value <= maximum:
        raise InvalidNumber(f"{field} must be from {minimum:g} to {maximum:g} seconds")
    return value


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


def cli_parser(field: str, *, minimum: int = 1, maximum: int = MAX_AMOUNT) -> Callable[[str], int]:
    """A command-line option parser for a whole number (``typer.Option(parser=...)``):
    plain ASCII digits only, where click's own ``int`` would take ``1_0``, ``+5`` or `` 5``."""

    def parse(value: str) -> int:
        import typer

        if isinstance(value, int) and not isinstance(value, bool):  # a default value
            return value
        try:
            return parse_int(value, field=field, minimum=minimum, maximum=maximum)
        except InvalidAmount as exc:
            raise typer.BadParameter(exc.message) from None

    return parse
