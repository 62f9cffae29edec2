"""The typed client of the institution's HTTP API, used by the POS, the wallet, the
administrator commands, the demo and the tests. No other module builds a ``/v1/...`` path or a
request body by hand (tests/test_layers.py checks it).

* :class:`AdminClient` (bearer token): ``customers``, ``enrollment_tokens``, ``merchants``,
  ``carriers``, ``settlements``;
* :class:`MerchantClient` (a :class:`SecretKey`, Bearer with scopes, or signed requests):
  ``api_keys``, ``orders``, ``refunds``, ``payments``,
  ``certificates``, ``events``, ``webhook``;
* :class:`WalletClient`: ``payments``, ``codes``, ``carriers``, ``account``;
* each also has the public ``keys`` and ``revocations``.

Underneath: :mod:`.http` (the one place an ``httpx`` client is made; every failure a typed
error from :mod:`.errors`), :mod:`.retry` (state-changing requests ride through a failover
with one Idempotency-Key until their outcome is known), :mod:`.trust` (pinned keys, receipts).
See docs/apps.md, "The API client".
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safescan.client.admin import AdminClient, read_admin_token
    from safescan.client.credentials import SecretKey
    from safescan.client.errors import (
        InstitutionProtocolError,
        InstitutionUnreachable,
        OutcomeUnknown,
        ReceiptMismatch,
        RemoteError,
        RequestNotProcessed,
    )
    from safescan.client.http import InstitutionHttp
    from safescan.client.merchant import MerchantClient, Order
    from safescan.client.wallet import WalletClient

#: where each name is defined: imported on first use (PEP 562), so that a program importing one
#: part (``safescan.client.errors`` in ``safescan pos orders``) does not load the others (the
#: administrator client is ~0.5 s of imports)
_WHERE = {
    "AdminClient": "admin",
    "read_admin_token": "admin",
    "SecretKey": "credentials",
    "InstitutionProtocolError": "errors",
    "InstitutionUnreachable": "errors",
    "OutcomeUnknown": "errors",
    "ReceiptMismatch": "errors",
    "RemoteError": "errors",
    "RequestNotProcessed": "errors",
    "InstitutionHttp": "http",
    "MerchantClient": "merchant",
    "Order": "merchant",
    "WalletClient": "wallet",
}


def __getattr__(name: str) -> Any:
    """``safescan.client.NAME``: imported from its module on first use."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "AdminClient",
    "InstitutionHttp",
    "InstitutionProtocolError",
    "InstitutionUnreachable",
    "MerchantClient",
    "Order",
    "OutcomeUnknown",
    "ReceiptMismatch",
    "RemoteError",
    "RequestNotProcessed",
    "SecretKey",
    "WalletClient",
    "read_admin_token",
]
