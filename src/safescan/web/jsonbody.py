"""The JSON body of a request to a local web app (the web POS, the wallet app), read strictly.

Python's ``json`` accepts what no other party would send and what later code trips over: lone
UTF-16 surrogates (``"\\ud800"``: a string that cannot be encoded, so a later ``.encode()``
raised ``UnicodeEncodeError``, a 500), ``NaN`` and ``Infinity``, and nesting deep enough to
raise ``RecursionError``; a number such as ``1e999`` also reads as infinity. :func:`loads`
refuses all of them with ``ValueError``, which the
apps turn into their typed 400.
"""

from __future__ import annotations

import json
import math


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def loads(raw: bytes) -> object:
    """``raw`` (UTF-8 JSON) as a Python value; ``ValueError`` for invalid UTF-8, invalid JSON,
    ``NaN``/``Infinity`` (spelled so, or a number too large for a float), lone surrogates in
    any string or key, and too deep nesting."""
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
        # a lone surrogate (in a value or a key) cannot be encoded: UnicodeEncodeError
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    return doc
