"""Strict parsing of numbers typed on the command line.

Typer's own ``int`` conversion is lax: it reads ``--amount 100.00`` as 100 (1.00 EUR, not
100.00 EUR) and ``1_000`` as 1000. Amounts and counts that people type go through
:func:`minor_units` instead: ASCII digits only, and a clear word about minor units.
"""

from __future__ import annotations

import re

import typer

_DIGITS = re.compile(r"[0-9]{1,15}")
MAX_MINOR_UNITS = 10**12 - 1


def whole_number(text: str) -> int | None:
    """``text`` as a non-negative integer if it is 1-15 ASCII digits, else None."""
    return int(text) if isinstance(text, str) and _DIGITS.fullmatch(text) else None


def minor_units(text: str) -> int:
    """Typer parser for an amount in minor units (``--amount 10000`` = 100.00 EUR)."""
    value = whole_number(text)
    if value is None:
        hint = ""
        if re.fullmatch(r"[0-9]{1,12}[.,][0-9]{1,2}", text or ""):
            whole, _, frac = text.replace(",", ".").partition(".")
            hint = (
                f": for {text} in a currency with cents write {int(whole + frac.ljust(2, '0')[:2])}"
            )
        raise typer.BadParameter(f"{text!r} is not a whole number of minor units (cents){hint}")
    if not 1 <= value <= MAX_MINOR_UNITS:
        raise typer.BadParameter(f"the amount must be 1 to {MAX_MINOR_UNITS} minor units")
    return value
