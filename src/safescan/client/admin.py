"""The institution's administrator API (bearer token): customers, enrollment tokens,
merchants, settlement. One service per resource; typed parameters in, typed objects out.

    with AdminClient(url, token) as admin:
        alice = admin.customers.create("Alice Martin")
        admin.customers.fund(alice.id, "EUR", 10_000)
        token = admin.enrollment_tokens.issue(alice.id).token
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from safescan.api.errors import Unauthenticated
from safescan.client.answers import CarrierStatus, MerchantProfile, SettlementRow, settlement_rows
from safescan.client.errors import InstitutionProtocolError
from safescan.client.http import DEFAULT_TIMEOUT, ApiClient, InstitutionHttp, JsonDoc
from safescan.client.public import KeyService
from safescan.code.keys import VerifyKey

ENV_ADMIN_TOKEN = "SAFESCAN_ADMIN_TOKEN"  # noqa: S105 - a variable name

_CUSTOMERS = "/v1/admin/customers"
_MERCHANTS = "/v1/admin/merchants"


def _malformed(what: str) -> InstitutionProtocolError:
    return InstitutionProtocolError(f"the institution's {what} answer is malformed")


@dataclass(frozen=True)
class Balance:
    """An amount held in one currency (minor units; ``currency`` is the ISO 4217 alpha code)."""

    currency: str
    amount: int

    @classmethod
    def from_json(cls, doc: Any) -> Balance:
        """From ``{"currency", "amount"}``."""
        return cls(str(doc["currency"]), int(doc["amount"]))


@dataclass(frozen=True)
class CarrierState:
    """One of a customer's key carriers as the institution records it."""

    serial: int
    status: str
    last_counter: int


@dataclass(frozen=True)
class Customer:
    """A customer with balances and (when read one by one) key carriers."""

    id: str
    name: str
    status: str
    created_at: int
    balances: tuple[Balance, ...]
    carriers: tuple[CarrierState, ...] = ()
    carrier_count: int = 0
    doc: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: Any) -> Customer:
        """From the institution's customer document (detail or list row)."""
        try:
            raw = doc["carriers"]
            carriers = (
                tuple(
                    CarrierState(int(c["serial"]), str(c["status"]), int(c["last_counter"]))
                    for c in raw
                )
                if isinstance(raw, list)
                else ()
            )
            return cls(
                id=str(doc["id"]),
                name=str(doc["name"]),
                status=str(doc["status"]),
                created_at=int(doc["created_at"]),
                balances=tuple(Balance.from_json(b) for b in doc["balances"]),
                carriers=carriers,
                carrier_count=len(carriers) if isinstance(raw, list) else int(raw),
                doc=dict(doc),
            )
        except (KeyError, TypeError, ValueError):
            raise _malformed("customer") from None

    def balance(self, currency: str) -> int:
        """The balance in one currency (ISO 4217 alpha code; 0 when none)."""
        return next((b.amount for b in self.balances if b.currency == currency), 0)

    def to_json(self) -> dict[str, Any]:
        """The institution's document, as received."""
        return dict(self.doc)


@dataclass(frozen=True)
class CustomerPage:
    """One page of customers in id order."""

    customers: tuple[Customer, ...]
    has_more: bool

    def to_json(self) -> dict[str, Any]:
        """The institution's document, as received."""
        return {"customers": [c.to_json() for c in self.customers], "has_more": self.has_more}


@dataclass(frozen=True)
class EnrollmentToken:
    """A single-use token for enrolling one key carrier of a customer."""

    token: str
    customer_id: str
    expires_at: int

    @classmethod
    def from_json(cls, doc: Any) -> EnrollmentToken:
        """From ``{"token", "customer_id", "expires_at"}``."""
        try:
            return cls(str(doc["token"]), str(doc["customer_id"]), int(doc["expires_at"]))
        except (KeyError, TypeError, ValueError):
            raise _malformed("enrollment token") from None

    def to_json(self) -> dict[str, Any]:
        """The wire form."""
        return {"token": self.token, "customer_id": self.customer_id, "expires_at": self.expires_at}


@dataclass(frozen=True)
class MerchantCreated:
    """A merchant the institution onboarded (``doc``: its whole answer)."""

    id: str
    doc: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


class CustomerService:
    """``/v1/admin/customers``."""

    def __init__(self, http: InstitutionHttp, auth: dict[str, str]) -> None:
        self._http, self._auth = http, auth

    def _call(self, method: str, path: str, payload: Any = None) -> JsonDoc:
        return self._http.call_object(method, path, payload, headers=self._auth)

    def create(self, name: str) -> Customer:
        """Open a customer."""
        return Customer.from_json(self._call("POST", _CUSTOMERS, {"name": name}))

    def get(self, customer_id: str) -> Customer:
        """A customer with balances and carriers."""
        return Customer.from_json(self._call("GET", f"{_CUSTOMERS}/{customer_id}"))

    def fund(self, customer_id: str, currency: str, amount: int) -> Customer:
        """Credit a customer from the institution's funding account (minor units)."""
        path = f"{_CUSTOMERS}/{customer_id}/fund"
        return Customer.from_json(
            self._call("POST", path, {"currency": currency, "amount": amount})
        )

    def balance(self, customer_id: str, currency: str) -> int:
        """A customer's balance in one currency (minor units)."""
        return self.get(customer_id).balance(currency)

    def list(self, limit: int = 100, after: str | None = None) -> CustomerPage:
        """Customers with balances, in id order (page on with ``after``)."""
        query: dict[str, str | int] = {"limit": limit}
        if after:
            query["after"] = after
        doc = self._call("GET", f"{_CUSTOMERS}?{urlencode(query)}")
        try:
            rows = tuple(Customer.from_json(r) for r in doc["customers"])
            return CustomerPage(rows, bool(doc["has_more"]))
        except (KeyError, TypeError):
            raise _malformed("customer list") from None


