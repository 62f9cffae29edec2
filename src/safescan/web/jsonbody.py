"""The JSON body of a request to a local web app (the web POS, the wallet app), read strictly.

The rule is :func:`safescan.code.strictjson.loads` (shared with the ``safescan code make``
order file): UTF-8 only, no ``NaN``/``Infinity`` nor a number too large for a float (``1e999``),
no lone UTF-16 surrogate in any string or key, no key named twice in one object, no nesting
deep enough for ``RecursionError``. Each is a ``ValueError``, which the apps turn into their
typed 400.
"""

from __future__ import annotations

from safescan.code.strictjson import StrictJSONError, loads

__all__ = ["StrictJSONError", "loads"]
