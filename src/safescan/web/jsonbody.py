"""The JSON body of a request to a local web app (the web POS, the wallet app), read strictly.

Python's ``json`` accepts what no other party would send and what later code trips over: lone
UTF-16 surrogates (``"\\ud800"``: a string that cannot be encoded, so a later ``.encode()``
raised ``UnicodeEncodeError``, a 500), ``NaN`` and ``Infinity``, and nesting deep enough to
raise ``RecursionError``. :func:`loads` refuses all of them with ``ValueError``, which the
apps turn into their typed 400.
"""

from __future__ import annotations

import json


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def loads(raw: bytes) -> object:
    """``raw`` (UTF-8 JSON) as a Python value; ``ValueError`` for invalid UTF-8, invalid JSON,
    ``NaN``/``Infinity``, lone surrogates in any string or key, and too deep nesting."""
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        # a lone surrogate (in a value or a key) cannot be encoded: UnicodeEncodeError
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    return doc