class EnrollmentTokenService:
    """``/v1/admin/customers/{id}/enrollment-tokens``."""

    def __init__(self, http: InstitutionHttp, auth: dict[str, str]) -> None:
        self._http, self._auth = http, auth

    def issue(self, customer_id: str, ttl_seconds: int | None = None) -> EnrollmentToken:
        """A single-use enrollment token with its expiry."""
        body = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        path = f"{_CUSTOMERS}/{customer_id}/enrollment-tokens"
        return EnrollmentToken.from_json(
            self._http.call_object("POST", path, body, headers=self._auth)
        )


class MerchantAdminService:
    """``/v1/admin/merchants``."""

    def __init__(self, http: InstitutionHttp, auth: dict[str, str]) -> None:
        self._http, self._auth = http, auth

    def create(
        self,
        *,
        name: str,
        city: str,
        country: str,
        mcc: int,
        settlement_account: str,
        api_public_key: VerifyKey,
        webhook_url: str | None = None,
    ) -> MerchantCreated:
        """Onboard a merchant whose API key was generated by the caller (public half only);
        ``webhook_url`` receives its signed events."""
        body: dict[str, Any] = {
            "name": name,
            "city": city,
            "country": country,
            "mcc": mcc,
            "settlement_account": settlement_account,
            "api_public_key": base64.b64encode(api_public_key.raw).decode("ascii"),
        }
        if webhook_url:
            body["webhook_url"] = webhook_url
        doc = self._http.call_object("POST", _MERCHANTS, body, headers=self._auth)
        if not isinstance(doc.get("id"), str):
            raise _malformed("merchant")
        return MerchantCreated(doc["id"], dict(doc))

    def get(self, merchant_id: str) -> MerchantProfile:
        """A merchant as the institution records it (name, city, country, MCC, status ...)."""
        path = f"{_MERCHANTS}/{merchant_id}"
        return MerchantProfile.from_json(self._http.call_object("GET", path, headers=self._auth))

    def revoke(self, merchant_id: str) -> MerchantProfile:
        """Revoke a merchant and its code certificates; the merchant as it is now."""
        path = f"{_MERCHANTS}/{merchant_id}/revoke"
        return MerchantProfile.from_json(
            self._http.call_object("POST", path, {}, headers=self._auth)
        )


class CarrierAdminService:
    """``/v1/admin/carriers``."""

    def __init__(self, http: InstitutionHttp, auth: dict[str, str]) -> None:
        self._http, self._auth = http, auth

    def revoke(self, serial: int) -> CarrierStatus:
        """Revoke a key carrier (its certificate joins the revocation list)."""
        path = f"/v1/admin/carriers/{int(serial)}/revoke"
        return CarrierStatus.from_json(self._http.call_object("POST", path, {}, headers=self._auth))


class SettlementService:
    """``/v1/admin/settlement``."""

    def __init__(self, http: InstitutionHttp, auth: dict[str, str]) -> None:
        self._http, self._auth = http, auth

    def rows(self, date: str) -> tuple[SettlementRow, ...]:
        """Settlement rows of every merchant for one UTC day (YYYY-MM-DD)."""
        path = f"/v1/admin/settlement?{urlencode({'date': date})}"
        return settlement_rows(self._http.call_object("GET", path, headers=self._auth))


class AdminClient(ApiClient):
    """The institution's administrator API, one service per resource."""

    def __init__(self, base_url: str, token: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(base_url, timeout=timeout)
        auth = {"Authorization": f"Bearer {token}"}
        self.customers = CustomerService(self.http, auth)
        self.enrollment_tokens = EnrollmentTokenService(self.http, auth)
        self.merchants = MerchantAdminService(self.http, auth)
        self.carriers = CarrierAdminService(self.http, auth)
        self.settlements = SettlementService(self.http, auth)
        self.keys = KeyService(self.http)


def read_admin_token(path: Path | None) -> str:
    """The administrator token from a file (first line) or ``$SAFESCAN_ADMIN_TOKEN``."""
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise Unauthenticated(f"cannot read the token file {path}: {exc.strerror}") from None
        token = lines[0].strip() if lines else ""
    else:
        token = os.environ.get(ENV_ADMIN_TOKEN, "").strip()
    if not token:
        raise Unauthenticated(
            f"give the administrator token with --admin-token-file FILE or ${ENV_ADMIN_TOKEN}"
            " (`safescan institution init` printed it)"
        )
    return token
