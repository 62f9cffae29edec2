"""Merchant secret API keys: their form and the scopes a key can carry.

A key reads ``sk_live_<id>_<secret>``: ``sk_live_`` (a secret key, recognisable by secret
scanners), a public 16-character id (``[a-z2-9]``, shown in key lists), ``_`` and 43 characters
of base64url (256 random bits). It is sent as ``Authorization: Bearer sk_live_...`` and never in
a URL. Each merchant route needs one scope (:data:`SCOPES`); a request signed with the merchant's
signing key (RFC 9421) may do everything, including managing keys, which no API key can.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from safescan.api.errors import InvalidApiKey, InvalidRequest

KEY_PREFIX = "sk_live_"
KEY_RE = re.compile(r"sk_live_([a-km-z2-9]{16})_([A-Za-z0-9_\-]{43})")

#: every scope, with what it allows (docs/merchant-api.md lists the routes of each)
SCOPES: dict[str, str] = {
    "account:read": "the merchant profile (GET /v1/merchant)",
    "orders:read": "read orders and payments",
    "orders:write": "create, look up and close orders; make static codes",
    "refunds:write": "refund paid orders (and look refunds up)",
    "settlement:read": "the daily settlement report",
    "events:read": "the live event stream (server-sent events)",
    "webhooks:read": "the webhook endpoint and its delivery log",
    "webhooks:write": "set the webhook URL, rotate its secret, test, resend events",
    "certificates:write": "certify code-signing keys (merchant-sealed codes)",
    "checkout:read": "read checkout sessions",
    "checkout:write": "create and expire checkout sessions",
}


def parse_key(key: str) -> str:
    """The key id of a well-formed key; :class:`InvalidApiKey` otherwise."""
    m = KEY_RE.fullmatch(key)
    if m is None:
        raise InvalidApiKey("malformed API key (expected sk_live_<id>_<secret>)")
    return m.group(1)


def scope_list(scopes: Iterable[str]) -> list[str]:
    """The scopes, checked, deduplicated and sorted; :class:`InvalidRequest` for an unknown
    one or none."""
    out = sorted(set(scopes))
    if not out:
        raise InvalidRequest("give at least one scope", param="scopes")
    unknown = [s for s in out if s not in SCOPES]
    if unknown:
        raise InvalidRequest(
            f"unknown scope {unknown[0]!r} (known: {', '.join(SCOPES)})", param="scopes"
        )
    return out


__all__ = ["KEY_PREFIX", "KEY_RE", "SCOPES", "parse_key", "scope_list"]
