"""Administrator calls used to set a terminal (and, in demos, a customer) up.

``AdminApi`` wraps the institution's ``/v1/admin/*`` routes (bearer token);
:func:`onboard_merchant` makes a merchant with an API key generated *here* (only its public
half is sent) and returns a ready :class:`~safescan.merchant.config.PosConfig`.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from safescan.code.keys import SigningKey
from safescan.merchant.config import PosConfig
from safescan.remote import InstitutionHttp, fetch_trust


class AdminApi:
    """The institution's administrator API."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0) -> None:
        self.remote = InstitutionHttp(base_url, timeout=timeout)
        self._auth = {"Authorization": f"Bearer {token}"}

    def close(self) -> None:
        """Close connections."""
        self.remote.close()

    def __enter__(self) -> AdminApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        """One administrator request."""
        return dict(self.remote.call(method, path, payload, headers=self._auth))

    def create_customer(self, name: str) -> str:
        """Open a customer; returns its id."""
        return str(self.call("POST", "/v1/admin/customers", {"name": name})["id"])

    def fund(self, customer_id: str, currency: str, amount: int) -> dict[str, Any]:
        """Credit a customer."""
        return self.call(
            "POST",
            f"/v1/admin/customers/{customer_id}/fund",
            {"currency": currency, "amount": amount},
        )

    def customer(self, customer_id: str) -> dict[str, Any]:
        """A customer with balances and carriers."""
        return self.call("GET", f"/v1/admin/customers/{customer_id}")

    def balance(self, customer_id: str, currency: str) -> int:
        """A customer's balance in one currency (minor units)."""
        for b in self.customer(customer_id).get("balances", []):
            if b.get("currency") == currency:
                return int(b["amount"])
        return 0

    def enrollment_token(self, customer_id: str) -> str:
        """A single-use token for enrolling one key carrier."""
        doc = self.call("POST", f"/v1/admin/customers/{customer_id}/enrollment-tokens", {})
        return str(doc["token"])

    def revoke_merchant(self, merchant_id: str) -> dict[str, Any]:
        """Revoke a merchant and its code certificates."""
        return self.call("POST", f"/v1/admin/merchants/{merchant_id}/revoke", {})

    def settlement(self, date: str) -> list[dict[str, Any]]:
        """Settlement rows of every merchant for one UTC day (YYYY-MM-DD)."""
        return list(self.call("GET", f"/v1/admin/settlement?date={date}")["rows"])


def onboard_merchant(
    admin: AdminApi,
    *,
    name: str,
    city: str,
    country: str,
    mcc: int,
    settlement_account: str,
    currency: str = "EUR",
) -> PosConfig:
    """Create a merchant whose API key is generated locally; returns the POS configuration."""
    seed = secrets.token_bytes(32)
    public = SigningKey.from_seed(seed).public_key
    doc = admin.call(
        "POST",
        "/v1/admin/merchants",
        {
            "name": name,
            "city": city,
            "country": country,
            "mcc": mcc,
            "settlement_account": settlement_account,
            "api_public_key": base64.b64encode(public.raw).decode("ascii"),
        },
    )
    return PosConfig(
        institution_url=admin.remote.base_url,
        merchant_id=str(doc["id"]),
        api_seed=seed,
        trust=fetch_trust(admin.remote),
        currency=currency,
    )
