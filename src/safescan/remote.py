"""Moved to :mod:`safescan.client` (kept for the demo until it is migrated; do not use in
new code: tests/test_layers.py allows only the demo to import it)."""

from __future__ import annotations

from typing import Any

from safescan.client.admin import ENV_ADMIN_TOKEN, AdminClient, read_admin_token
from safescan.client.errors import (
    InstitutionProtocolError,
    InstitutionUnreachable,
    OutcomeUnknown,
    ReceiptMismatch,
    RemoteError,
    RequestNotProcessed,
    TrustFormatError,
    error_from_response,
    error_outcome,
)
from safescan.client.http import InstitutionHttp, decode_answer, encode_json
from safescan.client.public import fetch_trust
from safescan.client.retry import retry_budget, send_until_known
from safescan.client.trust import trust_from_json, trust_to_json, verify_receipt

__all__ = [
    "ENV_ADMIN_TOKEN",
    "AdminApi",
    "InstitutionHttp",
    "InstitutionProtocolError",
    "InstitutionUnreachable",
    "OutcomeUnknown",
    "ReceiptMismatch",
    "RemoteError",
    "RequestNotProcessed",
    "TrustFormatError",
    "decode_answer",
    "encode_json",
    "error_from_response",
    "error_outcome",
    "fetch_trust",
    "read_admin_token",
    "retry_budget",
    "send_until_known",
    "trust_from_json",
    "trust_to_json",
    "verify_receipt",
]


class AdminApi(AdminClient):
    """The former flat administrator calls, over :class:`AdminClient`'s services."""

    def create_customer(self, name: str) -> str:
        """Open a customer; returns its id."""
        return self.customers.create(name).id

    def fund(self, customer_id: str, currency: str, amount: int) -> dict[str, Any]:
        """Credit a customer."""
        return self.customers.fund(customer_id, currency, amount).to_json()

    def balance(self, customer_id: str, currency: str) -> int:
        """A customer's balance in one currency (minor units)."""
        return self.customers.balance(customer_id, currency)

    def enrollment_token(self, customer_id: str) -> str:
        """A single-use token for enrolling one key carrier."""
        return self.enrollment_tokens.issue(customer_id).token

    def settlement(self, date: str) -> list[dict[str, Any]]:
        """Settlement rows of every merchant for one UTC day (YYYY-MM-DD)."""
        return self.settlements.rows(date)
