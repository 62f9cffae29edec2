"""The institution's administrator API (bearer token): customers, enrollment tokens,
merchants, settlement. One service per resource; typed parameters in, typed objects out.

    with AdminClient(url, token) as admin:
        alice = admin.customers.create("Alice Martin")
        admin.customers.fund(alice.id, "EUR", 10_000)
        token = admin.enrollment_tokens.issue(alice.id).token
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlencode

from safescan.api import schema
from safescan.api.states import Status
from safescan.client.admin_api_keys import AdminApiKeyService

# re-exported: the token as a user gives it lives in a module without the HTTP client
from safescan.client.admin_token import ENV_ADMIN_TOKEN as ENV_ADMIN_TOKEN
from safescan.client.admin_token import MAX_ADMIN_TOKEN as MAX_ADMIN_TOKEN
from safescan.client.admin_token import check_admin_token as check_admin_token
from safescan.client.admin_token import read_admin_token as read_admin_token
from safescan.client.answers import CarrierStatus, MerchantProfile, SettlementRow, settlement_rows
from safescan.client.fields import SAME, Answer, fields_of, wire
from safescan.client.http import DEFAULT_TIMEOUT, ApiClient, InstitutionHttp, JsonDoc
from safescan.client.public import KeyService
from safescan.code.keys import VerifyKey

_CUSTOMERS = "/v1/admin/customers"
_MERCHANTS = "/v1/admin/merchants"


@dataclass(frozen=True)
class Balance:
    """An amount held in one currency (minor units; ``currency`` is the ISO 4217 alpha code)."""

    currency: str
    amount: int
    display: str | None = None  # a list row's: the amount as shown ("100.00 EUR")


CarrierState = schema.CarrierSummary  # one of a customer's key carriers: serial, status ...


@dataclass(frozen=True)
class Customer(Answer, what="customer"):
    """A customer with balances and (when read one by one) key carriers; a list row has only
    their number (``carrier_count``)."""

    id: str
    name: str
    status: Status
    created_at: int
    balances: tuple[Balance, ...]
    carriers: tuple[CarrierState, ...] = ()
    carrier_count: int = field(default=0, metadata=wire(None))

    @classmethod
    def from_wire(cls, doc: object, where: str) -> Self:
        """Detail: ``carriers`` a list; list row: ``carriers`` a count, balances with their
        ``display``."""
        if isinstance(doc, dict) and not isinstance(doc.get("carriers"), list):
            r = fields_of(schema.CustomerListed, doc, where)
            held = tuple(Balance(b.currency, b.amount, b.display) for b in r.balances)
            return cls(r.id, r.name, r.status, r.created_at, held, (), r.carriers, doc=doc)
        got = fields_of(cls, doc, where)
        return dataclasses.replace(got, carrier_count=len(got.carriers))

    def balance(self, currency: str) -> int:
        """The balance in one currency (ISO 4217 alpha code; 0 when none)."""
        return next((b.amount for b in self.balances if b.currency == currency), 0)


@dataclass(frozen=True)
class CustomerPage(Answer, what="customer list"):
    """One page of customers in id order."""

    customers: tuple[Customer, ...]
    has_more: bool


@dataclass(frozen=True)
class EnrollmentToken(Answer, schema.EnrollmentTokenIssued, what="enrollment token"):
    """A single-use token for enrolling one key carrier of a customer."""


@dataclass(frozen=True)
class MerchantCreated(Answer, what="merchant"):
    """A merchant the institution onboarded: its profile (``api_secret_key``, the generated
    API key seed, only when the caller brought no public key; shown this once)."""

    id: str
    profile: MerchantProfile = field(metadata=wire(SAME))


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
        return CustomerPage.from_json(self._call("GET", f"{_CUSTOMERS}?{urlencode(query)}"))


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
        return MerchantCreated.from_json(
            self._http.call_object("POST", _MERCHANTS, body, headers=self._auth)
        )

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
        check_admin_token(token)
        super().__init__(base_url, timeout=timeout)
        auth = {"Authorization": f"Bearer {token}"}
        self.customers = CustomerService(self.http, auth)
        self.enrollment_tokens = EnrollmentTokenService(self.http, auth)
        self.merchants = MerchantAdminService(self.http, auth)
        self.carriers = CarrierAdminService(self.http, auth)
        self.settlements = SettlementService(self.http, auth)
        self.api_keys = AdminApiKeyService(self.http, auth)  # a merchant's secret API keys
        self.keys = KeyService(self.http)
