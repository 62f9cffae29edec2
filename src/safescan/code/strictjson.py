"""JSON read strictly: what a person or a local client hands us, never what Python tolerates.

Python's ``json`` accepts what no other party would send and what later code trips over: lone
UTF-16 surrogates (``"\\ud800"``: a string that cannot be encoded, so a later ``.encode()``
raised ``UnicodeEncodeError``, a 500), ``NaN`` and ``Infinity``, a number such as ``1e999``
that reads as infinity, nesting deep enough to raise ``RecursionError``, and a key named twice
in one object (the last value silently wins, so two readers can see two documents).
:func:`loads` refuses all of them with :class:`StrictJSONError`, a ``ValueError``, so every
caller's existing ``except ValueError`` turns it into its typed error.

It lives in :mod:`safescan.code` (the lowest layer) so that every reader shares one rule: the
local web apps (:mod:`safescan.web.jsonbody`) and the ``safescan code make`` order file
(:func:`safescan.code.cli.read_order`).
"""

from __future__ import annotations

import json
import math
from typing import Any

#: the most characters of a key or number an error message repeats
_SHOWN = 20


class StrictJSONError(ValueError):
    """``raw`` is not JSON a strict reader accepts; the message says why (never the document,
    at most :data:`_SHOWN` characters of the offending key or number)."""


def _no_constant(name: str) -> None:
    raise StrictJSONError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"the number {text[:_SHOWN]} is out of range")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                shown = key[:_SHOWN].encode("utf-8", "backslashreplace").decode("ascii", "replace")
                raise StrictJSONError(f"the key {shown!r} is named twice in one object")
            seen.add(key)
    return doc


def loads(raw: bytes) -> object:
    """``raw`` (UTF-8 JSON) as a Python value; :class:`StrictJSONError` for invalid UTF-8,
    invalid JSON, ``NaN``/``Infinity`` (spelled so, or a number too large for a float), lone
    surrogates in any string or key, a key named twice in one object, and too deep nesting."""
    try:
        text = raw.decode("utf-8")
        doc = json.loads(
            text,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            object_pairs_hook=_no_duplicates,
        )
        # a lone surrogate (in a value or a key) cannot be encoded: UnicodeEncodeError
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise StrictJSONError("the JSON is nested too deeply") from None
    except StrictJSONError:
        raise
    except UnicodeDecodeError:
        raise StrictJSONError("the JSON is not UTF-8") from None
    except UnicodeEncodeError:
        raise StrictJSONError("the JSON holds a lone UTF-16 surrogate") from None
    except ValueError as exc:  # JSONDecodeError, a number of more than 4300 digits
        raise StrictJSONError(f"invalid JSON: {exc}") from None
    return doc
