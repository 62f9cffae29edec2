"""The web POS's CSS and JavaScript: package data files in ``safescan/merchant/static/``, read
with :mod:`importlib.resources` (so they ship in the wheel and work from a zip) and served from
``/static`` (no inline script or style).

``order.js`` shows an order's live status and verified receipt, for both pages; ``pos.js``
drives the staff counter page (it sends the session's CSRF token with every change);
``shop.js`` the customer's checkout page, which talks only to its own
``/shop/checkout/{token}`` capability URLs; ``pos.css`` styles both.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

#: every file served under ``/static/``, with its media type
MEDIA_TYPES = {
    "order.js": "text/javascript",
    "pos.js": "text/javascript",
    "shop.js": "text/javascript",
    "pos.css": "text/css",
}


@cache
def asset(name: str) -> bytes:
    """The bytes of static file ``name`` (one of :data:`MEDIA_TYPES`); KeyError otherwise."""
    if name not in MEDIA_TYPES:
        raise KeyError(name)
    return (resources.files("safescan.merchant") / "static" / name).read_bytes()
